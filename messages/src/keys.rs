//! Redis key names. All keys of one question's tree share a Redis Cluster hash tag,
//! so multi-key scripts on a tree run on one shard; a run's keys are reachable from
//! its index keys, so reading results never scans the keyspace.
const PREFIX: &str = "tsst";

/// Set of every run id.
pub fn runs() -> String {
    format!("{PREFIX}:runs")
}

/// String: who holds the lease `name` (one relay at a time), expiring by itself.
/// Live workers' heartbeats: a hash of worker name -> `WorkerBeat` JSON.
pub fn workers() -> String {
    format!("{PREFIX}:workers")
}

pub fn lease(name: &str) -> String {
    format!("{PREFIX}:lease:{name}")
}

/// Hash: role → the last probe of the relay `relay` that role's queue gave up.
pub fn probes(relay: &str) -> String {
    format!("{PREFIX}:probes:{relay}")
}

/// Hash: version number → `ModelVersion` JSON, the model registry of one
/// self-training run.
pub fn models(run: &str) -> String {
    format!("{PREFIX}:models:{run}")
}

/// Hash: extracted answer → verdict JSON, for one question of one dataset, shared by
/// every run: the same answer to the same question is decided once.
pub fn verdict_cache(source: crate::DataSource, question: &str) -> String {
    format!("{PREFIX}:vcache:{{{source}/{question}}}")
}

/// Keys of one run (not of its trees).
#[derive(Debug, Clone)]
pub struct RunKeys {
    run: String,
}

impl RunKeys {
    pub fn new(run: &str) -> Self {
        RunKeys {
            run: run.to_owned(),
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{PREFIX}:run:{{{}}}:{what}", self.run)
    }

    /// Hash: the run's config (JSON), status and counters.
    pub fn meta(&self) -> String {
        self.key("meta")
    }

    /// Hash: question id → question JSON.
    pub fn questions(&self) -> String {
        self.key("questions")
    }

    /// List: question ids in dataset order.
    pub fn order(&self) -> String {
        self.key("order")
    }

    /// Set: questions whose work is complete.
    pub fn done(&self) -> String {
        self.key("done")
    }

    /// Hash: question id → the question's training records (JSON), written by the
    /// labeler.
    pub fn records(&self) -> String {
        self.key("records")
    }

    /// Hash: question id → failure reason.
    pub fn failed(&self) -> String {
        self.key("failed")
    }
}

/// Keys of one question's search tree, all under the hash tag `{run/question}`.
#[derive(Debug, Clone)]
pub struct TreeKeys {
    tag: String,
}

impl TreeKeys {
    pub fn new(run: &str, question: &str) -> Self {
        TreeKeys {
            tag: format!("{{{run}/{question}}}"),
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{PREFIX}:tree:{}:{what}", self.tag)
    }

    /// Hash: node id → [`crate::Node`] JSON.
    pub fn nodes(&self) -> String {
        self.key("nodes")
    }

    /// Hash: the tree's state (current round, status, restarts).
    pub fn state(&self) -> String {
        self.key("state")
    }

    /// List: the frontier node ids of `round`.
    pub fn frontier(&self, round: u32) -> String {
        self.key(&format!("frontier:{round}"))
    }

    /// Set: frontier nodes of `round` whose children are scored (the round's barrier).
    pub fn barrier(&self, round: u32) -> String {
        self.key(&format!("barrier:{round}"))
    }

    /// Hash: node id → value score.
    pub fn values(&self) -> String {
        self.key("values")
    }

    /// Hash: node id → finish reason, for nodes in the finished list.
    pub fn reasons(&self) -> String {
        self.key("reasons")
    }

    /// Set: the children created in `round` (every frontier node's, merged).
    pub fn children(&self, round: u32) -> String {
        self.key(&format!("children:{round}"))
    }

    /// Hash: key of an applied effect → the follow-up tasks it published (JSON), so a
    /// redelivery republishes them instead of computing them again.
    pub fn outbox(&self) -> String {
        self.key("outbox")
    }

    /// Hash: key of an applied effect → 1 once its follow-ups are with the broker, so
    /// a duplicate that finds the effect applied need not publish them again.
    pub fn published(&self) -> String {
        self.key("published")
    }

    /// List: finished node ids in the order they finished.
    pub fn finished(&self) -> String {
        self.key("finished")
    }

    /// Hash: node id → verdict JSON.
    pub fn verdicts(&self) -> String {
        self.key("verdicts")
    }
}
