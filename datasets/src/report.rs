//! What a load produced: the questions that passed every check, the records that did
//! not (with why), and the whole-file failures that stop a load.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::PathBuf;
use tsst_messages::{DataSource, Question};

/// One record that was skipped. A bad record never fails the whole load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecord {
    /// The record's own id, or `#<index>` (JSON list position) / `line N` (JSONL)
    /// when the record has no readable id.
    pub id: String,
    pub reason: String,
}

impl BadRecord {
    pub fn new(id: impl Into<String>, reason: impl Into<String>) -> Self {
        BadRecord {
            id: id.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.id, self.reason)
    }
}

/// The result of loading one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Loaded {
    pub questions: Vec<Question>,
    pub bad: Vec<BadRecord>,
    /// The id of every record that holds a place in the dataset order, in file order:
    /// the loaded questions and the bad records that have an id of their own (not
    /// duplicates, not unreadable lines). `data_partition` indexes this list, so a bad
    /// record keeps its place and does not move every later index.
    #[serde(default)]
    pub order: Vec<String>,
}

impl Loaded {
    /// Records seen: loaded plus bad.
    pub fn total(&self) -> usize {
        self.questions.len() + self.bad.len()
    }

    /// A question that loaded, in its place.
    pub(crate) fn accept(&mut self, q: Question) {
        self.order.push(q.id.clone());
        self.questions.push(q);
    }

    /// A record with an id of its own that failed to load: it keeps its place.
    pub(crate) fn reject(&mut self, id: String, reason: impl Into<String>) {
        self.order.push(id.clone());
        self.bad.push(BadRecord::new(id, reason));
    }
}

/// A failure of a whole file or of the request itself; per-record problems are
/// [`BadRecord`]s instead.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset root {path} is not usable: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error(
        "unknown split `{split}` for {dataset} (looked in {path}; available: {})",
        list_or_none(.available)
    )]
    UnknownSplit {
        dataset: DataSource,
        split: String,
        path: PathBuf,
        available: Vec<String>,
    },
    #[error("invalid split name `{split}`: it must be a plain name such as `val`")]
    InvalidSplitName { split: String },
    #[error("no {dataset} splits found in {root}")]
    NoSplits { dataset: DataSource, root: PathBuf },
    #[error("malformed data_partition `{spec}`: {reason} (expected `a_b`, e.g. `0_99`)")]
    BadPartition { spec: String, reason: String },
    #[error(
        "data_partition {spec} is past the end: split {split} has {len} questions ({})",
        available_range(*.len)
    )]
    PartitionPastEnd {
        spec: String,
        split: String,
        len: usize,
    },
    #[error(
        "sample_size {requested} is larger than the {available} questions available in split {split}"
    )]
    SampleTooLarge {
        requested: usize,
        available: usize,
        split: String,
    },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// The partition that covers all `len` questions, as the user would write it.
pub(crate) fn available_range(len: usize) -> String {
    match len {
        0 => "none".to_string(),
        n => format!("0_{}", n - 1),
    }
}
