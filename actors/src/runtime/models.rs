//! The models a worker serves, each owned by an actor on a thread of its own
//! (`SyncArbiter`, one thread per model: one ONNX session per device, used by one
//! batch at a time). Role actors send it whole batches as messages and await the
//! answer, so neither loading nor inference ever runs on an event loop.
//!
//! A model actor loads its model on its first batch; a load that fails is tried
//! again on the next. A backend that panics (a native library crashing) answers its
//! batch with an error and is replaced by a fresh actor that loads the model anew.
//! A batch whose backend failed is tried again in place a few times before the
//! failure counts against its tasks' delivery budget: a transient fault (a device
//! hiccup, a panic and a reload) costs a moment, not a redelivery.
use crate::metrics::{BACKEND_ERRORS, BACKEND_RETRIES, MODEL_LOADED};
use actix::{Actor, ActorContext, Addr, Handler, Message, SyncArbiter, SyncContext};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tsst_backend::{
    BackendError, ExpandRequest, ModelFactory, PolicyBackend, PolicyOutput, RequestError,
    ScoreRequest, ValueBackend,
};
use tsst_messages::{Question, StepDelimiter};

/// Tries of one batch on this worker before its tasks go back to the queue.
const LOCAL_TRIES: u32 = 3;
/// The wait before the second try; doubled for each further one.
const LOCAL_BACKOFF: Duration = Duration::from_millis(50);

/// One request of an [`Expand`] batch, owned so it can cross to the model's thread.
#[derive(Debug, Clone)]
pub struct ExpandJob {
    pub question: Arc<Question>,
    pub prefix: String,
    pub seeds: Vec<u64>,
    pub temperature: f64,
    pub max_new_tokens: u32,
    pub delimiter: Option<StepDelimiter>,
}

/// Expand a batch with the policy: one result per job, in order.
#[derive(Clone)]
pub struct Expand(pub Vec<ExpandJob>);

impl Message for Expand {
    type Result = Result<Vec<PolicyOutput>, BackendError>;
}

/// Score a batch of (question, partial solution) with the value model.
#[derive(Clone)]
pub struct Score(pub Vec<(Arc<Question>, String)>);

impl Message for Score {
    type Result = Result<Vec<Result<f64, RequestError>>, BackendError>;
}

/// A kind of model the factory makes by name: [`Policy`] or [`Value`].
pub trait Served: Unpin + 'static {
    type Backend: ?Sized;
    /// The `model_kind` label of its metrics.
    const KIND: &'static str;
    fn load(factory: &dyn ModelFactory, name: &str) -> Result<Box<Self::Backend>, BackendError>;
}

pub struct Policy;
pub struct Value;

impl Served for Policy {
    type Backend = dyn PolicyBackend;
    const KIND: &'static str = "policy";
    fn load(factory: &dyn ModelFactory, name: &str) -> Result<Box<Self::Backend>, BackendError> {
        factory.policy(name)
    }
}

impl Served for Value {
    type Backend = dyn ValueBackend;
    const KIND: &'static str = "value";
    fn load(factory: &dyn ModelFactory, name: &str) -> Result<Box<Self::Backend>, BackendError> {
        factory.value(name)
    }
}

/// The actor that owns one model: `ModelActor<Policy>` serves [`Expand`],
/// `ModelActor<Value>` serves [`Score`].
pub struct ModelActor<K: Served> {
    name: String,
    factory: Arc<dyn ModelFactory>,
    backend: Option<Box<K::Backend>>,
}

pub type PolicyActor = ModelActor<Policy>;
pub type ValueActor = ModelActor<Value>;

impl<K: Served> Actor for ModelActor<K> {
    type Context = SyncContext<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        if self.backend.is_some() {
            self.loaded_gauge().set(0.0);
        }
    }
}

impl<K: Served> ModelActor<K> {
    fn loaded_gauge(&self) -> metrics::Gauge {
        metrics::gauge!(MODEL_LOADED, "model_kind" => K::KIND, "model" => self.name.clone())
    }

    /// Runs `call` on the loaded backend, loading it first if needed; a panic becomes
    /// the batch's error and stops the actor, so that `SyncArbiter` starts a fresh one.
    fn serve<T>(
        &mut self,
        call: impl FnOnce(&mut K::Backend) -> Result<T, BackendError>,
        ctx: &mut SyncContext<Self>,
    ) -> Result<T, BackendError> {
        let loaded = match &mut self.backend {
            Some(b) => b,
            None => {
                let backend = K::load(self.factory.as_ref(), &self.name)?;
                self.loaded_gauge().set(1.0);
                self.backend.insert(backend)
            }
        };
        match catch_unwind(AssertUnwindSafe(|| call(loaded))) {
            Ok(result) => result,
            Err(panic) => {
                self.loaded_gauge().set(0.0);
                self.backend = None;
                let reason = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("no message");
                tracing::error!(
                    model = self.name,
                    reason,
                    "the model panicked; it is loaded again"
                );
                ctx.stop();
                Err(BackendError {
                    backend: format!("model `{}`", self.name),
                    reason: format!("panicked: {reason}"),
                })
            }
        }
    }
}

impl Handler<Expand> for PolicyActor {
    type Result = Result<Vec<PolicyOutput>, BackendError>;

    fn handle(&mut self, msg: Expand, ctx: &mut SyncContext<Self>) -> Self::Result {
        let requests: Vec<ExpandRequest<'_>> = msg
            .0
            .iter()
            .map(|o| ExpandRequest {
                question: &o.question,
                prefix: &o.prefix,
                seeds: &o.seeds,
                temperature: o.temperature,
                max_new_tokens: o.max_new_tokens,
                delimiter: o.delimiter,
            })
            .collect();
        let outputs = self.serve(|b| b.expand(&requests), ctx)?;
        let tokens: u64 = outputs
            .iter()
            .flatten()
            .flatten()
            .map(|s| u64::from(s.tokens))
            .sum();
        metrics::counter!(crate::metrics::TOKENS_GENERATED).increment(tokens);
        Ok(outputs)
    }
}

/// Load the model now, ahead of its first batch (a new version was published).
pub struct Warm;

impl Message for Warm {
    type Result = Result<(), BackendError>;
}

impl<K: Served> Handler<Warm> for ModelActor<K> {
    type Result = Result<(), BackendError>;

    fn handle(&mut self, _: Warm, ctx: &mut SyncContext<Self>) -> Self::Result {
        self.serve(|_| Ok(()), ctx)
    }
}

impl Handler<Score> for ValueActor {
    type Result = Result<Vec<Result<f64, RequestError>>, BackendError>;

    fn handle(&mut self, msg: Score, ctx: &mut SyncContext<Self>) -> Self::Result {
        let requests: Vec<ScoreRequest<'_>> = msg
            .0
            .iter()
            .map(|(question, text)| ScoreRequest { question, text })
            .collect();
        self.serve(|b| b.score(&requests), ctx)
    }
}

/// How many models of each kind (policy, value) a worker keeps loaded by default:
/// the version a run uses and the next, so that a self-training round's switch to a
/// new version does not unload the one whose batches are still finishing.
pub const DEFAULT_LOADED: usize = 2;

/// The model actors of one kind, least recently used first.
struct Started<K: Served> {
    actors: Vec<(String, Addr<ModelActor<K>>)>,
}

impl<K: Served> Default for Started<K> {
    fn default() -> Self {
        Started { actors: Vec::new() }
    }
}

/// The model actors of a worker, started on first use of each model name and shared
/// by every role instance that uses it. At most `limit` of each kind stay loaded: a
/// new name unloads the least recently used one. Unloading drops the cache's address
/// only; batches in flight hold their own, so the actor (and its ONNX session) stops
/// once they are answered: a switch never drops or fails a batch.
pub struct Models {
    factory: Arc<dyn ModelFactory>,
    limit: usize,
    policies: Mutex<Started<Policy>>,
    values: Mutex<Started<Value>>,
}

impl Models {
    pub fn new(factory: impl ModelFactory) -> Self {
        Models {
            factory: Arc::new(factory),
            limit: DEFAULT_LOADED,
            policies: Mutex::default(),
            values: Mutex::default(),
        }
    }

    /// At most `limit` (at least 1) models of each kind loaded at once.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit.max(1);
        self
    }

    /// Expands a batch with the named policy.
    pub async fn expand(
        &self,
        model: &str,
        jobs: Vec<ExpandJob>,
    ) -> Result<Vec<PolicyOutput>, BackendError> {
        ask(&self.actor(&self.policies, model), model, Expand(jobs)).await
    }

    /// Scores a batch with the named value model.
    pub async fn score(
        &self,
        model: &str,
        jobs: Vec<(Arc<Question>, String)>,
    ) -> Result<Vec<Result<f64, RequestError>>, BackendError> {
        ask(&self.actor(&self.values, model), model, Score(jobs)).await
    }

    /// Loads a model ahead of its first batch (it becomes the most recently used).
    /// `policy` picks the kind.
    pub async fn preload(&self, policy: bool, name: &str) -> Result<(), BackendError> {
        let gone = |e: actix::MailboxError| BackendError {
            backend: format!("model `{name}`"),
            reason: format!("its actor is gone: {e}"),
        };
        if policy {
            self.actor(&self.policies, name)
                .send(Warm)
                .await
                .map_err(gone)?
        } else {
            self.actor(&self.values, name)
                .send(Warm)
                .await
                .map_err(gone)?
        }
    }

    /// The names of the loaded models of each kind, least recently used first.
    pub fn loaded(&self) -> (Vec<String>, Vec<String>) {
        fn names<K: Served>(started: &Mutex<Started<K>>) -> Vec<String> {
            let started = started.lock().unwrap_or_else(|p| p.into_inner());
            started.actors.iter().map(|(n, _)| n.clone()).collect()
        }
        (names(&self.policies), names(&self.values))
    }

    /// The model's actor, started if it is not loaded; must run inside an actix
    /// system.
    fn actor<K: Served>(&self, started: &Mutex<Started<K>>, name: &str) -> Addr<ModelActor<K>> {
        let mut started = started.lock().unwrap_or_else(|p| p.into_inner());
        let actors = &mut started.actors;
        let entry = match actors.iter().position(|(n, _)| n == name) {
            Some(i) => actors.remove(i),
            None => {
                let (owned, factory) = (name.to_owned(), self.factory.clone());
                let addr = SyncArbiter::start(1, move || ModelActor {
                    name: owned.clone(),
                    factory: factory.clone(),
                    backend: None,
                });
                (name.to_owned(), addr)
            }
        };
        let addr = entry.1.clone();
        actors.push(entry);
        while actors.len() > self.limit {
            let (unloaded, _) = actors.remove(0);
            tracing::info!(model = %unloaded, "unloading the least recently used model");
        }
        addr
    }
}

/// Sends the batch, trying it again in place after a backend error. An actor that is
/// gone (its thread died) is a backend error too.
async fn ask<K, M, T>(addr: &Addr<ModelActor<K>>, model: &str, msg: M) -> Result<T, BackendError>
where
    K: Served,
    ModelActor<K>: Actor<Context = SyncContext<ModelActor<K>>> + Handler<M>,
    M: Message<Result = Result<T, BackendError>> + Clone + Send + 'static,
    T: Send + 'static,
{
    let (mut attempt, mut wait) = (1, LOCAL_BACKOFF);
    loop {
        let result = match addr.send(msg.clone()).await {
            Ok(result) => result,
            Err(e) => Err(BackendError {
                backend: format!("model `{model}`"),
                reason: format!("its actor is gone: {e}"),
            }),
        };
        if result.is_err() {
            metrics::counter!(BACKEND_ERRORS, "model_kind" => K::KIND).increment(1);
        }
        match result {
            Err(e) if attempt < LOCAL_TRIES => {
                metrics::counter!(BACKEND_RETRIES, "model_kind" => K::KIND).increment(1);
                tracing::warn!(model, attempt, error = %e, "backend failed; trying the batch again here");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            done => return done,
        }
    }
}
