//! What each role does with a batch of deliveries. Every role follows the same order:
//! check the outbox (already applied? then republish), compute, commit to the store,
//! publish the follow-up tasks, ack.
mod generator;
mod labeler;
mod plan;
mod scorer;
mod verifier;

pub use generator::Generator;
pub use labeler::{label_question, Labeler, QuestionRecords};
pub use plan::{settle, Outcome, Plan};
pub use scorer::Scorer;
pub use verifier::Verifier;

use crate::backend::BackendError;
use crate::broker::{BrokerError, Delivery};
use crate::store::StoreError;
use std::future::Future;
use thiserror::Error;
use tsst_messages::{Envelope, Role, Task};

#[derive(Debug, Error)]
pub enum WorkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("model thread: {0}")]
    Join(String),
}

/// A role's batch processing.
pub trait RoleWork<D: Delivery>: Send + Sync + 'static {
    fn role(&self) -> Role;
    /// Processes a batch and settles every delivery in it: acked when its effect is
    /// committed and its follow-ups published, dead-lettered when it can never succeed,
    /// requeued when it failed for a reason that may pass (the returned error).
    fn process(&self, batch: Vec<D>) -> impl Future<Output = Result<(), WorkError>> + Send;
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

/// Decodes a batch into its deliveries and their tasks of the role's kind.
pub(crate) async fn take<D: Delivery, T>(
    batch: Vec<D>,
    role: Role,
    kind: fn(Task) -> Option<T>,
) -> (Vec<D>, Vec<T>) {
    decode(batch, role)
        .await
        .into_iter()
        .filter_map(|(d, t)| kind(t).map(|t| (d, t)))
        .unzip()
}

/// Puts deliveries back after a failure that may pass (store or broker unreachable).
pub(crate) async fn requeue_all<D: Delivery>(deliveries: impl IntoIterator<Item = D>) {
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
