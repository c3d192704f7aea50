//! When a partial solution stops being expanded (TSST.md, step 4).
use tsst_messages::{FinishReason, Node, SearchMode, SearchSpec};

/// Markers that end a solution: an answer, a separator the model uses to close its
/// turn, or the start of a new turn it should not have written.
const END_MARKERS: [&str; 6] = ["###", "---", "</s>", ". . .", "USER", "Human"];

/// Whether a kept node leaves the frontier, and why. A direct chain is one whole
/// generation, so it is always finished: by its answer, by end-of-sequence, or by the
/// token budget it ran to (the beam search's character limit does not apply).
pub fn finish_reason(node: &Node, spec: &SearchSpec) -> Option<FinishReason> {
    let text = &node.text;
    if text.to_ascii_lowercase().contains("final answer")
        || END_MARKERS.iter().any(|m| text.contains(m))
    {
        Some(FinishReason::Answer)
    } else if node.eos {
        Some(FinishReason::Eos)
    } else if spec.mode == SearchMode::Direct
        || text.chars().count() > spec.finish_max_chars as usize
        || node.total_tokens >= spec.max_length
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
    use tsst_messages::NodeId;

    fn node(text: &str, total_tokens: u32, eos: bool) -> Node {
        let mut n = Node::root(NodeId(1));
        n.text = text.into();
        n.total_tokens = total_tokens;
        n.eos = eos;
        n
    }

    #[test]
    fn answers_and_markers_finish() {
        let s = spec();
        let reason = |text: &str| finish_reason(&node(text, 3, false), &s);
        assert_eq!(
            reason("Step 1: two. final ANSWER: (B)"),
            Some(FinishReason::Answer)
        );
        assert_eq!(reason("a ### b"), Some(FinishReason::Answer));
        assert_eq!(reason("USER: next"), Some(FinishReason::Answer));
        assert_eq!(reason("Step 1: I count two circles."), None);
    }

    #[test]
    fn budgets_finish() {
        let s = spec();
        let long = "x".repeat(s.finish_max_chars as usize + 1);
        assert_eq!(
            finish_reason(&node(&long, 1, false), &s),
            Some(FinishReason::Length)
        );
        assert_eq!(
            finish_reason(&node("short", s.max_length, false), &s),
            Some(FinishReason::Length)
        );
    }

    #[test]
    fn end_of_sequence_finishes() {
        let s = spec();
        assert_eq!(
            finish_reason(&node("Step 1: I see two circles.", 8, true), &s),
            Some(FinishReason::Eos)
        );
        // An answer is still an answer when the policy also stopped.
        assert_eq!(
            finish_reason(&node("Final Answer: (A)", 8, true), &s),
            Some(FinishReason::Answer)
        );
    }

    #[test]
    fn a_direct_chain_always_finishes_and_ignores_the_character_limit() {
        let mut s = spec();
        s.mode = SearchMode::Direct;
        let long = format!("{} Final Answer: (C)", "Step: x. ".repeat(200));
        assert_eq!(
            finish_reason(&node(&long, 900, false), &s),
            Some(FinishReason::Answer)
        );
        assert_eq!(
            finish_reason(&node("Step 1: x.", 4, false), &s),
            Some(FinishReason::Length)
        );
    }
}
