//! The task prompt `multiple_choice_steps_beam` and the `llava_v1` conversation
//! template (TSST.md, "Inputs and prompt"). Training data (D+, Dv) and the model
//! runtime must build the same strings, so both come from here.
//!
//! Exact forms (`\n` is a line break; there is no trailing line break):
//!
//! ```text
//! task_prompt:   {INSTRUCTION}\n[Context: {context}\n]Question: {question}\nOptions:\nA. {c0}\nB. {c1}...
//! conversation:  {SYSTEM} USER: [<image>\n]{task_prompt} ASSISTANT:[ {partial}]
//! ```
use tsst_messages::Question;

/// The instruction that opens every task prompt.
pub const INSTRUCTION: &str = "Answer the following multiple-choice question by reasoning \
step by step. Write each step as one short sentence, then finish with \"Final Answer: X\", \
where X is the letter of the correct option.";

/// The `llava_v1` system line.
pub const SYSTEM: &str = "A chat between a curious human and an artificial intelligence \
assistant. The assistant gives helpful, detailed, and polite answers to the human's \
questions.";

/// The placeholder the vision features replace, once per image.
pub const IMAGE_TOKEN: &str = "<image>";

/// The task prompt for `question` (see the module docs).
///
/// Leading and trailing whitespace of the question, the context and each choice is
/// dropped so stray dataset whitespace cannot split the token stream differently
/// between rounds. An empty or blank context is left out, as is the line for it.
pub fn task_prompt(question: &Question) -> String {
    let mut lines = vec![INSTRUCTION.to_string()];
    if let Some(context) = question.context.as_deref().map(str::trim) {
        if !context.is_empty() {
            lines.push(format!("Context: {context}"));
        }
    }
    lines.push(format!("Question: {}", question.question.trim()));
    lines.push("Options:".to_string());
    for (i, choice) in question.choices.iter().enumerate() {
        lines.push(format!("{}. {}", Question::letter(i), choice.trim()));
    }
    lines.join("\n")
}

/// The human turn's text as LLaVA training data and the conversation both carry it:
/// `<image>\n{prompt}` with an image, the bare prompt without.
pub fn human_turn(prompt: &str, has_image: bool) -> String {
    if has_image {
        format!("{IMAGE_TOKEN}\n{prompt}")
    } else {
        prompt.to_string()
    }
}

/// The whole model input for `question` with the assistant's text so far.
///
/// With an empty `partial` this ends in `ASSISTANT:` with no trailing space, which is
/// the generation prompt LLaVA's `llava_v1` template produces; otherwise it ends in
/// `ASSISTANT: {partial}` exactly as given (no trimming, no `</s>`), so the model
/// continues the partial solution rather than starting a new turn.
pub fn conversation(question: &Question, partial: &str) -> String {
    conversation_from_prompt(&task_prompt(question), question.image.is_some(), partial)
}

/// [`conversation`] for an already built task prompt.
pub fn conversation_from_prompt(prompt: &str, has_image: bool, partial: &str) -> String {
    let human = human_turn(prompt, has_image);
    if partial.is_empty() {
        format!("{SYSTEM} USER: {human} ASSISTANT:")
    } else {
        format!("{SYSTEM} USER: {human} ASSISTANT: {partial}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tsst_messages::DataSource;

    fn question(image: bool, context: Option<&str>) -> Question {
        Question {
            id: "q1".to_string(),
            source: DataSource::Scienceqa,
            image: image.then(|| PathBuf::from("images/train/1/image.png")),
            question: " Which animal is a mammal? ".to_string(),
            choices: vec!["shark".to_string(), "whale ".to_string()],
            answer: 1,
            rationales: vec![],
            context: context.map(str::to_string),
        }
    }

    #[test]
    fn prompt_lines() {
        assert_eq!(
            task_prompt(&question(true, None)),
            format!(
                "{INSTRUCTION}\nQuestion: Which animal is a mammal?\nOptions:\nA. shark\nB. whale"
            )
        );
        assert_eq!(
            task_prompt(&question(true, Some(" Look at the picture. "))),
            format!(
                "{INSTRUCTION}\nContext: Look at the picture.\nQuestion: Which animal is a \
                 mammal?\nOptions:\nA. shark\nB. whale"
            )
        );
        // A blank hint is no context.
        assert_eq!(
            task_prompt(&question(true, Some("  "))),
            task_prompt(&question(true, None))
        );
        assert!(INSTRUCTION.contains("Final Answer: X"));
    }

    #[test]
    fn conversation_forms() {
        let q = question(true, None);
        let prompt = task_prompt(&q);
        assert_eq!(
            conversation(&q, ""),
            format!("{SYSTEM} USER: <image>\n{prompt} ASSISTANT:")
        );
        assert_eq!(
            conversation(&q, "Whales breathe air."),
            format!("{SYSTEM} USER: <image>\n{prompt} ASSISTANT: Whales breathe air.")
        );
        let text_only = question(false, None);
        assert_eq!(
            conversation(&text_only, "Step."),
            format!("{SYSTEM} USER: {prompt} ASSISTANT: Step.")
        );
        assert!(!conversation(&q, "x").contains("</s>"));
        assert!(SYSTEM.starts_with("A chat between a curious human"));
        assert!(SYSTEM.ends_with("answers to the human's questions."));
    }
}
