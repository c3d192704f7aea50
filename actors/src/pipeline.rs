//! Runs as a whole: enqueueing, following progress, and collecting results.
use crate::broker::{Broker, BrokerError};
use crate::outcome::{question_result, QuestionRecords};
use crate::store::{Progress, Store, StoreError, TreeRef};
use std::collections::HashMap;
use std::time::Duration;
use thiserror::Error;
use tsst_labels::LlavaRecord;
use tsst_messages::results::QuestionResult;
use tsst_messages::{DataSource, Event, ExpandTask, NodeId, Question, RunRecord, Task};

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("invalid run id: {0}")]
    RunId(String),
    #[error("run {0} has no questions")]
    Empty(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// False when the run was enqueued before (this call resumed it).
    pub new_run: bool,
    pub questions: usize,
    /// First tasks published now (0 when every tree had its task already).
    pub published: usize,
}

/// Registers a run and publishes the first task of every tree that has none yet.
/// Enqueueing the same run again duplicates nothing: it only publishes what an
/// interrupted enqueue did not.
pub async fn enqueue<S: Store, B: Broker>(
    store: &S,
    broker: &B,
    record: &RunRecord,
    questions: &[Question],
) -> Result<Enqueued, RunError> {
    enqueue_with_failures(store, broker, record, questions, &HashMap::new()).await
}

/// A selected record that failed to load, in its place among the run's questions: it
/// has only its id, so that results and metrics count it as failed, with its reason.
pub fn unloadable(source: DataSource, id: &str) -> Question {
    Question {
        id: id.to_owned(),
        source,
        image: None,
        question: String::new(),
        choices: Vec::new(),
        answer: 0,
        rationales: Vec::new(),
        context: None,
    }
}

/// [`enqueue`], where the questions named in `failed` (placeholders made by
/// [`unloadable`]) are failed at once with their reason instead of searched.
pub async fn enqueue_with_failures<S: Store, B: Broker>(
    store: &S,
    broker: &B,
    record: &RunRecord,
    questions: &[Question],
    failed: &HashMap<String, String>,
) -> Result<Enqueued, RunError> {
    tsst_messages::validate_run_id(&record.run).map_err(RunError::RunId)?;
    if questions.is_empty() {
        return Err(RunError::Empty(record.run.clone()));
    }
    broker.declare().await?;
    let new_run = store.register_run(record, questions).await?;
    let ids: Vec<String> = questions.iter().map(|q| q.id.clone()).collect();
    let mut published = 0;
    for chunk in ids.chunks(512) {
        let pending = store.init_trees(&record.run, chunk).await?;
        let unloadable: Vec<(String, Option<String>)> = pending
            .iter()
            .filter_map(|q| Some((q.clone(), Some(failed.get(q)?.clone()))))
            .collect();
        store.finish_trees(&record.run, &unloadable).await?;
        let tasks: Vec<_> = pending
            .iter()
            .filter(|q| !failed.contains_key(*q))
            .map(|q| {
                Task::Expand(ExpandTask {
                    run: record.run.clone(),
                    question: q.clone(),
                    round: 0,
                    node: NodeId::root(&record.run, q),
                })
                .envelope()
            })
            .collect();
        broker.publish(&tasks).await?;
        store.mark_enqueued(&record.run, &pending).await?;
        published += tasks.len();
    }
    if new_run {
        let started = Event::RunStarted {
            run: record.run.clone(),
            questions: questions.len() as u32,
        };
        if let Err(err) = broker.publish_events(&[started.envelope()]).await {
            tracing::warn!(%err, "could not announce the run");
        }
    }
    Ok(Enqueued {
        new_run,
        questions: questions.len(),
        published,
    })
}

/// Polls a run's progress until it is complete, reporting each change.
pub async fn follow<S: Store>(
    store: &S,
    run: &str,
    every: Duration,
    mut on_progress: impl FnMut(Progress),
) -> Result<Progress, StoreError> {
    let mut last = None;
    loop {
        let p = store.progress(run).await?;
        if last != Some(p) {
            on_progress(p);
            last = Some(p);
        }
        if p.complete() {
            return Ok(p);
        }
        tokio::time::sleep(every).await;
    }
}

/// One results line per question, in dataset order.
pub async fn results<S: Store>(store: &S, run: &str) -> Result<Vec<QuestionResult>, StoreError> {
    let record = store.run_record(run).await?;
    let questions = store.questions(run).await?;
    let mut out = Vec::with_capacity(questions.len());
    for q in questions {
        let tree = store.tree(&TreeRef::new(run, &q.id)).await?;
        out.push(question_result(run, q, &tree, &record.search));
    }
    Ok(out)
}

/// The run's next-round training data, D+ and Dv, in dataset order.
pub async fn training_records<S: Store>(
    store: &S,
    run: &str,
) -> Result<(Vec<LlavaRecord>, Vec<LlavaRecord>), StoreError> {
    let questions = store.questions(run).await?;
    let mut stored = store.records(run).await?;
    let (mut dplus, mut dv) = (Vec::new(), Vec::new());
    for q in questions {
        let Some(json) = stored.remove(&q.id) else {
            continue;
        };
        let records: QuestionRecords =
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                key: format!("records of {run}/{}", q.id),
                reason: e.to_string(),
            })?;
        dplus.extend(records.dplus);
        dv.extend(records.dv);
    }
    Ok((dplus, dv))
}
