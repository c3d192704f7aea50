//! The verifier: decides each finished solution of a searched question. The rule
//! decides multiple-choice answers by letter or exact option text; the LLM endpoint
//! decides the rest, once per (question, extracted answer) thanks to the cache. When
//! the endpoint is down the question waits, unverified, and is tried again: nothing is
//! dropped or counted wrong for it.
use super::plan::{settle, Plan};
use super::{take, Failed, RoleWork, WorkError};
use crate::broker::Broker;
use crate::llm::LlmError;
use crate::runtime::{Context, DeliveryOf};
use crate::store::{Store, TreeRef, VerdictCommit, VerdictKey, VERIFY_OUTBOX_KEY};
use futures_util::future::join_all;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tsst_labels::faithful;
use tsst_labels::rule::direct_verdict;
use tsst_labels::{extract_answer, llm_messages_for, parse_llm_reply, LlmWord};

/// How often one answer is put to the LLM before an unparsable reply stands.
const UNPARSABLE_TRIES: usize = 3;
use tsst_messages::{
    LabelTask, NodeId, Question, Role, SearchMode, Task, TreeStatus, Verdict, VerdictSource,
    VerifierKind, VerifyTask,
};

/// A task's grounded facts, its solutions' texts, and whether steps must be grounded.
type Grounding = (BTreeSet<String>, HashMap<NodeId, String>, bool);

pub struct Verifier<S: Store, B: Broker> {
    ctx: Arc<Context<S, B>>,
}

impl<S: Store, B: Broker> Verifier<S, B> {
    pub fn new(ctx: Arc<Context<S, B>>) -> Self {
        Verifier { ctx }
    }
}

impl<S: Store, B: Broker> RoleWork<DeliveryOf<B>> for Verifier<S, B> {
    fn role(&self) -> Role {
        Role::Verifier
    }

    async fn process(&self, batch: Vec<DeliveryOf<B>>) -> Result<(), Failed<DeliveryOf<B>>> {
        let (deliveries, tasks) = take(&self.ctx.store, batch, Role::Verifier, |t| match t {
            Task::Verify(t) => Some(t),
            _ => None,
        })
        .await;
        let (plan, postponed) = match self.compute(&tasks).await {
            Ok((plan, postponed)) => (Ok(plan), postponed),
            Err(e) => (Err(e), false),
        };
        settle(&self.ctx, deliveries, plan).await?;
        // The batch is settled: its other tasks went on. Only then does this instance
        // wait, so that a dead endpoint is not asked again at once.
        if postponed {
            if let Some(llm) = &self.ctx.llm {
                tokio::time::sleep(llm.retry_wait()).await;
            }
        }
        Ok(())
    }
}

/// A solution the rule could not decide.
struct Open {
    task: usize,
    node: NodeId,
    question: Arc<Question>,
    /// Also what the LLM judges: the cache is keyed by it, so the same answer to the
    /// same question gets the same verdict.
    key: VerdictKey,
}

impl<S: Store, B: Broker> Verifier<S, B> {
    /// The batch's plan, and whether a task was postponed for the endpoint.
    async fn compute(&self, tasks: &[VerifyTask]) -> Result<(Plan, bool), WorkError> {
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

        let mut decided: HashMap<usize, Vec<(NodeId, Verdict)>> = HashMap::new();
        // Per task with a grounded chain: its facts, its solutions' texts, and whether
        // the run requires every step to be one (`verifier: scene`).
        let mut grounding: HashMap<usize, Grounding> = HashMap::new();
        let mut open = Vec::new();
        let mut replay = Vec::new();
        let mut stale = Vec::new();
        for (i, (task, outbox)) in tasks.iter().zip(outboxes).enumerate() {
            if let Some(earlier) = outbox {
                replay.extend(earlier);
                continue;
            }
            let (run, question) = match ctx.lookup(&task.run, &task.question).await? {
                Ok(found) => found,
                Err(reason) => {
                    plan.reject(i, reason);
                    continue;
                }
            };
            let tree = ctx.store.tree(&trees[i]).await?;
            if tree.state.status == TreeStatus::Searching {
                // The store lost the conclusion this task came from.
                tracing::warn!(run = %task.run, question = %task.question, "verify task for a tree still searching; re-driving it");
                stale.push(trees[i].clone());
                continue;
            }
            if let Some(facts) = faithful::reference_steps(&question) {
                let texts = tree
                    .finished
                    .iter()
                    .filter_map(|id| tree.nodes.iter().find(|n| n.id == *id))
                    .map(|n| (n.id, n.text.clone()))
                    .collect();
                let required = run.record.labels.verifier == VerifierKind::Scene;
                grounding.insert(i, (facts, texts, required));
            }
            let verdicts = decided.entry(i).or_default();
            let direct = run.record.search.mode == SearchMode::Direct;
            for id in &tree.finished {
                let Some(node) = tree.nodes.iter().find(|n| n.id == *id) else {
                    continue;
                };
                if direct {
                    // Direct evaluation reads the letter and needs no LLM.
                    let v = direct_verdict(&node.text, &question.choices, question.answer);
                    verdicts.push((node.id, v));
                    continue;
                }
                let extracted = extract_answer(&node.text);
                match tsst_labels::rule::rule_verdict(
                    &extracted,
                    &question.choices,
                    question.answer,
                ) {
                    Some(v) => verdicts.push((node.id, v)),
                    None => open.push(Open {
                        task: i,
                        node: node.id,
                        question: question.clone(),
                        key: VerdictKey {
                            source: question.source,
                            question: question.id.clone(),
                            answer: extracted,
                        },
                    }),
                }
            }
        }

        plan.publish
            .extend(super::unapplied(&ctx.store, replay).await?);
        plan.publish.extend(
            crate::heal::redrive(&ctx.store, &stale, "verify task ahead of the store").await?,
        );
        let postponed = self.decide_open(open, &mut decided).await?;
        let mut commits = Vec::new();
        for (i, mut verdicts) in decided {
            // After the cache: a cached verdict judged the answer, not this chain.
            if let Some((facts, texts, required)) = grounding.get(&i) {
                for (node, verdict) in &mut verdicts {
                    if let Some(text) = texts.get(node) {
                        faithful::apply(verdict, text, facts, *required);
                    }
                }
            }
            let task = &tasks[i];
            if postponed.contains(&i) {
                // Tried again later as a fresh message, so a long outage cannot use up
                // the queue's delivery limit.
                plan.publish.push(Task::Verify(task.clone()).envelope());
                continue;
            }
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
        Ok((plan, !postponed.is_empty()))
    }

    /// Decides what the rule could not: from the cache, else from the LLM. Returns the
    /// tasks to postpone because the endpoint could not answer.
    async fn decide_open(
        &self,
        open: Vec<Open>,
        decided: &mut HashMap<usize, Vec<(NodeId, Verdict)>>,
    ) -> Result<BTreeSet<usize>, WorkError> {
        let ctx = &self.ctx;
        let mut postponed = BTreeSet::new();
        if open.is_empty() {
            return Ok(postponed);
        }
        let keys: Vec<VerdictKey> = open.iter().map(|o| o.key.clone()).collect();
        let cached = ctx.store.cached_verdicts(&keys).await?;
        let mut ask = Vec::new();
        for (o, hit) in open.into_iter().zip(cached) {
            match hit {
                Some(mut v) => {
                    v.by = VerdictSource::Cache;
                    decided.entry(o.task).or_default().push((o.node, v));
                }
                None => ask.push(o),
            }
        }
        let Some(llm) = &ctx.llm else {
            for o in ask {
                decided.entry(o.task).or_default().push((
                    o.node,
                    Verdict {
                        correct: false,
                        extracted: o.key.answer,
                        letter: None,
                        by: VerdictSource::Rule,
                        note: Some(
                            "undecided by the rule and no LLM verifier is configured".into(),
                        ),
                        grounded: None,
                    },
                ));
            }
            return Ok(postponed);
        };
        let mut fresh = Vec::new();
        // An unparsable reply is asked again (the judge samples at its temperature or
        // was cut off); after the last try it is recorded as such, never cached.
        for attempt in 0..UNPARSABLE_TRIES {
            if ask.is_empty() {
                break;
            }
            let prompts: Vec<_> = ask
                .iter()
                .map(|o| llm_messages_for(&o.question, &o.key.answer))
                .collect();
            let replies = join_all(prompts.iter().map(|m| llm.chat(m))).await;
            let mut again = Vec::new();
            for (o, reply) in ask.into_iter().zip(replies) {
                let text = match reply {
                    Ok(text) => text,
                    Err(e @ LlmError::Rejected { .. }) => {
                        // Every request would be refused the same way: stop and say so
                        // rather than retry forever. The tasks go back to the queue.
                        return Err(WorkError::Fatal(format!(
                            "{e}; fix the verifier config (model name, key) and start again"
                        )));
                    }
                    Err(e) => {
                        if e.is_unavailable() {
                            tracing::warn!(question = %o.key.question, err = %e, "verification postponed");
                        } else {
                            tracing::error!(question = %o.key.question, err = %e, "verification postponed; check the verifier config");
                        }
                        postponed.insert(o.task);
                        continue;
                    }
                };
                let word = parse_llm_reply(&text);
                if word == LlmWord::Unparsable && attempt + 1 < UNPARSABLE_TRIES {
                    tracing::debug!(question = %o.key.question, reply = %text, "unparsable verifier reply; asking again");
                    again.push(o);
                    continue;
                }
                let v = tsst_labels::llm_prompt::llm_verdict(
                    &o.key.answer,
                    word,
                    &o.question.choices,
                    o.question.answer,
                );
                if word != LlmWord::Unparsable {
                    fresh.push((o.key.clone(), v.clone()));
                }
                decided.entry(o.task).or_default().push((o.node, v));
            }
            ask = again;
        }
        ctx.store.cache_verdicts(&fresh).await?;
        Ok(postponed)
    }
}
