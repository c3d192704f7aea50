//! Finding and loading the ONNX Runtime shared library (ort's `load-dynamic`), once per
//! process.
//!
//! `ort::init()` panics when `ORT_DYLIB_PATH` names a bad file, so the library is
//! always loaded here with `ort::init_from` from a path we checked, and every failure
//! becomes an error that lists the paths tried and how to install the library.
use crate::error::ModelError;
use ort::environment::Environment;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The ONNX Runtime release ort 2.0.0-rc.15 with `api-31` is built against.
pub const ORT_VERSION: &str = "1.31.1";

const HOW_TO_FIX: &str = "install it with `tools/fetch-ort.sh` (or `tools/fetch-ort.sh --gpu` \
for CUDA) and/or set ORT_DYLIB_PATH to the printed path";

/// The process's environment and the library it came from. ort allows one environment
/// per process and one library; a failed attempt leaves nothing behind so a later
/// call with a better path can still succeed.
static ENVIRONMENT: Mutex<Option<(Environment, PathBuf)>> = Mutex::new(None);

/// The library paths worth trying, best first. An explicit path (worker config) is
/// the only candidate: a configured library that cannot load is an error, not a
/// reason to pick another one. Otherwise `ORT_DYLIB_PATH`, then `tools/fetch-ort.sh`'s
/// install locations under the current directory, the executable's directory and
/// their ancestors (a test binary in `target/debug/deps` finds the repository's
/// `.ort/`). `gpu` looks for the onnxruntime-gpu package only.
pub fn candidates(explicit: Option<&Path>, gpu: bool) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    let packages: &[&str] = if gpu {
        &["onnxruntime-gpu"]
    } else {
        &["onnxruntime", "onnxruntime-gpu"]
    };
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    for root in roots {
        for package in packages {
            let p = root
                .join(".ort")
                .join(format!("{package}-{ORT_VERSION}"))
                .join("onnxruntime/capi")
                .join(format!("libonnxruntime.so.{ORT_VERSION}"));
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The process's ONNX Runtime environment, loading the library on first use from the
/// first candidate that loads. Later calls return the same environment, or an error
/// when they name another library: ort allows one library and one environment per
/// process.
pub fn environment(explicit: Option<&Path>, gpu: bool) -> Result<Environment, ModelError> {
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((env, loaded)) = slot.as_ref() {
        return match explicit {
            Some(p) if p != loaded => Err(ModelError::Runtime(format!(
                "ONNX Runtime is already loaded from {} in this process; cannot also load {}",
                loaded.display(),
                p.display()
            ))),
            _ => Ok(env.clone()),
        };
    }
    let tried = candidates(explicit, gpu);
    let mut failures = Vec::new();
    for path in &tried {
        if !path.is_file() {
            failures.push(format!("{} (not found)", path.display()));
            continue;
        }
        match load(path) {
            Ok(env) => {
                *slot = Some((env.clone(), path.clone()));
                return Ok(env);
            }
            Err(e) => failures.push(format!("{} ({e})", path.display())),
        }
    }
    Err(ModelError::Runtime(format!(
        "no usable ONNX Runtime {ORT_VERSION} library; tried: {}; {HOW_TO_FIX}",
        failures.join("; ")
    )))
}

/// Loads one library: an error (never a panic) for a missing file, a file that is not
/// ONNX Runtime, or an older release.
fn load(path: &Path) -> Result<Environment, ModelError> {
    if !path.is_file() {
        return Err(ModelError::Runtime(format!(
            "ONNX Runtime library {} not found; {HOW_TO_FIX}",
            path.display()
        )));
    }
    let builder = ort::init_from(path).map_err(|e| {
        ModelError::Runtime(format!(
            "cannot load ONNX Runtime from {}: {e}; {HOW_TO_FIX}",
            path.display()
        ))
    })?;
    builder.with_name("tsst").build().map_err(|e| {
        ModelError::Runtime(format!(
            "cannot start ONNX Runtime from {}: {e}",
            path.display()
        ))
    })
}

/// The library the process loaded, if any.
pub fn loaded_from() -> Option<PathBuf> {
    let slot = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    slot.as_ref().map(|(_, p)| p.clone())
}
