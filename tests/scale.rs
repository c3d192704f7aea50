//! Orchestration at scale, simulated (`bench/scale`, ignored by `cargo test`): 1 to 32
//! GPU worker processes (generator and scorer) whose scripted models take as long per
//! batch as a 7B model's batch does on a GPU (time-scaled, see bench/scale), one CPU
//! worker for verification and labelling, on the machine's RabbitMQ and Redis. Weak
//! scaling: `SCALE_PER_WORKER` questions per GPU worker. Efficiency at N workers is
//! the questions per second at N over N times the rate at 1; every run must finish
//! every question.
//!
//! `SCALE_WORKERS` (default 1,2,4,8,16,32), `SCALE_PER_WORKER` (64), `SCALE_EXPAND_MS`
//! (2200: a batch of 64 expansions), `SCALE_SCORE_MS` (500), `SCALE_BATCH` (64),
//! `SCALE_WAIT_MS` (the workers' shortest wait for a partial batch; 5), `SCALE_PER` (the
//! scripted latencies are per started group of this many requests, as a GPU's batch
//! costs one pass of its row slots per slots' worth of rows; default: per batch).
use std::time::{Duration, Instant};
use tsst_actors::pipeline::enqueue;
use tsst_actors::runtime::BEAT_MAX_AGE;
use tsst_actors::store::{unix_now, RedisStore, Store};

mod common;
use common::cluster::*;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn num(name: &str, default: u64) -> u64 {
    env(name, &default.to_string()).parse().expect(name)
}

async fn live(store: &RedisStore, ns: &str) -> usize {
    store
        .workers(unix_now(), BEAT_MAX_AGE)
        .await
        .unwrap()
        .iter()
        .filter(|w| w.namespace == ns)
        .count()
}

#[actix_rt::test]
#[ignore]
async fn orchestration_scales_across_simulated_gpu_workers() {
    let sizes: Vec<usize> = env("SCALE_WORKERS", "1,2,4,8,16,32")
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let per_worker = num("SCALE_PER_WORKER", 64) as usize;
    let (expand_ms, score_ms) = (num("SCALE_EXPAND_MS", 2200), num("SCALE_SCORE_MS", 500));
    let batch = num("SCALE_BATCH", 64) as u32;
    let wait_ms = num("SCALE_WAIT_MS", 5);
    let per = match num("SCALE_PER", 0) {
        0 => String::new(),
        k => format!(":per{k}"),
    };
    let mut base_rate = None;
    for n in sizes {
        let ns = format!("tsst-scale-{}-{n}", std::process::id());
        let run = format!("scale-{}-{n}", std::process::id());
        let qs = questions(per_worker * n);
        let mut rec = record(&run, &format!("scripted:{expand_ms}ms{per}"));
        rec.search.value_model = Some(format!("scripted:{score_ms}ms{per}"));
        let (broker, store) = connect(&ns).await;
        store.delete_run(&run).await.unwrap();

        let mut gpus = Cluster::new(&ns);
        gpus.roles = "generator,scorer".into();
        gpus.batch = batch;
        // A GPU worker takes one batch at a time: a larger prefetch would hold tasks
        // back from idle workers while it works through the first batch.
        let config = gpus.logs.path().join("worker.yaml");
        std::fs::write(
            &config,
            format!("prefetch: {batch}\nbatch:\n  max_size: {batch}\n  max_wait_ms: {wait_ms}\n"),
        )
        .unwrap();
        gpus.worker_args = vec!["--config".into(), config.display().to_string()];
        let mut cpu = Cluster::new(&ns);
        cpu.roles = "verifier,labeler".into();
        cpu.names = format!("{ns}-cpu");
        cpu.batch = 256;
        for _ in 0..n {
            gpus.spawn_worker();
        }
        cpu.spawn_worker();
        let started = Instant::now();
        while live(&store, &ns).await < n + 1 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "workers did not start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let t0 = Instant::now();
        enqueue(&store, &broker, &rec, &qs).await.unwrap();
        wait_done(&store, &run, &gpus, Duration::from_secs(1800)).await;
        let secs = t0.elapsed().as_secs_f64();
        let p = store.progress(&run).await.unwrap();
        assert_eq!((p.done, p.failed), (qs.len() as u32, 0));
        let rate = qs.len() as f64 / secs;
        let base = *base_rate.get_or_insert(rate / n as f64);
        println!(
            "SCALE workers={n} wait_ms={wait_ms} per={per} questions={} seconds={secs:.1} questions_per_s={rate:.2} efficiency={:.3}",
            qs.len(),
            rate / (n as f64 * base)
        );
        gpus.stop_gracefully();
        cpu.stop_gracefully();
        store.delete_run(&run).await.unwrap();
        broker.delete_topology().await.unwrap();
    }
}
