//! The verifier: decides each finished solution of a searched question. Multiple-choice
//! answers are decided by rule (letter or exact option text); what the rule cannot
//! decide is recorded as not correct, with a note, until an LLM verifier is configured.
use super::plan::{settle, Plan};
use super::{decode, RoleWork, WorkError};
use crate::broker::Broker;
use crate::runtime::{Context, DeliveryOf};
use crate::store::{Store, TreeRef, VerdictCommit, VERIFY_OUTBOX_KEY};
use std::sync::Arc;
use tsst_labels::extract_answer;
use tsst_messages::{LabelTask, Question, Role, Task, Verdict, VerdictSource, VerifyTask};

pub struct Verifier<S: Store, B: Broker> {
    ctx: Arc<Context<S, B>>,
}

impl<S: Store, B: Broker> Verifier<S, B> {
    pub fn new(ctx: Arc<Context<S, B>>) -> Self {
        Verifier { ctx }
    }
}

/// The rule's verdict on one solution text; what it cannot decide is recorded as not
/// correct with a note (the LLM verifier decides those where one is configured).
pub fn rule_verdict(question: &Question, text: &str) -> Verdict {
    let extracted = extract_answer(text);
    tsst_labels::rule::rule_verdict(&extracted, &question.choices, question.answer).unwrap_or_else(
        || Verdict {
            correct: false,
            letter: None,
            by: VerdictSource::Rule,
            note: Some("the answer names no single option".to_owned()),
            extracted,
        },
    )
}

impl<S: Store, B: Broker> RoleWork<DeliveryOf<B>> for Verifier<S, B> {
    fn role(&self) -> Role {
        Role::Verifier
    }

    async fn process(&self, batch: Vec<DeliveryOf<B>>) -> Result<(), WorkError> {
        let (deliveries, tasks): (Vec<_>, Vec<_>) = decode(batch, Role::Verifier)
            .await
            .into_iter()
            .filter_map(|(d, t)| match t {
                Task::Verify(t) => Some((d, t)),
                _ => None,
            })
            .unzip();
        let plan = self.compute(&tasks).await;
        settle(&self.ctx, deliveries, plan).await
    }
}

impl<S: Store, B: Broker> Verifier<S, B> {
    async fn compute(&self, tasks: &[VerifyTask]) -> Result<Plan, WorkError> {
        let ctx = &self.ctx;
        let mut plan = Plan::new(tasks.len());
        let trees: Vec<TreeRef> = tasks
            .iter()
            .map(|t| TreeRef::new(&t.run, &t.question))
            .collect();
        let keys: Vec<_> = trees
            .iter()
            .map(|t| (t.clone(), VERIFY_OUTBOX_KEY.to_owned()))
            .collect();
        let outboxes = ctx.store.outboxes(&keys).await?;
        let mut commits = Vec::new();
        for (i, (task, outbox)) in tasks.iter().zip(outboxes).enumerate() {
            if let Some(earlier) = outbox {
                plan.publish.extend(earlier);
                continue;
            }
            let run = match ctx.run(&task.run).await {
                Ok(run) => run,
                Err(e) => {
                    plan.reject(i, e.to_string());
                    continue;
                }
            };
            let Some(question) = run.questions.get(&task.question) else {
                plan.reject(
                    i,
                    format!("run {} has no question {}", task.run, task.question),
                );
                continue;
            };
            let tree = ctx.store.tree(&trees[i]).await?;
            let verdicts = tree
                .finished
                .iter()
                .filter_map(|id| tree.nodes.iter().find(|n| n.id == *id))
                .map(|n| (n.id, rule_verdict(question, &n.text)))
                .collect();
            let outbox = vec![Task::Label(LabelTask {
                run: task.run.clone(),
                question: task.question.clone(),
            })
            .envelope()];
            plan.publish.extend(outbox.iter().cloned());
            commits.push(VerdictCommit {
                tree: trees[i].clone(),
                verdicts,
                outbox,
            });
        }
        ctx.store.commit_verdicts(&commits).await?;
        Ok(plan)
    }
}
