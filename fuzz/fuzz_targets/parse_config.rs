//! Any text as an eval, verifier or worker config: an error naming the field, never a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tsst_config::{EvalConfig, VerifierConfig, WorkerConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Path::new("fuzz.yaml");
    let _ = EvalConfig::from_yaml_str(text, origin);
    let _ = VerifierConfig::from_yaml_str(text, origin);
    let _ = WorkerConfig::from_yaml_str(text, origin);
});
