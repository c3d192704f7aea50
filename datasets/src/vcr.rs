//! VCR in its published format: `{split}.jsonl`, images and metadata under
//! `vcr1images/`. Questions come out in file order; the seeded order that
//! `data_partition` indexes into is applied by [`crate::select`].
use crate::paths::{self, untrusted, Root};
use crate::report::{BadRecord, DatasetError, Loaded};
use crate::vcr_text::{Metadata, ObjectNames, Token};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tsst_messages::{DataSource, Question};

pub const IMAGES_DIR: &str = "vcr1images";

/// The fields of a VCR record that a question needs; the rest (`question_orig`,
/// `movie`, `interesting_scores`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct VcrRecord {
    annot_id: String,
    objects: Vec<String>,
    img_fn: String,
    metadata_fn: String,
    question: Vec<Token>,
    answer_choices: Vec<Vec<Token>>,
    answer_label: usize,
    rationale_choices: Vec<Vec<Token>>,
    rationale_label: usize,
}

/// The splits with a `{split}.jsonl` file in `root`.
pub fn splits(root: &Path) -> Result<Vec<String>, DatasetError> {
    let entries = std::fs::read_dir(root).map_err(|source| DatasetError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".jsonl").map(str::to_string))
        .filter(|split| !split.is_empty())
        .collect();
    crate::sort_splits(&mut found);
    Ok(found)
}

/// Loads `{root}/{split}.jsonl` in file order.
pub fn load(root: &Path, split: &str) -> Result<Loaded, DatasetError> {
    paths::check_split(split)?;
    let root_dir = Root::open(root)?;
    let path = root_dir.path().join(format!("{split}.jsonl"));
    let Some(text) = paths::read_annotations(&path)? else {
        return Err(DatasetError::UnknownSplit {
            dataset: DataSource::Vcr,
            split: split.to_string(),
            path,
            available: splits(root)?,
        });
    };

    let mut loaded = Loaded::default();
    let mut seen = HashSet::new();
    // Several questions share an image; read each metadata file once.
    let mut metadata: HashMap<PathBuf, Option<Metadata>> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_id = format!("line {}", index + 1);
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                loaded
                    .bad
                    .push(BadRecord::new(line_id, format!("not JSON: {e}")));
                continue;
            }
        };
        // Only records with an annot_id have a place in VCR's order (sorted ids).
        let annot_id = value
            .get("annot_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(id) = &annot_id {
            if !seen.insert(id.clone()) {
                loaded
                    .bad
                    .push(BadRecord::new(id, "duplicate id: annot_id seen earlier"));
                continue;
            }
        }
        match (question(&root_dir, &mut metadata, value), annot_id) {
            (Ok(q), _) => loaded.accept(q),
            (Err(reason), Some(id)) => loaded.reject(id, reason),
            (Err(reason), None) => loaded.bad.push(BadRecord::new(line_id, reason)),
        }
    }
    Ok(loaded)
}

fn question(
    root: &Root,
    metadata: &mut HashMap<PathBuf, Option<Metadata>>,
    value: Value,
) -> Result<Question, String> {
    let record: VcrRecord =
        serde_json::from_value(value).map_err(|e| format!("invalid record: {e}"))?;
    if record.answer_choices.is_empty() {
        return Err("empty answer_choices".into());
    }
    if record.answer_label >= record.answer_choices.len() {
        return Err(format!(
            "answer_label {} out of range of {} answer_choices",
            record.answer_label,
            record.answer_choices.len()
        ));
    }
    if record.rationale_label >= record.rationale_choices.len() {
        return Err(format!(
            "rationale_label {} out of range of {} rationale_choices",
            record.rationale_label,
            record.rationale_choices.len()
        ));
    }

    let image = root.image(&Path::new(IMAGES_DIR).join(untrusted(&record.img_fn)?))?;
    let meta_rel = Path::new(IMAGES_DIR).join(untrusted(&record.metadata_fn)?);
    let meta = metadata
        .entry(meta_rel.clone())
        .or_insert_with(|| read_metadata(root, &meta_rel));

    let names = ObjectNames::new(&record.objects, meta.as_ref());
    let choices = record
        .answer_choices
        .iter()
        .map(|c| names.render(c))
        .collect::<Result<Vec<_>, _>>()?;
    // Every rationale is rendered, not just the kept one, so a broken reference
    // anywhere in the record marks it bad rather than passing unnoticed.
    let mut rationales = record
        .rationale_choices
        .iter()
        .map(|c| names.render(c))
        .collect::<Result<Vec<_>, _>>()?;
    let rationale = rationales.swap_remove(record.rationale_label);
    Ok(Question {
        id: record.annot_id,
        source: DataSource::Vcr,
        image: Some(image),
        question: names.render(&record.question)?,
        choices,
        answer: record.answer_label,
        rationales: vec![rationale],
        context: None,
    })
}

/// Positions are a nicety: a missing or malformed metadata file only means persons
/// are named without them. An escaping path is still refused by `existing_file`,
/// and then, too, no positions are used.
fn read_metadata(root: &Root, rel: &Path) -> Option<Metadata> {
    let path = root.existing_file(rel, "metadata").ok()?;
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}
