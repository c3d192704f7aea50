//! When a partial solution stops being expanded (TSST.md, step 4).
use tsst_messages::{FinishReason, SearchSpec};

/// Markers that end a solution: an answer, a separator the model uses to close its
/// turn, or the start of a new turn it should not have written.
const END_MARKERS: [&str; 6] = ["###", "---", "</s>", ". . .", "USER", "Human"];

/// Whether a kept node leaves the frontier, and why.
pub fn finish_reason(text: &str, total_tokens: u32, spec: &SearchSpec) -> Option<FinishReason> {
    if text.to_ascii_lowercase().contains("final answer")
        || END_MARKERS.iter().any(|m| text.contains(m))
    {
        Some(FinishReason::Answer)
    } else if text.chars().count() > spec.finish_max_chars as usize
        || total_tokens >= spec.max_length
    {
        Some(FinishReason::Length)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::tests::spec;

    #[test]
    fn answers_and_markers_finish() {
        let s = spec();
        assert_eq!(
            finish_reason("Step 1: two. final ANSWER: (B)", 10, &s),
            Some(FinishReason::Answer)
        );
        assert_eq!(finish_reason("a ### b", 3, &s), Some(FinishReason::Answer));
        assert_eq!(
            finish_reason("USER: next", 3, &s),
            Some(FinishReason::Answer)
        );
        assert_eq!(finish_reason("Step 1: I count two circles.", 8, &s), None);
    }

    #[test]
    fn budgets_finish() {
        let s = spec();
        let long = "x".repeat(s.finish_max_chars as usize + 1);
        assert_eq!(finish_reason(&long, 1, &s), Some(FinishReason::Length));
        assert_eq!(
            finish_reason("short", s.max_length, &s),
            Some(FinishReason::Length)
        );
    }
}
