//! The model seams: a policy continues partial solutions by one step, a value model
//! scores them. Backends run on dedicated threads, never on an actor's event loop.
//! This crate knows nothing of queues or stores, so the model runtime (`tsst-models`)
//! depends only on it and the message types.
mod factory;
pub mod metric_names;
mod scripted;

pub use factory::{ModelFactory, ScriptedFactory};
pub use scripted::{parse_scripted, Scripted, ScriptedPolicy, ScriptedValue};
use thiserror::Error;
use tsst_messages::{Question, StepDelimiter};

/// Continue one partial solution by one step, once per seed.
#[derive(Debug, Clone)]
pub struct ExpandRequest<'a> {
    pub question: &'a Question,
    /// The partial solution so far (empty at the root).
    pub prefix: &'a str,
    /// One seed per sample; the samples share the prefix, so a backend can prefill it
    /// once and fork its cache.
    pub seeds: &'a [u64],
    /// 0 is greedy.
    pub temperature: f64,
    pub max_new_tokens: u32,
    /// Where a step ends; `None` generates one whole chain, until end-of-sequence or
    /// `max_new_tokens` (direct evaluation).
    pub delimiter: Option<StepDelimiter>,
}

/// One sampled step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepSample {
    /// The step's text; may be empty (the policy wrote nothing, or only ended the
    /// sequence).
    pub text: String,
    /// Sum of the token log-probabilities.
    pub logprob: f64,
    pub tokens: u32,
    /// The step ended with the end-of-sequence token: the policy chose to stop here.
    pub eos: bool,
}

/// Score one partial solution.
#[derive(Debug, Clone)]
pub struct ScoreRequest<'a> {
    pub question: &'a Question,
    pub text: &'a str,
}

/// A whole batch failed (the device, the model): the tasks are retried elsewhere.
#[derive(Debug, Error)]
#[error("{backend} failed: {reason}")]
pub struct BackendError {
    pub backend: String,
    pub reason: String,
}

/// One request of a batch could not be served (e.g. its image is unreadable): that
/// question fails, the rest of the batch goes on.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("{0}")]
pub struct RequestError(pub String);

pub type PolicyOutput = Result<Vec<StepSample>, RequestError>;

pub trait PolicyBackend: Send + 'static {
    fn name(&self) -> String;
    /// One result per request, in order; each `Ok` has one sample per seed.
    fn expand(&mut self, batch: &[ExpandRequest<'_>]) -> Result<Vec<PolicyOutput>, BackendError>;
}

pub trait ValueBackend: Send + 'static {
    fn name(&self) -> String;
    /// One score per request, in order.
    fn score(
        &mut self,
        batch: &[ScoreRequest<'_>],
    ) -> Result<Vec<Result<f64, RequestError>>, BackendError>;
}
