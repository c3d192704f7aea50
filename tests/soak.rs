//! The soak (`bench/soak`, ignored by `cargo test`): a long run on services of its own
//! under every fault at once, against the same run undisturbed. Worker kills at random
//! moments, two broker restarts, a Redis restart and a Redis rollback to a snapshot a
//! second old; then every tree must equal the reference, nothing may be lost,
//! duplicated or dead-lettered, no worker may have exited by itself, and the
//! deliveries the roles took (counted exactly from the workers' logs) must stay within
//! 10% of the undisturbed run's. The broker's own sampled count is printed beside it.
//!
//! `SOAK_QUESTIONS` (default 4000) and `SOAK_KILLS` (default 50) size it; `SOAK_FAULTS`
//! (`kill,broker,redis,rollback`) keeps only some kinds of fault.
use std::time::{Duration, Instant};
use tsst_actors::pipeline::enqueue;
use tsst_actors::store::{RedisStore, Store};

mod common;
use common::cluster::*;

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Three workers with a small prefetch and batch (8): a killed worker's
/// unacknowledged deliveries are what it costs in redeliveries.
fn cluster(ns: &str, node: &common::RabbitNode, redis: &common::RedisNode) -> Cluster {
    let mut c = Cluster::on_broker(ns, node.url());
    c.redis = redis.url();
    // Every delivery a role takes is a log line: the exact count.
    c.env.push((
        "RUST_LOG".into(),
        "info,lapin=warn,tsst_actors::runtime::worker=debug".into(),
    ));
    // Longer than a broker restart, so that an outage alone re-drives nothing.
    c.relay_stall = env("SOAK_STALL", 20).into();
    let config = c.logs.path().join("worker.yaml");
    std::fs::write(&config, "prefetch: 8\n").unwrap();
    c.batch = 8;
    c.worker_args = vec!["--config".into(), config.display().to_string()];
    for _ in 0..3 {
        c.spawn_worker();
    }
    c
}

/// Deliveries the cluster's roles took, from their logs (exact, kills included): all,
/// and those that were a message's first delivery (the rest are redeliveries).
fn taken(cluster: &Cluster) -> (u64, u64) {
    by_role(cluster)
        .values()
        .fold((0, 0), |(all, first), (a, f)| (all + a, first + f))
}

/// Deliveries taken per role: (all, first deliveries).
fn by_role(cluster: &Cluster) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut roles = std::collections::BTreeMap::new();
    for line in cluster
        .full_logs()
        .lines()
        .filter(|l| l.contains("delivery taken"))
    {
        let role = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("role="))
            .unwrap_or("?");
        let e: &mut (u64, u64) = roles.entry(role.to_owned()).or_default();
        e.0 += 1;
        e.1 += u64::from(line.contains("attempt=1 ") || line.ends_with("attempt=1"));
    }
    roles
}

async fn done(store: &RedisStore, run: &str) -> u32 {
    store.progress(run).await.map_or(0, |p| p.done)
}

/// Broker deliveries of a namespace, once the management API has caught up.
async fn settled_deliveries(node: &common::RabbitNode, ns: &str) -> u64 {
    let mut last = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = node.delivered(ns);
        if now == last && now > 0 {
            return now;
        }
        last = now;
    }
    last
}

#[actix_rt::test]
#[ignore = "a long soak: run bench/soak"]
async fn soak() {
    // The faults cost per fault, not per question: about 17 redeliveries a kill, and
    // the rollback's lost work and stale tasks. Spread over 2,000 questions they come to
    // 1.11-1.12 of the undisturbed deliveries; over 4,000, 1.09, and the faults fall
    // twice as far apart, so the rollback restores files about 2 s old (bench/RESULTS.md).
    let n = env("SOAK_QUESTIONS", 4000) as usize;
    let kills = env("SOAK_KILLS", 50);
    // A model slow enough that the faults land mid-run.
    let model = "scripted:20ms";
    let mut node = common::RabbitNode::with_management("soak");
    let mut redis = common::RedisNode::start_with_snapshots();
    let qs = questions(n);
    let pid = std::process::id();

    // The undisturbed run: its deliveries are the baseline.
    let (ns0, run0) = (format!("soak-calm-{pid}"), format!("soak-calm-{pid}"));
    let (broker0, store0) = connect_both(&node.url(), &redis.url(), &ns0).await;
    let mut calm = cluster(&ns0, &node, &redis);
    let started = Instant::now();
    enqueue(&store0, &broker0, &record(&run0, model), &qs)
        .await
        .unwrap();
    wait_done(&store0, &run0, &calm, Duration::from_secs(900)).await;
    let calm_secs = started.elapsed().as_secs_f64();
    calm.stop_gracefully();
    let baseline = settled_deliveries(&node, &ns0).await;
    let (baseline_taken, baseline_first) = taken(&calm);
    eprintln!("undisturbed: {n} questions in {calm_secs:.1}s, {baseline} deliveries ({baseline_taken} taken, {baseline_first} first)");

    // The same run under faults.
    let (ns, run) = (format!("soak-storm-{pid}"), format!("soak-storm-{pid}"));
    let reference = embedded_trees(&record(&run, "scripted"), &qs).await;
    let (broker, store) = connect_both(&node.url(), &redis.url(), &ns).await;
    let mut storm = cluster(&ns, &node, &redis);
    let started = Instant::now();
    enqueue(&store, &broker, &record(&run, model), &qs)
        .await
        .unwrap();
    // Kills one after another, a gap apart, with the other faults among them; a
    // restart takes its own time and the kills go on after it.
    let gap =
        Duration::from_secs_f64(calm_secs / f64::from(kills + 5)).max(Duration::from_millis(300));
    let mut plan: Vec<&str> = vec!["kill"; kills as usize];
    for (at, fault) in [
        (0.2, "broker"),
        (0.4, "redis"),
        (0.55, "snapshot"),
        (0.6, "rollback"),
        (0.75, "broker"),
    ] {
        plan.insert((f64::from(kills) * at) as usize, fault);
    }
    // SOAK_FAULTS (e.g. `kill,broker`) keeps only those kinds: to see what each costs.
    if let Ok(only) = std::env::var("SOAK_FAULTS") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        plan.retain(|f| only.contains(f) || (*f == "snapshot" && only.contains(&"rollback")));
    }
    let mut rng = SplitMix(pid.into());
    let (mut killed, mut rolled_back, mut counted_before_restarts) = (0, 0, 0);
    let (mut broker_restarts, mut redis_restarts) = (0, 0);
    for fault in plan {
        tokio::time::sleep(gap).await;
        if done(&store, &run).await >= n as u32 {
            break;
        }
        match fault {
            "kill" => {
                storm.kill_and_respawn((rng.next() % 3) as usize);
                killed += 1;
            }
            "broker" => {
                // A restart clears the broker's counts: keep what it counted so far.
                tokio::time::sleep(Duration::from_millis(300)).await;
                counted_before_restarts += node.delivered(&ns);
                node.restart(Duration::from_secs(1));
                broker_restarts += 1;
            }
            "redis" => {
                redis.restart(Duration::from_secs(1));
                redis_restarts += 1;
            }
            "snapshot" => redis.snapshot(),
            "rollback" => {
                redis.crash_to_snapshot();
                rolled_back += 1;
            }
            _ => unreachable!(),
        }
    }
    wait_done(&store, &run, &storm, Duration::from_secs(900)).await;
    let storm_secs = started.elapsed().as_secs_f64();
    storm.all_running();

    let got = trees(&store, &run, &qs).await;
    let mut differ = 0;
    for (q, tree) in &reference {
        let mut finished = got[q].finished.clone();
        finished.sort();
        finished.dedup();
        assert_eq!(
            finished.len(),
            got[q].finished.len(),
            "{q}: a solution counted twice"
        );
        if &got[q] != tree {
            differ += 1;
            // What differs, for the first few: enough to find the cause in the logs.
            if differ <= 3 {
                let (g, r) = (&got[q], tree);
                let nodes: Vec<_> = g
                    .nodes
                    .iter()
                    .zip(&r.nodes)
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| format!("{a:?}\n   vs {b:?}"))
                    .take(2)
                    .collect();
                eprintln!(
                    "{q} differs: state {:?} vs {:?}; nodes {} vs {}; finished {:?} vs {:?}; verdicts equal {}; error {:?}\n  {}",
                    g.state,
                    r.state,
                    g.nodes.len(),
                    r.nodes.len(),
                    g.finished,
                    r.finished,
                    g.verdicts == r.verdicts,
                    g.error,
                    nodes.join("\n  ")
                );
            }
        }
    }
    let p = store.progress(&run).await.unwrap();
    drained(&broker).await;
    let dead = dead_letters(&broker).await;
    storm.stop_gracefully();
    let deliveries = counted_before_restarts + settled_deliveries(&node, &ns).await;
    let ratio = deliveries as f64 / baseline as f64;
    let (storm_taken, storm_first) = taken(&storm);
    let logs = storm.full_logs();
    // Tasks the re-drives published, by cause (a stalled tree or a stale task).
    let mut redriven = std::collections::BTreeMap::<String, u64>::new();
    for line in logs
        .lines()
        .filter(|l| l.contains("re-driving trees from their stored state"))
    {
        let tasks = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("tasks="))
            .and_then(|n| n.parse::<u64>().ok());
        let cause = line
            .split("cause=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("?");
        *redriven.entry(cause.to_owned()).or_default() += tasks.unwrap_or(0);
    }
    // Stale tasks by what they found, and the expansions applied again from score tasks.
    let mut stale = std::collections::BTreeMap::<&str, u64>::new();
    let mut reapplied = 0;
    for line in logs.lines() {
        let kind = if line.contains("applying expansions the store lost") {
            reapplied += line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("expansions="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            continue;
        } else if !line.contains("re-driving the tree") {
            continue;
        } else if line.contains("barrier=Behind") {
            "score task ahead of the round"
        } else if line.contains("barrier=Lost") {
            "score task, expansion lost at commit"
        } else if line.contains("since it was read") {
            "conclusion of a changed round"
        } else if line.contains("roles::generator") {
            "expand task, parent missing"
        } else {
            "score task, children missing"
        };
        *stale.entry(kind).or_default() += 1;
    }
    eprintln!(
        "taken by role: undisturbed {:?}, storm {:?}; re-drives published {redriven:?} tasks; stale tasks {stale:?}; expansions applied again from score tasks {reapplied}",
        by_role(&calm),
        by_role(&storm),
    );
    let taken_ratio = storm_taken as f64 / baseline_taken as f64;
    println!(
        "SOAK questions={n} kills={killed} broker_restarts={broker_restarts} redis_restarts={redis_restarts} redis_rollbacks={rolled_back} \
         done={} failed={} trees_differing={differ} dead_letters={dead} calm_s={calm_secs:.1} storm_s={storm_secs:.1} \
         deliveries={deliveries} baseline={baseline} ratio={ratio:.3} \
         taken={storm_taken} taken_first={storm_first} taken_baseline={baseline_taken} taken_baseline_first={baseline_first} \
         taken_ratio={taken_ratio:.3}",
        p.done, p.failed
    );
    assert_eq!((p.done, p.failed), (n as u32, 0));
    assert_eq!(differ, 0, "trees differ from the uninterrupted run");
    assert_eq!(dead, 0, "dead letters");
    // The exact count decides; the broker's (sampled) count is shown beside it.
    assert!(
        taken_ratio <= 1.10,
        "deliveries taken {taken_ratio:.3}x the undisturbed run's"
    );
}

/// The soak's own small generator (which worker to kill).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        tsst_messages::splitmix64(self.0)
    }
}
