//! The tsst wire protocol: every task and event that crosses RabbitMQ or lives in
//! Redis, with a schema version on each, the names of queues, exchanges and keys, and
//! the results file format.
//! No I/O happens here.
mod envelope;
mod events;
mod ids;
pub mod keys;
mod models;
mod partition;
mod question;
pub mod results;
mod spec;
mod tasks;
mod topology;
mod tree;
mod verdict;

pub use envelope::{DecodeError, EncodeError, Envelope, SCHEMA_VERSION};
pub use events::{Event, ModelKind};
pub use ids::{splitmix64, stable_hash, validate_run_id, NodeId};
pub use models::{DataFile, ModelVersion, StageReport, VersionStatus};
pub use partition::Partition;
pub use question::{DataSource, Question};
pub use spec::{
    DatasetSpec, LabelSpec, RunRecord, SearchMode, SearchSpec, Selection, StepDelimiter,
    VerifierKind,
};
pub use tasks::{
    ChildStep, ExpandTask, LabelTask, ProbeTask, ScoreTask, Task, TrainTask, VerifyTask,
};
pub use topology::*;
pub use tree::{FinishReason, Node, TreeState, TreeStatus};
pub use verdict::{Verdict, VerdictSource};
