//! The LLM check (TSST.md, "Verification"): the chat messages sent to the verifier
//! endpoint for answers the rule could not decide, and the reading of its reply.
use crate::rule::identify_option;
use serde::{Deserialize, Serialize};
use tsst_messages::{Question, Verdict, VerdictSource};

/// One chat-completions message, serialisable as the OpenAI `messages` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system` or `user`.
    pub role: String,
    pub content: String,
}

/// The verifier's instructions: one word out, so the reply can be read without
/// guessing and a cache can key on (question, extracted answer).
pub const LLM_SYSTEM_PROMPT: &str = "You are a precise evaluator. You are given a \
multiple-choice question, its options, the correct answer and a response to the question. \
Decide whether the response gives the correct answer. Reply with only one word: True if \
the response gives the correct answer, False if it gives a different answer, or Unknown if \
it gives no answer or you cannot tell.";

/// The system and user messages for one check.
///
/// `response` is what is judged; the verifier passes the extracted answer (shorter and
/// what the cache is keyed by), but a whole solution works too. The user message is:
///
/// ```text
/// Question: {question}
/// Options:
/// A. {choice 0}
/// B. {choice 1}
/// Correct answer: {letter}. {text}
/// Response: {response}
/// Does the response give the correct answer? Reply with only True, False or Unknown.
/// ```
///
/// An `answer` past the options still names its letter, with no text, rather than
/// failing: the data was checked when it was loaded.
pub fn llm_messages(
    question: &str,
    choices: &[String],
    answer: usize,
    response: &str,
) -> Vec<ChatMessage> {
    let mut user = format!("Question: {}\nOptions:\n", question.trim());
    for (i, choice) in choices.iter().enumerate() {
        user.push_str(&format!("{}. {}\n", Question::letter(i), choice.trim()));
    }
    let answer_text = choices.get(answer).map(|c| c.trim()).unwrap_or("");
    user.push_str(&format!(
        "Correct answer: {}. {}\n",
        Question::letter(answer),
        answer_text
    ));
    user.push_str(&format!("Response: {}\n", response.trim()));
    user.push_str(
        "Does the response give the correct answer? Reply with only True, False or Unknown.",
    );
    vec![
        ChatMessage {
            role: "system".to_string(),
            content: LLM_SYSTEM_PROMPT.to_string(),
        },
        ChatMessage {
            role: "user".to_string(),
            content: user,
        },
    ]
}

/// [`llm_messages`] for a loaded question.
pub fn llm_messages_for(question: &Question, response: &str) -> Vec<ChatMessage> {
    llm_messages(
        &question.question,
        &question.choices,
        question.answer,
        response,
    )
}

/// What the verifier's reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LlmWord {
    True,
    False,
    Unknown,
    /// None of the three words appears.
    Unparsable,
}

impl LlmWord {
    /// Only a definite "true" counts as correct.
    pub fn is_correct(self) -> bool {
        self == LlmWord::True
    }

    /// The word as stored in `Verdict::note` when it is not a plain true/false.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmWord::True => "true",
            LlmWord::False => "false",
            LlmWord::Unknown => "unknown",
            LlmWord::Unparsable => "unparsable",
        }
    }
}

/// The first word-bounded "true", "false" or "unknown" in the reply, any case.
///
/// Words are maximal runs of letters, digits and '_' (the `\b` of a regex), so
/// "**True**" and "True." read as True while "untrue" and "falsehood" are no match.
/// Negation is not understood ("not true" reads as True): the system prompt asks for a
/// single word and the reference read replies the same way.
pub fn parse_llm_reply(reply: &str) -> LlmWord {
    reply
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .find_map(|word| {
            if word.eq_ignore_ascii_case("true") {
                Some(LlmWord::True)
            } else if word.eq_ignore_ascii_case("false") {
                Some(LlmWord::False)
            } else if word.eq_ignore_ascii_case("unknown") {
                Some(LlmWord::Unknown)
            } else {
                None
            }
        })
        .unwrap_or(LlmWord::Unparsable)
}

/// The [`Verdict`] for an answer the LLM decided: correct only on True, the word kept
/// as a note when it was neither True nor False.
///
/// The verdict names the option the answer stands for, so that equivalent answers vote
/// together: on True the correct one (the LLM judged the answer equivalent to it);
/// otherwise the option [`identify_option`] reads from the answer, unless that is the
/// correct one, which would contradict the verdict.
pub fn llm_verdict(extracted: &str, word: LlmWord, choices: &[String], correct: usize) -> Verdict {
    let letter = if word.is_correct() {
        Some(correct)
    } else {
        identify_option(extracted, choices).filter(|&i| i != correct)
    };
    Verdict {
        correct: word.is_correct(),
        extracted: extracted.to_string(),
        letter: letter.map(Question::letter),
        by: VerdictSource::Llm,
        note: matches!(word, LlmWord::Unknown | LlmWord::Unparsable)
            .then(|| word.as_str().to_string()),
        grounded: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_words() {
        assert_eq!(parse_llm_reply("True"), LlmWord::True);
        assert_eq!(parse_llm_reply("**True**"), LlmWord::True);
        assert_eq!(parse_llm_reply("True."), LlmWord::True);
        assert_eq!(parse_llm_reply(" TRUE\n"), LlmWord::True);
        assert_eq!(parse_llm_reply("I think it's false"), LlmWord::False);
        assert_eq!(parse_llm_reply("True/False"), LlmWord::True);
        assert_eq!(parse_llm_reply("untrue, so False"), LlmWord::False);
        assert_eq!(parse_llm_reply("untrue"), LlmWord::Unparsable);
        assert_eq!(parse_llm_reply("true_ish"), LlmWord::Unparsable);
        assert_eq!(parse_llm_reply("Unknown."), LlmWord::Unknown);
        assert_eq!(parse_llm_reply(""), LlmWord::Unparsable);
        assert_eq!(parse_llm_reply("Yes"), LlmWord::Unparsable);
        assert!(parse_llm_reply("true").is_correct());
        assert!(!parse_llm_reply("unknown").is_correct());
    }

    #[test]
    fn verdicts() {
        let c: Vec<String> = ["dog", "whale", "cat"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let v = llm_verdict("a big sea mammal", LlmWord::True, &c, 1);
        assert!(v.correct);
        assert_eq!(
            (v.by, v.note, v.letter),
            (VerdictSource::Llm, None, Some('B'))
        );
        let v = llm_verdict("a whale", LlmWord::Unknown, &c, 1);
        assert!(!v.correct);
        assert_eq!(v.note.as_deref(), Some("unknown"));
        assert_eq!(
            v.letter, None,
            "naming the right option contradicts the verdict"
        );
        let v = llm_verdict("it is the dog, option A", LlmWord::False, &c, 1);
        assert_eq!((v.note, v.letter), (None, Some('A')));
        assert_eq!(llm_verdict("x", LlmWord::False, &c, 1).letter, None);
    }

    #[test]
    fn messages_name_everything() {
        let choices = vec!["dog".to_string(), " whale ".to_string()];
        let m = llm_messages("What swims?", &choices, 1, "(B) whale");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].role, "system");
        for word in ["precise evaluator", "True", "False", "Unknown"] {
            assert!(m[0].content.contains(word), "{word}");
        }
        assert_eq!(m[1].role, "user");
        assert_eq!(
            m[1].content,
            "Question: What swims?\nOptions:\nA. dog\nB. whale\nCorrect answer: B. whale\n\
             Response: (B) whale\nDoes the response give the correct answer? Reply with only \
             True, False or Unknown."
        );
        let json = serde_json::to_value(&m[1]).unwrap_or_default();
        assert_eq!(json["role"], "user");
    }

    #[test]
    fn answer_out_of_range_does_not_panic() {
        let m = llm_messages("q", &["x".to_string()], 3, "r");
        assert!(m[1].content.contains("Correct answer: D. \n"));
    }
}
