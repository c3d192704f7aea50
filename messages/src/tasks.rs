//! Work items, one queue per role. They carry ids, never tensors or trees: the state
//! they refer to lives in Redis.
use crate::ids::NodeId;
use crate::topology::Role;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Expand one frontier node of a question's tree by one reasoning step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpandTask {
    pub run: String,
    pub question: String,
    pub round: u32,
    pub node: NodeId,
}

/// Score the children that expanding `parent` produced in `round`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreTask {
    pub run: String,
    pub question: String,
    pub round: u32,
    pub parent: NodeId,
    pub children: Vec<NodeId>,
}

/// Verify the finished solutions of a question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyTask {
    pub run: String,
    pub question: String,
}

/// Label a verified question's tree with values and emit its training records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelTask {
    pub run: String,
    pub question: String,
}

/// Fine-tune the next round's models on the datasets a run produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainTask {
    pub run: String,
    /// Self-training round being trained (round 0 is the warm-up).
    pub round: u32,
    pub policy_data: PathBuf,
    pub value_data: PathBuf,
}

/// Any task; the `kind` tag tells which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    Expand(ExpandTask),
    Score(ScoreTask),
    Verify(VerifyTask),
    Label(LabelTask),
    Train(TrainTask),
}

impl Task {
    /// The role whose queue carries this task.
    pub fn role(&self) -> Role {
        match self {
            Task::Expand(_) => Role::Generator,
            Task::Score(_) => Role::Scorer,
            Task::Verify(_) => Role::Verifier,
            Task::Label(_) => Role::Labeler,
            Task::Train(_) => Role::Trainer,
        }
    }

    /// The run this task belongs to.
    pub fn run(&self) -> &str {
        match self {
            Task::Expand(t) => &t.run,
            Task::Score(t) => &t.run,
            Task::Verify(t) => &t.run,
            Task::Label(t) => &t.run,
            Task::Train(t) => &t.run,
        }
    }

    /// Deterministic id: the same work always gets the same id, so a consumer can
    /// tell a redelivery or a re-enqueue from new work.
    pub fn id(&self) -> String {
        match self {
            Task::Expand(t) => format!("expand/{}/{}/{}/{}", t.run, t.question, t.round, t.node),
            Task::Score(t) => format!("score/{}/{}/{}/{}", t.run, t.question, t.round, t.parent),
            Task::Verify(t) => format!("verify/{}/{}", t.run, t.question),
            Task::Label(t) => format!("label/{}/{}", t.run, t.question),
            Task::Train(t) => format!("train/{}/{}", t.run, t.round),
        }
    }

    /// This task in its envelope, with its deterministic id.
    pub fn envelope(self) -> crate::Envelope<Task> {
        crate::Envelope::new(self.id(), self)
    }
}
