//! What a run searches with, as stored in Redis when it is enqueued: every worker
//! reads the same settings, whichever config file it was started with.
use serde::{Deserialize, Serialize};

/// How `branch` children are kept out of more candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Drawn without replacement with probability proportional to
    /// `score^(1/selection_temperature)`.
    #[default]
    Sample,
    /// The `branch` highest scores, deterministically.
    Top,
}

/// What a verified solution must get right to count as correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifierKind {
    /// The final answer: the rule, then the LLM endpoint.
    #[default]
    Answer,
    /// The final answer, and every step a fact of the scene (the synthetic
    /// benchmark's grounded chain): a right answer reached through a false step is
    /// not correct.
    Scene,
}

impl VerifierKind {
    pub fn is_answer(&self) -> bool {
        *self == VerifierKind::Answer
    }
}

/// Where one reasoning step ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepDelimiter {
    /// The first token containing "." (the reference behaviour).
    #[default]
    Period,
    /// A line break.
    Newline,
    /// The start of the next "Step k:".
    StepMarker,
}

/// Beam search, or one greedy chain per question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    Beam,
    Direct,
}

/// The search settings of a run (TSST.md, "Value-guided sentence-level beam search").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpec {
    pub mode: SearchMode,
    pub seed: u64,
    pub num_beams: u32,
    pub first_round_multiplier: u32,
    pub branch: u32,
    pub n_consistency: u32,
    /// 0 samples greedily.
    pub temperature: f64,
    /// Token budget of a whole solution.
    pub max_length: u32,
    pub step_max_tokens: u32,
    pub finish_max_chars: u32,
    pub max_rounds: u32,
    pub selection: Selection,
    pub selection_temperature: f64,
    pub step_delimiter: StepDelimiter,
    /// False ranks candidates by the policy's mean token log-probability.
    pub use_value: bool,
    /// `scripted` or an exported model directory.
    pub policy_model: String,
    pub value_model: Option<String>,
    /// The `models[].tag` this run evaluates.
    pub tag: String,
}

impl Default for SearchSpec {
    /// TSST.md's beam search with the scripted models: 3 beams (6 in round 0), branch 3,
    /// 5 solutions, temperature 0.7, sampled selection at 0.5, at most 30 rounds.
    fn default() -> Self {
        SearchSpec {
            mode: SearchMode::Beam,
            seed: 42,
            num_beams: 3,
            first_round_multiplier: 2,
            branch: 3,
            n_consistency: 5,
            temperature: 0.7,
            max_length: 1024,
            step_max_tokens: 256,
            finish_max_chars: 1000,
            max_rounds: 30,
            selection: Selection::Sample,
            selection_temperature: 0.5,
            step_delimiter: StepDelimiter::Period,
            use_value: true,
            policy_model: "scripted".into(),
            value_model: Some("scripted".into()),
            tag: "default".into(),
        }
    }
}

impl SearchSpec {
    /// Candidates drawn from each frontier node in `round`.
    pub fn samples_in_round(&self, round: u32) -> u32 {
        if round == 0 {
            self.num_beams * self.first_round_multiplier.max(1)
        } else {
            self.num_beams
        }
    }
}

/// Where a run's questions came from, kept with the run for its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    pub source: crate::DataSource,
    pub root: std::path::PathBuf,
    pub split: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_size: Option<usize>,
}

/// How a run's trees become training data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSpec {
    /// Verified-correct solutions per question kept for D+ (the reference kept 1).
    pub dplus_per_question: u32,
    /// Absent from records of runs made before it existed (they judged the answer).
    #[serde(default, skip_serializing_if = "VerifierKind::is_answer")]
    pub verifier: VerifierKind,
}

impl Default for LabelSpec {
    fn default() -> Self {
        LabelSpec {
            dplus_per_question: 1,
            verifier: VerifierKind::Answer,
        }
    }
}

/// Everything a worker needs to know about a run, stored once when it is enqueued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: String,
    pub search: SearchSpec,
    pub dataset: DatasetSpec,
    #[serde(default)]
    pub labels: LabelSpec,
}
