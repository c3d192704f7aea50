//! What each role does with a batch of deliveries. Every role follows the same order:
//! check the outbox (already applied? then republish), compute, commit to the store,
//! publish the follow-up tasks, ack.
mod generator;
mod labeler;
mod plan;
mod scorer;
mod trainer;
mod verifier;

pub use generator::Generator;
pub use labeler::Labeler;
pub use plan::{settle, Outcome, Plan};
pub use scorer::Scorer;
pub use trainer::Trainer;
pub use verifier::Verifier;

use crate::broker::{BrokerError, Delivery};
use crate::store::{round_outbox_key, Store, StoreError, TreeRef, VERIFY_OUTBOX_KEY};
use std::future::Future;
use thiserror::Error;
use tsst_messages::{Envelope, Role, Task};

#[derive(Debug, Error)]
pub enum WorkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// No retry can mend it (a verifier endpoint that rejects the request): the role
    /// stops and says why.
    #[error("{0}")]
    Fatal(String),
}

impl WorkError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, WorkError::Fatal(_))
    }

    /// The store could not be reached or answer: the batch is held and tried again
    /// as it is, so that an outage never uses up the queue's delivery limit.
    pub fn holds_the_batch(&self) -> bool {
        matches!(self, WorkError::Store(e) if e.is_transient())
    }
}

/// A batch that failed for a reason that may pass: `held` are the deliveries to try
/// again as they are (unsettled); the rest were settled (requeued, dead-lettered).
#[derive(Debug)]
pub struct Failed<D> {
    pub error: WorkError,
    pub held: Vec<D>,
}

/// A role's batch processing.
pub trait RoleWork<D: Delivery>: Send + Sync + 'static {
    fn role(&self) -> Role;
    /// Processes a batch and settles every delivery in it: acked when its effect is
    /// committed and its follow-ups published, dead-lettered when it can never succeed;
    /// on a failure that may pass, the deliveries are held (store outage) or requeued.
    fn process(&self, batch: Vec<D>) -> impl Future<Output = Result<(), Failed<D>>> + Send;
}

/// Decodes a batch; what is not a task of `role` is dead-lettered with the reason.
pub(crate) async fn decode<D: Delivery>(batch: Vec<D>, role: Role) -> Vec<(D, Task)> {
    let mut out = Vec::with_capacity(batch.len());
    for d in batch {
        let reason = match Envelope::<Task>::decode(d.data()) {
            Ok(env) if env.body.role() == role => {
                out.push((d, env.body));
                continue;
            }
            Ok(env) => format!(
                "a {} task was delivered to the {} queue",
                env.body.role(),
                role
            ),
            Err(e) => e.to_string(),
        };
        tracing::warn!(%role, %reason, "dead-lettering a message");
        if let Err(err) = d.dead_letter(&reason).await {
            tracing::error!(%err, "could not dead-letter a message; it will be redelivered");
        }
    }
    out
}

/// Decodes a batch into its deliveries and their tasks of the role's kind. Probes
/// are marked in the store as taken from this role's queue and acked (one that
/// cannot be marked goes back to the queue).
pub(crate) async fn take<S: Store, D: Delivery, T>(
    store: &S,
    batch: Vec<D>,
    role: Role,
    kind: fn(Task) -> Option<T>,
) -> (Vec<D>, Vec<T>) {
    let mut taken = (Vec::new(), Vec::new());
    for (d, task) in decode(batch, role).await {
        match task {
            Task::Probe(probe) => {
                let settled = match store.mark_probe(&probe).await {
                    Ok(()) => d.ack().await,
                    Err(err) => {
                        tracing::debug!(%err, "could not mark a probe; it goes back");
                        d.requeue().await
                    }
                };
                if let Err(err) = settled {
                    tracing::debug!(%err, "could not settle a probe");
                }
            }
            task => {
                if let Some(t) = kind(task) {
                    taken.0.push(d);
                    taken.1.push(t);
                }
            }
        }
    }
    taken
}

/// Puts deliveries back after a failure that may pass (store or broker unreachable).
pub async fn requeue_all<D: Delivery>(deliveries: impl IntoIterator<Item = D>) {
    for d in deliveries {
        if let Err(err) = d.requeue().await {
            tracing::error!(%err, "could not requeue a delivery");
        }
    }
}

/// Dead-letters one delivery that can never succeed.
pub(crate) async fn reject<D: Delivery>(d: D, reason: &str) {
    tracing::warn!(%reason, "dead-lettering a task");
    if let Err(err) = d.dead_letter(reason).await {
        tracing::error!(%err, "could not dead-letter a task; it will be redelivered");
    }
}

/// The outbox entry that proves a task's effect is applied: an expand task's own id,
/// a score task's round conclusion (a concluded round has every score), a verify
/// task's verdicts. A label task has none (it is the last step and republishes
/// nothing).
fn applied_marker(task: &Task) -> Option<(TreeRef, String)> {
    Some(match task {
        Task::Expand(t) => (TreeRef::new(&t.run, &t.question), task.id()),
        Task::Score(t) => (TreeRef::new(&t.run, &t.question), round_outbox_key(t.round)),
        Task::Verify(t) => (
            TreeRef::new(&t.run, &t.question),
            VERIFY_OUTBOX_KEY.to_owned(),
        ),
        Task::Label(_) | Task::Train(_) | Task::Probe(_) => return None,
    })
}

/// Of the follow-ups a redelivered task would publish again, those whose effect is
/// not applied yet. Republishing the others would make one duplicate delivery replay
/// the rest of its tree (each duplicate republishing its own follow-ups in turn);
/// a follow-up that was applied but whose own follow-ups were lost is redelivered by
/// the broker anyway, since it is acked only after publishing them.
/// An applied effect found again: (tree, outbox key) and the follow-ups it published.
pub(crate) type Found = ((TreeRef, String), Vec<Envelope<Task>>);

/// Replays effects a task found applied, `((tree, outbox key), follow-ups)`: those
/// marked published publish nothing (their follow-ups are with the broker, so a
/// duplicate cannot start a wave of duplicates); the others publish their follow-ups
/// not applied yet, and are marked published with this batch.
pub(crate) async fn replay<S: Store>(
    store: &S,
    found: Vec<Found>,
    plan: &mut Plan,
) -> Result<(), StoreError> {
    let keys: Vec<(TreeRef, String)> = found.iter().map(|(k, _)| k.clone()).collect();
    let marked = store.published(&keys).await?;
    let mut tasks = Vec::new();
    for ((key, outbox), marked) in found.into_iter().zip(marked) {
        if !marked {
            tasks.extend(outbox);
            plan.published.push(key);
        }
    }
    plan.publish.extend(unapplied(store, tasks).await?);
    Ok(())
}

pub(crate) async fn unapplied<S: Store>(
    store: &S,
    tasks: Vec<Envelope<Task>>,
) -> Result<Vec<Envelope<Task>>, StoreError> {
    let markers: Vec<Option<(TreeRef, String)>> =
        tasks.iter().map(|t| applied_marker(&t.body)).collect();
    let keys: Vec<(TreeRef, String)> = markers.iter().flatten().cloned().collect();
    let mut found = store.outboxes(&keys).await?.into_iter();
    Ok(tasks
        .into_iter()
        .zip(markers)
        .filter(|(_, marker)| marker.is_none() || found.next().flatten().is_none())
        .map(|(t, _)| t)
        .collect())
}
