//! The Redis store. Every write is idempotent so a redelivered task changes nothing.
use super::StoreError;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tsst_messages::keys::{self, RunKeys};
use tsst_messages::Question;

/// A cheap-to-clone handle; the connection manager reconnects by itself.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
}

impl RedisStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let redacted = crate::broker::redact_url(url);
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Connect(redacted.clone(), e))?;
        let conn = client
            .get_connection_manager()
            .await
            .map_err(|e| StoreError::Connect(redacted, e))?;
        Ok(RedisStore { conn })
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Records a run's config and questions. Registering the same run again with the
    /// same config is a no-op; with a different config it is refused, so re-enqueueing
    /// can never mix two searches in one run.
    pub async fn register_run(
        &self,
        run: &str,
        config_json: &str,
        questions: &[Question],
    ) -> Result<bool, StoreError> {
        let k = RunKeys::new(run);
        let mut conn = self.conn.clone();
        let created: bool = conn.hset_nx(k.meta(), "config", config_json).await?;
        if !created {
            let existing: Option<String> = conn.hget(k.meta(), "config").await?;
            if existing.as_deref() != Some(config_json) {
                return Err(StoreError::Conflict {
                    run: run.to_owned(),
                    what: "config",
                });
            }
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut fields = Vec::with_capacity(questions.len());
        for q in questions {
            let json = serde_json::to_string(q).map_err(|source| StoreError::Corrupt {
                key: k.questions(),
                source,
            })?;
            fields.push((q.id.clone(), json));
        }
        if created {
            if !fields.is_empty() {
                pipe.hset_multiple(k.questions(), &fields).ignore();
                let ids: Vec<&str> = questions.iter().map(|q| q.id.as_str()).collect();
                pipe.rpush(k.order(), ids).ignore();
            }
            pipe.hset(k.meta(), "questions", questions.len()).ignore();
            pipe.sadd(keys::runs(), run).ignore();
            let _: () = pipe.query_async(&mut conn).await?;
        } else {
            let stored: usize = conn.hget(k.meta(), "questions").await.unwrap_or(0);
            if stored != questions.len() {
                return Err(StoreError::Conflict {
                    run: run.to_owned(),
                    what: "question set",
                });
            }
        }
        Ok(created)
    }

    /// The run's config as registered.
    pub async fn run_config(&self, run: &str) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let config: Option<String> = conn.hget(RunKeys::new(run).meta(), "config").await?;
        config.ok_or_else(|| StoreError::UnknownRun(run.to_owned()))
    }

    /// One question of a run.
    pub async fn question(&self, run: &str, id: &str) -> Result<Question, StoreError> {
        let k = RunKeys::new(run);
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.hget(k.questions(), id).await?;
        let json = json.ok_or_else(|| StoreError::UnknownRun(run.to_owned()))?;
        serde_json::from_str(&json).map_err(|source| StoreError::Corrupt {
            key: format!("{}#{id}", k.questions()),
            source,
        })
    }

    /// The run's questions in dataset order.
    pub async fn questions(&self, run: &str) -> Result<Vec<Question>, StoreError> {
        let k = RunKeys::new(run);
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.lrange(k.order(), 0, -1).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let jsons: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(k.questions())
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        ids.iter()
            .zip(jsons)
            .map(|(id, json)| {
                let key = format!("{}#{id}", k.questions());
                let json = json.ok_or_else(|| StoreError::UnknownRun(run.to_owned()))?;
                serde_json::from_str(&json).map_err(|source| StoreError::Corrupt { key, source })
            })
            .collect()
    }

    /// Every run id the store knows.
    pub async fn runs(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut runs: Vec<String> = conn.smembers(keys::runs()).await?;
        runs.sort();
        Ok(runs)
    }
}
