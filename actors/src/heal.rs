//! Re-driving trees whose state the store lost. Node ids and sampling seeds are
//! deterministic, so a tree can always be driven on from where the store says it is:
//! the current round's frontier expanded again (an expansion already applied only
//! republishes its score task), a searched tree verified again. When Redis comes back
//! without its last writes (a host crash under `appendfsync everysec`), tasks that
//! came from the lost writes name nodes or rounds the store does not have: the roles
//! re-drive their trees instead of dead-lettering them, and the relay re-drives trees
//! that no task is moving any more.
use crate::broker::Broker;
use crate::store::{Store, StoreError, TreeRef};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tsst_messages::{Envelope, ExpandTask, NodeId, ProbeTask, Role, Task, TreeStatus, VerifyTask};

/// How long one stale task's re-drive of a tree keeps other stale tasks of that tree
/// from re-driving it again.
pub const REDRIVE_CLAIM: Duration = Duration::from_secs(30);

/// A task that found the store behind it (it came from writes the store lost).
#[derive(Debug, Clone)]
pub struct Stale {
    pub tree: TreeRef,
    /// The task's id: it holds the tree's re-drive claim.
    pub task: String,
    /// The expansion `(round, node)` whose applying the task proves, where it names
    /// one: a score task exists only because its parent's expansion was applied.
    pub lost: Option<(u32, NodeId)>,
}

/// Re-drives what stale tasks show lost, each once.
///
/// A score task whose expansion the store lost, of the round the tree still stands
/// at, shows exactly what to redo: that one expansion. Re-driving the whole frontier
/// instead would also publish the round's expansions still queued, a duplicate each.
/// (An expansion lost together with its score task is shown by nothing; the relay
/// finds its tree when it stops moving.)
///
/// A task ahead of the tree's stored round shows that the stored round concluded
/// before the loss, so everything it is missing was consumed: the whole tree is
/// re-driven. Every task in flight for such a tree finds it stale, and one re-drive
/// publishes what all of them would: the first claims the tree (a lease held by its
/// task id, so that its own redelivery may re-drive again), the others leave it. A
/// claimer that dies before publishing is redelivered and re-drives.
pub async fn redrive_stale<S: Store>(
    store: &S,
    stale: &[Stale],
) -> Result<Vec<Envelope<Task>>, StoreError> {
    let precise: Vec<&Stale> = stale.iter().filter(|s| s.lost.is_some()).collect();
    let trees: Vec<TreeRef> = precise.iter().map(|s| s.tree.clone()).collect();
    let positions = store.positions(&trees).await?;
    let mut redo = BTreeSet::new();
    let mut whole = Vec::new();
    for (s, position) in precise.iter().zip(positions) {
        let (round, node) = s.lost.expect("filtered");
        let open = position.is_some_and(|p| {
            p.state.status == TreeStatus::Searching
                && p.state.round == round
                && p.frontier.contains(&node)
        });
        if open {
            redo.insert((s.tree.clone(), round, node));
        } else {
            whole.push(*s);
        }
    }
    let mut tasks: Vec<Envelope<Task>> = redo
        .iter()
        .map(|(tree, round, node)| expand(tree, *round, *node))
        .collect();
    if !tasks.is_empty() {
        tracing::info!(
            tasks = tasks.len(),
            cause = "lost expansion",
            "re-driving trees from their stored state"
        );
    }
    let mut claimed = Vec::new();
    let mut seen = BTreeSet::new();
    for s in whole
        .into_iter()
        .chain(stale.iter().filter(|s| s.lost.is_none()))
    {
        if !seen.insert(&s.tree) {
            continue;
        }
        let name = format!("redrive:{}/{}", s.tree.run, s.tree.question);
        if store.lease(&name, &s.task, REDRIVE_CLAIM).await? {
            claimed.push(s.tree.clone());
        } else {
            tracing::debug!(run = %s.tree.run, question = %s.tree.question, "another task re-drives this tree");
        }
    }
    tasks.extend(redrive(store, &claimed, "stale task").await?);
    Ok(tasks)
}

/// The tasks that drive each tree on from where the store says it stands, and only
/// those: for a searching tree, the expansion of each frontier node not expanded yet,
/// the score task of each one expanded but not scored, and when all are scored (the
/// conclusion was lost) one score task again to conclude the round; a searched tree's
/// verification. Nothing for trees that are done, failed or unknown.
///
/// `cause` (why these trees are re-driven) goes into the log line.
pub async fn redrive<S: Store>(
    store: &S,
    trees: &[TreeRef],
    cause: &str,
) -> Result<Vec<Envelope<Task>>, StoreError> {
    let unique: Vec<TreeRef> = trees
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let positions = store.positions(&unique).await?;
    // Which frontier expansions are applied: their outbox holds their score task.
    let mut keys = Vec::new();
    for (t, p) in unique.iter().zip(&positions) {
        if let Some(p) = p
            .as_ref()
            .filter(|p| p.state.status == TreeStatus::Searching)
        {
            keys.extend(
                p.frontier
                    .iter()
                    .map(|&node| (t.clone(), expand(t, p.state.round, node).id)),
            );
        }
    }
    let mut outboxes = store.outboxes(&keys).await?.into_iter();
    let mut tasks = Vec::new();
    for (t, position) in unique.iter().zip(positions) {
        let Some(p) = position else { continue };
        match p.state.status {
            TreeStatus::Searching => {
                let mut scored_again = None;
                let before = tasks.len();
                for &node in &p.frontier {
                    match outboxes.next().flatten() {
                        None => tasks.push(expand(t, p.state.round, node)),
                        Some(score) if !p.scored.contains(&node) => tasks.extend(score),
                        Some(score) => scored_again = Some(score),
                    }
                }
                if tasks.len() == before {
                    tasks.extend(scored_again.into_iter().flatten());
                }
            }
            TreeStatus::Searched => tasks.push(
                Task::Verify(VerifyTask {
                    run: t.run.clone(),
                    question: t.question.clone(),
                })
                .envelope(),
            ),
            TreeStatus::Done | TreeStatus::Failed => {}
        }
    }
    if !tasks.is_empty() {
        tracing::info!(
            trees = unique.len(),
            tasks = tasks.len(),
            cause,
            "re-driving trees from their stored state"
        );
    }
    Ok(tasks)
}

fn expand(t: &TreeRef, round: u32, node: NodeId) -> Envelope<Task> {
    Task::Expand(ExpandTask {
        run: t.run.clone(),
        question: t.question.clone(),
        round,
        node,
    })
    .envelope()
}

/// The lease that lets one relay of a cluster scan at a time.
pub const RELAY_LEASE: &str = "relay";

/// The queues a probe goes through: every role a question's tasks pass.
const PROBED: [Role; 4] = [Role::Generator, Role::Scorer, Role::Verifier, Role::Labeler];

/// Re-drives every unfinished tree whose state and applied effects have not changed
/// for `stall` and that no queue holds a task for, checking every `stall / 4`, until
/// `stop`. A tree lost its tasks to a store rollback (or a crash between commit and
/// publish) moves again.
///
/// Whether a tree is only waiting in a long queue is told by probes: the relay sends
/// one through each role's queue, and once every role has taken it, everything queued
/// before it was taken. A tree is stalled only when it has not moved since before a
/// probe that has come through; without that, a deep backlog (a GPU cluster's queues
/// wait minutes) would have every waiting tree driven twice. A task taken just before
/// the probe may still be in a batch: such a tree is driven twice, which costs
/// deliveries but changes nothing (the outbox dedupes).
///
/// Every worker runs a relay, but only the holder of the store's relay lease (`holder`
/// names this one) scans: one scan's reads, not one per worker. When the holder dies
/// its lease runs out and another relay takes over, observing afresh.
pub async fn relay<S: Store, B: Broker>(
    store: S,
    broker: B,
    holder: String,
    stall: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let every = (stall / 4).max(Duration::from_millis(100));
    // Renewed every scan: outlives a few missed renewals, not a dead holder for long.
    let ttl = every * 3;
    let mut leading = false;
    let mut watch = Watch::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if *stop.borrow() {
            return;
        }
        match store.lease(RELAY_LEASE, &holder, ttl).await {
            Ok(true) => {
                if !leading {
                    tracing::info!(%holder, "this worker's relay watches for stalled trees");
                    leading = true;
                }
            }
            Ok(false) | Err(_) => {
                // Another relay watches (or the store is away): what this one saw
                // would be stale when it takes over.
                leading = false;
                watch = Watch {
                    // Marks of this relay's earlier probes stay in the store.
                    seq: watch.seq,
                    ..Watch::default()
                };
                continue;
            }
        }
        if let Err(err) = watch.scan(&store, &broker, stall).await {
            tracing::debug!(%err, "relay scan failed; trying again later");
        }
        // Probes only while trees are unfinished: an idle cluster stays quiet.
        if !watch.seen.is_empty() {
            if let Err(err) = watch.probe(&store, &broker, &holder).await {
                tracing::debug!(%err, "relay probe failed; trying again later");
            }
        }
    }
}

/// What the leading relay has seen.
#[derive(Default)]
struct Watch {
    /// Each unfinished tree's last mark and since when it has had it.
    seen: HashMap<TreeRef, (String, Instant)>,
    /// Each unfinished run's questions.
    questions: HashMap<String, Vec<String>>,
    /// The probes on their way through the queues: number and when sent, oldest first.
    /// One goes every scan, so that a probe whose mark the store lost (a rollback) is
    /// followed by others: the relay never waits on one probe forever.
    sent: VecDeque<(u64, Instant)>,
    /// Probes sent so far.
    seq: u64,
    /// When the last probe to come through every queue was sent.
    through: Option<Instant>,
}

impl Watch {
    /// Notes which probes have come through every queue, and sends the next.
    async fn probe<S: Store, B: Broker>(
        &mut self,
        store: &S,
        broker: &B,
        holder: &str,
    ) -> Result<(), crate::roles::WorkError> {
        let taken = store.probes(holder).await?;
        // The latest probe every role has taken. Consumers may mark a queue's probes
        // out of order; a mark that goes back only makes the relay wait longer.
        let through = PROBED
            .iter()
            .map(|r| taken.get(r).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        while let Some(&(seq, at)) = self.sent.front() {
            if seq > through {
                break;
            }
            self.through = Some(at);
            self.sent.pop_front();
        }
        let seq = self.seq + 1;
        let probes: Vec<Envelope<Task>> = PROBED
            .iter()
            .map(|&role| {
                Task::Probe(ProbeTask {
                    relay: holder.to_owned(),
                    seq,
                    role,
                })
                .envelope()
            })
            .collect();
        broker.publish(&probes).await?;
        self.seq = seq;
        self.sent.push_back((seq, Instant::now()));
        Ok(())
    }

    async fn scan<S: Store, B: Broker>(
        &mut self,
        store: &S,
        broker: &B,
        stall: Duration,
    ) -> Result<(), crate::roles::WorkError> {
        let now = Instant::now();
        let mut stalled = Vec::new();
        for run in store.runs().await? {
            if store.progress(&run).await?.complete() {
                self.questions.remove(&run);
                continue;
            }
            if !self.questions.contains_key(&run) {
                let ids = store
                    .questions(&run)
                    .await?
                    .into_iter()
                    .map(|q| q.id)
                    .collect();
                self.questions.insert(run.clone(), ids);
            }
            let trees: Vec<TreeRef> = self.questions[&run]
                .iter()
                .map(|q| TreeRef::new(&run, q))
                .collect();
            for chunk in trees.chunks(512) {
                for (t, p) in chunk.iter().zip(store.positions(chunk).await?) {
                    let Some(p) = p else { continue };
                    if matches!(p.state.status, TreeStatus::Done | TreeStatus::Failed) {
                        self.seen.remove(t);
                        continue;
                    }
                    let mark = format!("{:?}/{}", p.state, p.applied);
                    match self.seen.get(t) {
                        Some((m, since))
                            if *m == mark
                                && now.duration_since(*since) >= stall
                                && self.through.is_some_and(|at| at >= *since) =>
                        {
                            stalled.push(t.clone());
                            self.seen.insert(t.clone(), (mark, now));
                        }
                        Some((m, _)) if *m == mark => {}
                        _ => {
                            self.seen.insert(t.clone(), (mark, now));
                        }
                    }
                }
            }
        }
        let tasks = redrive(store, &stalled, "stalled").await?;
        for chunk in tasks.chunks(1024) {
            broker.publish(chunk).await?;
        }
        Ok(())
    }
}
