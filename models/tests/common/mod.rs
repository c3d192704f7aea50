//! Shared by the parity tests: the fixtures written by `tools/export` and the golden
//! question they were computed for.
#![allow(dead_code)]
use serde_json::Value;
use std::path::{Path, PathBuf};
use tsst_messages::{DataSource, Question};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/models")
        .join(name)
}

pub fn goldens(name: &str) -> Value {
    let path = fixture(name).join("goldens.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Whether the ONNX Runtime library can be found; the tests skip (with a note) only
/// when it cannot. CI installs it and sets ORT_DYLIB_PATH: a library named there that
/// does not load fails the tests instead of skipping them.
pub fn ort_available() -> bool {
    match tsst_models::ort_lib::environment(None, false) {
        Ok(_) => true,
        Err(e) if std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty()) => {
            panic!("ORT_DYLIB_PATH is set but ONNX Runtime does not load: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: ONNX Runtime not found ({e})");
            false
        }
    }
}

/// The question the goldens were computed for, with the fixture's image.
pub fn golden_question(g: &Value, dir: &Path) -> Question {
    let q = &g["question"];
    Question {
        id: "golden".into(),
        source: DataSource::Aokvqa,
        image: Some(dir.join(g["image"].as_str().unwrap())),
        question: q["question"].as_str().unwrap().into(),
        choices: q["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect(),
        answer: 0,
        rationales: vec![],
        context: q["context"].as_str().map(str::to_string),
    }
}

pub fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}
