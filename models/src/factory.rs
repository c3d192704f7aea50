//! Which backend serves a model name: `scripted` / `scripted:<N>ms` go to the
//! scripted backend, anything else is an exported model directory.
use crate::device::Device;
use crate::policy::OnnxPolicy;
use crate::value::OnnxValue;
use std::path::{Path, PathBuf};
use tsst_backend::{
    parse_scripted, BackendError, ModelFactory, PolicyBackend, ScriptedFactory, ValueBackend,
};

#[derive(Debug, Clone, Default)]
pub struct OnnxFactory {
    pub device: Device,
    /// The ONNX Runtime library to load; `None` searches ORT_DYLIB_PATH and
    /// `tools/fetch-ort.sh`'s install locations.
    pub ort_lib: Option<PathBuf>,
}

impl OnnxFactory {
    fn error(name: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError {
            backend: format!("model `{name}`"),
            reason: e.to_string(),
        }
    }
}

impl ModelFactory for OnnxFactory {
    fn policy(&self, name: &str) -> Result<Box<dyn PolicyBackend>, BackendError> {
        if parse_scripted(name).is_some() {
            return ScriptedFactory.policy(name);
        }
        let policy = OnnxPolicy::load(Path::new(name), self.device, self.ort_lib.as_deref())
            .map_err(|e| Self::error(name, e))?;
        tracing::info!(model = name, device = %self.device, "loaded ONNX policy");
        Ok(Box::new(policy))
    }

    fn value(&self, name: &str) -> Result<Box<dyn ValueBackend>, BackendError> {
        if parse_scripted(name).is_some() {
            return ScriptedFactory.value(name);
        }
        let value = OnnxValue::load(Path::new(name), self.device, self.ort_lib.as_deref())
            .map_err(|e| Self::error(name, e))?;
        tracing::info!(model = name, device = %self.device, "loaded ONNX value model");
        Ok(Box::new(value))
    }
}
