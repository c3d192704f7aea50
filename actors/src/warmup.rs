//! Round 0's data (TSST.md, "Self-training"): step-by-step chains for the training
//! questions, as policy SFT records and linearly scored value records. The chains come
//! from the LLM endpoint, which sees the question, the options, the answer and any
//! human rationales; a chain is kept only if its final answer is right. Datasets that
//! ship grounded chains (the synthetic benchmark) are used as they are.
use crate::llm::{Generation, LlmClient, LlmError, Reply};
use futures_util::future::join_all;
use std::fmt;
use tsst_labels::{
    extract_answer, has_final_answer, policy_records, rule::rule_verdict, warmup_value_records,
    ChatMessage, DatasetError, DatasetOptions, LlavaRecord,
};
use tsst_messages::results::Solution;
use tsst_messages::{FinishReason, NodeId, Question};

#[derive(Debug, Default)]
pub struct Warmup {
    pub policy: Vec<LlavaRecord>,
    pub value: Vec<LlavaRecord>,
    pub questions: usize,
    /// Chains whose final answer was right.
    pub kept: usize,
    pub dropped: Dropped,
    /// Questions the endpoint could not answer for, with the reason.
    pub unanswered: Vec<(String, String)>,
}

/// Why chains were not kept: the numbers that tell a user what to change when a
/// warm-up keeps almost nothing (a bigger token budget, another prompt, another model).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// The final answer names another option.
    pub wrong: usize,
    /// The chain ended without "Final Answer:".
    pub no_final_answer: usize,
    /// The endpoint stopped at the token budget before the final answer.
    pub cut_at_length: usize,
    /// A final answer that names no option unambiguously.
    pub undecided: usize,
}

impl Dropped {
    pub fn total(&self) -> usize {
        self.wrong + self.no_final_answer + self.cut_at_length + self.undecided
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} dropped ({} wrong answer, {} no final answer, {} cut at the token budget, {} undecided)",
            self.total(),
            self.wrong,
            self.no_final_answer,
            self.cut_at_length,
            self.undecided
        )
    }
}

/// Splits a chain into steps: one per sentence, the final answer its own step.
pub fn split_steps(chain: &str) -> Vec<String> {
    let mut steps = Vec::new();
    let mut start = 0;
    let mut push = |piece: &str| {
        let piece = piece.trim();
        if !piece.is_empty() {
            steps.push(piece.to_owned());
        }
    };
    let mut chars = chain.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let sentence_end =
            matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|(_, n)| n.is_whitespace());
        let answer_next = c.is_whitespace()
            && chain[i..]
                .trim_start()
                .get(..12)
                .is_some_and(|w| w.eq_ignore_ascii_case("final answer"));
        let end = if sentence_end {
            i + c.len_utf8()
        } else if answer_next {
            i
        } else {
            continue;
        };
        push(&chain[start..end]);
        start = end;
    }
    push(&chain[start..]);
    steps
}

impl Warmup {
    /// Adds a chain if its final answer is right; `cut` says the endpoint stopped it at
    /// the token budget.
    fn offer(
        &mut self,
        q: &Question,
        chain: &str,
        cut: bool,
        options: &DatasetOptions,
    ) -> Result<(), DatasetError> {
        if !has_final_answer(chain) {
            if cut {
                self.dropped.cut_at_length += 1;
            } else {
                self.dropped.no_final_answer += 1;
            }
            return Ok(());
        }
        let extracted = extract_answer(chain);
        let verdict = match rule_verdict(&extracted, &q.choices, q.answer) {
            Some(v) if v.correct => v,
            Some(_) => {
                self.dropped.wrong += 1;
                return Ok(());
            }
            None => {
                self.dropped.undecided += 1;
                return Ok(());
            }
        };
        let steps = split_steps(chain);
        let solution = Solution {
            node: NodeId(0),
            text: steps.join(" "),
            steps: steps.clone(),
            values: Vec::new(),
            value: None,
            mean_logprob: 0.0,
            finish: FinishReason::Answer,
            verdict: Some(verdict),
        };
        self.policy.extend(policy_records(q, &[solution], options)?);
        self.value.extend(warmup_value_records(q, &steps, options)?);
        self.kept += 1;
        Ok(())
    }
}

/// Uses each question's first human rationale as its chain (the synthetic benchmark's
/// are grounded step-by-step chains ending in the final answer).
pub fn from_rationales(
    questions: &[Question],
    options: &DatasetOptions,
) -> Result<Warmup, DatasetError> {
    let mut w = Warmup {
        questions: questions.len(),
        ..Warmup::default()
    };
    for q in questions {
        match q.rationales.first() {
            Some(chain) => w.offer(q, chain, false, options)?,
            None => w.dropped.no_final_answer += 1,
        }
    }
    Ok(w)
}

/// The request for one chain.
pub fn chain_messages(q: &Question) -> Vec<ChatMessage> {
    let mut user = format!("Question: {}\n", q.question.trim());
    if let Some(context) = q.context.as_deref().filter(|c| !c.trim().is_empty()) {
        user.push_str(&format!("Context: {}\n", context.trim()));
    }
    user.push_str("Options:\n");
    for (i, c) in q.choices.iter().enumerate() {
        user.push_str(&format!("{}. {}\n", Question::letter(i), c.trim()));
    }
    user.push_str(&format!(
        "Correct answer: {}. {}\n",
        q.answer_letter(),
        q.answer_text().trim()
    ));
    for r in &q.rationales {
        user.push_str(&format!("Human rationale: {}\n", r.trim()));
    }
    user.push_str(
        "Explain step by step, as if looking at the image, how to reach the correct answer. \
         Write each step as one short sentence starting with \"Step k:\", and finish with \
         \"Final Answer: (X)\" where X is the letter of the correct option.",
    );
    vec![
        ChatMessage {
            role: "system".into(),
            content: "You write clear, grounded step-by-step reasoning for visual \
                      multiple-choice questions."
                .into(),
        },
        ChatMessage {
            role: "user".into(),
            content: user,
        },
    ]
}

/// Asks the endpoint for `samples` chains per question, generated with `generation`
/// (not the verifier's few-token budget), and keeps the right ones.
pub async fn from_llm(
    questions: &[Question],
    llm: &LlmClient,
    samples: usize,
    generation: Generation,
    options: &DatasetOptions,
) -> Result<Warmup, DatasetError> {
    let mut w = Warmup {
        questions: questions.len(),
        ..Warmup::default()
    };
    for chunk in questions.chunks(64) {
        let asks: Vec<(usize, Vec<ChatMessage>)> = chunk
            .iter()
            .enumerate()
            .flat_map(|(i, q)| (0..samples.max(1)).map(move |_| (i, chain_messages(q))))
            .collect();
        let replies: Vec<Result<Reply, LlmError>> =
            join_all(asks.iter().map(|(_, m)| llm.complete(m, generation))).await;
        for ((i, _), reply) in asks.iter().zip(replies) {
            let q = &chunk[*i];
            match reply {
                Ok(r) => w.offer(q, &r.text, r.cut_at_length(), options)?,
                Err(e) => w.unanswered.push((q.id.clone(), e.to_string())),
            }
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_split_into_sentences_and_the_answer() {
        let steps = split_steps(
            "Step 1: The red shapes are a circle and a square. Step 2: Two are circles... no, one. Final Answer: (B)",
        );
        assert_eq!(
            steps,
            vec![
                "Step 1: The red shapes are a circle and a square.",
                "Step 2: Two are circles...",
                "no, one.",
                "Final Answer: (B)"
            ]
        );
        assert_eq!(
            split_steps("The answer is 3 Final Answer: (C)"),
            vec!["The answer is 3", "Final Answer: (C)"]
        );
    }
}
