//! The models a worker serves, each owned by an actor on a thread of its own
//! (`SyncArbiter`, one thread per model: one ONNX session per device, used by one
//! batch at a time). Role actors send it whole batches as messages and await the
//! answer, so neither loading nor inference ever runs on an event loop.
//!
//! A model actor loads its model on its first batch; a load that fails is tried
//! again on the next. A backend that panics (a native library crashing) answers its
//! batch with an error and is replaced by a fresh actor that loads the model anew.
use actix::{Actor, ActorContext, Addr, Handler, Message, SyncArbiter, SyncContext};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use tsst_backend::{
    BackendError, ExpandRequest, ModelFactory, PolicyBackend, PolicyOutput, RequestError,
    ScoreRequest, ValueBackend,
};
use tsst_messages::{Question, StepDelimiter};

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
pub struct Expand(pub Vec<ExpandJob>);

impl Message for Expand {
    type Result = Result<Vec<PolicyOutput>, BackendError>;
}

/// Score a batch of (question, partial solution) with the value model.
pub struct Score(pub Vec<(Arc<Question>, String)>);

impl Message for Score {
    type Result = Result<Vec<Result<f64, RequestError>>, BackendError>;
}

/// The actor that owns one policy model.
pub struct PolicyActor {
    name: String,
    factory: Arc<dyn ModelFactory>,
    backend: Option<Box<dyn PolicyBackend>>,
}

/// The actor that owns one value model.
pub struct ValueActor {
    name: String,
    factory: Arc<dyn ModelFactory>,
    backend: Option<Box<dyn ValueBackend>>,
}

impl Actor for PolicyActor {
    type Context = SyncContext<Self>;
}

impl Actor for ValueActor {
    type Context = SyncContext<Self>;
}

/// Runs `call` on the loaded backend, loading it first if needed; a panic becomes the
/// batch's error and stops the actor, so that `SyncArbiter` starts a fresh one.
fn serve<B: ?Sized, T, Ctx: ActorContext>(
    name: &str,
    backend: &mut Option<Box<B>>,
    load: impl FnOnce() -> Result<Box<B>, BackendError>,
    call: impl FnOnce(&mut B) -> Result<T, BackendError>,
    ctx: &mut Ctx,
) -> Result<T, BackendError> {
    let loaded = match backend {
        Some(b) => b,
        None => backend.insert(load()?),
    };
    match catch_unwind(AssertUnwindSafe(|| call(loaded))) {
        Ok(result) => result,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            tracing::error!(
                model = name,
                reason,
                "the model panicked; it is loaded again"
            );
            ctx.stop();
            Err(BackendError {
                backend: format!("model `{name}`"),
                reason: format!("panicked: {reason}"),
            })
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
        let factory = &self.factory;
        let name = &self.name;
        serve(
            name,
            &mut self.backend,
            || factory.policy(name),
            |b| b.expand(&requests),
            ctx,
        )
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
        let factory = &self.factory;
        let name = &self.name;
        serve(
            name,
            &mut self.backend,
            || factory.value(name),
            |b| b.score(&requests),
            ctx,
        )
    }
}

/// The model actors of a worker, started on first use of each model name and shared
/// by every role instance that uses it.
pub struct Models {
    factory: Arc<dyn ModelFactory>,
    policies: Mutex<HashMap<String, Addr<PolicyActor>>>,
    values: Mutex<HashMap<String, Addr<ValueActor>>>,
}

impl Models {
    pub fn new(factory: impl ModelFactory) -> Self {
        Models {
            factory: Arc::new(factory),
            policies: Mutex::new(HashMap::new()),
            values: Mutex::new(HashMap::new()),
        }
    }

    /// Expands a batch with the named policy. An actor that is gone (its thread died)
    /// is a backend failure: the tasks are tried again.
    pub async fn expand(
        &self,
        model: &str,
        jobs: Vec<ExpandJob>,
    ) -> Result<Vec<PolicyOutput>, BackendError> {
        let addr = self.policy(model);
        addr.send(Expand(jobs)).await.map_err(|e| gone(model, e))?
    }

    /// Scores a batch with the named value model.
    pub async fn score(
        &self,
        model: &str,
        jobs: Vec<(Arc<Question>, String)>,
    ) -> Result<Vec<Result<f64, RequestError>>, BackendError> {
        let addr = self.value(model);
        addr.send(Score(jobs)).await.map_err(|e| gone(model, e))?
    }

    /// The policy's actor, started if this is the model's first use; must run inside
    /// an actix system.
    fn policy(&self, name: &str) -> Addr<PolicyActor> {
        let mut started = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        let factory = self.factory.clone();
        started
            .entry(name.to_owned())
            .or_insert_with(|| {
                let name = name.to_owned();
                SyncArbiter::start(1, move || PolicyActor {
                    name: name.clone(),
                    factory: factory.clone(),
                    backend: None,
                })
            })
            .clone()
    }

    fn value(&self, name: &str) -> Addr<ValueActor> {
        let mut started = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let factory = self.factory.clone();
        started
            .entry(name.to_owned())
            .or_insert_with(|| {
                let name = name.to_owned();
                SyncArbiter::start(1, move || ValueActor {
                    name: name.clone(),
                    factory: factory.clone(),
                    backend: None,
                })
            })
            .clone()
    }
}

fn gone(model: &str, e: actix::MailboxError) -> BackendError {
    BackendError {
        backend: format!("model `{model}`"),
        reason: format!("its actor is gone: {e}"),
    }
}
