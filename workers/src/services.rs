//! Connecting to the broker and the store named on the command line.
use crate::cli::ServiceArgs;
use anyhow::{bail, Context as _, Result};
use std::sync::Arc;
use tsst_actors::broker::AmqpBroker;
use tsst_actors::runtime::{Context, Models, ScriptedFactory};
use tsst_actors::store::RedisStore;
use tsst_messages::Topology;

/// The distributed services, when both URLs are given.
pub struct Distributed {
    pub store: RedisStore,
    pub broker: AmqpBroker,
}

impl ServiceArgs {
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

/// The models this build can serve.
pub fn models() -> Models {
    Models::new(ScriptedFactory)
}

pub fn context<S: tsst_actors::store::Store, B: tsst_actors::broker::Broker>(
    store: S,
    broker: B,
) -> Arc<Context<S, B>> {
    Arc::new(Context::new(store, broker, models()))
}
