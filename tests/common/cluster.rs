//! A cluster of `tsst worker` processes and the helpers the fault tests share: the
//! questions, the reference trees of an uninterrupted embedded run, waiting for a run.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tsst_actors::broker::{AmqpBroker, Broker, MemoryBroker};
use tsst_actors::pipeline::{enqueue, follow};
use tsst_actors::runtime::{BatchSettings, Context, Models, RoleSpec, ScriptedFactory, Worker};
use tsst_actors::store::{MemoryStore, RedisStore, Store, TreeRef, TreeView};
use tsst_messages::*;

pub fn amqp_url() -> String {
    std::env::var("TSST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn redis_url() -> String {
    std::env::var("TSST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The `tsst` binary cargo built next to this test (the workers package's CLI test
/// makes cargo build it).
pub fn tsst_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("tsst");
    assert!(
        bin.exists(),
        "{} missing: run `cargo test --workspace`",
        bin.display()
    );
    bin
}

pub struct Cluster {
    pub ns: String,
    pub amqp: String,
    pub redis: String,
    /// The workers' relay (re-driving stalled trees), in seconds.
    pub relay_stall: u64,
    /// The roles the workers serve (`--roles`).
    pub roles: String,
    /// More arguments for `tsst worker` (e.g. `--config`).
    pub worker_args: Vec<String>,
    /// The workers' `--batch`.
    pub batch: u32,
    /// More environment for the workers (e.g. `SSL_CERT_FILE`).
    pub env: Vec<(String, String)>,
    pub logs: tempfile::TempDir,
    pub workers: Vec<Child>,
    /// Workers are named `<names>-w<i>` (two clusters on one namespace need two).
    pub names: String,
}

impl Cluster {
    pub fn new(ns: &str) -> Self {
        Cluster {
            ns: ns.into(),
            amqp: amqp_url(),
            redis: redis_url(),
            relay_stall: 120,
            roles: "generator,scorer,verifier,labeler".into(),
            worker_args: Vec::new(),
            batch: 16,
            env: Vec::new(),
            logs: tempfile::tempdir().unwrap(),
            workers: Vec::new(),
            names: ns.into(),
        }
    }

    /// Workers of a broker of the test's own.
    pub fn on_broker(ns: &str, amqp: String) -> Self {
        let mut cluster = Cluster::new(ns);
        cluster.amqp = amqp;
        cluster
    }

    /// Panics unless every worker is still running.
    pub fn all_running(&mut self) {
        for (i, w) in self.workers.iter_mut().enumerate() {
            if let Some(status) = w.try_wait().unwrap() {
                panic!("worker{i} exited ({status})\n{}", self.logs());
            }
        }
    }

    pub fn spawn_worker(&mut self) {
        let i = self.workers.len();
        let child = self.worker_process(i);
        self.workers.push(child);
    }

    /// SIGKILLs worker `i` (no chance to finish its batch) and starts it again, as a
    /// machine that comes back would.
    pub fn kill_and_respawn(&mut self, i: usize) {
        let _ = self.workers[i].kill();
        let _ = self.workers[i].wait();
        self.workers[i] = self.worker_process(i);
    }

    fn worker_process(&self, i: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join(format!("worker{i}.log")))
            .unwrap();
        Command::new(tsst_bin())
            .args(["worker", "--roles", &self.roles])
            .args(["--batch", &self.batch.to_string()])
            .args(["--name", &format!("{}-w{i}", self.names)])
            .args(&self.worker_args)
            .env("TSST_AMQP_URL", &self.amqp)
            .env("TSST_REDIS_URL", &self.redis)
            .env("TSST_NAMESPACE", &self.ns)
            .env("RUST_LOG", "info,lapin=warn")
            .env("TSST_RELAY_STALL_SECS", self.relay_stall.to_string())
            // No metrics endpoint unless a test asks for one (`env`).
            .env("TSST_METRICS", "off")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tsst worker")
    }

    /// Every line every worker logged.
    pub fn full_logs(&self) -> String {
        (0..self.workers.len())
            .map(|i| {
                std::fs::read_to_string(self.logs.path().join(format!("worker{i}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.workers.len() {
            let text = std::fs::read_to_string(self.logs.path().join(format!("worker{i}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out += &format!(
                "--- worker{i}\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        out
    }

    /// SIGTERM each worker and check it exits cleanly after its batch.
    pub fn stop_gracefully(&mut self) {
        for i in 0..self.workers.len() {
            if self.workers[i].try_wait().unwrap().is_some() {
                continue;
            }
            let pid = self.workers[i].id().to_string();
            Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            let started = Instant::now();
            loop {
                if let Some(status) = self.workers[i].try_wait().unwrap() {
                    assert!(status.success(), "worker exit after SIGTERM: {status}");
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "worker {i} did not stop\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

pub fn spec(policy: &str) -> SearchSpec {
    SearchSpec {
        seed: 11,
        branch: 2,
        n_consistency: 3,
        policy_model: policy.into(),
        value_model: Some(policy.into()),
        tag: "t".into(),
        ..SearchSpec::default()
    }
}

pub fn record(run: &str, policy: &str) -> RunRecord {
    RunRecord {
        run: run.into(),
        search: spec(policy),
        dataset: DatasetSpec {
            source: DataSource::Aokvqa,
            root: "synthetic".into(),
            split: "val".into(),
            partition: None,
            sample_size: None,
        },
        labels: LabelSpec::default(),
    }
}

pub fn questions(n: usize) -> Vec<Question> {
    (0..n)
        .map(|i| Question {
            id: format!("q{i:04}"),
            source: DataSource::Aokvqa,
            image: None,
            question: format!("How many shapes are red? ({i})"),
            choices: vec!["1".into(), "2".into(), "3".into(), "4".into()],
            answer: (i * 7) % 4,
            rationales: vec![],
            context: None,
        })
        .collect()
}

pub async fn trees<S: Store>(store: &S, run: &str, qs: &[Question]) -> BTreeMap<String, TreeView> {
    let mut out = BTreeMap::new();
    for q in qs {
        out.insert(
            q.id.clone(),
            store.tree(&TreeRef::new(run, &q.id)).await.unwrap(),
        );
    }
    out
}

/// The reference: the same run in one process over the in-memory broker and store.
pub async fn embedded_trees(record: &RunRecord, qs: &[Question]) -> BTreeMap<String, TreeView> {
    let (store, broker) = (MemoryStore::new(), MemoryBroker::new());
    let ctx = Arc::new(Context::new(
        store.clone(),
        broker.clone(),
        Models::new(ScriptedFactory),
    ));
    let roles: Vec<RoleSpec> = [Role::Generator, Role::Scorer, Role::Verifier, Role::Labeler]
        .into_iter()
        .map(|role| RoleSpec { role, instances: 1 })
        .collect();
    let worker = Worker::start(ctx, &roles, BatchSettings::default());
    enqueue(&store, &broker, record, qs).await.unwrap();
    follow(&store, &record.run, Duration::from_millis(20), |_| {})
        .await
        .unwrap();
    worker.shutdown().await;
    trees(&store, &record.run, qs).await
}

/// Waits until the run is complete; a store that is down for a while (a fault under
/// test) is asked again.
pub async fn wait_done(store: &RedisStore, run: &str, cluster: &Cluster, limit: Duration) {
    let started = Instant::now();
    loop {
        match store.progress(run).await {
            Ok(p) if p.complete() => {
                assert_eq!(p.failed, 0, "failed questions\n{}", cluster.logs());
                return;
            }
            Ok(_) | Err(_) => {}
        }
        assert!(
            started.elapsed() < limit,
            "run did not finish\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn drained(broker: &AmqpBroker) {
    let t = broker.topology().clone();
    for _ in 0..100 {
        let mut depth = 0;
        for role in [Role::Generator, Role::Scorer, Role::Verifier, Role::Labeler] {
            depth += broker.queue_depth(&t.queue(role)).await.unwrap();
        }
        if depth == 0 {
            // Ready is 0; give the last deliveries time to be processed and acked.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("queues did not drain");
}

pub async fn connect(ns: &str) -> (AmqpBroker, RedisStore) {
    connect_to(&amqp_url(), ns).await
}

pub async fn connect_to(amqp: &str, ns: &str) -> (AmqpBroker, RedisStore) {
    connect_both(amqp, &redis_url(), ns).await
}

pub async fn connect_both(amqp: &str, redis: &str, ns: &str) -> (AmqpBroker, RedisStore) {
    let broker = AmqpBroker::connect(amqp, ns, Topology::new(ns))
        .await
        .expect("RabbitMQ must be running (see .ci/run)");
    broker.declare().await.unwrap();
    let store = RedisStore::connect(redis)
        .await
        .expect("Redis must be running");
    (broker, store)
}

/// Waits until `n` questions of the run are finished.
pub async fn progressed(store: &RedisStore, run: &str, n: u32, total: u32, cluster: &Cluster) {
    let started = Instant::now();
    loop {
        let p = store.progress(run).await.unwrap();
        if p.done >= n {
            assert!(
                p.done < total,
                "the run ended before the fault; slow the model down"
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn tsst_cli(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new(tsst_bin())
        .args(args)
        .env("TSST_AMQP_URL", amqp_url())
        .env("TSST_REDIS_URL", redis_url())
        .env("TSST_NAMESPACE", ns)
        .output()
        .unwrap()
}

/// Asserts that every tree of the run equals the reference's.
pub async fn assert_same_trees<S: Store>(
    store: &S,
    run: &str,
    qs: &[Question],
    reference: &BTreeMap<String, TreeView>,
) {
    let got = trees(store, run, qs).await;
    for (q, tree) in reference {
        assert_eq!(
            &got[q], tree,
            "tree of {q} differs from the uninterrupted run"
        );
    }
}

/// Messages in the namespace's dead-letter queues.
pub async fn dead_letters(broker: &AmqpBroker) -> u32 {
    let mut n = 0;
    for role in [Role::Generator, Role::Scorer, Role::Verifier, Role::Labeler] {
        n += broker
            .queue_depth(&broker.topology().dead_letter_queue(role))
            .await
            .unwrap();
    }
    n
}
