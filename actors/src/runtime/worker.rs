//! A worker: one supervised actix actor per role instance. Each actor consumes its
//! role's queue as a stream (`StreamHandler`), forms batches of up to `max_size`
//! deliveries (waiting at most `max_wait` for a batch to fill), processes one batch at
//! a time, and sends model work to the model actors (`runtime::models`).
//!
//! Supervision: an actor whose consumer ends, or whose batch panicked, stops and is
//! restarted by its `Supervisor` with a fresh subscription (the lost consumer's
//! channel closes, so the broker requeues what it held). An actor whose role met an
//! error no retry can mend reports it and stays idle; the process then stops and says
//! why. Shutdown (`Drain`) lets every actor finish and settle the batch in flight.
use super::context::{Context, DeliveryOf};
use crate::broker::{Broker, BrokerError, Consumer, Delivery};
use crate::metrics::{BATCH_FAILURES, BATCH_SECONDS, BATCH_SIZE};
use crate::roles::{
    requeue_all, Failed, Generator, Labeler, RoleWork, Scorer, Trainer, Verifier, WorkError,
};
use crate::store::Store;
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Handler, Message, Recipient,
    ResponseActFuture, SpawnHandle, StreamHandler, Supervised, Supervisor, WrapFuture,
};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tsst_messages::Role;

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most deliveries processed as one batch (one backend call per model).
    pub max_size: usize,
    /// How long a partial batch waits for more deliveries at least; see
    /// [`RoleActor::fill_wait`] for the longer wait of costly batches.
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

impl BatchSettings {
    /// The consumer's prefetch: never less than a batch.
    pub fn effective_prefetch(&self) -> u16 {
        self.prefetch
            .max(self.max_size.min(u16::MAX as usize) as u16)
    }
}

/// A role and how many actors serve it in this process.
#[derive(Debug, Clone, Copy)]
pub struct RoleSpec {
    pub role: Role,
    pub instances: usize,
}

/// Stop taking work; answered once the batch in flight is settled and what was
/// taken but not started is back in the queue.
#[derive(Debug, Clone, Copy)]
pub struct Drain;

impl Message for Drain {
    type Result = ();
}

/// A batch ended: how, and with the deliveries to try again (`held`).
struct Done<D>(Result<(), Failed<D>>);

/// Longest wait between two tries of a held batch or a subscription.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest a partial batch waits to fill, however costly batches are.
const MAX_FILL_WAIT: Duration = Duration::from_millis(1000);
/// How long a role's first partial batch waits to fill.
const FIRST_FILL_WAIT: Duration = Duration::from_millis(200);
/// Longest a shutdown waits for the batches in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

struct RoleActor<W, B: Broker> {
    role: Role,
    work: Arc<W>,
    broker: B,
    batch: BatchSettings,
    /// Deliveries taken but not yet in a batch.
    pending: Vec<DeliveryOf<B>>,
    /// A batch is being processed (or waits to be tried again).
    busy: bool,
    /// When the batch in flight started.
    started: Instant,
    /// How long the last batch took, the measure of what a partial batch wastes.
    last_batch: Duration,
    /// The consumer, attached as a stream.
    stream: Option<SpawnHandle>,
    /// The timer that sends a partial batch once `max_wait` has passed.
    flush: Option<SpawnHandle>,
    backoff: Duration,
    /// Restarts so far: a subscription after a restart waits a little first, so a
    /// consumer that ends at once never spins.
    restarts: u32,
    /// The consumer ended while a batch was in flight: restart once it is settled.
    restart_when_idle: bool,
    life: Life,
    /// Where an error no retry can mend is reported.
    fatal: mpsc::UnboundedSender<String>,
}

/// Where a role actor is in its life.
enum Life {
    Working,
    /// Asked to drain: the sender is answered once idle.
    Draining(oneshot::Sender<()>),
    /// Drained; stopped for good.
    Drained,
    /// The role met an error no retry can mend: reported once, then idle.
    Dead,
}

impl Life {
    fn working(&self) -> bool {
        matches!(self, Life::Working)
    }
}

type Item<B> = Result<DeliveryOf<B>, BrokerError>;

impl<W, B> Actor for RoleActor<W, B>
where
    B: Broker,
    W: RoleWork<DeliveryOf<B>>,
{
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match self.life {
            Life::Working => {}
            // Restarted in the middle of a drain (its batch panicked): nothing is
            // in flight any more.
            Life::Draining(_) => return self.finish_drain(ctx),
            Life::Drained | Life::Dead => return,
        }
        let wait = if self.restarts == 0 {
            Duration::ZERO
        } else {
            FIRST_BACKOFF * self.restarts.min(50)
        };
        self.subscribe(wait, ctx);
    }
}

impl<W, B> Supervised for RoleActor<W, B>
where
    B: Broker,
    W: RoleWork<DeliveryOf<B>>,
{
    /// The stream and every timer died with the old context; the deliveries that were
    /// pending went with the old consumer (its channel closes and the broker requeues
    /// them). Start clean.
    fn restarting(&mut self, _: &mut Self::Context) {
        self.restarts += 1;
        self.pending.clear();
        self.busy = false;
        self.flush = None;
        self.stream = None;
        self.restart_when_idle = false;
        tracing::warn!(role = %self.role, restarts = self.restarts, "role actor restarting");
    }
}

impl<W, B> RoleActor<W, B>
where
    B: Broker,
    W: RoleWork<DeliveryOf<B>>,
{
    /// Subscribes after `wait`, trying again with backoff while the broker refuses.
    fn subscribe(&mut self, wait: Duration, ctx: &mut actix::Context<Self>) {
        let broker = self.broker.clone();
        let role = self.role;
        let prefetch = self.batch.effective_prefetch();
        let fut = async move {
            tokio::time::sleep(wait).await;
            broker.consume(role, prefetch).await
        };
        ctx.spawn(fut.into_actor(self).map(move |consumer, actor, ctx| {
            if !actor.life.working() {
                return;
            }
            match consumer {
                Ok(consumer) => {
                    let stream = futures_util::stream::unfold(consumer, |mut c| async move {
                        c.next().await.map(|d| (d, c))
                    });
                    actor.stream = Some(ctx.add_stream(Box::pin(stream)));
                }
                Err(err) => {
                    tracing::warn!(%role, %err, "cannot consume yet; retrying");
                    let next = (wait * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                    actor.subscribe(next, ctx);
                }
            }
        }));
    }

    /// Starts the next batch if one may start: nothing in flight, and either a full
    /// batch pending or `full_only` false.
    fn dispatch(&mut self, full_only: bool, ctx: &mut actix::Context<Self>) {
        // Taken on a channel that has since been lost (a broker restart, a dropped
        // connection): the broker gave them back to the queue when the channel died.
        let before = self.pending.len();
        self.pending.retain(|d| !d.lost());
        if self.pending.len() < before {
            tracing::debug!(role = %self.role, dropped = before - self.pending.len(), "deliveries of a lost channel left to their redelivery");
        }
        if self.busy || self.pending.is_empty() || !self.life.working() {
            return;
        }
        if full_only && self.pending.len() < self.batch.max_size {
            return;
        }
        if let Some(timer) = self.flush.take() {
            ctx.cancel_future(timer);
        }
        let n = self.pending.len().min(self.batch.max_size);
        let batch: Vec<_> = self.pending.drain(..n).collect();
        self.run(batch, ctx);
    }

    /// Processes a batch; a panic in it stops the actor (its supervisor restarts it).
    fn run(&mut self, batch: Vec<DeliveryOf<B>>, ctx: &mut actix::Context<Self>) {
        self.busy = true;
        self.started = Instant::now();
        metrics::histogram!(BATCH_SIZE, "role" => self.role.name()).record(batch.len() as f64);
        let work = self.work.clone();
        let fut = AssertUnwindSafe(async move { work.process(batch).await }).catch_unwind();
        ctx.spawn(fut.into_actor(self).map(|result, actor, ctx| match result {
            Ok(done) => actor.done(Done(done), ctx),
            Err(_) => {
                actor.failed("panic");
                tracing::error!(role = %actor.role, "a batch panicked; the actor restarts and its deliveries go back to the queue");
                ctx.stop();
            }
        }));
    }

    fn done(&mut self, Done(result): Done<DeliveryOf<B>>, ctx: &mut actix::Context<Self>) {
        let role = self.role;
        self.last_batch = self.started.elapsed();
        metrics::histogram!(BATCH_SECONDS, "role" => role.name())
            .record(self.last_batch.as_secs_f64());
        match result {
            Ok(()) => {
                self.backoff = FIRST_BACKOFF;
                self.busy = false;
            }
            Err(Failed { error, held }) if error.is_fatal() => {
                self.failed("fatal");
                tracing::error!(%role, %error, "the role stops: no retry can mend this");
                if let Life::Draining(tx) = std::mem::replace(&mut self.life, Life::Dead) {
                    let _ = tx.send(());
                }
                self.busy = false;
                let _ = self.fatal.send(format!("{role}: {error}"));
                let pending = std::mem::take(&mut self.pending);
                ctx.spawn(
                    requeue_all(held.into_iter().chain(pending))
                        .into_actor(self)
                        .map(|(), actor, ctx| {
                            // Dropping the consumer closes its channel: whatever it
                            // still held goes back to the queue for other workers.
                            if let Some(stream) = actor.stream.take() {
                                ctx.cancel_future(stream);
                            }
                        }),
                );
            }
            Err(Failed { error, held }) => {
                self.failed(match &error {
                    WorkError::Store(_) => "store",
                    _ => "broker",
                });
                // Wait a little before trying again so an outage is not hammered.
                if held.is_empty() {
                    tracing::error!(%role, %error, "batch failed and went back to the queue");
                } else {
                    tracing::warn!(%role, %error, "store unavailable; holding the batch");
                }
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                ctx.run_later(wait, move |actor, ctx| {
                    if held.is_empty() {
                        actor.busy = false;
                        actor.after_batch(ctx);
                    } else if matches!(actor.life, Life::Draining(_)) {
                        ctx.spawn(requeue_all(held).into_actor(actor).map(|(), actor, ctx| {
                            actor.busy = false;
                            actor.after_batch(ctx);
                        }));
                    } else {
                        actor.run(held, ctx);
                    }
                });
                return;
            }
        }
        self.after_batch(ctx);
    }

    /// How long a partial batch waits to fill: `max_wait`, or a quarter of the last
    /// batch's time when that is longer (at most [`MAX_FILL_WAIT`]). A GPU batch costs
    /// nearly as much half full as full (decoding reads the weights once a step
    /// whatever the rows), so sending the first few deliveries of a round at once
    /// wastes most of a batch; waiting a fraction of a batch's time to fill it costs
    /// little. Cheap batches (CPU roles, the scripted model) keep their short wait.
    /// Measured with `bench/scale` (bench/RESULTS.md): 32 simulated GPU workers ran
    /// at 44 questions/s with a fixed 5 ms and 57 with this wait (0.79 and 0.83 of
    /// linear: one worker gains too).
    fn fill_wait(&self) -> Duration {
        // Before the first batch its cost is unknown: a worker's first batch is often
        // a whole round's work arriving over a moment (an enqueue's burst).
        let cost = if self.last_batch.is_zero() {
            FIRST_FILL_WAIT
        } else {
            self.last_batch / 4
        };
        self.batch.max_wait.max(cost.min(MAX_FILL_WAIT))
    }

    fn failed(&self, kind: &'static str) {
        metrics::counter!(BATCH_FAILURES, "role" => self.role.name(), "kind" => kind).increment(1);
    }

    /// What follows a settled batch: the next one (deliveries that arrived meanwhile
    /// have waited long enough), a pending restart, or the end of a drain.
    fn after_batch(&mut self, ctx: &mut actix::Context<Self>) {
        if self.busy {
            return;
        }
        if matches!(self.life, Life::Draining(_)) {
            self.finish_drain(ctx);
        } else if self.restart_when_idle {
            ctx.stop();
        } else {
            self.dispatch(false, ctx);
        }
    }

    /// Puts back what was taken but not started, then answers the drain.
    fn finish_drain(&mut self, ctx: &mut actix::Context<Self>) {
        let pending = std::mem::take(&mut self.pending);
        ctx.spawn(requeue_all(pending).into_actor(self).map(|(), actor, ctx| {
            if let Life::Draining(tx) = std::mem::replace(&mut actor.life, Life::Drained) {
                let _ = tx.send(());
            }
            // The worker dropped its address before asking: stopping now does not
            // restart the actor.
            ctx.stop();
        }));
    }
}

impl<W, B> StreamHandler<Item<B>> for RoleActor<W, B>
where
    B: Broker,
    W: RoleWork<DeliveryOf<B>>,
{
    fn handle(&mut self, item: Item<B>, ctx: &mut Self::Context) {
        let delivery = match item {
            Ok(d) => d,
            Err(err) => {
                tracing::error!(role = %self.role, %err, "consumer error");
                return;
            }
        };
        // One line per delivery the role took: an exact count of the work's
        // deliveries that survives a SIGKILL (the soak counts these).
        tracing::debug!(role = %self.role, attempt = delivery.attempt(), "delivery taken");
        if !self.life.working() {
            // Back to the queue, for another worker or a later life of this one.
            ctx.spawn(requeue_all([delivery]).into_actor(self));
            return;
        }
        self.pending.push(delivery);
        if self.pending.len() >= self.batch.max_size {
            self.dispatch(true, ctx);
        } else if !self.busy && self.flush.is_none() {
            self.flush = Some(ctx.run_later(self.fill_wait(), |actor, ctx| {
                actor.flush = None;
                actor.dispatch(false, ctx);
            }));
        }
    }

    /// The consumer ended (the broker was closed, or its subscription is gone for
    /// good): restart, which subscribes again, once no batch is in flight.
    fn finished(&mut self, ctx: &mut Self::Context) {
        if !self.life.working() {
            return;
        }
        tracing::warn!(role = %self.role, "consumer closed; the actor restarts");
        if self.busy {
            self.restart_when_idle = true;
        } else {
            ctx.stop();
        }
    }
}

impl<W, B> Handler<Drain> for RoleActor<W, B>
where
    B: Broker,
    W: RoleWork<DeliveryOf<B>>,
{
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if let Some(timer) = self.flush.take() {
            ctx.cancel_future(timer);
        }
        if self.life.working() {
            self.life = Life::Draining(tx);
            if !self.busy {
                self.finish_drain(ctx);
            }
        } else {
            // Dead or drained already: nothing left to settle.
            let _ = tx.send(());
        }
        Box::pin(
            async move {
                let _ = rx.await;
            }
            .into_actor(self),
        )
    }
}

pub struct Worker {
    /// The only strong addresses of the role actors: while they live, a stopped
    /// actor is restarted by its supervisor.
    actors: Vec<Recipient<Drain>>,
    fatal: mpsc::UnboundedReceiver<String>,
}

impl Worker {
    /// Starts the roles' actors; must run inside an actix system. Each subscribes to
    /// its queue as it starts, waiting while the broker is unreachable.
    pub fn start<S: Store, B: Broker>(
        ctx: Arc<Context<S, B>>,
        roles: &[RoleSpec],
        batch: BatchSettings,
    ) -> Worker {
        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let mut actors = Vec::new();
        for spec in roles {
            if spec.role == Role::Trainer && ctx.trainer.is_none() {
                tracing::warn!("the trainer role needs a trainer config; skipped");
                continue;
            }
            for _ in 0..spec.instances {
                let recipient = match spec.role {
                    Role::Generator => start(Generator::new(ctx.clone()), &ctx, batch, &fatal_tx),
                    Role::Scorer => start(Scorer::new(ctx.clone()), &ctx, batch, &fatal_tx),
                    Role::Verifier => start(Verifier::new(ctx.clone()), &ctx, batch, &fatal_tx),
                    Role::Labeler => start(Labeler::new(ctx.clone()), &ctx, batch, &fatal_tx),
                    Role::Trainer => {
                        let config = ctx.trainer.clone().expect("checked above");
                        start(Trainer::new(ctx.clone(), config), &ctx, batch, &fatal_tx)
                    }
                };
                actors.push(recipient);
            }
        }
        Worker { actors, fatal }
    }

    /// Waits until some role meets an error no retry can mend, and says which. The
    /// process should then stop and say why.
    pub async fn any_stopped(&mut self) -> String {
        match self.fatal.recv().await {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// Stops taking work, lets every batch in flight finish and settle, then returns.
    pub async fn shutdown(self) {
        let asked: Vec<_> = self.actors.iter().map(|a| a.send(Drain)).collect();
        // Without a strong address left, an actor that stops after draining is not
        // restarted.
        drop(self.actors);
        let all = futures_util::future::join_all(asked);
        // A batch stuck on a broker that went away must not keep the process alive:
        // what it holds unsettled goes back to the queue when the connection closes.
        if tokio::time::timeout(DRAIN_LIMIT, all).await.is_err() {
            tracing::warn!("a batch did not settle in time; its deliveries go back to the queue");
        }
    }
}

fn start<W, S, B>(
    work: W,
    ctx: &Arc<Context<S, B>>,
    batch: BatchSettings,
    fatal: &mpsc::UnboundedSender<String>,
) -> Recipient<Drain>
where
    S: Store,
    B: Broker,
    W: RoleWork<DeliveryOf<B>>,
{
    let actor = RoleActor {
        role: work.role(),
        work: Arc::new(work),
        broker: ctx.broker.clone(),
        batch,
        pending: Vec::new(),
        busy: false,
        started: Instant::now(),
        last_batch: Duration::ZERO,
        stream: None,
        flush: None,
        backoff: FIRST_BACKOFF,
        restarts: 0,
        restart_when_idle: false,
        life: Life::Working,
        fatal: fatal.clone(),
    };
    let addr: Addr<RoleActor<W, B>> = Supervisor::start(|_| actor);
    addr.recipient()
}
