//! A worker's heartbeat in the store: who serves what, where, with which models, for
//! `tsst status` and `tsst monitor`. A beat not renewed within [`BEAT_MAX_AGE`] is a
//! worker gone (killed, or cut off from the store); a worker that stops cleanly
//! removes its own.
use super::Context;
use crate::broker::Broker;
use crate::store::{unix_now, Store, WorkerBeat};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a worker renews its beat.
pub const BEAT_EVERY: Duration = Duration::from_secs(5);
/// Seconds after which a beat that was not renewed counts as a worker gone.
pub const BEAT_MAX_AGE: u64 = 20;

/// Renews `beat` (its models and time filled in each time) until `stop`, then
/// removes it. A store that cannot be reached only delays the next beat.
pub async fn heartbeat<S: Store, B: Broker>(
    ctx: Arc<Context<S, B>>,
    mut beat: WorkerBeat,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (policies, values) = ctx.models.loaded();
        beat.models = policies.into_iter().chain(values).collect();
        beat.seen = unix_now();
        if let Err(err) = ctx.store.beat(&beat).await {
            tracing::debug!(%err, "could not write the heartbeat");
        }
        tokio::select! {
            _ = tokio::time::sleep(BEAT_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    if let Err(err) = ctx.store.forget_worker(&beat.name).await {
        tracing::debug!(%err, "could not remove the heartbeat");
    }
}
