//! One round of the sentence-level beam search as pure functions over nodes, so the
//! generator and scorer actors only move data between the store and these.
use super::finish::finish_reason;
use super::select::select;
use std::collections::HashMap;
use tsst_backend::StepSample;
use tsst_labels::has_final_answer;
use tsst_messages::{stable_hash, ChildStep, FinishReason, Node, NodeId, SearchMode, SearchSpec};

/// The seed of one sample. It depends on the question, the parent's text, the round
/// and the sample index, never on the run id, the worker or the batch: the same config
/// gives the same tree wherever and however it is computed.
pub fn sample_seed(
    spec: &SearchSpec,
    question: &str,
    parent: &Node,
    round: u32,
    sample: u32,
) -> u64 {
    stable_hash(&[
        b"sample",
        &spec.seed.to_le_bytes(),
        question.as_bytes(),
        parent.text.as_bytes(),
        &round.to_le_bytes(),
        &sample.to_le_bytes(),
    ])
}

/// Turns a parent's samples into its children; identical sibling steps are merged
/// into the first sample that produced them.
///
/// An empty step is dropped (the node yielded nothing), except when the policy ended
/// the sequence with it below the root: stopping is a choice, and that child competes
/// in selection like any other. A direct chain always keeps its one generation, so a
/// question never ends without a solution.
pub fn children(
    run: &str,
    question: &str,
    parent: &Node,
    round: u32,
    samples: &[StepSample],
    mode: SearchMode,
) -> Vec<Node> {
    let mut seen: Vec<(&str, bool)> = Vec::new();
    let mut out = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let step = s.text.trim();
        let keep =
            !step.is_empty() || mode == SearchMode::Direct || (s.eos && parent.parent.is_some());
        if !keep || seen.contains(&(step, s.eos)) {
            continue;
        }
        seen.push((step, s.eos));
        out.push(child(
            run,
            question,
            parent,
            round,
            &ChildStep {
                sample: i as u32,
                step: step.to_owned(),
                logprob: s.logprob,
                tokens: s.tokens,
                eos: s.eos,
            },
        ));
    }
    out
}

/// The children an expansion made, again from its steps (a score task carries them):
/// the same nodes [`children`] made from the samples.
pub fn rebuild(
    run: &str,
    question: &str,
    parent: &Node,
    round: u32,
    steps: &[ChildStep],
) -> Vec<Node> {
    steps
        .iter()
        .map(|s| child(run, question, parent, round, s))
        .collect()
}

fn child(run: &str, question: &str, parent: &Node, round: u32, s: &ChildStep) -> Node {
    let step = s.step.as_str();
    let text = match (parent.text.is_empty(), step.is_empty()) {
        (true, _) => step.to_owned(),
        (false, true) => parent.text.clone(),
        (false, false) => format!("{} {step}", parent.text),
    };
    Node {
        id: NodeId::child(run, question, parent.id, round, s.sample),
        parent: Some(parent.id),
        round,
        depth: parent.depth + 1,
        sample: s.sample,
        step: step.to_owned(),
        text,
        logprob: s.logprob,
        tokens: s.tokens,
        total_tokens: parent.total_tokens + s.tokens,
        total_logprob: parent.total_logprob + s.logprob,
        eos: s.eos,
        value: None,
        finished: None,
    }
}

/// What the end of a round decides for a question's tree.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundOutcome {
    /// Nodes that join the finished set, in order, with why.
    pub finished: Vec<(NodeId, FinishReason)>,
    /// The next round's frontier (the root again on a restart); empty when done.
    pub next_frontier: Vec<NodeId>,
    /// The question's search is over.
    pub done: bool,
    /// The frontier emptied before enough solutions were found.
    pub restarted: bool,
}

/// Concludes `round` once every frontier node's children are scored.
/// `children` may be in any order; `finished_before` counts earlier solutions.
pub fn conclude(
    spec: &SearchSpec,
    question: &str,
    round: u32,
    root: NodeId,
    frontier: &[Node],
    children: &[Node],
    finished_before: u32,
) -> RoundOutcome {
    let position: HashMap<NodeId, usize> = frontier
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id, i))
        .collect();
    let mut candidates: Vec<Node> = children
        .iter()
        .filter(|c| c.parent.is_some_and(|p| position.contains_key(&p)))
        .cloned()
        .collect();
    candidates.sort_by_key(|c| (c.parent.map(|p| position[&p]), c.sample));

    // (node, why, whether it states a final answer)
    let mut finished: Vec<(&Node, FinishReason)> = Vec::new();
    // A node that yields no new step is finished as it is (the root has no text to
    // offer as a solution, so it is not).
    for node in frontier {
        let has_children = candidates.iter().any(|c| c.parent == Some(node.id));
        if !has_children && node.parent.is_some() {
            finished.push((node, FinishReason::Exhausted));
        }
    }
    let mut next_frontier = Vec::new();
    for i in select(&candidates, spec, question, round) {
        let c = &candidates[i];
        match finish_reason(c, spec) {
            Some(reason) => finished.push((c, reason)),
            None => next_frontier.push(c.id),
        }
    }
    // Answered solutions take the places left under n_consistency before answerless
    // ones (exhausted, cut by length or stopped without an answer) of the same round;
    // the sort is stable.
    finished.sort_by_key(|(n, _)| !has_final_answer(&n.text));
    let mut finished: Vec<(NodeId, FinishReason)> =
        finished.into_iter().map(|(n, r)| (n.id, r)).collect();
    let room = spec.n_consistency.saturating_sub(finished_before) as usize;
    finished.truncate(room);
    let total = finished_before + finished.len() as u32;
    // A direct chain is one generation: its one round is the whole search.
    let done = total >= spec.n_consistency
        || round + 1 >= spec.max_rounds
        || spec.mode == SearchMode::Direct;
    let restarted = !done && next_frontier.is_empty();
    if done {
        next_frontier.clear();
    } else if restarted {
        next_frontier.push(root);
    }
    RoundOutcome {
        finished,
        next_frontier,
        done,
        restarted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::tests::spec;

    fn sample(text: &str) -> StepSample {
        StepSample {
            text: text.into(),
            logprob: -1.0,
            tokens: 4,
            eos: false,
        }
    }

    /// Deterministic selection of `branch`, collecting `n_consistency` solutions.
    fn top(branch: u32, n_consistency: u32) -> SearchSpec {
        SearchSpec {
            selection: tsst_messages::Selection::Top,
            branch,
            n_consistency,
            ..spec()
        }
    }

    fn beam(run: &str, q: &str, parent: &Node, round: u32, samples: &[StepSample]) -> Vec<Node> {
        children(run, q, parent, round, samples, SearchMode::Beam)
    }

    #[test]
    fn identical_siblings_merge_and_empty_steps_drop() {
        let root = Node::root(NodeId::root("r", "q"));
        let kids = beam(
            "r",
            "q",
            &root,
            0,
            &[
                sample("Step 1: a."),
                sample(" Step 1: a. "),
                sample(""),
                sample("Step 1: b."),
            ],
        );
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[0].sample, 0);
        assert_eq!(kids[1].sample, 3);
        assert_eq!(kids[1].text, "Step 1: b.");
        let grand = beam("r", "q", &kids[0], 1, &[sample("Step 2: c.")]);
        assert_eq!(grand[0].text, "Step 1: a. Step 2: c.");
        assert_eq!(grand[0].depth, 2);
        assert_eq!(grand[0].total_tokens, 8);
        // What a score task carries makes the same nodes again.
        let steps: Vec<ChildStep> = kids.iter().map(ChildStep::of).collect();
        assert_eq!(rebuild("r", "q", &root, 0, &steps), kids);
        let steps: Vec<ChildStep> = grand.iter().map(ChildStep::of).collect();
        assert_eq!(rebuild("r", "q", &kids[0], 1, &steps), grand);
    }

    fn scored(parent: &Node, round: u32, texts: &[(&str, f64)]) -> Vec<Node> {
        let samples: Vec<StepSample> = texts.iter().map(|(t, _)| sample(t)).collect();
        let mut kids = beam("r", "q", parent, round, &samples);
        for (k, (_, v)) in kids.iter_mut().zip(texts) {
            k.value = Some(*v);
        }
        kids
    }

    #[test]
    fn finished_kept_nodes_leave_the_frontier() {
        let s = top(2, 3);
        let root = Node::root(NodeId::root("r", "q"));
        let kids = scored(
            &root,
            0,
            &[
                ("Final Answer: (A).", 0.9),
                ("Step 1: x.", 0.8),
                ("Step 1: y.", 0.1),
            ],
        );
        let out = conclude(&s, "q", 0, root.id, std::slice::from_ref(&root), &kids, 0);
        assert_eq!(out.finished, vec![(kids[0].id, FinishReason::Answer)]);
        assert_eq!(out.next_frontier, vec![kids[1].id]);
        assert!(!out.done && !out.restarted);
    }

    #[test]
    fn enough_solutions_end_the_search() {
        let mut s = spec();
        s.branch = 3;
        s.n_consistency = 2;
        let root = Node::root(NodeId::root("r", "q"));
        let kids = scored(
            &root,
            0,
            &[
                ("Final Answer: (A).", 0.9),
                ("Final Answer: (B).", 0.8),
                ("Final Answer: (C).", 0.7),
            ],
        );
        let out = conclude(&s, "q", 0, root.id, std::slice::from_ref(&root), &kids, 0);
        assert_eq!(out.finished.len(), 2, "capped at n_consistency");
        assert!(out.done);
        assert!(out.next_frontier.is_empty());
    }

    #[test]
    fn an_empty_frontier_restarts_from_the_root() {
        let mut s = spec();
        s.n_consistency = 5;
        let root = Node::root(NodeId::root("r", "q"));
        let kids = scored(&root, 0, &[("Step 1: a.", 0.5)]);
        // kids[0] yields nothing in round 1: it is finished as it is.
        let out = conclude(&s, "q", 1, root.id, &kids, &[], 0);
        assert_eq!(out.finished, vec![(kids[0].id, FinishReason::Exhausted)]);
        assert!(out.restarted);
        assert_eq!(out.next_frontier, vec![root.id]);
    }

    #[test]
    fn the_round_limit_ends_the_search() {
        let mut s = spec();
        s.max_rounds = 2;
        let root = Node::root(NodeId::root("r", "q"));
        let kids = scored(&root, 1, &[("Step 2: a.", 0.5)]);
        let out = conclude(&s, "q", 1, root.id, std::slice::from_ref(&root), &kids, 0);
        assert!(out.done);
        assert!(out.finished.is_empty());
    }

    #[test]
    fn an_end_of_sequence_child_competes_and_finishes() {
        let s = top(2, 5);
        let root = Node::root(NodeId::root("r", "q"));
        let parent = &scored(&root, 0, &[("Step 1: two circles.", 0.5)])[0];
        let eos = |text: &str| StepSample {
            eos: true,
            ..sample(text)
        };
        let mut kids = beam(
            "r",
            "q",
            parent,
            1,
            &[eos(""), sample("Step 2: x."), eos("Step 2: x."), eos("")],
        );
        // The empty stop is kept (with the parent's text); a stop and a continuation
        // with the same text are different children; two empty stops merge.
        assert_eq!(kids.len(), 3, "{kids:?}");
        assert_eq!(kids[0].text, parent.text);
        assert!(kids[0].eos && !kids[1].eos && kids[2].eos);
        assert_eq!(kids[2].total_logprob, parent.total_logprob - 1.0);
        for (k, v) in kids.iter_mut().zip([0.9, 0.8, 0.1]) {
            k.value = Some(v);
        }
        let out = conclude(&s, "q", 1, root.id, std::slice::from_ref(parent), &kids, 0);
        assert_eq!(out.finished, vec![(kids[0].id, FinishReason::Eos)]);
        assert_eq!(
            out.next_frontier,
            vec![kids[1].id],
            "never expanded past EOS"
        );
        // At the root an empty stop offers nothing and is dropped.
        assert!(beam("r", "q", &root, 0, &[eos("")]).is_empty());
    }

    #[test]
    fn answerless_solutions_do_not_take_an_answered_ones_place() {
        let s = top(2, 2);
        let root = Node::root(NodeId::root("r", "q"));
        let frontier = scored(&root, 0, &[("Step 1: a.", 0.5), ("Step 1: b.", 0.5)]);
        // frontier[0] yields nothing (exhausted); frontier[1] yields an answer.
        let kids = scored(&frontier[1], 1, &[("Final Answer: (B).", 0.9)]);
        let out = conclude(&s, "q", 1, root.id, &frontier, &kids, 1);
        assert_eq!(out.finished, vec![(kids[0].id, FinishReason::Answer)]);
        assert!(out.done);
    }

    #[test]
    fn a_direct_chain_is_one_round_and_one_solution() {
        let mut s = spec();
        s.mode = SearchMode::Direct;
        s.num_beams = 1;
        s.branch = 1;
        s.n_consistency = 1;
        let root = Node::root(NodeId::root("r", "q"));
        // Even an empty generation is the question's one solution.
        let kids = children("r", "q", &root, 0, &[sample("")], SearchMode::Direct);
        assert_eq!(kids.len(), 1);
        let out = conclude(&s, "q", 0, root.id, std::slice::from_ref(&root), &kids, 0);
        assert_eq!(out.finished, vec![(kids[0].id, FinishReason::Length)]);
        assert!(out.done && out.next_frontier.is_empty() && !out.restarted);
    }
}
