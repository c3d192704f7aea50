//! The results file (`tsst results RUN`, JSONL): one line per question with its
//! finished solutions, best value first. The labeler reads the same format offline.
use crate::{DataSource, FinishReason, NodeId, Verdict};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A question's status at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionStatus {
    /// Still being searched, verified or labelled.
    Pending,
    /// Search, verification and labelling are complete.
    Done,
    /// It could not be processed (see `error`).
    Failed,
}

/// One finished solution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Solution {
    pub node: NodeId,
    /// The whole solution text, steps joined by single spaces.
    pub text: String,
    /// The reasoning steps from the root, in order.
    pub steps: Vec<String>,
    /// The value of each step's node (`None` where it was never scored).
    pub values: Vec<Option<f64>>,
    /// The value of the last node (what solutions are ranked by).
    pub value: Option<f64>,
    /// Mean token log-probability of the solution under the policy.
    pub mean_logprob: f64,
    pub finish: FinishReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// One line of the results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionResult {
    pub run: String,
    pub question_id: String,
    pub source: DataSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<PathBuf>,
    pub question: String,
    /// Context shown with the question (ScienceQA's hint), part of the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub choices: Vec<String>,
    /// 0-based index of the correct choice.
    pub answer: usize,
    pub status: QuestionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Search rounds run.
    pub rounds: u32,
    /// Times the frontier emptied and the search restarted from the root.
    pub restarts: u32,
    /// Best value first.
    pub solutions: Vec<Solution>,
}
