//! The multiple-choice rule (TSST.md, "Verification"): decide an extracted answer by
//! its letter or by the exact text of one option; leave everything else to the LLM.
//!
//! The rule only decides when the answer names exactly one option unambiguously, so
//! its verdicts can be trusted without the LLM:
//! - a letter A–E at the start, bare (`B`, `B.`, `B)`), in brackets (`(B)`, `[B]`),
//!   optionally after "option"/"choice", optionally followed by that option's text
//!   (`(B) whale`); a lower-case letter only in brackets or as the whole answer, since
//!   "a" is usually the article;
//! - or the whole answer equal to one option's text, ignoring case, punctuation and
//!   whitespace.
//!
//! Anything after the letter that is not its option's text ("B or C", "A whale" when
//! "whale" is B) makes the letter reading void, and a letter reading that disagrees
//! with a text reading is ambiguous: both leave the answer undecided.
use tsst_messages::{Question, Verdict, VerdictSource};

/// What the rule concluded about one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleDecision {
    /// The answer names the correct option.
    Correct { letter: char },
    /// The answer names another option.
    Wrong { letter: char },
    /// No option, or more than one, could be read from the answer.
    Undecided,
}

impl RuleDecision {
    /// The option letter the answer resolved to, when it did.
    pub fn letter(self) -> Option<char> {
        match self {
            RuleDecision::Correct { letter } | RuleDecision::Wrong { letter } => Some(letter),
            RuleDecision::Undecided => None,
        }
    }
}

/// Decide `answer` (already extracted) against `choices`, `correct` being the 0-based
/// index of the right one.
pub fn decide(answer: &str, choices: &[String], correct: usize) -> RuleDecision {
    match resolve_choice(answer, choices) {
        Some(i) if i == correct => RuleDecision::Correct {
            letter: Question::letter(i),
        },
        Some(i) => RuleDecision::Wrong {
            letter: Question::letter(i),
        },
        None => RuleDecision::Undecided,
    }
}

/// The rule's [`Verdict`] on an extracted answer, or `None` when the LLM must decide.
pub fn rule_verdict(extracted: &str, choices: &[String], correct: usize) -> Option<Verdict> {
    let decision = decide(extracted, choices, correct);
    decision.letter().map(|letter| Verdict {
        correct: matches!(decision, RuleDecision::Correct { .. }),
        extracted: extracted.to_string(),
        letter: Some(letter),
        by: VerdictSource::Rule,
        note: None,
        grounded: None,
    })
}

/// Direct evaluation's verdict on a whole chain: the letter of
/// `Final Answer:\s*\(?([A-E])` against the correct one, no LLM. A chain without such a
/// letter (or with one past the options) is wrong, and says why.
pub fn direct_verdict(text: &str, choices: &[String], correct: usize) -> Verdict {
    let letter = crate::extract::parse_direct_letter(text)
        .filter(|&l| usize::from(l as u8 - b'A') < choices.len());
    Verdict {
        correct: letter == Some(Question::letter(correct)),
        extracted: letter.map_or_else(|| crate::extract::extract_answer(text), String::from),
        letter,
        by: VerdictSource::Direct,
        note: letter
            .is_none()
            .then(|| "no option letter after \"Final Answer:\"".to_string()),
        grounded: None,
    }
}

/// The 0-based option `answer` names unambiguously, if any (see the module docs).
pub fn resolve_choice(answer: &str, choices: &[String]) -> Option<usize> {
    let answer = answer.trim();
    let by_text = unique_text_match(answer, choices);
    let by_letter = parse_letter_prefix(strip_option_word(answer))
        .filter(|&(i, _)| i < choices.len())
        .and_then(|(i, rest)| {
            let rest = normalize_text(rest);
            (rest.is_empty() || rest == normalize_text(&choices[i])).then_some(i)
        });
    match (by_letter, by_text) {
        (Some(l), Some(t)) if l != t => None,
        (Some(l), _) => Some(l),
        (None, t) => t,
    }
}

/// Lower case, every run of non-alphanumeric characters one space, trimmed: the form in
/// which answers and options are compared.
pub fn normalize_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.extend(c.to_lowercase());
        } else {
            pending_space = true;
        }
    }
    out
}

/// The option whose text equals the whole answer; `None` for none or several (two
/// options with the same text cannot tell the letter).
fn unique_text_match(answer: &str, choices: &[String]) -> Option<usize> {
    let answer = normalize_text(answer);
    if answer.is_empty() {
        return None;
    }
    let mut found = choices
        .iter()
        .enumerate()
        .filter(|(_, c)| normalize_text(c) == answer)
        .map(|(i, _)| i);
    match (found.next(), found.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    }
}

/// "option B" / "Choice: (B)" → "B" / "(B)".
fn strip_option_word(s: &str) -> &str {
    for word in ["option", "choice"] {
        if let Some(p) = s.get(..word.len()) {
            if p.eq_ignore_ascii_case(word) {
                let rest = &s[word.len()..];
                let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ':');
                // Only a real separator: "options" is not "option" + "s".
                if trimmed.len() < rest.len() {
                    return trimmed;
                }
            }
        }
    }
    s
}

/// The option an answer points at, read more loosely than the rule, for an answer the
/// LLM has judged (so that equivalent answers vote together): the rule's reading; else
/// exactly one option letter written as `(B)` or after "option"/"choice" anywhere in
/// the answer; else exactly one option whose text appears in it as whole words (an
/// option contained in another that also appears, "cat" in "black cat", yields to it).
pub fn identify_option(answer: &str, choices: &[String]) -> Option<usize> {
    if let Some(i) = resolve_choice(answer, choices) {
        return Some(i);
    }
    let words: Vec<&str> = answer
        .split(|c: char| !c.is_alphanumeric() && c != '(' && c != ')')
        .filter(|w| !w.is_empty())
        .collect();
    let mut letters: Vec<usize> = Vec::new();
    for (k, w) in words.iter().enumerate() {
        let after_word = k > 0
            && ["option", "choice"]
                .iter()
                .any(|o| words[k - 1].eq_ignore_ascii_case(o));
        let bare = w.strip_prefix('(').and_then(|x| x.strip_suffix(')'));
        let letter = match (bare, after_word) {
            (Some(l), _) => Some(l),
            (None, true) => Some(*w),
            (None, false) => None,
        };
        if let Some(i) = letter
            .filter(|l| l.len() == 1)
            .and_then(|l| l.chars().next())
            .filter(char::is_ascii_uppercase)
            .map(|c| usize::from(c as u8 - b'A'))
            .filter(|&i| i < choices.len())
        {
            if !letters.contains(&i) {
                letters.push(i);
            }
        }
    }
    if letters.len() == 1 {
        return Some(letters[0]);
    }
    let padded = format!(" {} ", normalize_text(answer));
    let found: Vec<(usize, String)> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| (i, normalize_text(c)))
        .filter(|(_, c)| !c.is_empty() && padded.contains(&format!(" {c} ")))
        .collect();
    let outer: Vec<usize> = found
        .iter()
        .filter(|(_, c)| {
            !found
                .iter()
                .any(|(_, other)| other != c && format!(" {other} ").contains(&format!(" {c} ")))
        })
        .map(|(i, _)| *i)
        .collect();
    match outer.as_slice() {
        [i] => Some(*i),
        _ => None,
    }
}

/// A leading option letter and the text after it.
fn parse_letter_prefix(s: &str) -> Option<(usize, &str)> {
    let (close, body) = match s.chars().next()? {
        '(' => (Some(')'), &s[1..]),
        '[' => (Some(']'), &s[1..]),
        _ => (None, s),
    };
    let c = body.chars().next()?;
    let upper = c.to_ascii_uppercase();
    if !('A'..='E').contains(&upper) {
        return None;
    }
    let index = usize::from(upper as u8 - b'A');
    // The letter is ASCII, so one byte.
    let after = &body[1..];
    match close {
        Some(close) => after.strip_prefix(close).map(|rest| (index, rest)),
        None => {
            if after.chars().next().is_some_and(char::is_alphanumeric) {
                return None;
            }
            if c.is_ascii_lowercase() && !normalize_text(after).is_empty() {
                return None;
            }
            let rest = after.strip_prefix(')').unwrap_or(after);
            Some((index, rest))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_identified_inside_free_answers() {
        let c: Vec<String> = ["cat", "black cat", "whale", "dog"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let id = |a: &str| identify_option(a, &c);
        assert_eq!(id("C"), Some(2));
        assert_eq!(id("I think it is (C), the big one"), Some(2));
        assert_eq!(id("the answer is option D because it barks"), Some(3));
        assert_eq!(id("it is a whale swimming"), Some(2));
        assert_eq!(id("the black cat on the left"), Some(1));
        assert_eq!(id("a dog or a whale"), None);
        assert_eq!(id("(A) or (B)"), None);
        assert_eq!(id("A large marine mammal"), None);
    }

    #[test]
    fn direct_verdicts_read_the_letter() {
        let c: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let v = direct_verdict("Step 1: x. Final Answer: (B)", &c, 1);
        assert!(v.correct && v.letter == Some('B') && v.by == VerdictSource::Direct);
        let v = direct_verdict("Final Answer: C.", &c, 1);
        assert!(!v.correct && v.letter == Some('C'));
        let v = direct_verdict("Final Answer: E", &c, 1);
        assert!(!v.correct && v.letter.is_none() && v.note.is_some());
        let v = direct_verdict("the answer is b", &c, 1);
        assert!(!v.correct && v.letter.is_none());
    }

    fn choices() -> Vec<String> {
        ["dog", "whale", "sea lion", "Cat."]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn d(answer: &str) -> RuleDecision {
        decide(answer, &choices(), 1)
    }

    #[test]
    fn letters_with_and_without_brackets() {
        let right = RuleDecision::Correct { letter: 'B' };
        for a in [
            "B", "B.", "(B)", "(B).", "[B]", "B)", "(b)", "b", "b.", "option B",
        ] {
            assert_eq!(d(a), right, "{a}");
        }
        for a in ["Choice: (B)", " (B) whale.", "B. Whale", "B: whale"] {
            assert_eq!(d(a), right, "{a}");
        }
        assert_eq!(d("A"), RuleDecision::Wrong { letter: 'A' });
        assert_eq!(d("(D) cat"), RuleDecision::Wrong { letter: 'D' });
    }

    #[test]
    fn option_text_alone() {
        assert_eq!(d("Whale!"), RuleDecision::Correct { letter: 'B' });
        assert_eq!(d("  SEA-LION "), RuleDecision::Wrong { letter: 'C' });
        assert_eq!(d("cat"), RuleDecision::Wrong { letter: 'D' });
    }

    #[test]
    fn undecided_cases() {
        for a in [
            "",
            "a big whale",      // not an option's whole text
            "B or C",           // two letters
            "(B) (C)",          // two letters
            "A whale",          // letter A but B's text
            "(A) whale",        // letter A but B's text
            "E",                // no fifth option
            "Because it swims", // a word, not a letter
            "b whale",          // lower-case letter followed by text
            "whale or dog",
        ] {
            assert_eq!(d(a), RuleDecision::Undecided, "{a:?}");
        }
    }

    #[test]
    fn letter_and_text_readings_must_agree() {
        let letters: Vec<String> = ["C", "D", "A", "B"].iter().map(|s| s.to_string()).collect();
        // "A" is letter A (index 0) but also the text of option index 2.
        assert_eq!(decide("A", &letters, 0), RuleDecision::Undecided);
        let same: Vec<String> = ["A", "B"].iter().map(|s| s.to_string()).collect();
        assert_eq!(decide("B", &same, 1), RuleDecision::Correct { letter: 'B' });
    }

    #[test]
    fn duplicate_option_texts_are_ambiguous() {
        let dup: Vec<String> = ["red", "Red.", "blue"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(decide("red", &dup, 0), RuleDecision::Undecided);
        assert_eq!(decide("B", &dup, 0), RuleDecision::Wrong { letter: 'B' });
    }

    #[test]
    fn verdicts() {
        let v = rule_verdict("(B) whale", &choices(), 1);
        assert_eq!(
            v.as_ref().map(|v| (v.correct, v.letter)),
            Some((true, Some('B')))
        );
        assert_eq!(v.map(|v| v.by), Some(VerdictSource::Rule));
        let v = rule_verdict("A", &choices(), 1);
        assert_eq!(v.map(|v| v.correct), Some(false));
        assert_eq!(rule_verdict("B or C", &choices(), 1), None);
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize_text("  Sea--Lion!! "), "sea lion");
        assert_eq!(normalize_text("ÉCOLE"), "école");
        assert_eq!(normalize_text("..."), "");
    }
}
