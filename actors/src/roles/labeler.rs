//! The labeler: closes a verified question. Marking it done is idempotent, and the
//! question that completes the run announces it.
use super::plan::{settle, Plan};
use super::{decode, RoleWork, WorkError};
use crate::broker::Broker;
use crate::runtime::{Context, DeliveryOf};
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use tsst_messages::{Event, Role, Task};

pub struct Labeler<S: Store, B: Broker> {
    ctx: Arc<Context<S, B>>,
}

impl<S: Store, B: Broker> Labeler<S, B> {
    pub fn new(ctx: Arc<Context<S, B>>) -> Self {
        Labeler { ctx }
    }
}

impl<S: Store, B: Broker> RoleWork<DeliveryOf<B>> for Labeler<S, B> {
    fn role(&self) -> Role {
        Role::Labeler
    }

    async fn process(&self, batch: Vec<DeliveryOf<B>>) -> Result<(), WorkError> {
        let (deliveries, tasks): (Vec<_>, Vec<_>) = decode(batch, Role::Labeler)
            .await
            .into_iter()
            .filter_map(|(d, t)| match t {
                Task::Label(t) => Some((d, t)),
                _ => None,
            })
            .unzip();
        let mut plan = Plan::new(tasks.len());
        let mut by_run: BTreeMap<&str, Vec<(String, Option<String>)>> = BTreeMap::new();
        for t in &tasks {
            by_run
                .entry(t.run.as_str())
                .or_default()
                .push((t.question.clone(), None));
        }
        let mut result = Ok(());
        for (run, trees) in by_run {
            match self.ctx.store.finish_trees(run, &trees).await {
                Ok((newly, progress)) => {
                    for ((question, _), new) in trees.iter().zip(&newly) {
                        if *new {
                            plan.events.push(Event::QuestionDone {
                                run: run.to_owned(),
                                question: question.clone(),
                            });
                        }
                    }
                    if progress.complete() && newly.iter().any(|n| *n) {
                        plan.events.push(Event::RunFinished {
                            run: run.to_owned(),
                            questions: progress.total,
                            failed: progress.failed,
                        });
                    }
                }
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
        settle(&self.ctx, deliveries, result.map(|()| plan)).await
    }
}
