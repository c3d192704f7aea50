//! The in-memory store of embedded mode: the same semantics as Redis, in one process.
use super::{
    round_outbox_key, Barrier, Concluded, ExpandCommit, Position, Progress, RoundCommit, RoundView,
    ScoreCommit, Store, StoreError, TreeRef, TreeView, VerdictCommit, VerdictKey, WorkerBeat,
    VERIFY_OUTBOX_KEY,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tsst_messages::{
    Envelope, FinishReason, ModelVersion, Node, NodeId, ProbeTask, Question, Role, RunRecord, Task,
    TreeState, TreeStatus, Verdict,
};

#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    runs: HashMap<String, RunData>,
    trees: HashMap<TreeRef, Tree>,
    verdicts: HashMap<VerdictKey, Verdict>,
    /// Lease name → holder and when the lease ends.
    leases: HashMap<String, (String, std::time::Instant)>,
    /// Relay → role → the last probe sequence number that role took.
    probes: HashMap<String, HashMap<Role, u64>>,
    /// Run → version → model version.
    models: HashMap<String, BTreeMap<u32, ModelVersion>>,
    workers: BTreeMap<String, WorkerBeat>,
}

struct RunData {
    record: RunRecord,
    labels: HashMap<String, String>,
    questions: Vec<Question>,
    done: HashSet<String>,
    failed: HashMap<String, String>,
    started: u64,
}

struct Tree {
    state: TreeState,
    enqueued: bool,
    nodes: HashMap<NodeId, Node>,
    values: HashMap<NodeId, f64>,
    reasons: HashMap<NodeId, FinishReason>,
    frontier: HashMap<u32, Vec<NodeId>>,
    children: HashMap<u32, BTreeSet<NodeId>>,
    barrier: HashMap<u32, HashSet<NodeId>>,
    finished: Vec<NodeId>,
    verdicts: HashMap<NodeId, Verdict>,
    outbox: HashMap<String, Vec<Envelope<Task>>>,
    published: HashSet<String>,
}

impl Tree {
    fn node(&self, id: NodeId) -> Option<Node> {
        let mut n = self.nodes.get(&id)?.clone();
        n.value = self.values.get(&id).copied();
        n.finished = self.reasons.get(&id).copied();
        Some(n)
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock poisons it; the data is still consistent
        // because every operation validates before it mutates.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn run(&self, run: &str) -> Result<&RunData, StoreError> {
        self.runs
            .get(run)
            .ok_or_else(|| StoreError::UnknownRun(run.to_owned()))
    }

    fn tree(&self, t: &TreeRef) -> Result<&Tree, StoreError> {
        self.trees.get(t).ok_or_else(|| unknown_tree(t))
    }

    fn tree_mut(&mut self, t: &TreeRef) -> Result<&mut Tree, StoreError> {
        self.trees.get_mut(t).ok_or_else(|| unknown_tree(t))
    }

    fn progress(&self, run: &str) -> Result<Progress, StoreError> {
        let r = self.run(run)?;
        Ok(Progress {
            total: r.questions.len() as u32,
            done: r.done.len() as u32,
            failed: r.failed.len() as u32,
            started: Some(r.started),
        })
    }
}

impl Inner {
    fn round(&self, t: &TreeRef, round: u32) -> Result<RoundView, StoreError> {
        let tree = self.tree(t)?;
        let collect = |ids: &mut dyn Iterator<Item = &NodeId>| -> Result<Vec<Node>, StoreError> {
            ids.map(|id| {
                tree.node(*id).ok_or_else(|| StoreError::Corrupt {
                    key: format!("{}/{} node {id}", t.run, t.question),
                    reason: "listed but not stored".into(),
                })
            })
            .collect()
        };
        let frontier = collect(&mut tree.frontier.get(&round).into_iter().flatten())?;
        let children = collect(&mut tree.children.get(&round).into_iter().flatten())?;
        Ok(RoundView {
            state: tree.state,
            frontier,
            children,
            finished: tree.finished.len() as u32,
        })
    }

    fn commit_round(&mut self, c: &RoundCommit) -> Result<Concluded, StoreError> {
        let tree = self.tree_mut(&c.tree)?;
        if tree.state.round != c.round || tree.state.status != TreeStatus::Searching {
            return Ok(Concluded::Before);
        }
        let scored = tree.barrier.get(&c.round).map_or(0, HashSet::len);
        let expected = tree.frontier.get(&c.round).map_or(0, Vec::len);
        let children = tree.children.get(&c.round).map_or(0, BTreeSet::len);
        if scored < expected || children != c.children as usize {
            return Ok(Concluded::Unready);
        }
        for (id, reason) in &c.finished {
            tree.finished.push(*id);
            tree.reasons.insert(*id, *reason);
        }
        if !c.next_frontier.is_empty() {
            tree.frontier.insert(c.round + 1, c.next_frontier.clone());
        }
        tree.state.round = c.round + 1;
        if c.done {
            tree.state.status = TreeStatus::Searched;
        }
        if c.restarted {
            tree.state.restarts += 1;
        }
        tree.outbox
            .insert(round_outbox_key(c.round), c.outbox.clone());
        Ok(Concluded::Now)
    }
}

fn unknown_tree(t: &TreeRef) -> StoreError {
    StoreError::UnknownTree {
        run: t.run.clone(),
        question: t.question.clone(),
    }
}

impl Store for MemoryStore {
    async fn register_run(
        &self,
        record: &RunRecord,
        questions: &[Question],
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if let Some(existing) = inner.runs.get(&record.run) {
            if existing.record != *record {
                return Err(StoreError::Conflict {
                    run: record.run.clone(),
                    what: "config",
                });
            }
            if existing.questions != questions {
                return Err(StoreError::Conflict {
                    run: record.run.clone(),
                    what: "question set",
                });
            }
            return Ok(false);
        }
        inner.runs.insert(
            record.run.clone(),
            RunData {
                record: record.clone(),
                labels: HashMap::new(),
                questions: questions.to_vec(),
                done: HashSet::new(),
                failed: HashMap::new(),
                started: super::unix_now(),
            },
        );
        Ok(true)
    }

    async fn run_record(&self, run: &str) -> Result<RunRecord, StoreError> {
        Ok(self.lock().run(run)?.record.clone())
    }

    async fn questions(&self, run: &str) -> Result<Vec<Question>, StoreError> {
        Ok(self.lock().run(run)?.questions.clone())
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let mut inner = self.lock();
        let lease = inner
            .leases
            .entry(name.to_owned())
            .or_insert_with(|| (holder.to_owned(), now));
        if lease.0 != holder && lease.1 > now {
            return Ok(false);
        }
        *lease = (holder.to_owned(), now + ttl);
        Ok(true)
    }

    async fn mark_probe(&self, probe: &ProbeTask) -> Result<(), StoreError> {
        self.lock()
            .probes
            .entry(probe.relay.clone())
            .or_default()
            .insert(probe.role, probe.seq);
        Ok(())
    }

    async fn probes(&self, relay: &str) -> Result<HashMap<Role, u64>, StoreError> {
        Ok(self.lock().probes.get(relay).cloned().unwrap_or_default())
    }

    async fn beat(&self, beat: &WorkerBeat) -> Result<(), StoreError> {
        self.lock().workers.insert(beat.name.clone(), beat.clone());
        Ok(())
    }

    async fn workers(&self, now: u64, max_age: u64) -> Result<Vec<WorkerBeat>, StoreError> {
        let mut inner = self.lock();
        inner
            .workers
            .retain(|_, b| b.seen.saturating_add(max_age) >= now);
        Ok(inner.workers.values().cloned().collect())
    }

    async fn forget_worker(&self, name: &str) -> Result<(), StoreError> {
        self.lock().workers.remove(name);
        Ok(())
    }

    async fn put_model_version(&self, version: &ModelVersion) -> Result<(), StoreError> {
        self.lock()
            .models
            .entry(version.run.clone())
            .or_default()
            .insert(version.version, version.clone());
        Ok(())
    }

    async fn model_versions(&self, run: &str) -> Result<Vec<ModelVersion>, StoreError> {
        Ok(self
            .lock()
            .models
            .get(run)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn runs(&self) -> Result<Vec<String>, StoreError> {
        let mut runs: Vec<String> = self.lock().runs.keys().cloned().collect();
        runs.sort();
        Ok(runs)
    }

    async fn init_trees(&self, run: &str, questions: &[String]) -> Result<Vec<String>, StoreError> {
        let mut inner = self.lock();
        inner.run(run)?;
        let mut pending = Vec::new();
        for q in questions {
            let t = TreeRef::new(run, q);
            let tree = inner.trees.entry(t).or_insert_with(|| {
                let root = Node::root(NodeId::root(run, q));
                Tree {
                    state: TreeState {
                        round: 0,
                        status: TreeStatus::Searching,
                        restarts: 0,
                    },
                    enqueued: false,
                    frontier: HashMap::from([(0, vec![root.id])]),
                    nodes: HashMap::from([(root.id, root)]),
                    values: HashMap::new(),
                    reasons: HashMap::new(),
                    children: HashMap::new(),
                    barrier: HashMap::new(),
                    finished: Vec::new(),
                    verdicts: HashMap::new(),
                    outbox: HashMap::new(),
                    published: HashSet::new(),
                }
            });
            if !tree.enqueued {
                pending.push(q.clone());
            }
        }
        Ok(pending)
    }

    async fn mark_enqueued(&self, run: &str, questions: &[String]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for q in questions {
            inner.tree_mut(&TreeRef::new(run, q))?.enqueued = true;
        }
        Ok(())
    }

    async fn outboxes(
        &self,
        keys: &[(TreeRef, String)],
    ) -> Result<Vec<Option<Vec<Envelope<Task>>>>, StoreError> {
        let inner = self.lock();
        keys.iter()
            .map(|(t, key)| Ok(inner.tree(t)?.outbox.get(key).cloned()))
            .collect()
    }

    async fn mark_published(&self, keys: &[(TreeRef, String)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for (t, key) in keys {
            inner.tree_mut(t)?.published.insert(key.clone());
        }
        Ok(())
    }

    async fn published(&self, keys: &[(TreeRef, String)]) -> Result<Vec<bool>, StoreError> {
        let inner = self.lock();
        keys.iter()
            .map(|(t, key)| Ok(inner.tree(t)?.published.contains(key)))
            .collect()
    }

    async fn nodes(&self, wanted: &[(TreeRef, NodeId)]) -> Result<Vec<Option<Node>>, StoreError> {
        let inner = self.lock();
        wanted
            .iter()
            .map(|(t, id)| Ok(inner.tree(t)?.node(*id)))
            .collect()
    }

    async fn commit_expand(&self, commits: &[ExpandCommit]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for c in commits {
            let tree = inner.tree_mut(&c.tree)?;
            for child in &c.children {
                tree.nodes.entry(child.id).or_insert_with(|| child.clone());
                tree.children.entry(c.round).or_default().insert(child.id);
            }
            tree.outbox
                .entry(c.task_id.clone())
                .or_insert_with(|| c.outbox.clone());
        }
        Ok(())
    }

    async fn commit_scores(&self, commits: &[ScoreCommit]) -> Result<Vec<Barrier>, StoreError> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(commits.len());
        for c in commits {
            let tree = inner.tree_mut(&c.tree)?;
            // A concluded round keeps the values that drove its conclusion.
            let searching = tree.state.status == TreeStatus::Searching;
            if searching && tree.state.round < c.round {
                out.push(Barrier::Behind);
                continue;
            }
            if !(searching && tree.state.round == c.round) {
                out.push(Barrier::Concluded);
                continue;
            }
            let in_frontier = tree
                .frontier
                .get(&c.round)
                .is_some_and(|f| f.contains(&c.parent));
            let have = tree.children.get(&c.round);
            if !in_frontier
                || !c
                    .children
                    .iter()
                    .all(|id| have.is_some_and(|h| h.contains(id)))
            {
                out.push(Barrier::Lost);
                continue;
            }
            for (id, v) in &c.values {
                tree.values.insert(*id, *v);
            }
            let barrier = tree.barrier.entry(c.round).or_default();
            barrier.insert(c.parent);
            let scored = barrier.len();
            let expected = tree.frontier.get(&c.round).map_or(0, Vec::len);
            out.push(if scored < expected {
                Barrier::Waiting
            } else {
                Barrier::Complete
            });
        }
        Ok(out)
    }

    async fn rounds(&self, wanted: &[(TreeRef, u32)]) -> Result<Vec<RoundView>, StoreError> {
        let inner = self.lock();
        wanted
            .iter()
            .map(|(t, round)| inner.round(t, *round))
            .collect()
    }

    async fn commit_rounds(&self, commits: &[RoundCommit]) -> Result<Vec<Concluded>, StoreError> {
        let mut inner = self.lock();
        commits.iter().map(|c| inner.commit_round(c)).collect()
    }

    async fn commit_verdicts(&self, commits: &[VerdictCommit]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for c in commits {
            let tree = inner.tree_mut(&c.tree)?;
            for (id, v) in &c.verdicts {
                tree.verdicts.insert(*id, v.clone());
            }
            tree.outbox
                .entry(VERIFY_OUTBOX_KEY.to_owned())
                .or_insert_with(|| c.outbox.clone());
        }
        Ok(())
    }

    async fn finish_trees(
        &self,
        run: &str,
        trees: &[(String, Option<String>)],
    ) -> Result<(Vec<bool>, Progress), StoreError> {
        let mut inner = self.lock();
        let mut newly = Vec::with_capacity(trees.len());
        for (q, error) in trees {
            let tree = inner.tree_mut(&TreeRef::new(run, q))?;
            tree.state.status = if error.is_some() {
                TreeStatus::Failed
            } else {
                TreeStatus::Done
            };
            let data = inner
                .runs
                .get_mut(run)
                .ok_or_else(|| StoreError::UnknownRun(run.to_owned()))?;
            if let Some(reason) = error {
                data.failed
                    .entry(q.clone())
                    .or_insert_with(|| reason.clone());
            }
            newly.push(data.done.insert(q.clone()));
        }
        Ok((newly, inner.progress(run)?))
    }

    async fn progress(&self, run: &str) -> Result<Progress, StoreError> {
        self.lock().progress(run)
    }

    async fn put_records(&self, run: &str, records: &[(String, String)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let data = inner
            .runs
            .get_mut(run)
            .ok_or_else(|| StoreError::UnknownRun(run.to_owned()))?;
        data.labels.extend(records.iter().cloned());
        Ok(())
    }

    async fn records(&self, run: &str) -> Result<HashMap<String, String>, StoreError> {
        Ok(self.lock().run(run)?.labels.clone())
    }

    async fn cached_verdicts(
        &self,
        keys: &[VerdictKey],
    ) -> Result<Vec<Option<Verdict>>, StoreError> {
        let inner = self.lock();
        Ok(keys
            .iter()
            .map(|k| inner.verdicts.get(k).cloned())
            .collect())
    }

    async fn cache_verdicts(&self, entries: &[(VerdictKey, Verdict)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for (k, v) in entries {
            inner.verdicts.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    async fn positions(&self, trees: &[TreeRef]) -> Result<Vec<Option<Position>>, StoreError> {
        let inner = self.lock();
        Ok(trees
            .iter()
            .map(|t| {
                let tree = inner.trees.get(t)?;
                Some(Position {
                    applied: tree.outbox.len() as u64,
                    scored: tree
                        .barrier
                        .get(&tree.state.round)
                        .map(|b| b.iter().copied().collect())
                        .unwrap_or_default(),
                    state: tree.state,
                    frontier: tree
                        .frontier
                        .get(&tree.state.round)
                        .cloned()
                        .unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn tree(&self, t: &TreeRef) -> Result<TreeView, StoreError> {
        let inner = self.lock();
        let tree = inner.tree(t)?;
        let mut ids: Vec<NodeId> = tree.nodes.keys().copied().collect();
        ids.sort();
        Ok(TreeView {
            state: tree.state,
            nodes: ids.into_iter().filter_map(|id| tree.node(id)).collect(),
            finished: tree.finished.clone(),
            verdicts: tree.verdicts.clone(),
            error: inner.run(&t.run)?.failed.get(&t.question).cloned(),
        })
    }
}
