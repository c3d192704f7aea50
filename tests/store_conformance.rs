//! One suite, two stores: Redis (the real server) and the in-memory store of embedded
//! mode must give every operation the same effect, including under redelivery.
use tsst_actors::store::{
    round_outbox_key, Barrier, Concluded, ExpandCommit, MemoryStore, RedisStore, RoundCommit,
    ScoreCommit, Store, StoreError, TreeRef, VerdictCommit, WorkerBeat, VERIFY_OUTBOX_KEY,
};
use tsst_messages::*;

fn redis_url() -> String {
    std::env::var("TSST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn redis() -> RedisStore {
    RedisStore::connect(&redis_url())
        .await
        .expect("Redis must be running (see .ci/run)")
}

fn run_id(test: &str) -> String {
    format!("test-{test}-{}", std::process::id())
}

fn record(run: &str, seed: u64) -> RunRecord {
    RunRecord {
        run: run.into(),
        search: SearchSpec {
            seed,
            num_beams: 2,
            first_round_multiplier: 1,
            branch: 2,
            n_consistency: 2,
            max_length: 512,
            step_max_tokens: 64,
            max_rounds: 5,
            selection: Selection::Top,
            tag: "t".into(),
            ..SearchSpec::default()
        },
        dataset: DatasetSpec {
            source: DataSource::Vcr,
            root: "data/vcr".into(),
            split: "val".into(),
            partition: Some("0_2".into()),
            sample_size: None,
        },
        labels: LabelSpec::default(),
    }
}

fn question(i: usize) -> Question {
    Question {
        id: format!("val-{i}"),
        source: DataSource::Vcr,
        image: Some(format!("/data/vcr/img{i}.jpg").into()),
        question: format!("Why is person1 smiling? ({i})"),
        choices: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        answer: i % 4,
        rationales: vec!["because".into()],
        context: None,
    }
}

fn child(run: &str, q: &str, parent: &Node, round: u32, sample: u32, step: &str) -> Node {
    let mut n = Node::root(NodeId::child(run, q, parent.id, round, sample));
    n.parent = Some(parent.id);
    n.round = round;
    n.depth = parent.depth + 1;
    n.sample = sample;
    n.step = step.into();
    n.text = format!("{} {step}", parent.text).trim().to_owned();
    n.tokens = 3;
    n.total_tokens = parent.total_tokens + 3;
    n.logprob = -1.5;
    n
}

async fn runs_register_once<S: Store>(store: S, run: &str) {
    let qs: Vec<Question> = (0..3).map(question).collect();
    assert!(store.register_run(&record(run, 1), &qs).await.unwrap());
    assert!(!store.register_run(&record(run, 1), &qs).await.unwrap());
    assert_eq!(store.questions(run).await.unwrap(), qs);
    assert_eq!(store.run_record(run).await.unwrap(), record(run, 1));
    assert!(store.runs().await.unwrap().contains(&run.to_owned()));
    let p = store.progress(run).await.unwrap();
    let now = tsst_actors::store::unix_now();
    assert!(p.started.is_some_and(|s| s <= now && s + 60 > now), "{p:?}");
    let err = store.register_run(&record(run, 2), &qs).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { what: "config", .. }),
        "{err}"
    );
    let err = store
        .register_run(&record(run, 1), &qs[..2])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                what: "question set",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        store.run_record("no-such-run").await,
        Err(StoreError::UnknownRun(_))
    ));
}

async fn a_round_concludes_once<S: Store>(store: S, run: &str) {
    let qs: Vec<Question> = (0..3).map(question).collect();
    store.register_run(&record(run, 1), &qs).await.unwrap();
    let q = "val-0";
    let t = TreeRef::new(run, q);
    let all: Vec<String> = qs.iter().map(|q| q.id.clone()).collect();
    assert_eq!(store.init_trees(run, &all).await.unwrap(), all);
    store.mark_enqueued(run, &all[..2]).await.unwrap();
    // Re-initialising keeps the trees and reports only what was not published.
    assert_eq!(
        store.init_trees(run, &all).await.unwrap(),
        vec!["val-2".to_owned()]
    );

    let root = NodeId::root(run, q);
    let r = store.rounds(&[(t.clone(), 0)]).await.unwrap().remove(0);
    assert_eq!(r.frontier.len(), 1);
    assert_eq!(r.frontier[0].id, root);
    assert_eq!(r.state.status, TreeStatus::Searching);

    // Round 0: the root gets two children; the commit is idempotent.
    let a = child(run, q, &r.frontier[0], 0, 0, "Step 1: a.");
    let b = child(run, q, &r.frontier[0], 0, 1, "Step 1: b.");
    let follow = vec![Task::Score(ScoreTask {
        run: run.into(),
        question: q.into(),
        round: 0,
        parent: root,
        children: vec![a.id, b.id],
        steps: vec![ChildStep::of(&a), ChildStep::of(&b)],
    })
    .envelope()];
    let commit = ExpandCommit {
        tree: t.clone(),
        task_id: "expand-0".into(),
        round: 0,
        children: vec![a.clone(), b.clone()],
        outbox: follow.clone(),
    };
    let key = (t.clone(), "expand-0".to_owned());
    assert_eq!(
        store.outboxes(std::slice::from_ref(&key)).await.unwrap(),
        vec![None]
    );
    store
        .commit_expand(std::slice::from_ref(&commit))
        .await
        .unwrap();
    store
        .commit_expand(std::slice::from_ref(&commit))
        .await
        .unwrap();
    assert_eq!(
        store.outboxes(std::slice::from_ref(&key)).await.unwrap(),
        vec![Some(follow)]
    );
    let got = store
        .nodes(&[(t.clone(), a.id), (t.clone(), NodeId(42))])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(a.clone()), None]);

    // Scoring the only frontier node completes the barrier; a redelivery finds it
    // complete but must not conclude again before the conclusion... and after it,
    // learns that it was concluded.
    // A score task whose children the store does not have (it lost the expansion
    // after the scorer read it) writes nothing: counting its parent would conclude
    // the round without them.
    let lost = ScoreCommit {
        tree: t.clone(),
        round: 0,
        parent: root,
        children: vec![a.id, NodeId(42)],
        values: vec![(a.id, 0.5), (NodeId(42), 0.5)],
    };
    assert_eq!(
        store.commit_scores(&[lost]).await.unwrap(),
        vec![Barrier::Lost]
    );
    let not_frontier = ScoreCommit {
        tree: t.clone(),
        round: 0,
        parent: a.id,
        children: vec![],
        values: vec![],
    };
    assert_eq!(
        store.commit_scores(&[not_frontier]).await.unwrap(),
        vec![Barrier::Lost],
        "a parent that is not in the round's frontier"
    );
    let position = store.positions(std::slice::from_ref(&t)).await.unwrap();
    assert_eq!(position[0].as_ref().unwrap().scored, Vec::<NodeId>::new());
    let score = ScoreCommit {
        tree: t.clone(),
        round: 0,
        parent: root,
        children: vec![a.id, b.id],
        values: vec![(a.id, 0.25), (b.id, 0.1 + 0.2)],
    };
    assert_eq!(
        store
            .commit_scores(std::slice::from_ref(&score))
            .await
            .unwrap(),
        vec![Barrier::Complete]
    );
    let view = store.rounds(&[(t.clone(), 0)]).await.unwrap().remove(0);
    let mut kids = view.children.clone();
    kids.sort_by_key(|n| n.sample);
    assert_eq!(kids[0].value, Some(0.25));
    assert_eq!(kids[1].value, Some(0.1 + 0.2), "values round-trip exactly");

    let next = vec![Task::Expand(ExpandTask {
        run: run.into(),
        question: q.into(),
        round: 1,
        node: b.id,
    })
    .envelope()];
    // A conclusion computed from a view with other children than the store's round
    // (the store lost writes since the view was read) is not applied.
    let stale_view = RoundCommit {
        tree: t.clone(),
        round: 0,
        children: 1,
        finished: vec![],
        next_frontier: vec![],
        done: false,
        restarted: true,
        outbox: vec![],
    };
    assert_eq!(
        store.commit_rounds(&[stale_view]).await.unwrap(),
        vec![Concluded::Unready]
    );
    let conclusion = RoundCommit {
        tree: t.clone(),
        round: 0,
        children: 2,
        finished: vec![(a.id, FinishReason::Answer)],
        next_frontier: vec![b.id],
        done: false,
        restarted: false,
        outbox: next.clone(),
    };
    assert_eq!(
        store
            .commit_rounds(std::slice::from_ref(&conclusion))
            .await
            .unwrap(),
        vec![Concluded::Now]
    );
    assert_eq!(
        store
            .commit_rounds(std::slice::from_ref(&conclusion))
            .await
            .unwrap(),
        vec![Concluded::Before],
        "concluded once"
    );
    assert_eq!(
        store
            .commit_scores(std::slice::from_ref(&score))
            .await
            .unwrap(),
        vec![Barrier::Concluded]
    );
    assert_eq!(
        store
            .outboxes(&[(t.clone(), round_outbox_key(0))])
            .await
            .unwrap(),
        vec![Some(next)]
    );

    // Round 1: b yields nothing; the question is done after this round.
    let view = store.rounds(&[(t.clone(), 1)]).await.unwrap().remove(0);
    assert_eq!(view.state.round, 1);
    assert_eq!(view.finished, 1);
    assert_eq!(
        view.frontier.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![b.id]
    );
    assert!(view.children.is_empty());
    let empty = ScoreCommit {
        tree: t.clone(),
        round: 1,
        parent: b.id,
        children: vec![],
        values: vec![],
    };
    assert_eq!(
        store.commit_scores(&[empty]).await.unwrap(),
        vec![Barrier::Complete]
    );
    let verify = vec![Task::Verify(VerifyTask {
        run: run.into(),
        question: q.into(),
    })
    .envelope()];
    assert_eq!(
        store
            .commit_rounds(&[RoundCommit {
                tree: t.clone(),
                round: 1,
                children: 0,
                finished: vec![(b.id, FinishReason::Exhausted)],
                next_frontier: vec![],
                done: true,
                restarted: true,
                outbox: verify.clone(),
            }])
            .await
            .unwrap()[0],
        Concluded::Now
    );

    let verdict = Verdict {
        correct: true,
        extracted: "(A)".into(),
        letter: Some('A'),
        by: VerdictSource::Rule,
        note: None,
        grounded: None,
    };
    let vc = VerdictCommit {
        tree: t.clone(),
        verdicts: vec![(a.id, verdict.clone())],
        outbox: vec![],
    };
    store
        .commit_verdicts(std::slice::from_ref(&vc))
        .await
        .unwrap();
    assert_eq!(
        store
            .outboxes(&[(t.clone(), VERIFY_OUTBOX_KEY.to_owned())])
            .await
            .unwrap(),
        vec![Some(vec![])]
    );

    let tree = store.tree(&t).await.unwrap();
    assert_eq!(tree.state.status, TreeStatus::Searched);
    assert_eq!(tree.state.round, 2);
    assert_eq!(tree.state.restarts, 1);
    assert_eq!(tree.finished, vec![a.id, b.id]);
    assert_eq!(tree.nodes.len(), 3);
    assert!(tree.nodes.windows(2).all(|w| w[0].id < w[1].id));
    let fa = tree.nodes.iter().find(|n| n.id == a.id).unwrap();
    assert_eq!(fa.finished, Some(FinishReason::Answer));
    assert_eq!(tree.verdicts.get(&a.id), Some(&verdict));

    // Finishing counts each question once.
    let (newly, p) = store
        .finish_trees(
            run,
            &[
                (q.to_owned(), None),
                ("val-1".to_owned(), Some("bad image".into())),
            ],
        )
        .await
        .unwrap();
    assert_eq!(newly, vec![true, true]);
    assert_eq!((p.total, p.done, p.failed), (3, 2, 1));
    let (newly, p) = store
        .finish_trees(run, &[(q.to_owned(), None)])
        .await
        .unwrap();
    assert_eq!(newly, vec![false]);
    assert_eq!(p.done, 2);
    assert_eq!(store.progress(run).await.unwrap(), p);
    let failed = store.tree(&TreeRef::new(run, "val-1")).await.unwrap();
    assert_eq!(failed.state.status, TreeStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("bad image"));
}

#[tokio::test]
async fn memory_runs() {
    runs_register_once(MemoryStore::new(), "mem-runs").await;
}

#[tokio::test]
async fn redis_runs() {
    let store = redis().await;
    let run = run_id("runs");
    store.delete_run(&run).await.unwrap();
    runs_register_once(store.clone(), &run).await;
    store.delete_run(&run).await.unwrap();
}

#[tokio::test]
async fn memory_rounds() {
    a_round_concludes_once(MemoryStore::new(), "mem-rounds").await;
}

#[tokio::test]
async fn redis_rounds() {
    let store = redis().await;
    let run = run_id("rounds");
    store.delete_run(&run).await.unwrap();
    a_round_concludes_once(store.clone(), &run).await;
    store.delete_run(&run).await.unwrap();
    assert!(!store.runs().await.unwrap().contains(&run));
}

/// A lease is its holder's until it runs out; its holder renews it; once it has run
/// out another takes it. Re-driving stale trees claims each tree once this way.
async fn leases_are_exclusive_and_run_out<S: Store>(store: S, name: &str) {
    let ttl = std::time::Duration::from_millis(300);
    assert!(store.lease(name, "a", ttl).await.unwrap());
    assert!(!store.lease(name, "b", ttl).await.unwrap());
    assert!(store.lease(name, "a", ttl).await.unwrap(), "renewed");
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    assert!(
        store.lease(name, "b", ttl).await.unwrap(),
        "taken once run out"
    );
    assert!(!store.lease(name, "a", ttl).await.unwrap());
}

#[tokio::test]
async fn memory_leases() {
    leases_are_exclusive_and_run_out(MemoryStore::new(), "mem-lease").await;
}

#[tokio::test]
async fn redis_leases() {
    leases_are_exclusive_and_run_out(redis().await, &run_id("lease")).await;
}

/// The model registry keeps one record per version, replaced as it changes, listed
/// oldest first.
async fn model_versions_are_kept_per_version<S: Store>(store: S, run: &str) {
    assert!(store.model_versions(run).await.unwrap().is_empty());
    let version = |v: u32, status: VersionStatus| ModelVersion {
        run: run.into(),
        version: v,
        parent: v.checked_sub(1),
        data: vec![DataFile {
            path: "dplus.json".into(),
            records: 3,
        }],
        policy: format!("m/v{v}/policy").into(),
        value: format!("m/v{v}/value").into(),
        status,
        stages: vec![StageReport {
            name: "train".into(),
            seconds: 1.5,
            exit_code: Some(0),
        }],
        started_at: 10,
        finished_at: None,
    };
    store
        .put_model_version(&version(1, VersionStatus::Training))
        .await
        .unwrap();
    store
        .put_model_version(&version(0, VersionStatus::Ready))
        .await
        .unwrap();
    let failed = VersionStatus::Failed {
        reason: "stage train: stopped".into(),
    };
    store
        .put_model_version(&version(1, failed.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.model_versions(run).await.unwrap(),
        vec![version(0, VersionStatus::Ready), version(1, failed)]
    );
}

#[tokio::test]
async fn memory_model_versions() {
    model_versions_are_kept_per_version(MemoryStore::new(), "mem-models").await;
}

#[tokio::test]
async fn redis_model_versions() {
    let run = run_id("models");
    model_versions_are_kept_per_version(redis().await, &run).await;
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::AsyncCommands::del(&mut conn, tsst_messages::keys::models(&run))
        .await
        .unwrap();
}

/// Heartbeats: the latest one per worker, the stale ones forgotten, a stopped worker
/// gone at once.
/// Times near the real clock: another test's `workers` call (with the real time) then
/// sees these beats as this one does.
async fn heartbeats_show_live_workers<S: Store>(store: S, prefix: &str) {
    let now = tsst_actors::store::unix_now();
    let beat = |name: &str, seen: u64| WorkerBeat {
        name: format!("{prefix}-{name}"),
        namespace: "ns".into(),
        roles: vec!["generator".into(), "scorer".into()],
        device: "cuda:0".into(),
        models: vec!["policy-v1".into()],
        pid: 7,
        started: now - 200,
        seen,
    };
    store.beat(&beat("a", now - 20)).await.unwrap();
    store.beat(&beat("a", now - 2)).await.unwrap();
    store.beat(&beat("b", now - 7)).await.unwrap();
    store.beat(&beat("c", now - 100)).await.unwrap();
    let mine = |all: Vec<WorkerBeat>| -> Vec<WorkerBeat> {
        all.into_iter()
            .filter(|b| b.name.starts_with(prefix))
            .collect()
    };
    let live = mine(store.workers(now, 30).await.unwrap());
    assert_eq!(live, vec![beat("a", now - 2), beat("b", now - 7)]);
    // c was forgotten: it does not come back with a longer window.
    let live = mine(store.workers(now, 1_000).await.unwrap());
    assert_eq!(live.len(), 2, "{live:?}");
    store.forget_worker(&beat("b", 0).name).await.unwrap();
    store.forget_worker(&beat("a", 0).name).await.unwrap();
    assert!(mine(store.workers(now, 30).await.unwrap()).is_empty());
}

#[tokio::test]
async fn memory_heartbeats() {
    heartbeats_show_live_workers(MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn redis_heartbeats() {
    heartbeats_show_live_workers(redis().await, &run_id("beats")).await;
}
