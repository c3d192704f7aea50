//! The labeler: labels a verified question's tree with values (TSST.md,
//! `assign_value_tree`), stores its D+ and Dv records, and closes the question. Both
//! steps are idempotent; the question that completes the run announces it.
use super::plan::{settle, Plan};
use super::{take, Failed, RoleWork, WorkError};
use crate::broker::Broker;
use crate::outcome::{label_question, question_result};
use crate::runtime::{Context, DeliveryOf};
use crate::store::{Store, TreeRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use tsst_messages::{Event, LabelTask, Role, Task, TreeStatus};

/// A run's labelled questions: their records, and the trees to close.
type Labelled = (Vec<(String, String)>, Vec<(String, Option<String>)>);

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

    async fn process(&self, batch: Vec<DeliveryOf<B>>) -> Result<(), Failed<DeliveryOf<B>>> {
        let (deliveries, tasks) = take(&self.ctx.store, batch, Role::Labeler, |t| match t {
            Task::Label(t) => Some(t),
            _ => None,
        })
        .await;
        let plan = self.compute(&tasks).await;
        settle(&self.ctx, deliveries, plan).await
    }
}

impl<S: Store, B: Broker> Labeler<S, B> {
    async fn compute(&self, tasks: &[LabelTask]) -> Result<Plan, WorkError> {
        let ctx = &self.ctx;
        let mut plan = Plan::new(tasks.len());
        let mut by_run: BTreeMap<&str, Labelled> = BTreeMap::new();
        let mut stale = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            let (run, question) = match ctx.lookup(&task.run, &task.question).await? {
                Ok(found) => found,
                Err(reason) => {
                    plan.reject(i, reason);
                    continue;
                }
            };
            let tree_ref = TreeRef::new(&task.run, &task.question);
            let tree = ctx.store.tree(&tree_ref).await?;
            let unverified = tree.verdicts.is_empty() && !tree.finished.is_empty();
            if tree.state.status == TreeStatus::Searching || unverified {
                // The store lost the search's conclusion or the verdicts this task
                // came from.
                tracing::warn!(run = %task.run, question = %task.question, "label task for a tree not verified in the store; re-driving it");
                stale.push(tree_ref);
                continue;
            }
            let result = question_result(&task.run, (*question).clone(), &tree, &run.record.search);
            let entry = by_run.entry(task.run.as_str()).or_default();
            match label_question(&run.record, &question, &result) {
                Ok(records) => {
                    let json = serde_json::to_string(&records).map_err(|e| {
                        WorkError::Store(crate::store::StoreError::Corrupt {
                            key: format!("records of {}", task.question),
                            reason: e.to_string(),
                        })
                    })?;
                    entry.0.push((task.question.clone(), json));
                    entry.1.push((task.question.clone(), None));
                }
                Err(e) => plan.fail(&task.run, &task.question, format!("labelling: {e}")),
            }
        }
        for (run, (records, trees)) in by_run {
            ctx.store.put_records(run, &records).await?;
            let (newly, progress) = ctx.store.finish_trees(run, &trees).await?;
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
        plan.publish.extend(
            crate::heal::redrive(&ctx.store, &stale, "label task ahead of the store").await?,
        );
        plan.commit_failures(&ctx.store).await?;
        Ok(plan)
    }
}
