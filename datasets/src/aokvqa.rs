//! A-OKVQA in its published format: `aokvqa_v1p0_{split}.json`, images at
//! `{root}/{split}2017/{image_id:012}.jpg`.
use serde::{Deserialize, Serialize};

/// One record of `aokvqa_v1p0_{split}.json`, field for field as published.
/// The synthetic benchmark writes this same type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AokvqaRecord {
    pub split: String,
    pub image_id: u64,
    pub question_id: String,
    pub question: String,
    pub choices: Vec<String>,
    pub correct_choice_idx: usize,
    pub direct_answers: Vec<String>,
    pub difficult_direct_answer: bool,
    pub rationales: Vec<String>,
}

/// `aokvqa_v1p0_{split}.json`
pub fn annotations_file(split: &str) -> String {
    format!("aokvqa_v1p0_{split}.json")
}

/// `{split}2017/{image_id:012}.jpg`, relative to the dataset root.
pub fn image_rel_path(split: &str, image_id: u64) -> String {
    format!("{split}2017/{image_id:012}.jpg")
}

use crate::paths::{self, Root};
use crate::report::{BadRecord, DatasetError, Loaded};
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use tsst_messages::{DataSource, Question};

/// The splits whose `aokvqa_v1p0_{split}.json` exists under `root`.
pub fn splits(root: &Path) -> Result<Vec<String>, DatasetError> {
    let entries = std::fs::read_dir(root).map_err(|source| DatasetError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| {
            name.strip_prefix("aokvqa_v1p0_")
                .and_then(|rest| rest.strip_suffix(".json"))
                .map(str::to_string)
        })
        .filter(|split| !split.is_empty())
        .collect();
    crate::sort_splits(&mut found);
    Ok(found)
}

/// Loads `{root}/aokvqa_v1p0_{split}.json`. The list is parsed element by element so
/// one malformed record is reported and the rest still load.
pub fn load(root: &Path, split: &str) -> Result<Loaded, DatasetError> {
    paths::check_split(split)?;
    let root_dir = Root::open(root)?;
    let path = root_dir.path().join(annotations_file(split));
    let Some(text) = paths::read_annotations(&path)? else {
        return Err(DatasetError::UnknownSplit {
            dataset: DataSource::Aokvqa,
            split: split.to_string(),
            path,
            available: splits(root)?,
        });
    };
    let Value::Array(records) = paths::parse_json::<Value>(&path, &text)? else {
        return Err(DatasetError::Format {
            path,
            reason: "expected a JSON list of A-OKVQA records".to_string(),
        });
    };

    let mut loaded = Loaded::default();
    let mut seen = HashSet::new();
    for (index, value) in records.into_iter().enumerate() {
        let id = value
            .get("question_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{index}"));
        if value.get("question_id").is_some() && !seen.insert(id.clone()) {
            loaded
                .bad
                .push(BadRecord::new(id, "duplicate id: question_id seen earlier"));
            continue;
        }
        match question(&root_dir, split, value) {
            Ok(q) => loaded.accept(q),
            Err(reason) => loaded.reject(id, reason),
        }
    }
    Ok(loaded)
}

fn question(root: &Root, split: &str, value: Value) -> Result<Question, String> {
    if value.is_object() && value.get("correct_choice_idx").is_none() {
        // The published test split has no answers; we cannot use a question without one.
        return Err(
            "missing field `correct_choice_idx`: no answer (unlabelled test split?)".into(),
        );
    }
    let record: AokvqaRecord =
        serde_json::from_value(value).map_err(|e| format!("invalid record: {e}"))?;
    if record.choices.is_empty() {
        return Err("empty choices".into());
    }
    if record.correct_choice_idx >= record.choices.len() {
        return Err(format!(
            "correct_choice_idx {} out of range of {} choices",
            record.correct_choice_idx,
            record.choices.len()
        ));
    }
    let image = root.image(Path::new(&image_rel_path(split, record.image_id)))?;
    Ok(Question {
        id: record.question_id,
        source: DataSource::Aokvqa,
        image: Some(image),
        question: record.question,
        choices: record.choices,
        answer: record.correct_choice_idx,
        rationales: record.rationales,
        context: None,
    })
}
