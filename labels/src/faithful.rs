//! Chain faithfulness on the synthetic benchmark: does every step state a true fact
//! about the image? The benchmark writes each question's grounded chain from its scene
//! (`rationales[0]`, one `Step k: ...` sentence per fact, datasets/src/synth); the
//! chain a model writes is faithful when each of its steps is one of those facts.
//!
//! It is a lower bound on true statements: a true fact worded otherwise counts as
//! ungrounded. For models trained on the benchmark's chains (they write its
//! sentences) the two agree, and a check needs no parser per sentence form. Data
//! without such chains (A-OKVQA's free-text rationales) has no reference: nothing is
//! judged there.
use std::collections::BTreeSet;
use tsst_messages::{Question, Verdict};

/// The facts of a question's grounded chain, `None` where it has none.
pub fn reference_steps(question: &Question) -> Option<BTreeSet<String>> {
    let chain = question.rationales.first()?;
    if !chain.trim_start().starts_with("Step 1:") {
        return None;
    }
    Some(steps(chain).collect())
}

/// The sentences of a chain, without `Step k:` and without the final answer.
fn steps(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_inclusive('.')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|s| strip_step_label(&s).to_owned())
        .filter(|s| !s.is_empty() && !s.starts_with("Final Answer") && s != ".")
}

fn strip_step_label(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("Step ") else {
        return s;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest[digits..].strip_prefix(':') {
        Some(after) if digits > 0 => after.trim_start(),
        _ => s,
    }
}

/// The first step of `text` that is not one of the reference facts.
pub fn first_ungrounded(text: &str, reference: &BTreeSet<String>) -> Option<String> {
    steps(text).find(|s| !reference.contains(s))
}

/// Records on the verdict whether the chain is grounded; with `required` (the run's
/// `verifier: scene`), a right answer reached through an ungrounded step is not
/// correct: its labels then teach neither the policy nor the value model that chain.
pub fn apply(verdict: &mut Verdict, text: &str, reference: &BTreeSet<String>, required: bool) {
    let ungrounded = first_ungrounded(text, reference);
    verdict.grounded = Some(ungrounded.is_none());
    if let (true, true, Some(step)) = (required, verdict.correct, ungrounded) {
        verdict.correct = false;
        verdict.note = Some(format!(
            "the answer is right, but a step is not grounded in the scene: {step}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsst_messages::{DataSource, VerdictSource};

    fn question(chain: &str) -> Question {
        Question {
            id: "q".into(),
            source: DataSource::Aokvqa,
            image: None,
            question: "How many red squares are there?".into(),
            choices: vec!["1".into(), "2".into()],
            answer: 1,
            rationales: vec![chain.into()],
            context: None,
        }
    }

    fn right() -> Verdict {
        Verdict {
            correct: true,
            extracted: "(B)".into(),
            letter: Some('B'),
            by: VerdictSource::Rule,
            note: None,
            grounded: None,
        }
    }

    const CHAIN: &str = "Step 1: The red shapes are a large square at the top and a small \
        square in the centre. Step 2: So the number of red squares is 2. Final Answer: (B)";

    #[test]
    fn a_chain_of_the_scene_facts_is_grounded() {
        let r = reference_steps(&question(CHAIN)).unwrap();
        assert_eq!(r.len(), 2);
        let mut v = right();
        apply(&mut v, &format!(" {CHAIN}"), &r, true);
        assert_eq!((v.correct, v.grounded), (true, Some(true)));
        // Fewer facts, in another order, still true.
        let short = "Step 1: So the number of red squares is 2. Final Answer: (B)";
        assert_eq!(first_ungrounded(short, &r), None);
    }

    #[test]
    fn a_false_step_is_named_and_fails_the_answer_only_when_required() {
        let r = reference_steps(&question(CHAIN)).unwrap();
        let wrong = "Step 1: The red shapes are a large circle at the top. \
            Step 2: So the number of red squares is 2. Final Answer: (B)";
        let mut v = right();
        apply(&mut v, wrong, &r, false);
        assert_eq!((v.correct, v.grounded), (true, Some(false)));
        apply(&mut v, wrong, &r, true);
        assert!(!v.correct);
        assert!(v.note.unwrap().contains("a large circle at the top."));
    }

    #[test]
    fn free_text_rationales_are_no_reference() {
        assert!(reference_steps(&question("Because the sign says so.")).is_none());
    }
}
