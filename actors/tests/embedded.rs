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
        .await
        .unwrap()
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

/// Direct evaluation: one greedy chain per question, ranked without the value model.
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
        ..SearchSpec::default()
    };
    let record = record("direct", search);
    let qs = questions(12);
    let worker = start_worker(&store, &broker).await;
    enqueue(&store, &broker, &record, &qs).await.unwrap();
    finish(&store, "direct").await;
    worker.shutdown().await;
    for r in results(&store, "direct").await.unwrap() {
        assert_eq!(r.status, QuestionStatus::Done);
        assert!(r.solutions.len() <= 1, "{r:?}");
        for s in &r.solutions {
            assert!(s.value.is_none(), "no value model in direct mode");
            assert!(s.steps.len() as u32 <= r.rounds);
        }
        let tree = tsst_actors::store::Store::tree(
            &store,
            &tsst_actors::store::TreeRef::new("direct", &r.question_id),
        )
        .await
        .unwrap();
        for n in &tree.nodes {
            let children = tree.nodes.iter().filter(|c| c.parent == Some(n.id)).count();
            // Greedy samples coincide and merge; a restart adds a second root child.
            assert!(children <= 1 || n.parent.is_none(), "a chain, not a tree");
        }
    }
}
