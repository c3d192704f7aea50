//! A missing or wrong ONNX Runtime library is an error that says how to fix it, never
//! a panic. Its own test binary, so no library is loaded yet when it runs.
use std::path::Path;
use tsst_models::ort_lib;

#[test]
fn bad_library_paths_are_errors() {
    let missing = Path::new("/nonexistent/libonnxruntime.so.1.31.1");
    let err = ort_lib::environment(Some(missing), false).err().unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/libonnxruntime.so.1.31.1"),
        "{msg}"
    );
    assert!(msg.contains("tools/fetch-ort.sh"), "{msg}");

    // A file that is not a shared library.
    let not_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let err = ort_lib::environment(Some(&not_lib), false).err().unwrap();
    assert!(err.to_string().contains("Cargo.toml"), "{err}");

    // A model directory with a bad library path fails to load, naming the library.
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/tiny-policy");
    let err = tsst_models::OnnxPolicy::load(&model, tsst_models::Device::Cpu, Some(missing))
        .err()
        .unwrap();
    assert!(err.to_string().contains("fetch-ort.sh"), "{err}");

    // After the failures, the library is still found where it is installed.
    match ort_lib::environment(None, false) {
        Ok(_) => assert!(ort_lib::loaded_from().is_some()),
        Err(e) => eprintln!("SKIPPED the good-path half: ONNX Runtime not found ({e})"),
    }
}
