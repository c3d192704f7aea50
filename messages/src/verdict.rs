//! A verifier's decision on one finished solution, as stored in Redis.
use serde::{Deserialize, Serialize};

/// Who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictSource {
    /// The multiple-choice rule (letter or exact option text).
    Rule,
    /// The LLM verifier endpoint.
    Llm,
    /// An earlier decision on the same (question, extracted answer).
    Cache,
    /// Direct evaluation's parse, `Final Answer:\s*\(?([A-E])`; no LLM.
    Direct,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Only a definite "true" counts as correct.
    pub correct: bool,
    /// The answer text extracted from the solution.
    pub extracted: String,
    /// The choice letter the answer was resolved to, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letter: Option<char>,
    pub by: VerdictSource,
    /// The verifier's raw word when it was neither true nor false ("unknown", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Whether every step states a fact of the scene (`tsst_labels::faithful`), where
    /// the question has a grounded chain to check against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounded: Option<bool>,
}
