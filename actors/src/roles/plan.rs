//! The outcome of computing a batch, applied to its deliveries in one place.
use super::{reject, requeue_all, Failed, WorkError};
use crate::broker::{Broker, Delivery};
use crate::runtime::{Context, DeliveryOf};
use crate::store::{Store, StoreError, TreeRef};
use std::collections::BTreeMap;
use tsst_messages::{Envelope, Event, Task};

/// What happens to one delivery once the batch's effects are committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ack,
    /// It can never succeed: dead-letter it with this reason.
    Reject(String),
    /// It failed for a reason that is not its own (the model could not load, the
    /// device ran out of memory): back to the queue for another try, here or elsewhere.
    Retry(String),
}

/// How many deliveries a task gets when the backend fails under it, before its
/// question is failed with the backend's reason (below the queue's delivery limit).
pub const BACKEND_TRIES: u32 = 3;

/// A batch's effects beyond the store: tasks to publish, events, and the fate of each
/// delivery (by position).
#[derive(Debug, Default)]
pub struct Plan {
    pub outcomes: Vec<Outcome>,
    pub publish: Vec<Envelope<Task>>,
    /// The applied effects (tree, outbox key) whose follow-ups `publish` holds: marked
    /// published once the broker has them.
    pub published: Vec<(TreeRef, String)>,
    pub events: Vec<Event>,
    /// Questions that cannot be processed (an unreadable image, a model this worker
    /// cannot load), by run: they fail alone and the run goes on.
    failed: BTreeMap<String, Vec<(String, Option<String>)>>,
}

impl Plan {
    pub fn new(n: usize) -> Self {
        Plan {
            outcomes: vec![Outcome::Ack; n],
            ..Default::default()
        }
    }

    pub fn reject(&mut self, i: usize, reason: impl Into<String>) {
        self.outcomes[i] = Outcome::Reject(reason.into());
    }

    /// The backend failed under task `i` on its `attempt`-th delivery: another try
    /// while the budget lasts, then the question fails with the reason.
    pub fn backend_failed(
        &mut self,
        i: usize,
        attempt: u32,
        run: &str,
        question: &str,
        reason: String,
    ) {
        if attempt < BACKEND_TRIES {
            tracing::warn!(run, question, attempt, %reason, "backend failed; the task goes back to the queue");
            self.outcomes[i] = Outcome::Retry(reason);
        } else {
            self.fail(run, question, format!("{reason} (after {attempt} tries)"));
        }
    }

    pub fn fail(&mut self, run: &str, question: &str, reason: String) {
        tracing::warn!(run, question, %reason, "question failed");
        self.events.push(Event::QuestionFailed {
            run: run.to_owned(),
            question: question.to_owned(),
            reason: reason.clone(),
        });
        self.failed
            .entry(run.to_owned())
            .or_default()
            .push((question.to_owned(), Some(reason)));
    }

    /// Records the failed questions; a run whose last question this was finishes.
    pub async fn commit_failures<S: Store>(&mut self, store: &S) -> Result<(), StoreError> {
        for (run, trees) in std::mem::take(&mut self.failed) {
            let (newly, progress) = store.finish_trees(&run, &trees).await?;
            if progress.complete() && newly.iter().any(|n| *n) {
                self.events.push(Event::RunFinished {
                    run,
                    questions: progress.total,
                    failed: progress.failed,
                });
            }
        }
        Ok(())
    }
}

/// Publishes, then settles: acks after the follow-ups are with the broker, rejects,
/// and on any failure requeues what is not settled yet.
pub async fn settle<S: Store, B: Broker>(
    ctx: &Context<S, B>,
    deliveries: Vec<DeliveryOf<B>>,
    plan: Result<Plan, WorkError>,
) -> Result<(), Failed<DeliveryOf<B>>> {
    let plan = match plan {
        Ok(plan) => plan,
        Err(error) if error.holds_the_batch() => {
            return Err(Failed {
                error,
                held: deliveries,
            })
        }
        Err(error) => {
            requeue_all(deliveries).await;
            return Err(Failed {
                error,
                held: Vec::new(),
            });
        }
    };
    if let Err(error) = publish(ctx, &plan.publish).await {
        // The broker is gone or refused: the deliveries go back (if their channel
        // lives; if not, the broker has them back already).
        requeue_all(deliveries).await;
        return Err(Failed {
            error,
            held: Vec::new(),
        });
    }
    // The follow-ups are with the broker: a duplicate of these tasks need not publish
    // them again. Losing the mark costs only such a republish.
    if let Err(err) = ctx.store.mark_published(&plan.published).await {
        tracing::debug!(%err, "could not mark follow-ups published");
    }
    let mut acks = Vec::with_capacity(deliveries.len());
    let mut retries = Vec::new();
    for (d, outcome) in deliveries.into_iter().zip(&plan.outcomes) {
        match outcome {
            Outcome::Ack => acks.push(d),
            Outcome::Reject(reason) => reject(d, reason).await,
            Outcome::Retry(_) => retries.push(d),
        }
    }
    // Requeued before the acks: a multiple-ack covers every earlier unsettled delivery
    // of the channel, and would take these with it.
    requeue_all(retries).await;
    if let Err(e) = DeliveryOf::<B>::ack_all(acks).await {
        // The channel is gone with its unacked deliveries, which the broker redelivers.
        return Err(Failed {
            error: e.into(),
            held: Vec::new(),
        });
    }
    for event in &plan.events {
        let outcome = match event {
            Event::QuestionDone { .. } => "done",
            Event::QuestionFailed { .. } => "failed",
            _ => continue,
        };
        metrics::counter!(crate::metrics::QUESTIONS_FINISHED, "outcome" => outcome).increment(1);
    }
    ctx.announce(plan.events).await;
    Ok(())
}
async fn publish<S: Store, B: Broker>(
    ctx: &Context<S, B>,
    tasks: &[Envelope<Task>],
) -> Result<(), WorkError> {
    for chunk in tasks.chunks(1024) {
        ctx.broker.publish(chunk).await?;
    }
    Ok(())
}
