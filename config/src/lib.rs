//! tsst configuration files: parsing and validation.
//!
//! Three kinds of file, each loaded with `load(path)` into a validated struct:
//! [`EvalConfig`] (`config/eval/*.yaml`, `config/demo.yaml`), [`VerifierConfig`]
//! (`config/llm_verifier_config.yaml`) and [`WorkerConfig`] (`config/worker.yaml`).
//! [`check_file`] tells them apart and validates any of them for `tsst config check`.
//! Every error's `Display` is the whole message for the user: `FILE: FIELD: RULE`,
//! with `:LINE:COLUMN` after the file name when the YAML parser knows it.
mod check;
mod error;
mod eval;
mod secret;
mod trainer;
mod url;
mod verifier;
mod worker;
mod yaml;

pub use check::{check_file, check_file_with_warnings, detect_kind, missing_here, ConfigKind};
pub use error::{ConfigError, Issue, Position};
pub use eval::{
    EvalConfig, ModelRef, ModelSpec, Partition, Selection, StepDelimiter, Task,
    DEFAULT_FINISH_MAX_CHARS, DEFAULT_FIRST_ROUND_MULTIPLIER, DEFAULT_MAX_LENGTH,
    DEFAULT_MAX_ROUNDS, DEFAULT_SEED, DEFAULT_SELECTION_TEMPERATURE, DEFAULT_STEP_MAX_TOKENS,
};
pub use secret::Secret;
pub use trainer::{expand_placeholders, Stage, TrainerConfig, PLACEHOLDERS};
pub use url::{redact_url, ServiceUrl};
pub use verifier::{EndpointConfig, VerifierConfig, DEFAULT_API_KEY_ENV};
pub use worker::{BatchConfig, Device, WorkerConfig};
