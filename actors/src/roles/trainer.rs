//! The trainer role: one self-training round's training per train task
//! (`crate::train::train_round`), recorded in the model registry.
use super::plan::{settle, Plan};
use super::{take, Failed, RoleWork, WorkError};
use crate::broker::Broker;
use crate::runtime::{Context, DeliveryOf};
use crate::store::Store;
use crate::train::{train_round, TrainError, TrainerConfig};
use std::sync::Arc;
use tsst_messages::{Role, Task, TrainTask};

pub struct Trainer<S: Store, B: Broker> {
    ctx: Arc<Context<S, B>>,
    config: Arc<TrainerConfig>,
}

impl<S: Store, B: Broker> Trainer<S, B> {
    pub fn new(ctx: Arc<Context<S, B>>, config: Arc<TrainerConfig>) -> Self {
        Trainer { ctx, config }
    }
}

impl<S: Store, B: Broker> RoleWork<DeliveryOf<B>> for Trainer<S, B> {
    fn role(&self) -> Role {
        Role::Trainer
    }

    async fn process(&self, batch: Vec<DeliveryOf<B>>) -> Result<(), Failed<DeliveryOf<B>>> {
        let (deliveries, tasks) = take(&self.ctx.store, batch, Role::Trainer, |t| match t {
            Task::Train(t) => Some(t),
            _ => None,
        })
        .await;
        let plan = self.compute(&tasks).await;
        settle(&self.ctx, deliveries, plan).await
    }
}

impl<S: Store, B: Broker> Trainer<S, B> {
    /// Rounds one after another. A store or broker failure is the batch's (held or
    /// retried, like any role's); a round whose commands fail is dead-lettered with
    /// the reason the registry also records, so that `tsst dlq replay` runs it again
    /// once the cause is fixed (a failing command would fail every retry the same way).
    async fn compute(&self, tasks: &[TrainTask]) -> Result<Plan, WorkError> {
        let mut plan = Plan::new(tasks.len());
        for (i, task) in tasks.iter().enumerate() {
            match train_round(&self.ctx.store, &self.ctx.broker, &self.config, task).await {
                Ok(_) => {}
                Err(TrainError::Store(e)) => return Err(e.into()),
                Err(TrainError::Broker(e)) => return Err(e.into()),
                Err(e) => plan.reject(i, e.to_string()),
            }
        }
        Ok(plan)
    }
}
