//! `tsst data check`: load every requested split and summarise what would be used and
//! what would be skipped, so a broken download is found before a run starts.
use crate::report::{BadRecord, DatasetError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use tsst_messages::DataSource;

/// The outcome for one split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitReport {
    pub split: String,
    /// Records seen: `loaded + bad.len()`.
    pub total: usize,
    pub loaded: usize,
    pub with_image: usize,
    pub without_image: usize,
    pub bad: Vec<BadRecord>,
}

/// The outcome for a dataset root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub source: DataSource,
    pub root: PathBuf,
    pub splits: Vec<SplitReport>,
}

impl CheckReport {
    pub fn bad_count(&self) -> usize {
        self.splits.iter().map(|s| s.bad.len()).sum()
    }

    /// True when every record of every split loaded.
    pub fn is_clean(&self) -> bool {
        self.bad_count() == 0
    }
}

/// Checks `split`, or every split present under `root` when `split` is `None`.
pub fn check(
    source: DataSource,
    root: &Path,
    split: Option<&str>,
) -> Result<CheckReport, DatasetError> {
    let names = match split {
        Some(s) => vec![s.to_string()],
        None => crate::splits(source, root)?,
    };
    if names.is_empty() {
        return Err(DatasetError::NoSplits {
            dataset: source,
            root: root.to_path_buf(),
        });
    }
    let mut splits = Vec::with_capacity(names.len());
    for name in names {
        let loaded = crate::load(source, root, &name)?;
        let with_image = loaded
            .questions
            .iter()
            .filter(|q| q.image.is_some())
            .count();
        splits.push(SplitReport {
            split: name,
            total: loaded.total(),
            loaded: loaded.questions.len(),
            with_image,
            without_image: loaded.questions.len() - with_image,
            bad: loaded.bad,
        });
    }
    Ok(CheckReport {
        source,
        root: root.to_path_buf(),
        splits,
    })
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} at {}", self.source, self.root.display())?;
        for s in &self.splits {
            writeln!(
                f,
                "  split {}: {} records, {} loaded ({} with image, {} without), {} bad",
                s.split,
                s.total,
                s.loaded,
                s.with_image,
                s.without_image,
                s.bad.len()
            )?;
            for bad in &s.bad {
                writeln!(f, "    bad {bad}")?;
            }
        }
        let bad = self.bad_count();
        if bad == 0 {
            write!(f, "ok: no bad records")
        } else {
            write!(f, "{bad} bad records skipped")
        }
    }
}
