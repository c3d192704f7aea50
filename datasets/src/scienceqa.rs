//! ScienceQA in its published format: `problems.json` (`{pid: problem}`),
//! `pid_splits.json` (`{split: [pid, ...]}`) and images at
//! `images/{split}/{pid}/image.png`.
//!
//! `rationales` holds the problem's `solution` only. The `lecture` is dropped: it is
//! general background shared by many problems of a skill, not a reasoning chain for
//! this question, and as a "rationale" it would teach the policy to recite lectures.
use crate::paths::{self, untrusted, Root};
use crate::report::{BadRecord, DatasetError, Loaded};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tsst_messages::{DataSource, Question};

pub const PROBLEMS_FILE: &str = "problems.json";
pub const SPLITS_FILE: &str = "pid_splits.json";

/// The fields of a `problems.json` entry that a question needs; the others (task,
/// grade, subject, ...) are accepted and ignored.
#[derive(Debug, Deserialize)]
struct Problem {
    question: String,
    choices: Vec<String>,
    answer: usize,
    #[serde(default)]
    hint: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    solution: Option<String>,
    /// The split the problem belongs to; its image lives under this split's folder
    /// even when it is loaded through a derived split such as `minitest`.
    #[serde(default)]
    split: Option<String>,
}

fn read_splits(root: &Path) -> Result<Map<String, Value>, DatasetError> {
    let path = root.join(SPLITS_FILE);
    let text = paths::read_annotations(&path)?.ok_or_else(|| DatasetError::Read {
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
    })?;
    match paths::parse_json::<Value>(&path, &text)? {
        Value::Object(map) => Ok(map),
        _ => Err(DatasetError::Format {
            path,
            reason: "expected an object {split: [pid, ...]}".to_string(),
        }),
    }
}

/// The keys of `pid_splits.json`.
pub fn splits(root: &Path) -> Result<Vec<String>, DatasetError> {
    let mut found: Vec<String> = read_splits(root)?.keys().cloned().collect();
    crate::sort_splits(&mut found);
    Ok(found)
}

/// Loads the problems listed under `split` in `pid_splits.json`, in that order.
pub fn load(root: &Path, split: &str) -> Result<Loaded, DatasetError> {
    paths::check_split(split)?;
    let root_dir = Root::open(root)?;
    let splits_path = root_dir.path().join(SPLITS_FILE);
    let mut split_map = read_splits(root_dir.path())?;
    let Some(pids) = split_map.remove(split) else {
        return Err(DatasetError::UnknownSplit {
            dataset: DataSource::Scienceqa,
            split: split.to_string(),
            path: splits_path,
            available: splits(root_dir.path())?,
        });
    };
    let Value::Array(pids) = pids else {
        return Err(DatasetError::Format {
            path: splits_path,
            reason: format!("split `{split}` is not a list of pids"),
        });
    };

    let problems_path = root_dir.path().join(PROBLEMS_FILE);
    let text = paths::read_annotations(&problems_path)?.ok_or_else(|| DatasetError::Read {
        path: problems_path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
    })?;
    let Value::Object(mut problems) = paths::parse_json::<Value>(&problems_path, &text)? else {
        return Err(DatasetError::Format {
            path: problems_path,
            reason: "expected an object {pid: problem}".to_string(),
        });
    };

    let mut loaded = Loaded::default();
    let mut seen = HashSet::new();
    for (index, pid) in pids.into_iter().enumerate() {
        let Value::String(pid) = pid else {
            loaded.bad.push(BadRecord::new(
                format!("#{index}"),
                format!("pid in {SPLITS_FILE} is not a string: {pid}"),
            ));
            continue;
        };
        if !seen.insert(pid.clone()) {
            loaded.bad.push(BadRecord::new(
                pid,
                format!("duplicate id: pid listed twice in split `{split}`"),
            ));
            continue;
        }
        // Removing (not cloning) is safe because duplicates were skipped above.
        let Some(problem) = problems.remove(&pid) else {
            loaded.reject(pid, format!("missing problem: pid not in {PROBLEMS_FILE}"));
            continue;
        };
        match question(&root_dir, split, &pid, problem) {
            Ok(q) => loaded.accept(q),
            Err(reason) => loaded.reject(pid, reason),
        }
    }
    Ok(loaded)
}

fn question(root: &Root, split: &str, pid: &str, value: Value) -> Result<Question, String> {
    let problem: Problem =
        serde_json::from_value(value).map_err(|e| format!("invalid record: {e}"))?;
    if problem.choices.is_empty() {
        return Err("empty choices".into());
    }
    if problem.answer >= problem.choices.len() {
        return Err(format!(
            "answer {} out of range of {} choices",
            problem.answer,
            problem.choices.len()
        ));
    }
    let image = match problem.image.as_deref() {
        None => None,
        Some(name) => {
            let image_split = problem.split.as_deref().unwrap_or(split);
            let rel: PathBuf = Path::new("images")
                .join(untrusted(image_split)?)
                .join(untrusted(pid)?)
                .join(untrusted(name)?);
            Some(root.image(&rel)?)
        }
    };
    Ok(Question {
        id: pid.to_string(),
        source: DataSource::Scienceqa,
        image,
        question: problem.question,
        choices: problem.choices,
        answer: problem.answer,
        rationales: non_empty(problem.solution).into_iter().collect(),
        context: non_empty(problem.hint),
    })
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
}
