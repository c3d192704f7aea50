//! The model registry's records: one per trained model version of a self-training
//! run, kept in the store (`keys::models`).
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A training data file and how many records it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    pub path: PathBuf,
    pub records: u64,
}

/// One stage of a training round (a command the trainer ran) and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub name: String,
    pub seconds: f64,
    /// The exit code; none when the command was stopped or never started.
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum VersionStatus {
    Training,
    Ready,
    Failed { reason: String },
}

/// A model version: what it was trained from and on, where it is, how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub run: String,
    pub version: u32,
    /// The version it was trained from; none for models given to round 0.
    pub parent: Option<u32>,
    pub data: Vec<DataFile>,
    /// The exported model directories the workers load.
    pub policy: PathBuf,
    pub value: PathBuf,
    pub status: VersionStatus,
    pub stages: Vec<StageReport>,
    /// Unix seconds.
    pub started_at: u64,
    pub finished_at: Option<u64>,
}
