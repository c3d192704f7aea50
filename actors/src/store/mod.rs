//! Durable state: runs, questions and search trees. Two implementations, Redis and
//! in-memory, held to one conformance suite (`tests/store_conformance.rs`).
//!
//! Operations take batches so that the Redis implementation can answer a whole batch
//! of tasks in one round trip. Every write is idempotent: a task delivered twice
//! commits the same effect twice, and a round is concluded exactly once.
mod memory;
mod redis_store;

pub use memory::MemoryStore;
pub use redis_store::RedisStore;

use std::collections::HashMap;
use std::future::Future;
use thiserror::Error;
use tsst_messages::{
    DataSource, Envelope, ModelVersion, Node, NodeId, ProbeTask, Question, Role, RunRecord, Task,
    TreeState, Verdict,
};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot connect to Redis at {0}: {1}")]
    Connect(String, redis::RedisError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("corrupt record in the store at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("run {0} is not known to the store")]
    UnknownRun(String),
    #[error("question {question} of run {run} has no tree in the store")]
    UnknownTree { run: String, question: String },
    #[error("run {run} was enqueued before with a different {what}; use another --run id")]
    Conflict { run: String, what: &'static str },
}

impl StoreError {
    /// Redis could not be reached or did not answer (an outage, a restart, a dropped
    /// connection), as opposed to what it answered.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect(..) => true,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
                    )
            }
            _ => false,
        }
    }
}

/// Identifies one question's tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeRef {
    pub run: String,
    pub question: String,
}

impl TreeRef {
    pub fn new(run: &str, question: &str) -> Self {
        TreeRef {
            run: run.to_owned(),
            question: question.to_owned(),
        }
    }
}

/// A generator's effect: the children of one frontier node, and the tasks to publish.
#[derive(Debug, Clone)]
pub struct ExpandCommit {
    pub tree: TreeRef,
    /// The expand task's id; its outbox entry marks the effect as applied.
    pub task_id: String,
    pub round: u32,
    pub children: Vec<Node>,
    pub outbox: Vec<Envelope<Task>>,
}

/// A scorer's effect: values for one frontier node's children, counted once in the
/// round's barrier.
#[derive(Debug, Clone)]
pub struct ScoreCommit {
    pub tree: TreeRef,
    pub round: u32,
    pub parent: NodeId,
    /// The children the task scores: the store checks it has them (see
    /// [`Barrier::Lost`]).
    pub children: Vec<NodeId>,
    pub values: Vec<(NodeId, f64)>,
}

/// Where a round stands after a score commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    /// Other frontier nodes' children are still unscored.
    Waiting,
    /// Every frontier node is scored and the round is not concluded yet: conclude it.
    Complete,
    /// The round was concluded already (this is a redelivery): republish its outbox.
    Concluded,
    /// The tree has not reached this round: the store lost writes (a rollback) that
    /// this task came from. Nothing was written; the tree is re-driven instead.
    Behind,
    /// The tree is at this round but does not have the parent in its frontier or the
    /// children the task scores: the store lost the expansion since the task's worker
    /// read them (a rollback or a failover to a replica that was behind, between the
    /// read and this write). Nothing was written: counting the parent in the barrier
    /// would conclude the round without its children.
    Lost,
}

/// What committing a round's conclusion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concluded {
    /// Applied now: publish its outbox.
    Now,
    /// Concluded before (by another worker or an earlier delivery): publish that one's
    /// outbox.
    Before,
    /// The tree is at the round, but the store's round is not the one the conclusion
    /// was computed from: its barrier is incomplete or its children differ from the
    /// view's, because the store lost writes after the view was read. Nothing was
    /// written; the tree is re-driven from what the store has.
    Unready,
}

/// What concluding a round needs to read.
#[derive(Debug, Clone)]
pub struct RoundView {
    pub state: TreeState,
    pub frontier: Vec<Node>,
    pub children: Vec<Node>,
    pub finished: u32,
}

/// Where a tree stands: its state and its current round's frontier. What re-driving a
/// tree needs (`crate::heal`).
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub state: TreeState,
    pub frontier: Vec<NodeId>,
    /// The frontier nodes whose children are scored (the round's barrier).
    pub scored: Vec<NodeId>,
    /// Effects applied to the tree so far (its outbox entries): grows with every
    /// expansion, conclusion and verification, so a tree whose count stays put is not
    /// moving.
    pub applied: u64,
}

/// The conclusion of a round, committed only if the tree is still at `round`.
#[derive(Debug, Clone)]
pub struct RoundCommit {
    pub tree: TreeRef,
    pub round: u32,
    /// How many children the view that the conclusion was computed from had: the
    /// store applies it only to the same round (every frontier node scored, as many
    /// children).
    pub children: u32,
    pub finished: Vec<(NodeId, tsst_messages::FinishReason)>,
    pub next_frontier: Vec<NodeId>,
    pub done: bool,
    pub restarted: bool,
    pub outbox: Vec<Envelope<Task>>,
}

/// Verdicts on a tree's finished nodes.
#[derive(Debug, Clone)]
pub struct VerdictCommit {
    pub tree: TreeRef,
    pub verdicts: Vec<(NodeId, Verdict)>,
    pub outbox: Vec<Envelope<Task>>,
}

/// A run's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub total: u32,
    /// Finished trees, the failed ones included.
    pub done: u32,
    pub failed: u32,
    /// When the run was registered, in seconds since the Unix epoch (a rate and an
    /// ETA follow from it); `None` for a run registered before it was recorded.
    pub started: Option<u64>,
}

/// A worker's heartbeat: who it is, what it serves, where, with which models. Workers
/// write one every few seconds; one not renewed is a worker gone.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkerBeat {
    pub name: String,
    /// The namespace of the queues it consumes.
    pub namespace: String,
    pub roles: Vec<String>,
    /// cpu or cuda:N.
    pub device: String,
    /// The models it has loaded (policy and value names or paths).
    pub models: Vec<String>,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub seen: u64,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Progress {
    pub fn complete(&self) -> bool {
        self.done >= self.total
    }
}

/// Everything stored about one tree, for results and comparisons.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeView {
    pub state: TreeState,
    /// Every node, values and finish reasons filled in, ordered by id.
    pub nodes: Vec<Node>,
    /// Finished node ids in the order they finished.
    pub finished: Vec<NodeId>,
    pub verdicts: HashMap<NodeId, Verdict>,
    pub error: Option<String>,
}

/// A verifier's decision is cached by the question and the extracted answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerdictKey {
    pub source: DataSource,
    pub question: String,
    pub answer: String,
}

/// The outbox key of a round's conclusion.
pub fn round_outbox_key(round: u32) -> String {
    format!("round/{round}")
}

/// The outbox key of a tree's verification.
pub const VERIFY_OUTBOX_KEY: &str = "verify";

pub trait Store: Clone + Send + Sync + 'static {
    /// Records a run and its questions; `Ok(false)` when it was recorded before with the
    /// same record, an error when with a different one.
    fn register_run(
        &self,
        record: &RunRecord,
        questions: &[Question],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn run_record(&self, run: &str) -> impl Future<Output = Result<RunRecord, StoreError>> + Send;

    /// The run's questions in dataset order.
    fn questions(
        &self,
        run: &str,
    ) -> impl Future<Output = Result<Vec<Question>, StoreError>> + Send;

    fn runs(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Creates each tree with its root as round 0's frontier unless it exists; returns
    /// the questions whose first task has not been published yet.
    fn init_trees(
        &self,
        run: &str,
        questions: &[String],
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Records that the first task of these trees is published.
    fn mark_enqueued(
        &self,
        run: &str,
        questions: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The outbox entries for (tree, key), `None` where the effect is not applied yet.
    fn outboxes(
        &self,
        keys: &[(TreeRef, String)],
    ) -> impl Future<Output = Result<Vec<Option<Vec<Envelope<Task>>>>, StoreError>> + Send;

    /// Marks applied effects (tree, key) whose follow-up tasks the broker has
    /// confirmed: a task that finds its effect applied and marked publishes nothing.
    fn mark_published(
        &self,
        keys: &[(TreeRef, String)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether each effect (tree, key) is marked published.
    fn published(
        &self,
        keys: &[(TreeRef, String)],
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// Nodes with their values and finish reasons, `None` where missing.
    fn nodes(
        &self,
        wanted: &[(TreeRef, NodeId)],
    ) -> impl Future<Output = Result<Vec<Option<Node>>, StoreError>> + Send;

    fn commit_expand(
        &self,
        commits: &[ExpandCommit],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn commit_scores(
        &self,
        commits: &[ScoreCommit],
    ) -> impl Future<Output = Result<Vec<Barrier>, StoreError>> + Send;

    /// What concluding each (tree, round) needs to read.
    fn rounds(
        &self,
        wanted: &[(TreeRef, u32)],
    ) -> impl Future<Output = Result<Vec<RoundView>, StoreError>> + Send;

    /// Applies each conclusion unless its round was concluded already or is not the
    /// round it was computed from.
    fn commit_rounds(
        &self,
        commits: &[RoundCommit],
    ) -> impl Future<Output = Result<Vec<Concluded>, StoreError>> + Send;

    fn commit_verdicts(
        &self,
        commits: &[VerdictCommit],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks trees done (or failed, with the reason); returns which were newly marked
    /// and the run's progress after.
    fn finish_trees(
        &self,
        run: &str,
        trees: &[(String, Option<String>)],
    ) -> impl Future<Output = Result<(Vec<bool>, Progress), StoreError>> + Send;

    fn progress(&self, run: &str) -> impl Future<Output = Result<Progress, StoreError>> + Send;

    /// Stores the training records of labelled questions (opaque JSON per question).
    fn put_records(
        &self,
        run: &str,
        records: &[(String, String)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every labelled question's records, by question id.
    fn records(
        &self,
        run: &str,
    ) -> impl Future<Output = Result<HashMap<String, String>, StoreError>> + Send;

    /// Earlier verdicts on these (question, answer) pairs, `None` where there is none.
    fn cached_verdicts(
        &self,
        keys: &[VerdictKey],
    ) -> impl Future<Output = Result<Vec<Option<Verdict>>, StoreError>> + Send;

    fn cache_verdicts(
        &self,
        entries: &[(VerdictKey, Verdict)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn tree(&self, tree: &TreeRef) -> impl Future<Output = Result<TreeView, StoreError>> + Send;

    /// Where each tree stands, `None` for a tree the store does not have.
    fn positions(
        &self,
        trees: &[TreeRef],
    ) -> impl Future<Output = Result<Vec<Option<Position>>, StoreError>> + Send;

    /// Takes the lease `name` for `holder`, or renews it when `holder` has it already,
    /// for `ttl`; false while another holder's lease runs. A holder that dies loses it
    /// once `ttl` passes.
    fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that a role took `probe` from its queue.
    fn mark_probe(&self, probe: &ProbeTask) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// For each role, the last probe sequence number of the relay `relay` it took.
    fn probes(
        &self,
        relay: &str,
    ) -> impl Future<Output = Result<HashMap<Role, u64>, StoreError>> + Send;

    /// Records (or replaces) a model version in its run's registry.
    /// Records a worker's heartbeat, replacing its previous one.
    fn beat(&self, beat: &WorkerBeat) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The workers whose last heartbeat is at most `max_age` seconds old at `now`;
    /// older ones are forgotten.
    fn workers(
        &self,
        now: u64,
        max_age: u64,
    ) -> impl Future<Output = Result<Vec<WorkerBeat>, StoreError>> + Send;

    /// Forgets a worker's heartbeat (it stopped).
    fn forget_worker(&self, name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn put_model_version(
        &self,
        version: &ModelVersion,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The run's model versions, oldest first.
    fn model_versions(
        &self,
        run: &str,
    ) -> impl Future<Output = Result<Vec<ModelVersion>, StoreError>> + Send;
}
