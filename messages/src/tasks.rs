//! Work items, one queue per role. They carry ids, never tensors or trees: the state
//! they refer to lives in Redis. The one exception is small and deliberate: a score
//! task carries the steps of the expansion it scores (see [`ScoreTask::steps`]).
use crate::ids::NodeId;
use crate::topology::Role;
use crate::tree::Node;
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreTask {
    pub run: String,
    pub question: String,
    pub round: u32,
    pub parent: NodeId,
    pub children: Vec<NodeId>,
    /// What the generator drew for each child, in the same order: the expansion's
    /// effect travels with the task that follows it. A store that lost the expansion
    /// (Redis restarted from files a second old, a failover to a replica that was
    /// behind) gets it back from here, instead of from the policy model again: the
    /// most expensive step of the search is not redone, and the deliveries of a
    /// re-expansion are saved. Empty in tasks from before it was added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ChildStep>,
}

/// One child's step as the generator drew it: with its parent, all a node is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildStep {
    /// Index among the samples drawn from the parent in its round.
    pub sample: u32,
    pub step: String,
    pub logprob: f64,
    pub tokens: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub eos: bool,
}

impl ChildStep {
    pub fn of(node: &Node) -> ChildStep {
        ChildStep {
            sample: node.sample,
            step: node.step.clone(),
            logprob: node.logprob,
            tokens: node.tokens,
            eos: node.eos,
        }
    }
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

/// A relay's marker through one role's queue: once a role has taken it, every task
/// queued there before it has been taken too (queues are first in, first out), so a
/// tree that has not moved since before it was sent is not waiting in that queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTask {
    /// The relay that sent it (a worker's name).
    pub relay: String,
    /// The relay's count of probes sent, the same for each queue's probe of a round.
    pub seq: u64,
    pub role: Role,
}

/// Any task; the `kind` tag tells which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    Expand(ExpandTask),
    Score(ScoreTask),
    Verify(VerifyTask),
    Label(LabelTask),
    Train(TrainTask),
    Probe(ProbeTask),
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
            Task::Probe(t) => t.role,
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
            Task::Probe(t) => format!("probe/{}/{}/{}", t.relay, t.seq, t.role),
        }
    }

    /// This task in its envelope, with its deterministic id.
    pub fn envelope(self) -> crate::Envelope<Task> {
        crate::Envelope::new(self.id(), self)
    }
}
