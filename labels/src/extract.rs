//! Answer extraction from a finished solution (TSST.md, "Verification") and the
//! direct-mode letter parser (`Final Answer:\s*\(?([A-E])`).
//!
//! Choice of occurrence: when "final answer:" appears more than once, the **first**
//! one counts, for both functions here. The reference took the text after the marker
//! and its direct-mode regex matched the first occurrence; text after a later marker
//! is usually the model running on into an imagined next turn, not a correction. The
//! extracted answer stops where a later marker begins, so the rule does not see two
//! answers at once.

/// The marker the answer follows (matched without regard to ASCII case).
pub const FINAL_ANSWER_MARKER: &str = "final answer:";

/// End markers that can trail an answer in generated text; the answer stops there.
const TRAILING_END_MARKERS: [&str; 2] = ["</s>", "###"];

/// The shortest "last sentence" the fallback accepts, in characters.
const MIN_SENTENCE_CHARS: usize = 10;

/// Byte offset of the first ASCII-case-insensitive match of `needle` in `hay`.
///
/// `needle` must be ASCII: its first byte is then never inside a multi-byte UTF-8
/// sequence, so every returned offset (and offset + needle length) is a char boundary.
pub(crate) fn find_ascii_ci(hay: &str, needle: &str) -> Option<usize> {
    debug_assert!(needle.is_ascii());
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    if n.is_empty() {
        return Some(0);
    }
    if h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Whether a solution contains a final answer in the sense of the search's finish rule
/// and of assign_value_tree: "final answer", any case, colon not required.
pub fn has_final_answer(text: &str) -> bool {
    find_ascii_ci(text, "final answer").is_some()
}

/// The answer a solution gives: the text after the first "final answer:" (any case) up
/// to a later marker, "</s>" or "###", trimmed; else the last sentence of at least 10
/// characters.
///
/// A marker with nothing after it falls back to the last sentence of the text *before*
/// it, since the marker itself carries no answer. Sentences end at '.', '!', '?' or a
/// line break, which also splits decimals ("3.5") — acceptable for a fallback that
/// the LLM check reads anyway. When no sentence is long enough, the last non-empty one
/// is returned; an empty string only for a text with no words at all.
pub fn extract_answer(text: &str) -> String {
    if let Some(pos) = find_ascii_ci(text, FINAL_ANSWER_MARKER) {
        let after = &text[pos + FINAL_ANSWER_MARKER.len()..];
        let mut end = find_ascii_ci(after, FINAL_ANSWER_MARKER).unwrap_or(after.len());
        for marker in TRAILING_END_MARKERS {
            if let Some(p) = find_ascii_ci(&after[..end], marker) {
                end = end.min(p);
            }
        }
        let answer = after[..end].trim();
        if !answer.is_empty() {
            return answer.to_string();
        }
        return last_sentence(&text[..pos]);
    }
    last_sentence(text)
}

/// The last sentence with at least [`MIN_SENTENCE_CHARS`] characters (see
/// [`extract_answer`]).
pub fn last_sentence(text: &str) -> String {
    let sentences: Vec<&str> = text
        .split(['.', '!', '?', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    sentences
        .iter()
        .rev()
        .find(|s| s.chars().count() >= MIN_SENTENCE_CHARS)
        .or(sentences.last())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Direct-mode parse, `Final Answer:\s*\(?([A-E])`: the letter after the first marker
/// that is followed by one.
///
/// The marker is matched in any case ("final answer: B" is accepted); the letter must
/// be upper case, as in the reference regex, because a lower-case "a" is usually the
/// article. Unlike the bare regex, the letter must not run on into a word: "Final
/// Answer: Bear" gives `None`, not `B` (the regex's reading was a defect). "Final
/// Answer: A whale" still gives `A`, as the regex did.
pub fn parse_direct_letter(text: &str) -> Option<char> {
    let mut rest = text;
    while let Some(pos) = find_ascii_ci(rest, FINAL_ANSWER_MARKER) {
        rest = &rest[pos + FINAL_ANSWER_MARKER.len()..];
        if let Some(letter) = letter_at_start(rest) {
            return Some(letter);
        }
    }
    None
}

/// `\s*\(?([A-E])` at the start of `s`, the letter not followed by a letter or digit.
fn letter_at_start(s: &str) -> Option<char> {
    let s = s.trim_start();
    let s = s.strip_prefix('(').unwrap_or(s);
    let mut chars = s.chars();
    let letter = chars.next().filter(|c| ('A'..='E').contains(c))?;
    match chars.next() {
        Some(next) if next.is_alphanumeric() => None,
        _ => Some(letter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_text_after_marker_any_case() {
        assert_eq!(extract_answer("It is big. Final Answer: (B)."), "(B).");
        assert_eq!(extract_answer("so final answer: B"), "B");
        assert_eq!(extract_answer("FINAL ANSWER:   whale  "), "whale");
        assert_eq!(
            extract_answer("Final Answer: (B) whale</s>extra"),
            "(B) whale"
        );
        assert_eq!(extract_answer("Final Answer: C ### USER: hi"), "C");
    }

    #[test]
    fn first_marker_counts_and_stops_at_the_next() {
        assert_eq!(
            extract_answer("Final Answer: B. USER: again? Final Answer: C"),
            "B. USER: again?"
        );
    }

    #[test]
    fn empty_marker_falls_back_to_text_before_it() {
        assert_eq!(
            extract_answer("The animal is a whale. Final answer:"),
            "The animal is a whale"
        );
    }

    #[test]
    fn falls_back_to_last_long_sentence() {
        assert_eq!(
            extract_answer("The animal is large. It swims in the sea. Ok."),
            "It swims in the sea"
        );
        // No sentence reaches 10 characters: the last non-empty one.
        assert_eq!(extract_answer("Yes. B."), "B");
        assert_eq!(extract_answer("  \n "), "");
        assert_eq!(extract_answer("It is a whale!\nSo"), "It is a whale");
    }

    #[test]
    fn multibyte_text_is_safe() {
        assert_eq!(extract_answer("Ünïcödé ☃ Final Answer: ☃ B"), "☃ B");
        assert_eq!(
            extract_answer("Ünïcödé ☃☃☃☃☃☃☃☃☃☃. ok"),
            "Ünïcödé ☃☃☃☃☃☃☃☃☃☃"
        );
    }

    #[test]
    fn direct_letter_variants() {
        assert_eq!(parse_direct_letter("Final Answer: (B)."), Some('B'));
        assert_eq!(parse_direct_letter("final answer: B"), Some('B'));
        assert_eq!(parse_direct_letter("Final Answer: (B) whale"), Some('B'));
        assert_eq!(parse_direct_letter("Final Answer:E"), Some('E'));
        assert_eq!(parse_direct_letter("Final Answer: whale"), None);
        assert_eq!(parse_direct_letter("Final Answer: Bear"), None);
        assert_eq!(parse_direct_letter("Final Answer: F"), None);
        assert_eq!(parse_direct_letter("Final Answer: b"), None);
        assert_eq!(parse_direct_letter("no marker B"), None);
        // The first marker followed by a letter, as `re.search` would find.
        assert_eq!(
            parse_direct_letter("Final Answer: hmm. Final Answer: (C)"),
            Some('C')
        );
        assert_eq!(
            parse_direct_letter("Final Answer: A. Final Answer: C"),
            Some('A')
        );
    }

    #[test]
    fn final_answer_presence() {
        assert!(has_final_answer("so the FINAL answer is B"));
        assert!(!has_final_answer("the answer is B"));
    }
}
