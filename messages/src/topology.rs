//! Queue, exchange and header names: the one place they are spelled.
use serde::{Deserialize, Serialize};
use std::fmt;

/// The namespace of a deployment unless one is chosen: names start with `tsst.`.
pub const DEFAULT_NAMESPACE: &str = "tsst";
/// Quorum queues drop a message to the dead-letter exchange after this many redeliveries
/// (RabbitMQ 4's own default). A redelivery comes from a worker lost holding the
/// message (killed, disconnected) or from a requeue after a backend failure; store
/// outages hold batches instead, so only a message that keeps killing its workers
/// reaches the limit. 5 was too few: the soak's 50 kills in a minute pushed healthy
/// prefetched messages past it.
pub const DELIVERY_LIMIT: u32 = 20;
/// Header on a dead-lettered message saying why it was rejected.
pub const HEADER_ERROR: &str = "x-tsst-error";
/// Header naming the worker that rejected a message.
pub const HEADER_REJECTED_BY: &str = "x-tsst-rejected-by";

/// What a worker process does; each role consumes one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Expands a question's frontier with the policy model.
    Generator,
    /// Scores new children with the value model and runs selection.
    Scorer,
    /// Checks finished solutions against the answer.
    Verifier,
    /// Labels the tree with values and writes training records.
    Labeler,
    /// Runs fine-tuning and publishes new models.
    Trainer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Generator,
        Role::Scorer,
        Role::Verifier,
        Role::Labeler,
        Role::Trainer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Generator => "generator",
            Role::Scorer => "scorer",
            Role::Verifier => "verifier",
            Role::Labeler => "labeler",
            Role::Trainer => "trainer",
        }
    }

    /// What the role's queue is called within a namespace.
    pub fn work(self) -> &'static str {
        match self {
            Role::Generator => "expand",
            Role::Scorer => "score",
            Role::Verifier => "verify",
            Role::Labeler => "label",
            Role::Trainer => "train",
        }
    }
}

/// The names of one deployment's queues and exchanges. Several deployments (or test
/// runs) share a broker without seeing each other's work by using other namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topology {
    namespace: String,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new(DEFAULT_NAMESPACE)
    }
}

impl Topology {
    pub fn new(namespace: &str) -> Self {
        Topology {
            namespace: namespace.to_owned(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The durable quorum queue `role` consumes, e.g. `tsst.expand`.
    pub fn queue(&self, role: Role) -> String {
        format!("{}.{}", self.namespace, role.work())
    }

    /// Where `role`'s rejected messages end up, with the reason in [`HEADER_ERROR`].
    pub fn dead_letter_queue(&self, role: Role) -> String {
        format!("{}.{}.dead", self.namespace, role.work())
    }

    /// Fanout exchange carrying [`crate::Event`]s to every interested process.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// Exchange that rejected tasks are routed to, keyed by their role's queue name.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead", self.namespace)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown role `{s}` (expected generator, scorer, verifier, labeler or trainer)"
                )
            })
    }
}
