//! The whole search in one process over the in-memory broker and store.
use std::sync::Arc;
use std::time::Duration;
use tsst_actors::broker::MemoryBroker;
use tsst_actors::pipeline::{enqueue, follow, results};
use tsst_actors::runtime::{BatchSettings, Context, Models, RoleSpec, ScriptedFactory, Worker};
use tsst_actors::store::MemoryStore;
use tsst_messages::results::QuestionStatus;
use tsst_messages::*;

fn spec() -> SearchSpec {
    SearchSpec {
        seed: 7,
        branch: 2,
        n_consistency: 3,
        tag: "t".into(),
        ..SearchSpec::default()
    }
}

fn questions(n: usize) -> Vec<Question> {
    (0..n)
        .map(|i| Question {
            id: format!("q{i}"),
            source: DataSource::Aokvqa,
            image: None,
            question: format!("How many red circles? ({i})"),
            choices: vec!["1".into(), "2".into(), "3".into(), "4".into()],
            answer: i % 4,
            rationales: vec![],
            context: None,
        })
        .collect()
}

fn record(run: &str, search: SearchSpec) -> RunRecord {
    RunRecord {
        run: run.into(),
        search,
        dataset: DatasetSpec {
            source: DataSource::Aokvqa,
            root: "x".into(),
            split: "val".into(),
            partition: None,
            sample_size: None,
        },
        labels: LabelSpec::default(),
    }
}

/// Every role, one actor each, over the in-memory broker and store.
async fn start_worker(store: &MemoryStore, broker: &MemoryBroker) -> Worker {
    let ctx = Arc::new(Context::new(
        store.clone(),
        broker.clone(),
        Models::new(ScriptedFactory),
    ));
    let roles: Vec<RoleSpec> = [Role::Generator, Role::Scorer, Role::Verifier, Role::Labeler]
        .into_iter()
        .map(|role| RoleSpec { role, instances: 1 })
        .collect();
    Worker::start(ctx, &roles, BatchSettings::default())
}

async fn finish(store: &MemoryStore, run: &str) -> tsst_actors::store::Progress {
    tokio::time::timeout(
        Duration::from_secs(30),
        follow(store, run, Duration::from_millis(20), |_| {}),
    )
    .await
    .expect("the run finishes")
    .unwrap()
}

#[actix_rt::test]
async fn embedded_run_completes_every_question() {
    let store = MemoryStore::new();
    let broker = MemoryBroker::new();
    let record = record("emb", spec());
    let qs = questions(20);
    let worker = start_worker(&store, &broker).await;
    let e = enqueue(&store, &broker, &record, &qs).await.unwrap();
    assert_eq!((e.new_run, e.published), (true, 20));
    let again = enqueue(&store, &broker, &record, &qs).await.unwrap();
    assert_eq!((again.new_run, again.published), (false, 0));
    let p = finish(&store, "emb").await;
    assert_eq!((p.total, p.done, p.failed), (20, 20, 0));
    worker.shutdown().await;
    let res = results(&store, "emb").await.unwrap();
    assert_eq!(res.len(), 20);
    for r in &res {
        assert_eq!(r.status, QuestionStatus::Done, "{r:?}");
        assert!(!r.solutions.is_empty() && r.solutions.len() <= 3, "{r:?}");
        for s in &r.solutions {
            assert!(s.verdict.is_some());
            assert_eq!(s.steps.join(" "), s.text);
        }
        let values: Vec<f64> = r.solutions.iter().filter_map(|s| s.value).collect();
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "best first");
    }
    assert!(broker.dead_letters(Role::Generator).is_empty());
}

/// Direct evaluation: one whole greedy generation per question, never cut by the beam
/// search's character or round limits, never without a solution, verified by the
/// direct letter parse without any LLM.
#[actix_rt::test]
async fn direct_mode_is_one_greedy_chain() {
    let store = MemoryStore::new();
    let broker = MemoryBroker::new();
    let search = SearchSpec {
        mode: SearchMode::Direct,
        num_beams: 1,
        first_round_multiplier: 1,
        branch: 1,
        n_consistency: 1,
        temperature: 0.0,
        use_value: false,
        value_model: None,
        // Shorter than any chain: it must not cut one.
        finish_max_chars: 20,
        ..SearchSpec::default()
    };
    let record = record("direct", search);
    let qs = questions(60);
    let worker = start_worker(&store, &broker).await;
    enqueue(&store, &broker, &record, &qs).await.unwrap();
    finish(&store, "direct").await;
    worker.shutdown().await;
    let (mut answered, mut right) = (0, 0);
    for r in results(&store, "direct").await.unwrap() {
        assert_eq!(r.status, QuestionStatus::Done);
        assert_eq!(r.solutions.len(), 1, "{r:?}");
        assert_eq!(r.rounds, 1, "{r:?}");
        let s = &r.solutions[0];
        assert!(s.value.is_none(), "no value model in direct mode");
        assert_eq!(s.steps.len(), 1, "one generation: {s:?}");
        let v = s.verdict.as_ref().expect("verified");
        assert_eq!(v.by, VerdictSource::Direct);
        let letter = tsst_labels::parse_direct_letter(&s.text);
        assert_eq!(v.letter, letter);
        assert_eq!(v.correct, letter == Some(Question::letter(r.answer)));
        if s.text.contains("Final Answer") {
            answered += 1;
            assert!(s.text.chars().count() > 20);
            assert_eq!(s.finish, FinishReason::Answer);
        }
        right += usize::from(v.correct);
    }
    assert!(
        answered > 50 && right > 20,
        "{answered} answered, {right} right"
    );
}

/// With `use_value: false` finished solutions are reported by the mean token
/// log-probability that ranked them in the search, not in the order they finished.
#[actix_rt::test]
async fn without_values_solutions_rank_by_mean_logprob() {
    let store = MemoryStore::new();
    let broker = MemoryBroker::new();
    let search = SearchSpec {
        use_value: false,
        value_model: None,
        n_consistency: 4,
        ..spec()
    };
    let record = record("logprob", search);
    let worker = start_worker(&store, &broker).await;
    enqueue(&store, &broker, &record, &questions(20))
        .await
        .unwrap();
    finish(&store, "logprob").await;
    worker.shutdown().await;
    let mut reordered = 0;
    for r in results(&store, "logprob").await.unwrap() {
        let means: Vec<f64> = r.solutions.iter().map(|s| s.mean_logprob).collect();
        assert!(means.windows(2).all(|w| w[0] >= w[1]), "{means:?}");
        let tree = tsst_actors::store::Store::tree(
            &store,
            &tsst_actors::store::TreeRef::new("logprob", &r.question_id),
        )
        .await
        .unwrap();
        let finish_order: Vec<NodeId> = tree.finished.clone();
        let reported: Vec<NodeId> = r.solutions.iter().map(|s| s.node).collect();
        reordered += usize::from(finish_order != reported);
    }
    assert!(
        reordered > 0,
        "the ranking differs from finish order somewhere"
    );
}

/// Every tree of a run, by question.
async fn all_trees(
    store: &MemoryStore,
    run: &str,
    qs: &[Question],
) -> Vec<tsst_actors::store::TreeView> {
    use tsst_actors::store::{Store, TreeRef};
    let mut out = Vec::new();
    for q in qs {
        out.push(store.tree(&TreeRef::new(run, &q.id)).await.unwrap());
    }
    out
}

/// A backend that fails now and then (as a device out of memory would) costs retries,
/// not questions: the trees are those of a backend that never fails.
#[actix_rt::test]
async fn a_transient_backend_failure_is_retried_not_charged_to_questions() {
    let qs = questions(12);
    let mut trees = Vec::new();
    for model in ["scripted", "scripted:flaky3"] {
        let store = MemoryStore::new();
        let broker = MemoryBroker::new();
        let worker = start_worker(&store, &broker).await;
        let search = SearchSpec {
            policy_model: model.into(),
            value_model: Some(model.into()),
            ..spec()
        };
        enqueue(&store, &broker, &record("flaky", search), &qs)
            .await
            .unwrap();
        let p = finish(&store, "flaky").await;
        assert_eq!((p.done, p.failed), (12, 0), "{model}");
        trees.push(all_trees(&store, "flaky", &qs).await);
        worker.shutdown().await;
    }
    assert_eq!(trees[0], trees[1]);
}

/// A backend that keeps failing fails its questions after a bounded number of tries,
/// with the reason.
#[actix_rt::test]
async fn a_backend_that_keeps_failing_fails_the_questions_with_the_reason() {
    let store = MemoryStore::new();
    let broker = MemoryBroker::new();
    let worker = start_worker(&store, &broker).await;
    let search = SearchSpec {
        policy_model: "scripted:flaky1".into(),
        ..spec()
    };
    let qs = questions(3);
    enqueue(&store, &broker, &record("broken", search), &qs)
        .await
        .unwrap();
    let p = finish(&store, "broken").await;
    assert_eq!((p.done, p.failed), (3, 3));
    let res = results(&store, "broken").await.unwrap();
    for r in &res {
        let error = r.error.as_deref().unwrap_or_default();
        assert!(
            error.contains("out of memory") && error.contains("after 3 tries"),
            "{error}"
        );
    }
    worker.shutdown().await;
}

/// Waits until no task is queued for a while.
async fn quiet(broker: &MemoryBroker) {
    let mut still = 0;
    while still < 10 {
        let depth: usize = [Role::Generator, Role::Scorer, Role::Verifier, Role::Labeler]
            .into_iter()
            .map(|r| broker.depth(r))
            .sum();
        still = if depth == 0 { still + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The score task of a searched tree's round 0, as the generator published it (with
/// the expansion's steps) or as an older one did (without).
fn round0_score(
    tree: &tsst_actors::store::TreeView,
    run: &str,
    question: &str,
    steps: bool,
) -> Envelope<Task> {
    let root = NodeId::root(run, question);
    let mut kids: Vec<&Node> = tree
        .nodes
        .iter()
        .filter(|n| n.parent == Some(root) && n.round == 0)
        .collect();
    kids.sort_by_key(|n| n.sample);
    Task::Score(ScoreTask {
        run: run.into(),
        question: question.into(),
        round: 0,
        parent: root,
        children: kids.iter().map(|n| n.id).collect(),
        steps: if steps {
            kids.iter().map(|n| ChildStep::of(n)).collect()
        } else {
            Vec::new()
        },
    })
    .envelope()
}

/// A duplicate of any task of a finished question republishes only what is not
/// applied yet, which is nothing: no replay of the rest of the tree.
#[actix_rt::test]
async fn duplicates_of_a_finished_question_republish_nothing() {
    use tsst_actors::broker::Broker;
    use tsst_actors::store::{Store, TreeRef};
    let store = MemoryStore::new();
    let broker = MemoryBroker::new();
    let worker = start_worker(&store, &broker).await;
    let qs = questions(6);
    enqueue(&store, &broker, &record("dup", spec()), &qs)
        .await
        .unwrap();
    finish(&store, "dup").await;
    quiet(&broker).await;
    let before_trees = all_trees(&store, "dup", &qs).await;
    let mut dups = Vec::new();
    for q in &qs {
        let tree = store.tree(&TreeRef::new("dup", &q.id)).await.unwrap();
        let root = NodeId::root("dup", &q.id);
        assert!(tree.state.round >= 2, "the search ran several rounds");
        dups.push(
            Task::Expand(ExpandTask {
                run: "dup".into(),
                question: q.id.clone(),
                round: 0,
                node: root,
            })
            .envelope(),
        );
        dups.push(round0_score(&tree, "dup", &q.id, false));
    }
    let published = broker.published();
    broker.publish(&dups).await.unwrap();
    quiet(&broker).await;
    assert_eq!(
        broker.published() - published,
        dups.len(),
        "the duplicates republished what was applied"
    );
    assert_eq!(all_trees(&store, "dup", &qs).await, before_trees);
    worker.shutdown().await;
}

/// A score task whose expansion the store does not have (lost to a rollback) applies
/// it again from the steps it carries and scores on: the same trees, and no expansion
/// published again.
#[actix_rt::test]
async fn a_score_task_applies_a_lost_expansion_from_its_steps() {
    use tsst_actors::broker::Broker;
    use tsst_actors::store::{Store, TreeRef};
    let qs = questions(4);
    let ids: Vec<String> = qs.iter().map(|q| q.id.clone()).collect();
    let (store, broker) = (MemoryStore::new(), MemoryBroker::new());
    let worker = start_worker(&store, &broker).await;
    enqueue(&store, &broker, &record("lost", spec()), &qs)
        .await
        .unwrap();
    finish(&store, "lost").await;
    quiet(&broker).await;
    let reference = all_trees(&store, "lost", &qs).await;
    let published = broker.published();
    // Round 0's score tasks as the generator published them.
    let mut scores = Vec::new();
    for q in &qs {
        let tree = store.tree(&TreeRef::new("lost", &q.id)).await.unwrap();
        scores.push(round0_score(&tree, "lost", &q.id, true));
    }
    worker.shutdown().await;

    // The same run on a store that lost round 0's expansions after their score tasks
    // were published: the trees stand at their roots and only those tasks are queued.
    let (store, broker) = (MemoryStore::new(), MemoryBroker::new());
    store
        .register_run(&record("lost", spec()), &qs)
        .await
        .unwrap();
    store.init_trees("lost", &ids).await.unwrap();
    store.mark_enqueued("lost", &ids).await.unwrap();
    let worker = start_worker(&store, &broker).await;
    broker.publish(&scores).await.unwrap();
    finish(&store, "lost").await;
    quiet(&broker).await;
    assert_eq!(all_trees(&store, "lost", &qs).await, reference);
    assert_eq!(
        broker.published(),
        published - qs.len(),
        "round 0's expansions were published again instead of applied from the steps"
    );
    worker.shutdown().await;
}
