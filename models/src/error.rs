//! Errors of loading and running the ONNX models.
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    /// No usable ONNX Runtime library; the message lists every path tried.
    #[error("{0}")]
    Runtime(String),
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("cannot load {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{device} is not available: {reason}")]
    Device { device: String, reason: String },
    /// A model run failed or returned something the manifest did not promise.
    #[error("{model}: {reason}")]
    Run { model: String, reason: String },
}

impl ModelError {
    pub(crate) fn run(model: &str, reason: impl std::fmt::Display) -> Self {
        ModelError::Run {
            model: model.to_string(),
            reason: reason.to_string(),
        }
    }
}
