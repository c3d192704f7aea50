//! Events published on the fanout exchange: progress for monitors, model hot-swaps
//! for workers. Losing one delays a display, never a result.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which model a published checkpoint replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Policy,
    Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run: String,
        questions: u32,
    },
    /// A question's search collected its solutions (or hit the round limit).
    QuestionSearched {
        run: String,
        question: String,
        rounds: u32,
        solutions: u32,
    },
    /// A question is done: searched, verified and labelled as far as the run asks.
    QuestionDone {
        run: String,
        question: String,
    },
    /// A question could not be processed (e.g. unreadable image); the run goes on.
    QuestionFailed {
        run: String,
        question: String,
        reason: String,
    },
    RunFinished {
        run: String,
        questions: u32,
        failed: u32,
    },
    /// A new model was exported; workers serving `model` swap it in between batches.
    ModelPublished {
        model: ModelKind,
        name: String,
        version: u32,
        path: PathBuf,
    },
}

impl Event {
    pub fn run(&self) -> Option<&str> {
        match self {
            Event::RunStarted { run, .. }
            | Event::QuestionSearched { run, .. }
            | Event::QuestionDone { run, .. }
            | Event::QuestionFailed { run, .. }
            | Event::RunFinished { run, .. } => Some(run),
            Event::ModelPublished { .. } => None,
        }
    }

    /// Events have no natural idempotency key; this one is stable for the same fact.
    pub fn id(&self) -> String {
        match self {
            Event::RunStarted { run, .. } => format!("run-started/{run}"),
            Event::QuestionSearched { run, question, .. } => format!("searched/{run}/{question}"),
            Event::QuestionDone { run, question } => format!("done/{run}/{question}"),
            Event::QuestionFailed { run, question, .. } => format!("failed/{run}/{question}"),
            Event::RunFinished { run, .. } => format!("run-finished/{run}"),
            Event::ModelPublished {
                model,
                name,
                version,
                ..
            } => {
                let kind = match model {
                    ModelKind::Policy => "policy",
                    ModelKind::Value => "value",
                };
                format!("model/{kind}/{name}/{version}")
            }
        }
    }

    pub fn envelope(self) -> crate::Envelope<Event> {
        crate::Envelope::new(self.id(), self)
    }
}
