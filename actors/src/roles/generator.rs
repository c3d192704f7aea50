//! The generator: expands frontier nodes by one step with the policy model, for a
//! batch of tasks across questions in one backend call per model.
use super::plan::{settle, Plan};
use super::{take, Failed, RoleWork, WorkError};
use crate::broker::{Broker, Delivery};
use crate::heal::Stale;
use crate::runtime::{Context, DeliveryOf, ExpandJob};
use crate::search;
use crate::store::{ExpandCommit, Store, TreeRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use tsst_messages::{ChildStep, ExpandTask, Node, Role, ScoreTask, SearchMode, Task};

pub struct Generator<S: Store, B: Broker> {
    ctx: Arc<Context<S, B>>,
}

impl<S: Store, B: Broker> Generator<S, B> {
    pub fn new(ctx: Arc<Context<S, B>>) -> Self {
        Generator { ctx }
    }
}

type Group = (Vec<(usize, Node, SearchMode)>, Vec<ExpandJob>);

impl<S: Store, B: Broker> RoleWork<DeliveryOf<B>> for Generator<S, B> {
    fn role(&self) -> Role {
        Role::Generator
    }

    async fn process(&self, batch: Vec<DeliveryOf<B>>) -> Result<(), Failed<DeliveryOf<B>>> {
        let (deliveries, tasks) = take(&self.ctx.store, batch, Role::Generator, |t| match t {
            Task::Expand(t) => Some(t),
            _ => None,
        })
        .await;
        let attempts: Vec<u32> = deliveries.iter().map(Delivery::attempt).collect();
        let plan = self.compute(&tasks, &attempts).await;
        settle(&self.ctx, deliveries, plan).await
    }
}

impl<S: Store, B: Broker> Generator<S, B> {
    /// `attempts`: which delivery each task is (see [`Plan::backend_failed`]).
    async fn compute(&self, tasks: &[ExpandTask], attempts: &[u32]) -> Result<Plan, WorkError> {
        let ctx = &self.ctx;
        let mut plan = Plan::new(tasks.len());
        let trees: Vec<TreeRef> = tasks
            .iter()
            .map(|t| TreeRef::new(&t.run, &t.question))
            .collect();
        let ids: Vec<String> = tasks.iter().map(|t| Task::Expand(t.clone()).id()).collect();
        let keys: Vec<(TreeRef, String)> = trees.iter().cloned().zip(ids.iter().cloned()).collect();
        let outboxes = ctx.store.outboxes(&keys).await?;
        let wanted: Vec<_> = trees
            .iter()
            .cloned()
            .zip(tasks.iter().map(|t| t.node))
            .collect();
        let parents = ctx.store.nodes(&wanted).await?;

        // Requests grouped by policy model: one backend call per model per batch.
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut replay = Vec::new();
        let mut stale = Vec::new();
        for (i, (task, outbox)) in tasks.iter().zip(outboxes).enumerate() {
            if let Some(earlier) = outbox {
                // Applied before (a redelivery or a duplicate): publish again what it
                // published, unless the broker has it, as far as it is not applied.
                replay.push(((trees[i].clone(), ids[i].clone()), earlier));
                continue;
            }
            let (run, question) = match ctx.lookup(&task.run, &task.question).await? {
                Ok(found) => found,
                Err(reason) => {
                    plan.reject(i, reason);
                    continue;
                }
            };
            let Some(parent) = parents[i].clone() else {
                // The store lost the writes this task came from: drive the tree on
                // from where the store has it.
                tracing::warn!(run = %task.run, question = %task.question, node = %task.node, "task names a node the store does not have; re-driving the tree");
                stale.push(Stale {
                    tree: trees[i].clone(),
                    task: ids[i].clone(),
                    lost: None,
                });
                continue;
            };
            let spec = &run.record.search;
            let seeds = (0..spec.samples_in_round(task.round))
                .map(|s| search::sample_seed(spec, &task.question, &parent, task.round, s))
                .collect();
            // A step may not outrun what is left of the solution's token budget; a
            // direct chain is one generation of the whole budget, not cut into steps.
            let left = spec.max_length.saturating_sub(parent.total_tokens);
            let (max_new_tokens, delimiter) = match spec.mode {
                SearchMode::Direct => (left, None),
                SearchMode::Beam => (spec.step_max_tokens.min(left), Some(spec.step_delimiter)),
            };
            let job = ExpandJob {
                question,
                prefix: parent.text.clone(),
                seeds,
                temperature: spec.temperature,
                max_new_tokens: max_new_tokens.max(1),
                delimiter,
            };
            let mode = spec.mode;
            let group = groups.entry(spec.policy_model.clone()).or_default();
            group.0.push((i, parent, mode));
            group.1.push(job);
        }

        super::replay(&ctx.store, replay, &mut plan).await?;
        plan.publish
            .extend(crate::heal::redrive_stale(&ctx.store, &stale).await?);
        let mut commits = Vec::new();
        for (model, (group, jobs)) in groups {
            let outputs = match ctx.models.expand(&model, jobs).await {
                Ok(outputs) => outputs,
                Err(e) => {
                    for (i, ..) in &group {
                        let t = &tasks[*i];
                        plan.backend_failed(*i, attempts[*i], &t.run, &t.question, e.to_string());
                    }
                    continue;
                }
            };
            for ((i, parent, mode), output) in group.into_iter().zip(outputs) {
                let task = &tasks[i];
                match output {
                    Ok(samples) => {
                        let children = search::children(
                            &task.run,
                            &task.question,
                            &parent,
                            task.round,
                            &samples,
                            mode,
                        );
                        let score = Task::Score(ScoreTask {
                            run: task.run.clone(),
                            question: task.question.clone(),
                            round: task.round,
                            parent: parent.id,
                            children: children.iter().map(|c| c.id).collect(),
                            steps: children.iter().map(ChildStep::of).collect(),
                        });
                        let outbox = vec![score.envelope()];
                        plan.publish.extend(outbox.iter().cloned());
                        plan.published.push((trees[i].clone(), ids[i].clone()));
                        commits.push(ExpandCommit {
                            tree: trees[i].clone(),
                            task_id: ids[i].clone(),
                            round: task.round,
                            children,
                            outbox,
                        });
                    }
                    Err(e) => plan.fail(&task.run, &task.question, format!("{model}: {e}")),
                }
            }
        }
        ctx.store.commit_expand(&commits).await?;
        let created: usize = commits.iter().map(|c| c.children.len()).sum();
        metrics::counter!(crate::metrics::NODES_EXPANDED).increment(commits.len() as u64);
        metrics::counter!(crate::metrics::NODES_CREATED).increment(created as u64);
        plan.commit_failures(&ctx.store).await?;
        Ok(plan)
    }
}
