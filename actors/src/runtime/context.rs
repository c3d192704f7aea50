//! What every role instance of a worker shares: the store, the broker, the models and
//! a cache of the runs it has seen (a run's record and questions never change).
use super::models::Models;
use crate::broker::{Broker, Consumer};
use crate::llm::LlmClient;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tsst_messages::{Event, Question, RunRecord};

pub type DeliveryOf<B> = <<B as Broker>::Consumer as Consumer>::Delivery;

/// A run as a worker needs it.
pub struct RunInfo {
    pub record: RunRecord,
    pub questions: HashMap<String, Arc<Question>>,
}

pub struct Context<S: Store, B: Broker> {
    pub store: S,
    pub broker: B,
    pub models: Models,
    /// The LLM verifier; without one, answers the rule cannot decide are recorded as
    /// not correct, with a note.
    pub llm: Option<LlmClient>,
    /// What the trainer role runs; without it the role cannot be served.
    pub trainer: Option<Arc<tsst_config::TrainerConfig>>,
    runs: Mutex<HashMap<String, Arc<RunInfo>>>,
}

impl<S: Store, B: Broker> Context<S, B> {
    pub fn new(store: S, broker: B, models: Models) -> Self {
        Context {
            store,
            broker,
            models,
            llm: None,
            trainer: None,
            runs: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_llm(mut self, llm: Option<LlmClient>) -> Self {
        self.llm = llm;
        self
    }

    pub fn with_trainer(mut self, trainer: Option<tsst_config::TrainerConfig>) -> Self {
        self.trainer = trainer.map(Arc::new);
        self
    }

    pub async fn run(&self, run: &str) -> Result<Arc<RunInfo>, StoreError> {
        if let Some(info) = self.runs.lock().unwrap_or_else(|p| p.into_inner()).get(run) {
            return Ok(info.clone());
        }
        let record = self.store.run_record(run).await?;
        let questions = self.store.questions(run).await?;
        let info = Arc::new(RunInfo {
            record,
            questions: questions
                .into_iter()
                .map(|q| (q.id.clone(), Arc::new(q)))
                .collect(),
        });
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run.to_owned(), info.clone());
        Ok(info)
    }

    /// The run and question a task names. `Ok(Err(reason))` when the store does not
    /// know them (the task can never succeed: dead-letter it); `Err` when the store
    /// failed (the task may succeed later: requeue it).
    pub async fn lookup(
        &self,
        run: &str,
        question: &str,
    ) -> Result<Result<(Arc<RunInfo>, Arc<Question>), String>, StoreError> {
        let info = match self.run(run).await {
            Ok(info) => info,
            Err(e @ StoreError::UnknownRun(_)) => return Ok(Err(e.to_string())),
            Err(e) => return Err(e),
        };
        Ok(match info.questions.get(question).cloned() {
            Some(q) => Ok((info, q)),
            None => Err(format!("run {run} has no question {question}")),
        })
    }

    /// Publishes events without failing the work: they only inform monitors.
    pub async fn announce(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let envelopes: Vec<_> = events.into_iter().map(Event::envelope).collect();
        if let Err(err) = self.broker.publish_events(&envelopes).await {
            tracing::warn!(%err, "could not publish events");
        }
    }
}
