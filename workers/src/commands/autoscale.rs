//! `tsst autoscale`: a pool of local `tsst worker` processes kept between a minimum
//! and a maximum from the queues' backlog (ready plus unacknowledged) and the rate
//! one worker drains it at, measured from the workers' own metrics.
//!
//! - Growing is immediate (to the size that drains the backlog in `--target-secs`, one
//!   more per look while no rate is measured yet); shrinking is one worker at a time,
//!   only after the pool has wanted fewer for `--cooldown-secs` and as long since the
//!   last change (hysteresis: a lull between rounds shrinks nothing).
//! - A worker is shrunk by SIGTERM: it finishes its batch in flight and puts back
//!   what it took, so no work is killed. A worker that dies is started again.
//! - GPUs are assigned round robin by `CUDA_VISIBLE_DEVICES`, one worker per GPU by
//!   default; the services' URLs reach the workers through the environment, never
//!   their command lines.
use crate::cli::{AutoscaleArgs, ServiceArgs};
use crate::services::Distributed;
use anyhow::{bail, Context as _, Result};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tsst_actors::broker::Management;
use tsst_actors::metrics::{Exposition, ACKED};
use tsst_messages::Role;

pub async fn autoscale(args: AutoscaleArgs, services: &ServiceArgs) -> Result<()> {
    let max = args.max.unwrap_or(if args.gpus.is_empty() {
        4
    } else {
        args.gpus.len()
    });
    if max == 0 || args.min > max {
        bail!(
            "--min {} --max {max}: need 0 <= min <= max and max >= 1",
            args.min
        );
    }
    if args.roles.is_empty() || args.roles.contains(&Role::Trainer) {
        bail!("--roles: the pool serves generator, scorer, verifier or labeler queues");
    }
    let management = args.management.client(services)?;
    let d = services.require("autoscale", "tsst-autoscale").await?;
    let queues: Vec<String> = args
        .roles
        .iter()
        .map(|&r| d.broker.topology().queue(r))
        .collect();
    let mut pool = Pool::new(&args, services)?;
    let mut scaler = Scaler::new(Policy {
        min: args.min,
        max,
        target_secs: args.target_secs as f64,
        cooldown: Duration::from_secs(args.cooldown_secs),
    });
    let mut meter = RateMeter::default();
    tracing::info!(min = args.min, max, queues = %queues.join(","), "autoscaling");
    for _ in 0..args.min {
        pool.grow()?;
    }
    let stop = super::worker::shutdown_signal();
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(Duration::from_secs(args.interval_secs.max(1)));
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticks.tick() => {}
        }
        pool.reap()?;
        let backlog = match backlog(&d, management.as_ref(), &queues).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the queues; the pool stays as it is");
                continue;
            }
        };
        let acked = pool.acked(&queues).await;
        let rate = meter.update(Instant::now(), acked, pool.size(), backlog > 0);
        let current = pool.size();
        let desired = scaler.policy.desired(backlog, rate, current);
        let next = scaler.step(Instant::now(), current, desired);
        tracing::debug!(backlog, ?rate, current, desired, "looked at the queues");
        if next > current {
            tracing::info!(backlog, per_worker_rate = ?rate, from = current, to = next, "growing the pool");
            for _ in current..next {
                pool.grow()?;
            }
        } else if next < current {
            tracing::info!(backlog, per_worker_rate = ?rate, from = current, to = next, "draining a worker");
            pool.shrink();
        }
    }
    tracing::info!(workers = pool.size(), "stopping: draining every worker");
    pool.drain_all();
    d.broker.close().await;
    Ok(())
}

/// Ready plus unacknowledged messages of the pool's queues (ready only without the
/// management API).
async fn backlog(
    d: &Distributed,
    management: Option<&Management>,
    queues: &[String],
) -> Result<u64> {
    let mut total = 0;
    for q in queues {
        let stats = match management {
            Some(m) => match m.queue(q).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%e, "management API unavailable; passive declare");
                    d.broker.queue_stats(q).await?
                }
            },
            None => d.broker.queue_stats(q).await?,
        };
        total += stats.backlog();
    }
    Ok(total)
}

/// The sizing rule, apart from time.
#[derive(Debug, Clone)]
pub struct Policy {
    pub min: usize,
    pub max: usize,
    pub target_secs: f64,
    pub cooldown: Duration,
}

impl Policy {
    /// Workers wanted for `backlog` messages when one drains `rate` per second.
    pub fn desired(&self, backlog: u64, rate: Option<f64>, current: usize) -> usize {
        if backlog == 0 {
            return self.min;
        }
        let want = match rate {
            Some(r) if r > 0.0 => (backlog as f64 / (r * self.target_secs)).ceil() as usize,
            // No rate measured yet: one more worker per look.
            _ => current + 1,
        };
        want.max(1).clamp(self.min, self.max)
    }
}

/// Hysteresis over time: up at once, down by one after a cooldown.
pub struct Scaler {
    pub policy: Policy,
    last_change: Option<Instant>,
    fewer_since: Option<Instant>,
}

impl Scaler {
    pub fn new(policy: Policy) -> Self {
        Scaler {
            policy,
            last_change: None,
            fewer_since: None,
        }
    }

    /// The pool's next size.
    pub fn step(&mut self, now: Instant, current: usize, desired: usize) -> usize {
        if desired > current {
            self.fewer_since = None;
            self.last_change = Some(now);
            return desired;
        }
        if desired == current {
            self.fewer_since = None;
            return current;
        }
        let since = *self.fewer_since.get_or_insert(now);
        let cooled = |t: Option<Instant>| t.is_none_or(|t| now - t >= self.policy.cooldown);
        if now - since >= self.policy.cooldown && cooled(self.last_change) {
            self.last_change = Some(now);
            self.fewer_since = Some(now);
            return current - 1;
        }
        current
    }
}

/// Messages acked per second per worker, smoothed; measured only while there was
/// work (idle workers say nothing of their speed).
#[derive(Default)]
pub struct RateMeter {
    last: Option<(Instant, u64)>,
    rate: Option<f64>,
}

impl RateMeter {
    pub fn update(
        &mut self,
        now: Instant,
        acked: Option<u64>,
        workers: usize,
        busy: bool,
    ) -> Option<f64> {
        let Some(acked) = acked else {
            return self.rate;
        };
        if let Some((then, before)) = self.last {
            let secs = (now - then).as_secs_f64();
            // A restarted worker's counters start again: skip that look.
            if busy && workers > 0 && secs > 0.0 && acked >= before {
                let r = (acked - before) as f64 / secs / workers as f64;
                if r > 0.0 {
                    self.rate = Some(match self.rate {
                        Some(old) => 0.5 * old + 0.5 * r,
                        None => r,
                    });
                }
            }
        }
        self.last = Some((now, acked));
        self.rate
    }
}

/// One worker process of the pool; slot `index` fixes its metrics port and GPU.
struct Slot {
    index: usize,
    child: Child,
    restarts: u32,
}

struct Pool {
    bin: std::path::PathBuf,
    roles: String,
    worker_args: Vec<String>,
    gpus: Vec<u32>,
    base_port: u16,
    env: Vec<(&'static str, String)>,
    host: String,
    running: Vec<Slot>,
    draining: Vec<Child>,
}

impl Pool {
    fn new(args: &AutoscaleArgs, services: &ServiceArgs) -> Result<Pool> {
        let mut env = vec![("TSST_NAMESPACE", services.namespace.clone())];
        env.extend(services.amqp.clone().map(|u| ("TSST_AMQP_URL", u)));
        env.extend(services.redis.clone().map(|u| ("TSST_REDIS_URL", u)));
        Ok(Pool {
            bin: std::env::current_exe().context("the tsst binary")?,
            roles: args
                .roles
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(","),
            worker_args: args.worker_args.clone(),
            gpus: args.gpus.clone(),
            base_port: args.metrics_base_port,
            env,
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "host".into()),
            running: Vec::new(),
            draining: Vec::new(),
        })
    }

    fn size(&self) -> usize {
        self.running.len()
    }

    fn port(&self, index: usize) -> u16 {
        self.base_port.saturating_add(index as u16)
    }

    fn spawn(&self, index: usize) -> Result<Child> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["worker", "--roles", &self.roles])
            .args(["--metrics", &format!("127.0.0.1:{}", self.port(index))])
            .args([
                "--name",
                &format!("{}-{}-as{index}", self.host, std::process::id()),
            ]);
        if !self.gpus.is_empty() {
            let gpu = self.gpus[index % self.gpus.len()];
            cmd.env("CUDA_VISIBLE_DEVICES", gpu.to_string())
                .args(["--device", "cuda:0"]);
        }
        cmd.args(&self.worker_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))
    }

    /// Starts a worker in the lowest free slot.
    fn grow(&mut self) -> Result<()> {
        let index = (0..)
            .find(|i| !self.running.iter().any(|s| s.index == *i))
            .unwrap_or(0);
        let child = self.spawn(index)?;
        tracing::info!(slot = index, pid = child.id(), "worker started");
        self.running.push(Slot {
            index,
            child,
            restarts: 0,
        });
        Ok(())
    }

    /// Drains the worker of the highest slot: SIGTERM, then it leaves on its own.
    fn shrink(&mut self) {
        let Some(at) = (0..self.running.len()).max_by_key(|&i| self.running[i].index) else {
            return;
        };
        let slot = self.running.remove(at);
        terminate(&slot.child);
        self.draining.push(slot.child);
    }

    /// Restarts workers that died; forgets drained ones that have left.
    fn reap(&mut self) -> Result<()> {
        self.draining
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        for i in 0..self.running.len() {
            if let Ok(Some(status)) = self.running[i].child.try_wait() {
                let index = self.running[i].index;
                tracing::error!(slot = index, %status, "a worker died; starting it again");
                self.running[i].child = self.spawn(index)?;
                self.running[i].restarts += 1;
            }
        }
        Ok(())
    }

    /// Messages of `queues` the running workers acked, from their metrics; `None`
    /// until one answers.
    async fn acked(&self, queues: &[String]) -> Option<u64> {
        let mut total = None;
        for slot in &self.running {
            if let Some(n) = scrape_acked(self.port(slot.index), queues).await {
                *total.get_or_insert(0) += n;
            }
        }
        total
    }

    fn drain_all(&mut self) {
        for slot in &self.running {
            terminate(&slot.child);
        }
        let all = self
            .running
            .drain(..)
            .map(|s| s.child)
            .chain(self.draining.drain(..));
        for mut child in all {
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    // SAFETY: kill(2) on a pid this process started and has not reaped yet.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    if sent != 0 {
        tracing::warn!(pid = child.id(), "could not signal a worker");
    }
}

/// The sum of `tsst_messages_acked_total` over `queues` at a worker's endpoint.
async fn scrape_acked(port: u16, queues: &[String]) -> Option<u64> {
    let read = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()??;
    let page = Exposition::parse(text.split_once("\r\n\r\n").map_or(&*text, |(_, body)| body));
    let acked = page.sum_where(ACKED, |s| queues.iter().any(|q| s.has_label("queue", q)));
    Some(acked as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 4,
            target_secs: 10.0,
            cooldown: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_backlog_and_the_rate_size_the_pool() {
        let p = policy();
        assert_eq!(p.desired(0, Some(5.0), 3), 1, "nothing waits: the minimum");
        assert_eq!(p.desired(120, Some(5.0), 1), 3, "120 at 5/s each in 10 s");
        assert_eq!(
            p.desired(10_000, Some(5.0), 1),
            4,
            "never above the maximum"
        );
        assert_eq!(p.desired(7, Some(5.0), 3), 1, "a little work: one worker");
        assert_eq!(p.desired(50, None, 2), 3, "no rate yet: one more per look");
    }

    #[test]
    fn up_at_once_down_one_at_a_time_after_the_cooldown() {
        let mut s = Scaler::new(policy());
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(s.step(at(0), 1, 4), 4);
        // A lull shorter than the cooldown shrinks nothing.
        assert_eq!(s.step(at(5), 4, 1), 4);
        assert_eq!(s.step(at(20), 4, 4), 4);
        assert_eq!(s.step(at(25), 4, 1), 4);
        assert_eq!(s.step(at(50), 4, 1), 4, "wanted fewer for 25 s only");
        assert_eq!(s.step(at(56), 4, 1), 3);
        assert_eq!(s.step(at(70), 3, 1), 3, "one at a time, a cooldown apart");
        assert_eq!(s.step(at(86), 3, 1), 2);
    }

    #[test]
    fn the_rate_is_per_worker_and_only_measured_with_work() {
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(m.update(at(0), Some(0), 2, true), None);
        assert_eq!(m.update(at(10), Some(200), 2, true), Some(10.0));
        assert_eq!(
            m.update(at(20), Some(200), 2, false),
            Some(10.0),
            "idle: kept"
        );
        assert_eq!(
            m.update(at(30), Some(50), 2, true),
            Some(10.0),
            "restarted: skipped"
        );
        assert_eq!(m.update(at(40), Some(250), 2, true), Some(10.0));
    }
}
