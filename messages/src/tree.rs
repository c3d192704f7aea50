//! Search-tree records as they are stored in Redis.
use crate::ids::NodeId;
use serde::{Deserialize, Serialize};

/// Why a node left the frontier for the finished set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The text contains a final answer or another end marker.
    Answer,
    /// The policy produced no new step.
    Exhausted,
    /// The solution reached the character or token budget.
    Length,
    /// The policy ended the sequence (EOS) with this step: it chose to stop.
    Eos,
}

/// One reasoning step and the partial solution it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    /// `None` for the root, whose text is empty.
    pub parent: Option<NodeId>,
    /// Search round that created the node (the root is round 0's parent).
    pub round: u32,
    pub depth: u32,
    /// Index among the samples drawn from the parent in its round.
    pub sample: u32,
    /// This step's text.
    pub step: String,
    /// The partial solution from the root through this step.
    pub text: String,
    /// Sum of the step's token log-probabilities under the policy.
    pub logprob: f64,
    /// Number of tokens in the step.
    pub tokens: u32,
    /// Tokens of the whole partial solution.
    pub total_tokens: u32,
    /// Sum of the token log-probabilities of the whole partial solution.
    #[serde(default)]
    pub total_logprob: f64,
    /// The step ended with the end-of-sequence token: the node is finished once kept
    /// and never expanded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub eos: bool,
    /// The value model's score, once scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<FinishReason>,
}

impl Node {
    pub fn root(id: NodeId) -> Node {
        Node {
            id,
            parent: None,
            round: 0,
            depth: 0,
            sample: 0,
            step: String::new(),
            text: String::new(),
            logprob: 0.0,
            tokens: 0,
            total_tokens: 0,
            total_logprob: 0.0,
            eos: false,
            value: None,
            finished: None,
        }
    }

    /// Mean token log-probability of the whole partial solution: what ranks
    /// candidates and finished solutions when `use_value` is off.
    pub fn mean_logprob(&self) -> f64 {
        if self.total_tokens == 0 {
            0.0
        } else {
            self.total_logprob / f64::from(self.total_tokens)
        }
    }
}

/// Where a question's tree stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeStatus {
    Searching,
    /// The search is over; verification is next.
    Searched,
    /// Verified and labelled: nothing more to do.
    Done,
    /// The question could not be processed.
    Failed,
}

impl TreeStatus {
    pub fn name(self) -> &'static str {
        match self {
            TreeStatus::Searching => "searching",
            TreeStatus::Searched => "searched",
            TreeStatus::Done => "done",
            TreeStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<TreeStatus> {
        [
            TreeStatus::Searching,
            TreeStatus::Searched,
            TreeStatus::Done,
            TreeStatus::Failed,
        ]
        .into_iter()
        .find(|t| t.name() == s)
    }
}

/// The per-question counters kept beside the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeState {
    /// The round being searched (the number of rounds run, once searched).
    pub round: u32,
    pub status: TreeStatus,
    pub restarts: u32,
}
