//! LLaVA policy and value models exported to ONNX (`manifest.json`, format
//! `tsst-llava-onnx/1`), run with ONNX Runtime on the CPU or a CUDA device. They
//! implement the `PolicyBackend` and `ValueBackend` seams of `tsst-actors`;
//! [`OnnxFactory`] serves them (and the scripted backend) by model name.
pub mod device;
pub mod error;
pub mod factory;
pub mod llava;
pub mod manifest;
pub mod memory;
pub mod ops;
pub mod ort_lib;
pub mod policy;
pub mod preprocess;
pub mod sampling;
pub mod stop;
pub mod tensor;
pub mod tokenize;
pub mod value;

pub use device::Device;
pub use error::ModelError;
pub use factory::OnnxFactory;
pub use llava::KvMode;
pub use manifest::Manifest;
pub use policy::OnnxPolicy;
pub use value::OnnxValue;

/// Milliseconds since `t`: the phase timings the models log.
pub(crate) fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
