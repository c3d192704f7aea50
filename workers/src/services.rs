//! Connecting to the broker and the store named on the command line.
use crate::cli::ServiceArgs;
use anyhow::{bail, Context as _, Result};
use std::path::Path;
use tsst_actors::broker::AmqpBroker;
use tsst_actors::llm::{LlmClient, LlmSettings};
use tsst_actors::runtime::{Context, Models};
use tsst_actors::store::RedisStore;
use tsst_config::{VerifierConfig, WorkerConfig};
use tsst_messages::Topology;

/// The distributed services, when both URLs are given.
pub struct Distributed {
    pub store: RedisStore,
    pub broker: AmqpBroker,
}

impl ServiceArgs {
    /// The URLs from the command line or the environment, else the worker config's.
    pub fn or_config(&self, config: &WorkerConfig) -> ServiceArgs {
        let from =
            |url: &Option<tsst_config::ServiceUrl>| url.as_ref().map(|u| u.as_str().to_owned());
        ServiceArgs {
            amqp: self.amqp.clone().or_else(|| from(&config.amqp_url)),
            redis: self.redis.clone().or_else(|| from(&config.redis_url)),
            namespace: self.namespace.clone(),
        }
    }

    pub fn embedded(&self) -> bool {
        self.amqp.is_none() && self.redis.is_none()
    }

    /// Connects to both services; an error when only one URL is given.
    pub async fn connect(&self, name: &str) -> Result<Distributed> {
        let (Some(amqp), Some(redis)) = (&self.amqp, &self.redis) else {
            bail!(
                "distributed mode needs both --amqp and --redis (or TSST_AMQP_URL and TSST_REDIS_URL)"
            );
        };
        let broker = AmqpBroker::connect(amqp, name, Topology::new(&self.namespace))
            .await
            .context("connecting to RabbitMQ")?;
        let store = RedisStore::connect(redis)
            .await
            .context("connecting to Redis")?;
        Ok(Distributed { store, broker })
    }

    /// Requires distributed mode for commands that only make sense there.
    pub async fn require(&self, command: &str, name: &str) -> Result<Distributed> {
        if self.embedded() {
            bail!(
                "`tsst {command}` works on a cluster: give --amqp and --redis (or TSST_AMQP_URL and TSST_REDIS_URL); `tsst run` runs a config in this process"
            );
        }
        self.connect(name).await
    }
}

/// Connects to both services and declares the topology, waiting with backoff (up to
/// 10 s between tries) while either is down: a worker started before the broker or
/// during its restart waits for it instead of exiting. `None` when `stop` fires first.
/// A bad URL or missing arguments are errors at once.
pub async fn wait_for(
    services: &ServiceArgs,
    name: &str,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<Distributed>> {
    if services.embedded() {
        services.require("worker", name).await?;
    }
    tokio::pin!(stop);
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        let attempt = async {
            let d = services.connect(name).await?;
            d.broker
                .declare_topology()
                .await
                .context("declaring the queues")?;
            anyhow::Ok(d)
        };
        match attempt.await {
            Ok(d) => return Ok(Some(d)),
            Err(e) if services.amqp.is_none() || services.redis.is_none() => return Err(e),
            Err(e) => tracing::warn!("waiting for the services: {e:#}"),
        }
        tokio::select! {
            () = &mut stop => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(10));
    }
}

/// The models this build can serve: `scripted` / `scripted:<N>ms`, and exported
/// ONNX model directories (a config's `policy_model` / `value_model`) on the worker
/// config's device. The ONNX Runtime library is the config's `ort_dylib_path`, else
/// found through ORT_DYLIB_PATH or `tools/fetch-ort.sh`'s install location when a
/// model directory is first loaded.
pub fn models(worker: &WorkerConfig) -> Models {
    Models::new(tsst_models::OnnxFactory {
        device: worker.device,
        ort_lib: worker.ort_dylib_path.clone(),
    })
}

pub fn context<S: tsst_actors::store::Store, B: tsst_actors::broker::Broker>(
    store: S,
    broker: B,
    worker: &WorkerConfig,
    llm: Option<LlmClient>,
) -> Context<S, B> {
    Context::new(store, broker, models(worker)).with_llm(llm)
}

/// The worker config, from a file or the defaults, with `--device` applied.
pub fn worker_config(path: Option<&Path>, device: Option<&str>) -> Result<WorkerConfig> {
    let mut config = match path {
        Some(p) => WorkerConfig::load(p)?,
        None => WorkerConfig::default(),
    };
    if let Some(d) = device {
        config.device = d
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--device {d}: {e}"))?;
    }
    Ok(config)
}

/// The LLM verifier a `--verifier` config describes, its key read from the
/// environment variable the config names.
pub fn llm(config: Option<&Path>) -> Result<Option<LlmClient>> {
    let Some(path) = config else {
        return Ok(None);
    };
    let config = VerifierConfig::load(path)?;
    let key = config.api_key()?.map(|k| k.expose().to_owned());
    if key.is_none() {
        if let Some(var) = &config.config.api_key_env {
            tracing::warn!("{var} is not set: calling the verifier without a key");
        }
    }
    let client = LlmClient::new(LlmSettings::from_config(&config), key)?;
    tracing::info!(endpoint = %config.config.openai_api_base, model = %config.model, "LLM verifier");
    Ok(Some(client))
}
