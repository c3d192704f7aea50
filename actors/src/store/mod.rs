//! Durable state: runs, questions and search trees.
mod redis_store;

pub use redis_store::RedisStore;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot connect to Redis at {0}: {1}")]
    Connect(String, redis::RedisError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("corrupt record in Redis at {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("run {0} is not known to the store")]
    UnknownRun(String),
    #[error("run {run} was enqueued before with a different {what}; use another --run id")]
    Conflict { run: String, what: &'static str },
}
