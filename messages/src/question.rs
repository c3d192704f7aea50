//! The one question type every dataset loads into; it is stored in Redis with a run.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Where a question came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    Aokvqa,
    Scienceqa,
    Vcr,
}

impl DataSource {
    pub const ALL: [DataSource; 3] = [DataSource::Aokvqa, DataSource::Scienceqa, DataSource::Vcr];

    pub fn name(self) -> &'static str {
        match self {
            DataSource::Aokvqa => "aokvqa",
            DataSource::Scienceqa => "scienceqa",
            DataSource::Vcr => "vcr",
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DataSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "aokvqa" => Ok(DataSource::Aokvqa),
            "scienceqa" => Ok(DataSource::Scienceqa),
            "vcr" => Ok(DataSource::Vcr),
            _ => Err(format!(
                "unknown data source `{s}` (expected aokvqa, scienceqa or vcr)"
            )),
        }
    }
}

/// A multiple-choice visual question, whatever dataset it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// Unique within its source (A-OKVQA `question_id`, ScienceQA pid, VCR `annot_id`).
    pub id: String,
    pub source: DataSource,
    /// The image file, already checked to exist inside the dataset root; `None` for
    /// text-only ScienceQA questions.
    pub image: Option<PathBuf>,
    pub question: String,
    pub choices: Vec<String>,
    /// 0-based index into `choices`.
    pub answer: usize,
    /// Human-written rationales or solutions, when the dataset has them.
    #[serde(default)]
    pub rationales: Vec<String>,
    /// Extra context shown with the question (ScienceQA's hint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

impl Question {
    /// The letter of choice `i`: A, B, C, ...
    pub fn letter(i: usize) -> char {
        (b'A' + (i as u8 % 26)) as char
    }

    pub fn answer_letter(&self) -> char {
        Self::letter(self.answer)
    }

    pub fn answer_text(&self) -> &str {
        self.choices
            .get(self.answer)
            .map(String::as_str)
            .unwrap_or("")
    }
}
