//! `bench/orchestration`: what the tsst orchestration costs next to the broker alone.
//!
//! In one process and against the real local RabbitMQ and Redis it measures
//! 1. the raw rate: lapin publish (confirmed, in batches) → consume (prefetch) →
//!    batched ack of persistent messages through one quorum queue;
//! 2. a tsst run with the scripted backend (zero model cost) through `Worker::start`
//!    with all four roles over `AmqpBroker` + `RedisStore`: tasks/s and expansions/s;
//! 3. optionally the same run embedded (`MemoryBroker` + `MemoryStore`), for context.
//!
//! Every tsst task is one message consumed and acked, so tasks/s ÷ raw msgs/s says how
//! much of the broker's capacity the orchestration turns into work.
use anyhow::{bail, ensure, Context as _, Result};
use clap::Parser;
use futures_util::{StreamExt, TryStreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tsst_actors::broker::{AmqpBroker, Broker, MemoryBroker};
use tsst_actors::pipeline::{enqueue, follow};
use tsst_actors::runtime::{BatchSettings, Context, Models, RoleSpec, ScriptedFactory, Worker};
use tsst_actors::store::{MemoryStore, RedisStore, Store, TreeRef};
use tsst_messages::{
    DataSource, DatasetSpec, Event, LabelSpec, Question, Role, RunRecord, SearchSpec, Topology,
};

#[derive(Debug, Parser)]
#[command(about = "tsst orchestration throughput next to raw RabbitMQ throughput")]
struct Args {
    /// Questions in the tsst run.
    #[arg(long, default_value_t = 2000)]
    questions: usize,
    /// Actors per role in the worker.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Scorer actors, where they should differ from --instances (the scorer concludes
    /// rounds, the costliest task).
    #[arg(long)]
    scorers: Option<usize>,
    /// Most deliveries a role actor processes as one batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Unacknowledged deliveries per role consumer (raised to --batch if lower).
    #[arg(long, default_value_t = 128)]
    prefetch: u16,
    /// How long a partial batch waits for more deliveries, in milliseconds.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Policy and value model: `scripted` (zero cost) or `scripted:<N>ms`.
    #[arg(long, default_value = "scripted")]
    model: String,
    /// Messages in the raw lapin baseline.
    #[arg(long, default_value_t = 50_000)]
    raw_messages: usize,
    /// Payload size of a raw message in bytes.
    #[arg(long, default_value_t = 300)]
    raw_bytes: usize,
    /// Messages published before awaiting their confirms, in the raw baseline.
    #[arg(long, default_value_t = 256)]
    raw_publish_batch: usize,
    /// Raw consumer prefetch.
    #[arg(long, default_value_t = 256)]
    raw_prefetch: u16,
    /// The raw consumer acks with `multiple` every this many deliveries.
    #[arg(long, default_value_t = 64)]
    raw_ack_every: usize,
    /// Skip the raw baseline.
    #[arg(long)]
    skip_raw: bool,
    /// Only the raw baseline, e.g. to see what per-message acks cost the broker.
    #[arg(long, conflicts_with = "skip_raw")]
    raw_only: bool,
    /// Sample the role queues' depths during the run (which role limits it); the
    /// sampling opens a channel per queue every 100 ms, so it is off for headline
    /// figures.
    #[arg(long)]
    watch_queues: bool,
    /// Leave the tsst run's Redis keys and RabbitMQ namespace in place, to inspect.
    #[arg(long)]
    keep: bool,
    /// Skip the embedded (in-memory) run.
    #[arg(long)]
    skip_embedded: bool,
    #[arg(
        long,
        env = "TSST_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    #[arg(long, env = "TSST_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    ensure!(args.questions > 0, "--questions must be at least 1");
    ensure!(args.instances > 0, "--instances must be at least 1");
    ensure!(args.batch > 0, "--batch must be at least 1");
    ensure!(args.raw_messages > 0, "--raw-messages must be at least 1");
    ensure!(
        args.raw_ack_every > 0 && args.raw_publish_batch > 0,
        "--raw-ack-every and --raw-publish-batch must be at least 1"
    );
    // Role actors need an actix system; lapin wants a multi-threaded runtime under it
    // so its socket events never wait behind an actor (as in the `tsst` command).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    actix_rt::System::with_tokio_rt(|| runtime).block_on(bench(args))
}

async fn bench(args: Args) -> Result<()> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    // Unique per invocation, so concurrent or aborted runs never share queues or keys.
    let tag = format!("{}-{}", std::process::id(), stamp.as_millis());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# orchestration bench: nproc={nproc} arch={} unix_time={} questions={} instances={} scorers={} batch={} prefetch={} model={}",
        std::env::consts::ARCH,
        stamp.as_secs(),
        args.questions,
        args.instances,
        args.scorers.unwrap_or(args.instances),
        args.batch,
        args.prefetch,
        args.model,
    );

    let services = Services::find();
    let raw = if args.skip_raw {
        None
    } else {
        let cpu = services.sample();
        let r = raw_baseline(&args, &tag)
            .await
            .context("raw lapin baseline")?;
        services.sample().since(&cpu).print("raw lapin");
        println!(
            "raw lapin: {} msgs of {} B in {:.3} s = {:.0} msgs/s (publish batches of {} with confirms, prefetch {}, ack multiple every {}; publishing done after {:.3} s)",
            r.messages,
            args.raw_bytes,
            r.elapsed.as_secs_f64(),
            r.rate(),
            args.raw_publish_batch,
            args.raw_prefetch,
            args.raw_ack_every,
            r.published_after.as_secs_f64(),
        );
        Some(r)
    };
    if args.raw_only {
        if let Some(r) = &raw {
            println!(
                "SUMMARY raw_msgs_per_s={:.0} raw_ack_every={} nproc={nproc} arch={} unix_time={}",
                r.rate(),
                args.raw_ack_every,
                std::env::consts::ARCH,
                stamp.as_secs(),
            );
        }
        return Ok(());
    }

    let dist = distributed_run(&args, &tag, &services)
        .await
        .context("tsst run over RabbitMQ + Redis")?;
    dist.print("tsst amqp+redis");
    let embedded = if args.skip_embedded {
        None
    } else {
        let e = embedded_run(&args, &tag, &services)
            .await
            .context("tsst run embedded")?;
        e.print("tsst embedded");
        Some(e)
    };

    let ratio = raw.as_ref().map(|r| dist.tasks_per_s() / r.rate());
    let fmt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "na".to_owned(), |v| format!("{v:.digits$}"))
    };
    println!(
        "SUMMARY raw_msgs_per_s={} tsst_tasks_per_s={:.0} expansions_per_s={:.0} nodes_per_s={:.0} questions_per_s={:.1} ratio={} target=0.5 embedded_tasks_per_s={} tasks={} expansions={} nodes={} elapsed_s={:.3} questions={} instances={} batch={} nproc={nproc} arch={} unix_time={}",
        fmt(raw.as_ref().map(RawResult::rate), 0),
        dist.tasks_per_s(),
        dist.per_s(dist.counts.expansions),
        dist.per_s(dist.counts.nodes),
        dist.per_s(dist.counts.questions),
        fmt(ratio, 3),
        fmt(embedded.as_ref().map(RunResult::tasks_per_s), 0),
        dist.counts.tasks(),
        dist.counts.expansions,
        dist.counts.nodes,
        dist.elapsed.as_secs_f64(),
        args.questions,
        args.instances,
        args.batch,
        std::env::consts::ARCH,
        stamp.as_secs(),
    );
    Ok(())
}

struct RawResult {
    messages: usize,
    elapsed: Duration,
    published_after: Duration,
}

impl RawResult {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// Publish → consume → ack through a fresh quorum queue, publishing and consuming at
/// once as the roles do, timed from the first publish to the last ack.
async fn raw_baseline(args: &Args, tag: &str) -> Result<RawResult> {
    let conn = Connection::connect(
        &args.amqp_url,
        ConnectionProperties::default()
            .with_connection_name(format!("tsst-bench-raw-{tag}").into()),
    )
    .await
    .context("cannot connect to RabbitMQ")?;
    let queue = format!("tsst-bench-raw-{tag}");
    let setup = conn.create_channel().await?;
    let mut queue_args = FieldTable::default();
    // The same queue type as the tsst topology's, whose replication log costs more
    // than a classic queue's.
    queue_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    setup
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            queue_args,
        )
        .await
        .with_context(|| format!("cannot declare {queue}"))?;
    let result = raw_pass(&conn, &queue, args).await;
    let deleted = setup
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bench done".into()).await;
    let result = result?;
    deleted.with_context(|| format!("cannot delete {queue}"))?;
    Ok(result)
}

async fn raw_pass(conn: &Connection, queue: &str, args: &Args) -> Result<RawResult> {
    let n = args.raw_messages;
    let consumer_channel = conn.create_channel().await?;
    // Quorum queues refuse global QoS: this prefetch applies per consumer.
    consumer_channel
        .basic_qos(args.raw_prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.into(),
            "tsst-bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let ack_every = args.raw_ack_every;
    let consuming = tokio::spawn(async move {
        let mut seen = 0usize;
        while seen < n {
            let delivery = consumer
                .next()
                .await
                .context("the raw consumer closed early")??;
            seen += 1;
            if seen.is_multiple_of(ack_every) || seen == n {
                delivery
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .context("ack")?;
            }
        }
        anyhow::Ok(Instant::now())
    });

    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let payload = vec![b'x'; args.raw_bytes];
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < n {
        let batch = args.raw_publish_batch.min(n - sent);
        let mut confirms = Vec::with_capacity(batch);
        for i in 0..batch {
            // The properties tsst sends with every task, so the frames are alike.
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(format!("raw-{}", sent + i)));
            let confirm = publisher
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &payload,
                    props,
                )
                .await?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            match confirm.await? {
                Confirmation::Ack(None) => {}
                other => bail!("raw publish not confirmed: {other:?}"),
            }
        }
        sent += batch;
    }
    let published_after = started.elapsed();
    let last_ack = tokio::time::timeout(Duration::from_secs(300), consuming)
        .await
        .context("the raw consumer did not finish within 300 s")?
        .context("the raw consumer panicked")??;
    Ok(RawResult {
        messages: n,
        elapsed: last_ack.duration_since(started),
        published_after,
    })
}

/// What a finished run did, counted from its trees.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    questions: usize,
    /// Expand tasks: frontier nodes over every round; each also made one score task.
    expansions: usize,
    /// Nodes created (roots excluded).
    nodes: usize,
    rounds: usize,
}

impl Counts {
    /// Messages consumed and acked: expand + score per expansion, verify + label per
    /// question.
    fn tasks(&self) -> usize {
        2 * self.expansions + 2 * self.questions
    }
}

struct RunResult {
    counts: Counts,
    /// From the start of enqueueing to `follow` seeing the run complete.
    elapsed: Duration,
    enqueue: Duration,
    cpu: CpuUse,
}

impl RunResult {
    fn per_s(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }

    fn tasks_per_s(&self) -> f64 {
        self.per_s(self.counts.tasks())
    }

    fn print(&self, label: &str) {
        let c = &self.counts;
        println!(
            "{label}: {} questions, {} rounds, {} tasks ({} expand, {} score, {} verify, {} label), {} nodes in {:.3} s (enqueue {:.3} s) = {:.0} tasks/s, {:.0} expansions/s, {:.0} nodes/s, {:.1} questions/s",
            c.questions,
            c.rounds,
            c.tasks(),
            c.expansions,
            c.expansions,
            c.questions,
            c.questions,
            c.nodes,
            self.elapsed.as_secs_f64(),
            self.enqueue.as_secs_f64(),
            self.tasks_per_s(),
            self.per_s(c.expansions),
            self.per_s(c.nodes),
            self.per_s(c.questions),
        );
        self.cpu.print(label);
    }
}

async fn distributed_run(args: &Args, tag: &str, services: &Services) -> Result<RunResult> {
    let ns = format!("tsst-bench-{tag}");
    let run = format!("bench-{tag}");
    // The worker gets connections of its own, as a worker process would, so the
    // driver's enqueueing and polling share no channel or socket with the roles.
    let store = RedisStore::connect(&args.redis_url)
        .await
        .context("Redis must be running")?;
    let worker_store = RedisStore::connect(&args.redis_url).await?;
    let driver = AmqpBroker::connect(&args.amqp_url, &format!("{ns}-driver"), Topology::new(&ns))
        .await
        .context("RabbitMQ must be running")?;
    let worker_broker =
        AmqpBroker::connect(&args.amqp_url, &format!("{ns}-worker"), Topology::new(&ns)).await?;
    driver
        .declare()
        .await
        .context("cannot declare the topology")?;
    probe_latency(&store, &driver, &run).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sampler = args
        .watch_queues
        .then(|| tokio::spawn(sample_depths(driver.clone(), stopped)));
    let result = timed_run(
        args,
        services,
        &run,
        (store.clone(), driver.clone()),
        (worker_store, worker_broker.clone()),
    )
    .await;
    let _ = stop.send(true);
    if let Some(sampler) = sampler {
        match sampler.await {
            Ok(depths) => depths.print(),
            Err(e) => eprintln!("queue depth sampler: {e}"),
        }
    }
    if args.keep {
        println!("kept run {run} in namespace {ns}");
        worker_broker.close().await;
        driver.close().await;
        return result;
    }
    // Clean up whatever happened, then report the first failure.
    let deleted_run = store.delete_run(&run).await;
    let deleted_topology = driver.delete_topology().await;
    worker_broker.close().await;
    driver.close().await;
    let result = result?;
    deleted_run.with_context(|| format!("cannot delete run {run}"))?;
    deleted_topology.with_context(|| format!("cannot delete namespace {ns}"))?;
    Ok(result)
}

async fn embedded_run(args: &Args, tag: &str, services: &Services) -> Result<RunResult> {
    let (store, broker) = (MemoryStore::new(), MemoryBroker::new());
    timed_run(
        args,
        services,
        &format!("bench-embedded-{tag}"),
        (store.clone(), broker.clone()),
        (store, broker),
    )
    .await
}

/// Starts a worker with every role, enqueues the run, waits for it to complete and
/// counts what it did. The driver's store and broker enqueue and follow; the worker's
/// serve the roles.
async fn timed_run<S: Store, B: Broker>(
    args: &Args,
    services: &Services,
    run: &str,
    (store, driver): (S, B),
    (worker_store, worker_broker): (S, B),
) -> Result<RunResult>
where
    B::Consumer: Unpin,
{
    let record = record(run, &args.model);
    let qs = questions(args.questions);
    let ctx = Arc::new(Context::new(
        worker_store,
        worker_broker,
        Models::new(ScriptedFactory),
    ));
    let roles: Vec<RoleSpec> = [Role::Generator, Role::Scorer, Role::Verifier, Role::Labeler]
        .into_iter()
        .map(|role| RoleSpec {
            role,
            instances: match role {
                Role::Scorer => args.scorers.unwrap_or(args.instances),
                _ => args.instances,
            },
        })
        .collect();
    let batch = BatchSettings {
        max_size: args.batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
        prefetch: args.prefetch,
    };
    let worker = Worker::start(ctx, &roles, batch);
    let cpu = services.sample();
    let started = Instant::now();
    let outcome = async {
        let queued = enqueue(&store, &driver, &record, &qs).await?;
        ensure!(queued.new_run, "run {run} existed before the bench");
        let enqueued = started.elapsed();
        // A poll every 5 ms adds at most that to a run of seconds.
        let progress = tokio::time::timeout(
            Duration::from_secs(1800),
            follow(&store, run, Duration::from_millis(5), |_| {}),
        )
        .await
        .context("the run did not complete within 30 minutes")??;
        ensure!(
            progress.failed == 0,
            "{} questions failed: the counts would be off",
            progress.failed
        );
        Ok((enqueued, started.elapsed(), services.sample().since(&cpu)))
    }
    .await;
    worker.shutdown().await;
    let (enqueue, elapsed, cpu) = outcome?;
    let counts = count(&store, run, &qs).await?;
    Ok(RunResult {
        counts,
        elapsed,
        enqueue,
        cpu,
    })
}

/// Counts the run's work exactly: a round's frontier is the set of nodes expanded in
/// it (children may be merged away, so nodes alone would undercount expansions).
async fn count<S: Store>(store: &S, run: &str, qs: &[Question]) -> Result<Counts> {
    let per_tree: Vec<Counts> = futures_util::stream::iter(qs)
        .map(|q| async move {
            let t = TreeRef::new(run, &q.id);
            let tree = store.tree(&t).await?;
            let mut c = Counts {
                questions: 1,
                nodes: tree.nodes.iter().filter(|n| n.parent.is_some()).count(),
                rounds: tree.state.round as usize,
                ..Default::default()
            };
            let wanted: Vec<(TreeRef, u32)> =
                (0..tree.state.round).map(|r| (t.clone(), r)).collect();
            c.expansions += store
                .rounds(&wanted)
                .await?
                .iter()
                .map(|v| v.frontier.len())
                .sum::<usize>();
            anyhow::Ok(c)
        })
        .buffer_unordered(32)
        .try_collect()
        .await
        .context("cannot read the run's trees")?;
    Ok(per_tree.iter().fold(Counts::default(), |a, c| Counts {
        questions: a.questions + c.questions,
        expansions: a.expansions + c.expansions,
        nodes: a.nodes + c.nodes,
        rounds: a.rounds + c.rounds,
    }))
}

/// The search of the end-to-end tests: beams of 3, a first round of 6 samples.
fn record(run: &str, model: &str) -> RunRecord {
    RunRecord {
        run: run.into(),
        search: SearchSpec {
            seed: 11,
            branch: 2,
            n_consistency: 3,
            policy_model: model.into(),
            value_model: Some(model.into()),
            tag: "bench".into(),
            ..SearchSpec::default()
        },
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

fn questions(n: usize) -> Vec<Question> {
    (0..n)
        .map(|i| Question {
            id: format!("q{i:05}"),
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

/// Where the CPU goes: this process, RabbitMQ and Redis, from `/proc` (Linux only;
/// elsewhere the figures are missing). A saturated broker means the bench measures
/// the broker; an idle one means round trips and waiting.
struct Services {
    broker: Vec<String>,
    redis: Vec<String>,
}

struct CpuSample {
    at: Instant,
    bench: Option<f64>,
    broker: Option<f64>,
    redis: Option<f64>,
}

impl Services {
    fn find() -> Self {
        let mut found = Services {
            broker: Vec::new(),
            redis: Vec::new(),
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            match std::fs::read_to_string(entry.path().join("comm")).as_deref() {
                Ok("beam.smp\n") => found.broker.push(pid),
                Ok("redis-server\n") => found.redis.push(pid),
                _ => {}
            }
        }
        found
    }

    fn sample(&self) -> CpuSample {
        let sum = |pids: &[String]| -> Option<f64> {
            if pids.is_empty() {
                return None;
            }
            pids.iter().map(|p| cpu_seconds(p)).sum()
        };
        CpuSample {
            at: Instant::now(),
            bench: cpu_seconds("self"),
            broker: sum(&self.broker),
            redis: sum(&self.redis),
        }
    }
}

/// CPU seconds used over an interval.
struct CpuUse {
    wall: Duration,
    bench: Option<f64>,
    broker: Option<f64>,
    redis: Option<f64>,
}

impl CpuSample {
    fn since(&self, before: &CpuSample) -> CpuUse {
        let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        CpuUse {
            wall: self.at.duration_since(before.at),
            bench: diff(self.bench, before.bench),
            broker: diff(self.broker, before.broker),
            redis: diff(self.redis, before.redis),
        }
    }
}

impl CpuUse {
    fn print(&self, label: &str) {
        let wall = self.wall.as_secs_f64();
        let show = |v: Option<f64>| {
            v.map_or_else(
                || "na".to_owned(),
                |v| format!("{v:.2} s ({:.0}% of a core)", 100.0 * v / wall),
            )
        };
        println!(
            "cpu during {label} ({wall:.2} s wall): bench process {}, rabbitmq {}, redis {}",
            show(self.bench),
            show(self.broker),
            show(self.redis),
        );
    }
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks are 1/100 s on every Linux this runs on (`getconf CLK_TCK`).
    Some((utime + stime) as f64 / 100.0)
}

/// Ready messages per role queue, sampled while the run goes: the role whose queue
/// backs up is the one that limits the run.
#[derive(Default)]
struct Depths {
    samples: usize,
    per_role: Vec<(Role, u64, u32)>,
}

impl Depths {
    fn print(&self) {
        if self.samples == 0 {
            return;
        }
        let text: Vec<String> = self
            .per_role
            .iter()
            .map(|(role, sum, max)| {
                format!(
                    "{role} mean {:.0} max {max}",
                    *sum as f64 / self.samples as f64
                )
            })
            .collect();
        println!(
            "ready messages over {} samples: {}",
            self.samples,
            text.join(", ")
        );
    }
}

async fn sample_depths(broker: AmqpBroker, mut stop: tokio::sync::watch::Receiver<bool>) -> Depths {
    let roles = [Role::Generator, Role::Scorer, Role::Verifier, Role::Labeler];
    let mut depths = Depths {
        samples: 0,
        per_role: roles.iter().map(|r| (*r, 0, 0)).collect(),
    };
    let t = broker.topology().clone();
    loop {
        tokio::select! {
            _ = stop.changed() => return depths,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let mut sample = Vec::with_capacity(roles.len());
        for role in roles {
            match broker.queue_depth(&t.queue(role)).await {
                Ok(n) => sample.push(n),
                // The topology may be going away at the end: keep what was sampled.
                Err(_) => return depths,
            }
        }
        depths.samples += 1;
        for ((_, sum, max), n) in depths.per_role.iter_mut().zip(sample) {
            *sum += u64::from(n);
            *max = (*max).max(n);
        }
    }
}

/// The price of the two waits a role repeats most: a Redis round trip (here one HGET
/// of an outbox, as every role's first read) and an event published with its confirm
/// awaited (as the scorer and labeler do, one event at a time).
async fn probe_latency(store: &RedisStore, broker: &AmqpBroker, run: &str) -> Result<()> {
    const N: u32 = 500;
    let key = [(TreeRef::new(run, "probe"), "probe".to_owned())];
    let started = Instant::now();
    for _ in 0..N {
        store.outboxes(&key).await.context("Redis probe")?;
    }
    let redis = started.elapsed() / N;
    let event = Event::QuestionDone {
        run: run.to_owned(),
        question: "probe".to_owned(),
    }
    .envelope();
    let started = Instant::now();
    for _ in 0..N {
        broker
            .publish_events(std::slice::from_ref(&event))
            .await
            .context("event probe")?;
    }
    let confirm = started.elapsed() / N;
    println!(
        "latency (mean of {N} in a row): Redis round trip {} us, event publish+confirm {} us",
        redis.as_micros(),
        confirm.as_micros()
    );
    Ok(())
}
