//! The trainer's round against the real store and broker: its commands run as
//! argument lists (no shell), a hanging one is stopped at its timeout, and every
//! version lands in the registry with what it came from and how it ended.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tsst_actors::store::Store;
use tsst_actors::train::{train_round, CommandError, Stage, TrainError, TrainerConfig};
use tsst_messages::*;

mod common;
use common::cluster::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

/// Removes a test run's registry from the shared Redis.
async fn forget(run: &str) {
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::AsyncCommands::del(&mut conn, keys::models(run))
        .await
        .unwrap();
}

fn stage(name: &str, program: &str, args: &[&str], timeout_secs: u64) -> Stage {
    Stage {
        name: name.into(),
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        timeout_secs,
        after: None,
    }
}

/// A test's own namespace, run name, broker and store connections and folder.
struct Setup {
    ns: String,
    run: String,
    broker: tsst_actors::broker::AmqpBroker,
    store: tsst_actors::store::RedisStore,
    root: tempfile::TempDir,
}

async fn setup(tag: &str) -> Setup {
    let ns = format!("tsst-test-trainer-{tag}-{}", std::process::id());
    let (broker, store) = connect_both(&amqp_url(), &redis_url(), &ns).await;
    Setup {
        run: format!("train-{tag}-{}", std::process::id()),
        ns,
        broker,
        store,
        root: tempfile::tempdir().unwrap(),
    }
}

/// The reason a round that must fail gave.
async fn round_error(
    store: &tsst_actors::store::RedisStore,
    broker: &tsst_actors::broker::AmqpBroker,
    cfg: &TrainerConfig,
    task: &TrainTask,
) -> String {
    train_round(store, broker, cfg, task)
        .await
        .unwrap_err()
        .to_string()
}

/// A config whose "training" copies the parent models into the version's folder,
/// after `extra` stages.
fn config(root: &Path, extra: Vec<Stage>) -> TrainerConfig {
    let mut stages = extra;
    stages.push(stage(
        "policy",
        "cp",
        &["-r", "{parent_policy}", "{out}/policy"],
        30,
    ));
    stages.push(stage(
        "value",
        "cp",
        &["-r", "{parent_value}", "{out}/value"],
        30,
    ));
    TrainerConfig {
        models_root: root.join("models"),
        base_policy: fixtures().join("tiny-policy"),
        base_value: fixtures().join("tiny-value"),
        stages,
        policy_dir: "{out}/policy".into(),
        value_dir: "{out}/value".into(),
    }
}

fn task(root: &Path, run: &str, round: u32) -> TrainTask {
    let policy_data = root.join(format!("dplus-{round}.json"));
    let value_data = root.join(format!("dv-{round}.json"));
    std::fs::write(
        &policy_data,
        r#"[{"id": "a", "conversations": []}, {"id": "b", "conversations": []}]"#,
    )
    .unwrap();
    std::fs::write(
        &value_data,
        r#"[{"id": "c", "conversations": [], "value": 0.5}]"#,
    )
    .unwrap();
    TrainTask {
        run: run.into(),
        round,
        policy_data,
        value_data,
    }
}

#[actix_rt::test]
async fn rounds_run_their_commands_without_a_shell_and_register_each_version() {
    let Setup {
        run,
        broker,
        store,
        root,
        ..
    } = setup("rounds").await;
    let injected = root.path().join("injected");
    // Shell syntax in an argument reaches the program as it is.
    let hostile = format!("$(touch {0}) `touch {0}`; touch {0}", injected.display());
    let cfg = config(
        root.path(),
        vec![stage(
            "echo",
            "printf",
            &["%s\\n", &hostile, "{run}/{round}"],
            10,
        )],
    );

    let v0 = train_round(&store, &broker, &cfg, &task(root.path(), &run, 0))
        .await
        .unwrap();
    assert!(!injected.exists(), "an argument went through a shell");
    assert_eq!(v0.status, VersionStatus::Ready);
    assert_eq!(v0.parent, None);
    assert_eq!(
        v0.data.iter().map(|d| d.records).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(
        v0.stages
            .iter()
            .map(|s| (s.name.as_str(), s.exit_code))
            .collect::<Vec<_>>(),
        [("echo", Some(0)), ("policy", Some(0)), ("value", Some(0))]
    );
    assert!(v0.policy.join("manifest.json").is_file());
    assert!(v0.finished_at.is_some());

    // Round 1 starts from version 0's models; a redelivered round trains nothing again.
    let v1 = train_round(&store, &broker, &cfg, &task(root.path(), &run, 1))
        .await
        .unwrap();
    assert_eq!(v1.parent, Some(0));
    assert!(v1
        .policy
        .starts_with(root.path().join("models").join(&run).join("v1")));
    let again = train_round(&store, &broker, &cfg, &task(root.path(), &run, 1))
        .await
        .unwrap();
    assert_eq!(again, v1);

    let registry = store.model_versions(&run).await.unwrap();
    assert_eq!(registry, vec![v0, v1]);
    forget(&run).await;
    broker.delete_topology().await.unwrap();
}

#[actix_rt::test]
async fn a_hanging_command_is_stopped_at_its_timeout_with_the_reason_in_the_registry() {
    let Setup {
        run,
        broker,
        store,
        root,
        ..
    } = setup("hang").await;
    let cfg = config(root.path(), vec![stage("hang", "sleep", &["600"], 1)]);

    let started = Instant::now();
    let err = train_round(&store, &broker, &cfg, &task(root.path(), &run, 0))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not stopped in time"
    );
    assert!(
        matches!(&err, TrainError::Command(CommandError::Timeout { stage, secs: 1 }) if stage == "hang"),
        "{err}"
    );
    let registry = store.model_versions(&run).await.unwrap();
    assert_eq!(registry.len(), 1);
    assert_eq!(
        registry[0].status,
        VersionStatus::Failed {
            reason: "stage hang: stopped after its timeout of 1 s".into()
        }
    );
    assert_eq!(registry[0].stages[0].exit_code, None);

    // A program that does not exist, and one that fails, are failures with reasons too.
    let missing = config(root.path(), vec![stage("x", "/nonexistent/train", &[], 5)]);
    let err = round_error(&store, &broker, &missing, &task(root.path(), &run, 0)).await;
    assert!(err.contains("cannot start /nonexistent/train"), "{err}");
    let failing = config(root.path(), vec![stage("x", "false", &[], 5)]);
    let err = round_error(&store, &broker, &failing, &task(root.path(), &run, 0)).await;
    assert!(err.contains("stage x: exited with exit status: 1"), "{err}");
    broker.delete_topology().await.unwrap();
}

/// A shell script as a stage with `after: []`: it starts with the round.
fn at_once(name: &str, script: &str, timeout_secs: u64) -> Stage {
    Stage {
        after: Some(Vec::new()),
        ..stage(name, "sh", &["-c", script], timeout_secs)
    }
}

/// Whether process `pid` has ended (gone, or a zombie waiting to be reaped).
fn ended(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[actix_rt::test]
async fn stages_after_nothing_run_side_by_side_and_a_failure_stops_the_others() {
    let Setup {
        run,
        broker,
        store,
        root,
        ..
    } = setup("after").await;
    // Each of the two waits for the other to have started: run one after the other,
    // the first would wait until its timeout.
    let meet = |me: &str, other: &str| {
        format!("mkdir -p {{out}} && touch {{out}}/{me} && until [ -e {{out}}/{other} ]; do sleep 0.05; done")
    };
    let stages = vec![
        at_once("a", &meet("a", "b"), 20),
        at_once("b", &meet("b", "a"), 20),
    ];
    let cfg = config(root.path(), stages);
    let v0 = train_round(&store, &broker, &cfg, &task(root.path(), &run, 0))
        .await
        .unwrap();
    let mut names: Vec<_> = v0.stages.iter().map(|s| s.name.as_str()).collect();
    names[..2].sort();
    assert_eq!(names, ["a", "b", "policy", "value"]);

    // One fails while the other runs: the round fails with the first's reason at once,
    // and the other's command is killed rather than left to run on.
    let pid = root.path().join("sleeper.pid");
    let sleeper = format!("echo $$ > {} && exec sleep 600", pid.display());
    let wait_then_fail = format!(
        "until [ -e {} ]; do sleep 0.05; done; exit 3",
        pid.display()
    );
    let stages = vec![
        at_once("sleeper", &sleeper, 600),
        at_once("fails", &wait_then_fail, 20),
    ];
    let cfg = config(root.path(), stages);
    let err = round_error(&store, &broker, &cfg, &task(root.path(), &run, 1)).await;
    assert!(
        err.contains("stage fails: exited with exit status: 3"),
        "{err}"
    );
    let pid = std::fs::read_to_string(&pid).unwrap().trim().to_owned();
    let started = Instant::now();
    while !ended(&pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sleeper (pid {pid}) was left running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let registry = store.model_versions(&run).await.unwrap();
    assert!(matches!(registry[1].status, VersionStatus::Failed { .. }));
    forget(&run).await;
    broker.delete_topology().await.unwrap();
}

/// Waits until the registry holds version `v` of `run` in a final state.
async fn settled_version(
    store: &tsst_actors::store::RedisStore,
    run: &str,
    v: u32,
    cluster: &Cluster,
) -> ModelVersion {
    let started = Instant::now();
    loop {
        let versions = store.model_versions(run).await.unwrap();
        if let Some(found) = versions
            .into_iter()
            .find(|x| x.version == v && x.status != VersionStatus::Training)
        {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "version {v} did not settle\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn a_trainer_worker_trains_each_round_sent_and_dead_letters_one_that_fails() {
    use tsst_actors::broker::Broker;
    let Setup {
        ns,
        run,
        broker,
        store,
        root,
    } = setup("worker").await;
    let yaml = format!(
        "models_root: {root}/models\nbase_policy: {fx}/tiny-policy\nbase_value: {fx}/tiny-value\n\
         stages:\n\
         \x20 - {{name: policy, program: cp, args: [-r, '{{parent_policy}}', '{{out}}/policy'], timeout_secs: 30}}\n\
         \x20 - {{name: value, program: cp, args: [-r, '{{parent_value}}', '{{out}}/value'], timeout_secs: 30}}\n\
         policy_dir: '{{out}}/policy'\nvalue_dir: '{{out}}/value'\n",
        root = root.path().display(),
        fx = fixtures().display()
    );
    let config = root.path().join("trainer.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut cluster = Cluster::new(&ns);
    cluster.roles = "trainer".into();
    cluster.worker_args = vec!["--trainer".into(), config.display().to_string()];
    cluster.spawn_worker();

    let round0 = task(root.path(), &run, 0);
    broker
        .publish(&[Task::Train(round0).envelope()])
        .await
        .unwrap();
    let v0 = settled_version(&store, &run, 0, &cluster).await;
    assert_eq!(v0.status, VersionStatus::Ready, "{}", cluster.logs());
    assert!(v0.value.join("manifest.json").is_file());

    // Data that is not a JSON array fails the round for good: recorded, then
    // dead-lettered with the same reason (replayable once the data is fixed).
    let round1 = task(root.path(), &run, 1);
    std::fs::write(&round1.value_data, "not json").unwrap();
    broker
        .publish(&[Task::Train(round1).envelope()])
        .await
        .unwrap();
    let v1 = settled_version(&store, &run, 1, &cluster).await;
    let VersionStatus::Failed { reason } = &v1.status else {
        panic!("{v1:?}");
    };
    assert!(reason.contains("not a JSON array"), "{reason}");
    let dlq = broker.topology().dead_letter_queue(Role::Trainer);
    let started = Instant::now();
    while broker.queue_depth(&dlq).await.unwrap() != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no dead letter"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.all_running();
    cluster.stop_gracefully();
    forget(&run).await;
    broker.delete_topology().await.unwrap();
}

/// Waits until the workers' logs hold `needle` `n` times.
fn logged(cluster: &Cluster, needle: &str, n: usize) {
    let started = Instant::now();
    while cluster.full_logs().matches(needle).count() < n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not logged: {needle}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[actix_rt::test]
async fn running_workers_load_a_published_version_and_switch_to_it_losing_nothing() {
    use tsst_actors::pipeline::enqueue;
    let ns = format!("tsst-test-publish-{}", std::process::id());
    let (old_run, new_run) = (
        format!("publish-old-{}", std::process::id()),
        format!("publish-new-{}", std::process::id()),
    );
    let (broker, store) = connect_both(&amqp_url(), &redis_url(), &ns).await;
    let qs = questions(20);
    let mut cluster = Cluster::new(&ns);
    cluster.spawn_worker();
    cluster.spawn_worker();
    let old = record(&old_run, "scripted:30ms");
    enqueue(&store, &broker, &old, &qs).await.unwrap();
    // Events are not kept: publish once both workers listen.
    logged(&cluster, "watching for published models", 2);

    // A trainer publishes a new version while the old run is being searched.
    let published = [ModelKind::Policy, ModelKind::Value].map(|model| {
        Event::ModelPublished {
            model,
            name: "selftrain".into(),
            version: 1,
            path: "scripted:2ms".into(),
        }
        .envelope()
    });
    broker.publish_events(&published).await.unwrap();
    logged(
        &cluster,
        "loaded a published model ahead of its first batch",
        4,
    );

    let new = record(&new_run, "scripted:2ms");
    enqueue(&store, &broker, &new, &qs).await.unwrap();
    wait_done(&store, &old_run, &cluster, Duration::from_secs(120)).await;
    wait_done(&store, &new_run, &cluster, Duration::from_secs(120)).await;
    for (run, rec) in [(&old_run, &old), (&new_run, &new)] {
        let mut reference = rec.clone();
        reference.search = record(run, "scripted").search;
        let expected = embedded_trees(&reference, &qs).await;
        assert_same_trees(&store, run, &qs, &expected).await;
    }
    drained(&broker).await;
    assert_eq!(dead_letters(&broker).await, 0, "dead letters");
    cluster.all_running();
    cluster.stop_gracefully();
    broker.delete_topology().await.unwrap();
}
