//! One look at a cluster: its queues (with the dead-letter queues apart), its live
//! workers and its runs' progress, with rates and ETAs. `tsst status` prints one,
//! `tsst monitor` draws them over time, `tsst autoscale` sizes a pool from them.
use crate::services::Distributed;
use serde::Serialize;
use tsst_actors::broker::{Management, QueueStats};
use tsst_actors::runtime::BEAT_MAX_AGE;
use tsst_actors::store::{unix_now, Store, StoreError, WorkerBeat};
use tsst_messages::Role;

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Seconds since the Unix epoch.
    pub taken: u64,
    pub namespace: String,
    /// Where queue statistics came from: the management API's URL (no credentials),
    /// or why it was not used.
    pub queue_source: String,
    pub queues: Vec<QueueStats>,
    pub dead_letters: Vec<QueueStats>,
    pub workers: Vec<WorkerBeat>,
    pub runs: Vec<RunStatus>,
    /// Runs asked for by name that the store does not know (yet).
    pub unknown_runs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub run: String,
    pub total: u32,
    /// Finished, the failed ones included.
    pub done: u32,
    pub failed: u32,
    pub complete: bool,
    /// Questions finished per second since the run was registered.
    pub rate: Option<f64>,
    /// Seconds left at that rate.
    pub eta_secs: Option<f64>,
}

impl Snapshot {
    /// Once before the first look: a namespace no worker has started in yet has no
    /// queues; declared here (as every process does, idempotently) they read as empty
    /// instead of failing.
    pub async fn prepare(d: &Distributed) -> anyhow::Result<()> {
        Ok(d.broker.declare_topology().await?)
    }

    pub async fn take(
        d: &Distributed,
        management: Option<&Management>,
        runs: Option<&[String]>,
    ) -> anyhow::Result<Snapshot> {
        let topology = d.broker.topology();
        let (mut queues, mut dead_letters) = (Vec::new(), Vec::new());
        let mut source = match management {
            Some(m) => m.url().to_owned(),
            None => "passive declare (management API off)".to_owned(),
        };
        let mut management = management;
        for role in Role::ALL {
            for (name, into) in [
                (topology.queue(role), &mut queues),
                (topology.dead_letter_queue(role), &mut dead_letters),
            ] {
                let from_api = match management {
                    Some(m) => match m.queue(&name).await {
                        Ok(stats) => Some(stats),
                        Err(e) => {
                            // Once: the rest of this look goes the passive way.
                            source = format!("passive declare ({e})");
                            management = None;
                            None
                        }
                    },
                    None => None,
                };
                let stats = match from_api {
                    Some(s) => s,
                    None => d.broker.queue_stats(&name).await?,
                };
                into.push(stats);
            }
        }
        let now = unix_now();
        let workers = d
            .store
            .workers(now, BEAT_MAX_AGE)
            .await?
            .into_iter()
            .filter(|w| w.namespace == topology.namespace())
            .collect();
        let names = match runs {
            Some(r) if !r.is_empty() => r.to_vec(),
            _ => d.store.runs().await?,
        };
        let mut runs = Vec::with_capacity(names.len());
        let mut unknown_runs = Vec::new();
        for run in names {
            let p = match d.store.progress(&run).await {
                Ok(p) => p,
                Err(StoreError::UnknownRun(_)) => {
                    unknown_runs.push(run);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let rate = p
                .started
                .map(|s| now.saturating_sub(s).max(1) as f64)
                .map(|secs| f64::from(p.done) / secs);
            let left = f64::from(p.total.saturating_sub(p.done));
            let eta_secs = match rate {
                Some(r) if r > 0.0 && !p.complete() => Some(left / r),
                _ => None,
            };
            runs.push(RunStatus {
                run,
                total: p.total,
                done: p.done,
                failed: p.failed,
                complete: p.complete(),
                rate,
                eta_secs,
            });
        }
        Ok(Snapshot {
            taken: now,
            namespace: topology.namespace().to_owned(),
            queue_source: source,
            queues,
            dead_letters,
            workers,
            runs,
            unknown_runs,
        })
    }

    /// The plain-text report of `tsst status`.
    pub fn render(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let rate = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let mut out = format!(
            "Queues of namespace {} (from {}):\n  {:<28} {:>8} {:>8} {:>9} {:>10} {:>10}\n",
            self.namespace,
            self.queue_source,
            "queue",
            "ready",
            "unacked",
            "consumers",
            "publish/s",
            "deliver/s"
        );
        for q in &self.queues {
            out += &format!(
                "  {:<28} {:>8} {:>8} {:>9} {:>10} {:>10}\n",
                q.queue,
                q.ready,
                opt(q.unacked),
                q.consumers,
                rate(q.publish_rate),
                rate(q.deliver_rate)
            );
        }
        let dead: u64 = self.dead_letters.iter().map(|q| q.ready).sum();
        out += &format!("Dead letters: {dead}");
        for q in self.dead_letters.iter().filter(|q| q.ready > 0) {
            out += &format!("  {} {}", q.queue, q.ready);
        }
        if dead > 0 {
            out += "  (tsst dlq list)";
        }
        out += &format!("\nWorkers: {} live\n", self.workers.len());
        for w in &self.workers {
            out += &format!(
                "  {:<36} {:<34} {:<7} up {:>6}s  seen {}s ago  models: {}\n",
                w.name,
                w.roles.join(","),
                w.device,
                self.taken.saturating_sub(w.started),
                self.taken.saturating_sub(w.seen),
                if w.models.is_empty() {
                    "none yet".to_owned()
                } else {
                    w.models.join(", ")
                }
            );
        }
        out += &format!("Runs: {}\n", self.runs.len());
        for r in &self.unknown_runs {
            out += &format!("  {r}: not registered\n");
        }
        for r in &self.runs {
            let state = if r.complete {
                "complete".to_owned()
            } else {
                let eta = r.eta_secs.map_or("-".to_owned(), human);
                format!(
                    "searching, {} q/min, ETA {eta}",
                    r.rate
                        .map_or("-".to_owned(), |r| format!("{:.1}", r * 60.0))
                )
            };
            out += &format!(
                "  {}: {}/{} finished ({} done, {} failed), {state}\n",
                r.run,
                r.done,
                r.total,
                r.done.saturating_sub(r.failed),
                r.failed
            );
        }
        out
    }
}

/// 75 -> "1m15s".
fn human(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
