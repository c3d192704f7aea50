//! What a searched question yields: its results line, read from its stored tree, and
//! its training records. The labeler writes them; `pipeline` reads them back.
use crate::store::TreeView;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tsst_labels::{policy_records, value_records, DatasetOptions, LlavaRecord};
use tsst_messages::results::{QuestionResult, QuestionStatus, Solution};
use tsst_messages::{Node, NodeId, Question, RunRecord, SearchSpec, TreeStatus};

/// What the labeler stores per question.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecords {
    /// Policy training records (D+).
    pub dplus: Vec<LlavaRecord>,
    /// Value training records (Dv).
    pub dv: Vec<LlavaRecord>,
}

/// The question's training records. Image paths are written relative to the dataset
/// root, where the training side finds the images.
pub fn label_question(
    record: &RunRecord,
    question: &Question,
    result: &tsst_messages::results::QuestionResult,
) -> Result<QuestionRecords, tsst_labels::DatasetError> {
    let options = DatasetOptions {
        k: record.labels.dplus_per_question.max(1) as usize,
        image_root: Some(record.dataset.root.clone()),
        ..DatasetOptions::default()
    };
    Ok(QuestionRecords {
        dplus: policy_records(question, &result.solutions, &options)?,
        dv: value_records(question, &result.solutions, &options)?,
    })
}

/// A question's results line from its stored tree, solutions best first by what
/// ranked them in the search: the value, or with `use_value: false` the mean token
/// log-probability of the solution. Unscored and NaN last; ties in finish order.
pub fn question_result(
    run: &str,
    q: Question,
    tree: &TreeView,
    spec: &SearchSpec,
) -> QuestionResult {
    let by_id: HashMap<NodeId, &Node> = tree.nodes.iter().map(|n| (n.id, n)).collect();
    let mut solutions: Vec<(usize, Solution)> = tree
        .finished
        .iter()
        .enumerate()
        .filter_map(|(order, id)| {
            let leaf = by_id.get(id)?;
            let mut path = vec![*leaf];
            while let Some(parent) = path
                .last()
                .and_then(|n| n.parent)
                .and_then(|p| by_id.get(&p))
            {
                if parent.parent.is_none() {
                    break;
                }
                path.push(parent);
            }
            path.reverse();
            let tokens: u32 = path.iter().map(|n| n.tokens).sum();
            let logprob: f64 = path.iter().map(|n| n.logprob).sum();
            Some((
                order,
                Solution {
                    node: leaf.id,
                    text: leaf.text.clone(),
                    steps: path.iter().map(|n| n.step.clone()).collect(),
                    values: path.iter().map(|n| n.value).collect(),
                    value: leaf.value,
                    mean_logprob: if tokens == 0 {
                        0.0
                    } else {
                        logprob / f64::from(tokens)
                    },
                    finish: leaf.finished.unwrap_or(tsst_messages::FinishReason::Answer),
                    verdict: tree.verdicts.get(&leaf.id).cloned(),
                },
            ))
        })
        .collect();
    let rank = |s: &Solution| {
        crate::search::rank_key(if spec.use_value {
            s.value.unwrap_or(f64::NEG_INFINITY)
        } else {
            s.mean_logprob
        })
    };
    solutions.sort_by(|(oa, a), (ob, b)| rank(b).total_cmp(&rank(a)).then(oa.cmp(ob)));
    QuestionResult {
        run: run.to_owned(),
        question_id: q.id,
        source: q.source,
        image: q.image,
        question: q.question,
        context: q.context,
        choices: q.choices,
        answer: q.answer,
        status: match tree.state.status {
            TreeStatus::Done => QuestionStatus::Done,
            TreeStatus::Failed => QuestionStatus::Failed,
            TreeStatus::Searching | TreeStatus::Searched => QuestionStatus::Pending,
        },
        error: tree.error.clone(),
        rounds: tree.state.round,
        restarts: tree.state.restarts,
        solutions: solutions.into_iter().map(|(_, s)| s).collect(),
    }
}
