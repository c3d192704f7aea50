//! The scorer: values a frontier node's new children with the value model and counts
//! the node in its round's barrier; the task that completes the barrier concludes the
//! round (selection, finishing, the next frontier or verification).
use super::plan::{settle, Plan};
use super::{take, Failed, RoleWork, WorkError};
use crate::broker::{Broker, Delivery};
use crate::heal::Stale;
use crate::runtime::{Context, DeliveryOf};
use crate::search;
use crate::store::{
    round_outbox_key, Barrier, Concluded, ExpandCommit, RoundCommit, ScoreCommit, Store, TreeRef,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tsst_messages::{
    Event, ExpandTask, Node, NodeId, Question, Role, ScoreTask, Task, TreeStatus, VerifyTask,
};

pub struct Scorer<S: Store, B: Broker> {
    ctx: Arc<Context<S, B>>,
}

impl<S: Store, B: Broker> Scorer<S, B> {
    pub fn new(ctx: Arc<Context<S, B>>) -> Self {
        Scorer { ctx }
    }
}

impl<S: Store, B: Broker> RoleWork<DeliveryOf<B>> for Scorer<S, B> {
    fn role(&self) -> Role {
        Role::Scorer
    }

    async fn process(&self, batch: Vec<DeliveryOf<B>>) -> Result<(), Failed<DeliveryOf<B>>> {
        let (deliveries, tasks) = take(&self.ctx.store, batch, Role::Scorer, |t| match t {
            Task::Score(t) => Some(t),
            _ => None,
        })
        .await;
        let attempts: Vec<u32> = deliveries.iter().map(Delivery::attempt).collect();
        let plan = self.compute(&tasks, &attempts).await;
        settle(&self.ctx, deliveries, plan).await
    }
}

impl<S: Store, B: Broker> Scorer<S, B> {
    /// `attempts`: which delivery each task is (see [`Plan::backend_failed`]).
    async fn compute(&self, tasks: &[ScoreTask], attempts: &[u32]) -> Result<Plan, WorkError> {
        let ctx = &self.ctx;
        let mut plan = Plan::new(tasks.len());
        let wanted: Vec<(TreeRef, NodeId)> = tasks
            .iter()
            .flat_map(|t| {
                t.children
                    .iter()
                    .map(|c| (TreeRef::new(&t.run, &t.question), *c))
            })
            .collect();
        let mut nodes = ctx.store.nodes(&wanted).await?.into_iter();
        let mut children: Vec<Vec<Option<Node>>> = tasks
            .iter()
            .map(|t| nodes.by_ref().take(t.children.len()).collect())
            .collect();
        // A task of a concluded round needs no model call: its values are in and must
        // stay as they are. Only a redelivery can be one (republished and re-driven
        // score tasks are of open rounds only), so only redeliveries are checked and
        // the common batch costs no extra round trip.
        let round_keys: Vec<(TreeRef, String)> = tasks
            .iter()
            .map(|t| (TreeRef::new(&t.run, &t.question), round_outbox_key(t.round)))
            .collect();
        let redelivered: Vec<(TreeRef, String)> = round_keys
            .iter()
            .zip(attempts)
            .filter(|(_, &a)| a > 1)
            .map(|(k, _)| k.clone())
            .collect();
        let mut found = ctx.store.outboxes(&redelivered).await?.into_iter();
        let concluded: Vec<bool> = attempts
            .iter()
            .map(|&a| a > 1 && found.next().flatten().is_some())
            .collect();
        let mut republish = Vec::new();
        let mut stale = Vec::new();

        // Which children need the value model, grouped by model.
        let mut groups: BTreeMap<String, Vec<(usize, Arc<Question>, Node)>> = BTreeMap::new();
        let mut commits: Vec<Option<ScoreCommit>> = Vec::with_capacity(tasks.len());
        self.reapply(tasks, &mut children, &concluded, &mut plan)
            .await?;
        for (i, (task, children)) in tasks.iter().zip(children).enumerate() {
            if concluded[i] {
                republish.push(round_keys[i].clone());
                commits.push(None);
                continue;
            }
            let (run, question) = match ctx.lookup(&task.run, &task.question).await? {
                Ok(found) => found,
                Err(reason) => {
                    plan.reject(i, reason);
                    commits.push(None);
                    continue;
                }
            };
            let Some(children) = children.into_iter().collect::<Option<Vec<Node>>>() else {
                tracing::warn!(run = %task.run, question = %task.question, "task names a node the store does not have; re-driving the tree");
                stale.push(Stale {
                    tree: round_keys[i].0.clone(),
                    task: Task::Score(task.clone()).id(),
                    lost: Some((task.round, task.parent)),
                });
                commits.push(None);
                continue;
            };
            let spec = &run.record.search;
            if spec.use_value {
                let model = spec
                    .value_model
                    .clone()
                    .unwrap_or_else(|| "scripted".into());
                let group = groups.entry(model).or_default();
                group.extend(children.into_iter().map(|c| (i, question.clone(), c)));
            }
            commits.push(Some(ScoreCommit {
                tree: TreeRef::new(&task.run, &task.question),
                round: task.round,
                parent: task.parent,
                children: task.children.clone(),
                values: Vec::new(),
            }));
        }
        for (model, group) in groups {
            let jobs = group
                .iter()
                .map(|(_, q, n)| (q.clone(), n.text.clone()))
                .collect();
            let values = match self.ctx.models.score(&model, jobs).await {
                Ok(values) => values,
                Err(e) => {
                    for (i, ..) in &group {
                        if commits[*i].take().is_some() {
                            let t = &tasks[*i];
                            plan.backend_failed(
                                *i,
                                attempts[*i],
                                &t.run,
                                &t.question,
                                e.to_string(),
                            );
                        }
                    }
                    continue;
                }
            };
            for ((i, _, node), value) in group.iter().zip(values) {
                match (value, commits[*i].as_mut()) {
                    (Ok(v), Some(commit)) => commit.values.push((node.id, v)),
                    (Err(e), Some(_)) => {
                        commits[*i] = None;
                        plan.fail(&tasks[*i].run, &tasks[*i].question, format!("{model}: {e}"));
                    }
                    (_, None) => {}
                }
            }
        }

        let applied: Vec<(usize, ScoreCommit)> = commits
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| (i, c)))
            .collect();
        let only: Vec<ScoreCommit> = applied.iter().map(|(_, c)| c.clone()).collect();
        let barriers = ctx.store.commit_scores(&only).await?;
        let mut complete = Vec::new();
        for ((i, commit), barrier) in applied.iter().zip(barriers) {
            match barrier {
                Barrier::Waiting => {}
                Barrier::Complete => complete.push(&tasks[*i]),
                Barrier::Concluded => {
                    republish.push((commit.tree.clone(), round_outbox_key(commit.round)));
                }
                Barrier::Behind | Barrier::Lost => {
                    tracing::warn!(tree = ?commit.tree, round = commit.round, ?barrier, "the store lost the writes this task came from; re-driving the tree");
                    stale.push(Stale {
                        tree: commit.tree.clone(),
                        task: Task::Score(tasks[*i].clone()).id(),
                        lost: (barrier == Barrier::Lost).then_some((commit.round, commit.parent)),
                    });
                }
            }
        }
        for (task, concluded) in self.conclude(&complete, &mut plan).await? {
            let tree = TreeRef::new(&task.run, &task.question);
            match concluded {
                Concluded::Now => plan.published.push((tree, round_outbox_key(task.round))),
                // Another worker concluded it first: publish what it published.
                Concluded::Before => republish.push((tree, round_outbox_key(task.round))),
                Concluded::Unready => {
                    tracing::warn!(?tree, round = task.round, "the store lost writes of this round since it was read; re-driving the tree");
                    stale.push(Stale {
                        tree,
                        task: Task::Score((*task).clone()).id(),
                        lost: None,
                    });
                }
            }
        }
        let earlier = ctx.store.outboxes(&republish).await?;
        let found = republish
            .into_iter()
            .zip(earlier)
            .filter_map(|(key, outbox)| outbox.map(|o| (key, o)))
            .collect();
        super::replay(&ctx.store, found, &mut plan).await?;
        plan.publish
            .extend(crate::heal::redrive_stale(&ctx.store, &stale).await?);
        plan.commit_failures(&ctx.store).await?;
        Ok(plan)
    }

    /// Applies again, from the steps their score tasks carry, the expansions that the
    /// store lost (their children are missing) where the tree still stands at the
    /// task's round with the parent in its frontier, and fills in the children. The
    /// policy model is not run again and no expand task goes round the queues; what
    /// cannot be applied this way stays missing and is re-driven.
    async fn reapply(
        &self,
        tasks: &[ScoreTask],
        children: &mut [Vec<Option<Node>>],
        concluded: &[bool],
        plan: &mut Plan,
    ) -> Result<(), WorkError> {
        let lost: Vec<usize> = (0..tasks.len())
            .filter(|&i| {
                let t = &tasks[i];
                !concluded[i]
                    && !t.steps.is_empty()
                    && t.steps.len() == t.children.len()
                    && children[i].iter().any(Option::is_none)
            })
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        let trees: Vec<TreeRef> = lost
            .iter()
            .map(|&i| TreeRef::new(&tasks[i].run, &tasks[i].question))
            .collect();
        let positions = self.ctx.store.positions(&trees).await?;
        let wanted: Vec<(TreeRef, NodeId)> = trees
            .iter()
            .zip(&lost)
            .map(|(tree, &i)| (tree.clone(), tasks[i].parent))
            .collect();
        let parents = self.ctx.store.nodes(&wanted).await?;
        let mut commits = Vec::new();
        for ((&i, tree), (position, parent)) in lost
            .iter()
            .zip(trees)
            .zip(positions.into_iter().zip(parents))
        {
            let t = &tasks[i];
            let open = position.is_some_and(|p| {
                p.state.status == TreeStatus::Searching
                    && p.state.round == t.round
                    && p.frontier.contains(&t.parent)
            });
            let Some(parent) = parent.filter(|_| open) else {
                continue;
            };
            let rebuilt = search::rebuild(&t.run, &t.question, &parent, t.round, &t.steps);
            if !rebuilt.iter().map(|n| n.id).eq(t.children.iter().copied()) {
                tracing::warn!(run = %t.run, question = %t.question, "a score task's steps do not make its children; re-driving the tree");
                continue;
            }
            let expand = Task::Expand(ExpandTask {
                run: t.run.clone(),
                question: t.question.clone(),
                round: t.round,
                node: t.parent,
            })
            .id();
            children[i] = rebuilt.iter().cloned().map(Some).collect();
            // The expansion's follow-up is this task: it is with the broker.
            plan.published.push((tree.clone(), expand.clone()));
            commits.push(ExpandCommit {
                tree,
                task_id: expand,
                round: t.round,
                children: rebuilt,
                outbox: vec![Task::Score(t.clone()).envelope()],
            });
        }
        if !commits.is_empty() {
            tracing::info!(
                expansions = commits.len(),
                "applying expansions the store lost again from their score tasks"
            );
            self.ctx.store.commit_expand(&commits).await?;
        }
        Ok(())
    }

    /// Concludes rounds whose barrier is complete, all in three store round trips.
    /// Two workers may conclude the same round (a redelivery racing the original); the
    /// store applies one conclusion, both compute the same one, and the one that lost
    /// republishes the winner's outbox. Returns what committing each did.
    async fn conclude<'t>(
        &self,
        tasks: &[&'t ScoreTask],
        plan: &mut Plan,
    ) -> Result<Vec<(&'t ScoreTask, Concluded)>, WorkError> {
        let ctx = &self.ctx;
        let wanted: Vec<(TreeRef, u32)> = tasks
            .iter()
            .map(|t| (TreeRef::new(&t.run, &t.question), t.round))
            .collect();
        let views = ctx.store.rounds(&wanted).await?;
        let mut commits = Vec::with_capacity(tasks.len());
        let mut searched = Vec::with_capacity(tasks.len());
        for ((task, (tree, _)), view) in tasks.iter().zip(wanted).zip(views) {
            let run = ctx.run(&task.run).await?;
            let outcome = search::conclude(
                &run.record.search,
                &task.question,
                task.round,
                NodeId::root(&task.run, &task.question),
                &view.frontier,
                &view.children,
                view.finished,
            );
            let next_round = task.round + 1;
            let outbox: Vec<_> = if outcome.done {
                vec![Task::Verify(VerifyTask {
                    run: task.run.clone(),
                    question: task.question.clone(),
                })
                .envelope()]
            } else {
                outcome
                    .next_frontier
                    .iter()
                    .map(|&node| {
                        Task::Expand(ExpandTask {
                            run: task.run.clone(),
                            question: task.question.clone(),
                            round: next_round,
                            node,
                        })
                        .envelope()
                    })
                    .collect()
            };
            searched.push(outcome.done.then(|| Event::QuestionSearched {
                run: task.run.clone(),
                question: task.question.clone(),
                rounds: next_round,
                solutions: view.finished + outcome.finished.len() as u32,
            }));
            commits.push(RoundCommit {
                tree,
                round: task.round,
                children: view.children.len() as u32,
                finished: outcome.finished,
                next_frontier: outcome.next_frontier,
                done: outcome.done,
                restarted: outcome.restarted,
                outbox,
            });
        }
        let applied = ctx.store.commit_rounds(&commits).await?;
        let mut out = Vec::with_capacity(tasks.len());
        for (((task, commit), event), applied) in
            tasks.iter().zip(commits).zip(searched).zip(applied)
        {
            if applied == Concluded::Now {
                plan.publish.extend(commit.outbox);
                plan.events.extend(event);
            }
            out.push((*task, applied));
        }
        Ok(out)
    }
}
