//! A worker: one actix actor per role instance, each fed by its own consumer, taking
//! up to `max_size` deliveries at once (waiting at most `max_wait` to fill a batch).
//! Shutdown lets every actor finish and settle the batch in flight, then stop.
use super::context::Context;
use crate::broker::{Broker, BrokerError, Consumer};
use crate::roles::{requeue_all, Failed, Generator, Labeler, RoleWork, Scorer, Verifier};
use crate::store::Store;
use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, WrapFuture};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tsst_messages::Role;

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most deliveries processed as one batch (one backend call per model).
    pub max_size: usize,
    /// How long a partial batch waits for more deliveries.
    pub max_wait: Duration,
    /// Unacknowledged deliveries a consumer may hold; at least `max_size`.
    pub prefetch: u16,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_size: 64,
            max_wait: Duration::from_millis(5),
            prefetch: 128,
        }
    }
}

/// A role and how many actors serve it in this process.
#[derive(Debug, Clone, Copy)]
pub struct RoleSpec {
    pub role: Role,
    pub instances: usize,
}

pub struct Worker {
    stop: watch::Sender<bool>,
    stopped: Vec<oneshot::Receiver<Option<String>>>,
}

struct RoleActor<W, C> {
    work: Arc<W>,
    consumer: Option<C>,
    batch: BatchSettings,
    stop: watch::Receiver<bool>,
    stopped: Option<oneshot::Sender<Option<String>>>,
    /// Why the actor stopped by itself, if it did (a fatal error of its role).
    fatal: Option<String>,
}

impl<W, C> Actor for RoleActor<W, C>
where
    C: Consumer + Unpin,
    W: RoleWork<C::Delivery>,
{
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(consumer) = self.consumer.take() else {
            ctx.stop();
            return;
        };
        let feed = feed(self.work.clone(), consumer, self.batch, self.stop.clone());
        ctx.spawn(feed.into_actor(self).map(|fatal, actor, ctx| {
            actor.fatal = fatal;
            ctx.stop()
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(tx) = self.stopped.take() {
            let _ = tx.send(self.fatal.take());
        }
    }
}

/// Takes batches off the consumer until told to stop, the consumer closes, or the role
/// meets an error no retry can mend (returned). A batch that has started is always
/// finished: stopping only prevents the next one.
async fn feed<W, C>(
    work: Arc<W>,
    mut consumer: C,
    batch: BatchSettings,
    mut stop: watch::Receiver<bool>,
) -> Option<String>
where
    C: Consumer,
    W: RoleWork<C::Delivery>,
{
    let role = work.role();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            break;
        }
        let first = tokio::select! {
            biased;
            _ = stop.changed() => break,
            d = consumer.next() => d,
        };
        let mut deliveries = match first {
            None => {
                tracing::warn!(%role, "consumer closed");
                break;
            }
            Some(Err(err)) => {
                tracing::error!(%role, %err, "consumer error");
                tokio::time::sleep(backoff).await;
                continue;
            }
            Some(Ok(d)) => vec![d],
        };
        let deadline = Instant::now() + batch.max_wait;
        while deliveries.len() < batch.max_size {
            tokio::select! {
                d = consumer.next() => match d {
                    Some(Ok(d)) => deliveries.push(d),
                    _ => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let n = deliveries.len();
        let mut batch = deliveries;
        loop {
            match work.process(batch).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    tracing::debug!(%role, n, "batch done");
                    break;
                }
                Err(Failed { error, held }) if error.is_fatal() => {
                    tracing::error!(%role, %error, "the role stops: no retry can mend this");
                    requeue_all(held).await;
                    return Some(format!("{role}: {error}"));
                }
                Err(Failed { error, held }) => {
                    // Wait a little before trying again so an outage is not hammered.
                    if held.is_empty() {
                        tracing::error!(%role, n, %error, "batch failed and went back to the queue");
                    } else {
                        tracing::warn!(%role, n, %error, "store unavailable; holding the batch");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    if held.is_empty() {
                        break;
                    }
                    if *stop.borrow() {
                        requeue_all(held).await;
                        break;
                    }
                    batch = held;
                }
            }
        }
    }
    None
}

impl Worker {
    /// Starts the roles' actors; must run inside an actix system.
    pub async fn start<S: Store, B: Broker>(
        ctx: Arc<Context<S, B>>,
        roles: &[RoleSpec],
        batch: BatchSettings,
    ) -> Result<Worker, BrokerError>
    where
        B::Consumer: Unpin,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut stopped = Vec::new();
        let prefetch = batch
            .prefetch
            .max(batch.max_size.min(u16::MAX as usize) as u16);
        for spec in roles {
            for _ in 0..spec.instances {
                let consumer = match spec.role {
                    Role::Trainer => {
                        tracing::warn!("the trainer role is not available in this build; skipped");
                        break;
                    }
                    role => ctx.broker.consume(role, prefetch).await?,
                };
                let (tx, rx) = oneshot::channel();
                stopped.push(rx);
                let stop = stop_rx.clone();
                match spec.role {
                    Role::Generator => {
                        spawn(Generator::new(ctx.clone()), consumer, batch, stop, tx)
                    }
                    Role::Scorer => spawn(Scorer::new(ctx.clone()), consumer, batch, stop, tx),
                    Role::Verifier => spawn(Verifier::new(ctx.clone()), consumer, batch, stop, tx),
                    Role::Labeler => spawn(Labeler::new(ctx.clone()), consumer, batch, stop, tx),
                    Role::Trainer => {}
                }
            }
        }
        Ok(Worker {
            stop: stop_tx,
            stopped,
        })
    }

    /// Waits until some actor stops by itself: its role met an error no retry can mend
    /// (the reason), or its consumer closed. The process should then stop and say why.
    pub async fn any_stopped(&mut self) -> String {
        if self.stopped.is_empty() {
            return std::future::pending().await;
        }
        let (reason, i, _) = futures_util::future::select_all(self.stopped.iter_mut()).await;
        self.stopped.remove(i);
        reason
            .ok()
            .flatten()
            .unwrap_or_else(|| "a consumer closed".to_owned())
    }

    /// Stops taking work, lets every batch in flight finish and settle, then returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for rx in self.stopped {
            let _ = rx.await;
        }
    }
}

fn spawn<W, C>(
    work: W,
    consumer: C,
    batch: BatchSettings,
    stop: watch::Receiver<bool>,
    stopped: oneshot::Sender<Option<String>>,
) where
    C: Consumer + Unpin,
    W: RoleWork<C::Delivery>,
{
    RoleActor {
        work: Arc::new(work),
        consumer: Some(consumer),
        batch,
        stop,
        stopped: Some(stopped),
        fatal: None,
    }
    .start();
}
