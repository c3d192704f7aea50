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
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tsst_messages::{Envelope, ExpandTask, Task, TreeStatus, VerifyTask};

/// How long one stale task's re-drive of a tree keeps other stale tasks of that tree
/// from re-driving it again.
pub const REDRIVE_CLAIM: Duration = Duration::from_secs(30);

/// Re-drives the trees that tasks found stale, `(tree, the task's id)`, each once.
/// When the store loses writes, every task in flight for a tree finds it stale, and
/// one re-drive publishes what all of them would: the first claims the tree (a lease
/// held by its task id, so that its own redelivery may re-drive again), the others
/// leave it. A claimer that dies before publishing is redelivered and re-drives.
pub async fn redrive_stale<S: Store>(
    store: &S,
    stale: &[(TreeRef, String)],
) -> Result<Vec<Envelope<Task>>, StoreError> {
    let mut claimed = Vec::new();
    let mut seen = BTreeSet::new();
    for (tree, task) in stale {
        if !seen.insert(tree) {
            continue;
        }
        let name = format!("redrive:{}/{}", tree.run, tree.question);
        if store.lease(&name, task, REDRIVE_CLAIM).await? {
            claimed.push(tree.clone());
        } else {
            tracing::debug!(run = %tree.run, question = %tree.question, "another task re-drives this tree");
        }
    }
    redrive(store, &claimed).await
}

/// The tasks that drive each tree on from where the store says it stands, and only
/// those: for a searching tree, the expansion of each frontier node not expanded yet,
/// the score task of each one expanded but not scored, and when all are scored (the
/// conclusion was lost) one score task again to conclude the round; a searched tree's
/// verification. Nothing for trees that are done, failed or unknown.
pub async fn redrive<S: Store>(
    store: &S,
    trees: &[TreeRef],
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
            "re-driving trees from their stored state"
        );
    }
    Ok(tasks)
}

fn expand(t: &TreeRef, round: u32, node: tsst_messages::NodeId) -> Envelope<Task> {
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

/// Re-drives every unfinished tree whose state and applied effects have not changed
/// for `stall`, checking every `stall / 4`, until `stop`. A tree that only waited in a
/// long queue is driven twice, which costs deliveries but changes nothing (the outbox
/// dedupes); a tree that lost its tasks to a store rollback moves again.
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
    let mut seen: HashMap<TreeRef, (String, Instant)> = HashMap::new();
    let mut questions: HashMap<String, Vec<String>> = HashMap::new();
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
                seen.clear();
                continue;
            }
        }
        if let Err(err) = scan(&store, &broker, stall, &mut seen, &mut questions).await {
            tracing::debug!(%err, "relay scan failed; trying again later");
        }
    }
}

async fn scan<S: Store, B: Broker>(
    store: &S,
    broker: &B,
    stall: Duration,
    seen: &mut HashMap<TreeRef, (String, Instant)>,
    questions: &mut HashMap<String, Vec<String>>,
) -> Result<(), crate::roles::WorkError> {
    let now = Instant::now();
    let mut stalled = Vec::new();
    for run in store.runs().await? {
        if store.progress(&run).await?.complete() {
            questions.remove(&run);
            continue;
        }
        if !questions.contains_key(&run) {
            let ids = store
                .questions(&run)
                .await?
                .into_iter()
                .map(|q| q.id)
                .collect();
            questions.insert(run.clone(), ids);
        }
        let trees: Vec<TreeRef> = questions[&run]
            .iter()
            .map(|q| TreeRef::new(&run, q))
            .collect();
        for chunk in trees.chunks(512) {
            for (t, p) in chunk.iter().zip(store.positions(chunk).await?) {
                let Some(p) = p else { continue };
                if matches!(p.state.status, TreeStatus::Done | TreeStatus::Failed) {
                    seen.remove(t);
                    continue;
                }
                let mark = format!("{:?}/{}", p.state, p.applied);
                match seen.get(t) {
                    Some((m, since)) if *m == mark && now.duration_since(*since) >= stall => {
                        stalled.push(t.clone());
                        seen.insert(t.clone(), (mark, now));
                    }
                    Some((m, _)) if *m == mark => {}
                    _ => {
                        seen.insert(t.clone(), (mark, now));
                    }
                }
            }
        }
    }
    let tasks = redrive(store, &stalled).await?;
    for chunk in tasks.chunks(1024) {
        broker.publish(chunk).await?;
    }
    Ok(())
}
