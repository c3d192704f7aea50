//! `tsst worker`: serve roles from the queues until told to stop.
use crate::cli::{ServiceArgs, WorkerArgs};
use crate::services;
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;
use tsst_actors::runtime::{BatchSettings, RoleSpec, Worker};
use tsst_actors::store::WorkerBeat;
use tsst_config::{TrainerConfig, WorkerConfig};
use tsst_messages::Role;

/// The roles to run, with their pool sizes from the worker config.
pub fn role_specs(config: &WorkerConfig, roles: &[Role]) -> Vec<RoleSpec> {
    roles
        .iter()
        .map(|&role| RoleSpec {
            role,
            instances: config.pool_size(role).max(1) as usize,
        })
        .collect()
}

pub fn batch_settings(config: &WorkerConfig, batch: Option<u32>) -> BatchSettings {
    BatchSettings {
        max_size: batch.unwrap_or(config.batch.max_size).max(1) as usize,
        max_wait: Duration::from_millis(config.batch.max_wait_ms),
        prefetch: config.prefetch,
    }
}

/// A name no other worker has (it holds the relay's lease): the host, the process and
/// a random part, since in containers every worker may be pid 1 on a shared hostname.
fn default_name() -> String {
    use std::hash::BuildHasher;
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let pid = std::process::id();
    let random = std::collections::hash_map::RandomState::new().hash_one(pid) as u32;
    format!("tsst-worker-{host}-{pid}-{random:08x}")
}

pub async fn worker(args: WorkerArgs, services: &ServiceArgs) -> Result<()> {
    let config = services::worker_config(args.config.as_deref(), args.device.as_deref())?;
    let services = &services.or_config(&config);
    let name = args.name.clone().unwrap_or_else(default_name);
    if let Some(addr) = crate::metrics::serve(args.metrics.as_deref())? {
        tracing::info!(%addr, "serving metrics at /metrics");
    }
    let Some(d) = services::wait_for(services, &name, shutdown_signal()).await? else {
        return Ok(());
    };
    let trainer = args
        .trainer
        .as_deref()
        .map(TrainerConfig::load)
        .transpose()?;
    if trainer.is_none()
        && args
            .roles
            .as_ref()
            .is_some_and(|r| r.contains(&Role::Trainer))
    {
        anyhow::bail!("--roles trainer needs --trainer FILE (the trainer config)");
    }
    // The trainer runs where its config is given (a machine set up to train).
    let roles: Vec<Role> = args
        .roles
        .clone()
        .unwrap_or_else(|| config.roles.clone())
        .into_iter()
        .filter(|r| *r != Role::Trainer || trainer.is_some())
        .collect();
    let ctx = Arc::new(
        services::context(
            d.store.clone(),
            d.broker.clone(),
            &config,
            services::llm(args.verifier.as_deref())?,
        )
        .with_trainer(trainer),
    );
    let (stop_preload, preload_stop) = tokio::sync::watch::channel(false);
    let preload = actix_rt::spawn(tsst_actors::runtime::preload_published(
        ctx.clone(),
        preload_stop.clone(),
    ));
    let now = tsst_actors::store::unix_now();
    let beat = WorkerBeat {
        name: name.clone(),
        namespace: d.broker.topology().namespace().to_owned(),
        roles: roles.iter().map(|r| r.name().to_owned()).collect(),
        device: config.device.to_string(),
        models: Vec::new(),
        pid: std::process::id(),
        started: now,
        seen: now,
    };
    let heartbeat = actix_rt::spawn(tsst_actors::runtime::heartbeat(
        ctx.clone(),
        beat,
        preload_stop,
    ));
    let mut worker = Worker::start(
        ctx,
        &role_specs(&config, &roles),
        batch_settings(&config, args.batch),
    );
    let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
    tracing::info!(worker = %name, roles = %names.join(","), "serving");
    let (stop_relay, relay_stop) = tokio::sync::watch::channel(false);
    let relay = (args.relay_stall_secs > 0).then(|| {
        tokio::spawn(tsst_actors::heal::relay(
            d.store.clone(),
            d.broker.clone(),
            name.clone(),
            Duration::from_secs(args.relay_stall_secs),
            relay_stop,
        ))
    });
    let failed = tokio::select! {
        () = shutdown_signal() => None,
        reason = worker.any_stopped() => Some(reason),
    };
    tracing::info!(worker = %name, "stopping: finishing the batches in flight");
    let _ = stop_relay.send(true);
    let _ = stop_preload.send(true);
    // The helpers stop at once when asked; a service that does not answer may hold
    // one in a call, and must not hold the shutdown (the batches in flight have their
    // own limit in `shutdown`).
    bounded("the model watcher", preload).await;
    bounded("the heartbeat", heartbeat).await;
    if let Some(relay) = relay {
        bounded("the relay", relay).await;
    }
    worker.shutdown().await;
    metrics::gauge!(tsst_actors::metrics::WORKER_UP).set(0.0);
    bounded("closing the broker connection", d.broker.close()).await;
    if let Some(reason) = failed {
        anyhow::bail!("a role stopped: {reason}");
    }
    tracing::info!(worker = %name, "stopped");
    Ok(())
}

/// Waits for a shutdown step, at most a few seconds.
async fn bounded<F: std::future::IntoFuture>(what: &str, step: F) {
    if tokio::time::timeout(Duration::from_secs(5), step.into_future())
        .await
        .is_err()
    {
        tracing::warn!("{what} did not finish within 5 s; stopping without it");
    }
}

/// Ctrl-C or SIGTERM. Without a handler SIGTERM would kill the process mid-batch.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
