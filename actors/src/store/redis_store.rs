//! The Redis store. A batch of commits is one pipeline (one round trip); effects that
//! must be atomic per tree run as Lua scripts on keys that share the tree's hash tag.
use super::{
    round_outbox_key, Barrier, Concluded, ExpandCommit, Position, Progress, RoundCommit, RoundView,
    ScoreCommit, Store, StoreError, TreeRef, TreeView, VerdictCommit, VerdictKey, WorkerBeat,
    VERIFY_OUTBOX_KEY,
};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Cmd, Pipeline};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::time::Duration;
use tsst_messages::keys::{self, RunKeys, TreeKeys};
use tsst_messages::{
    Envelope, FinishReason, ModelVersion, Node, NodeId, ProbeTask, Question, Role, RunRecord, Task,
    TreeState, TreeStatus, Verdict,
};

/// How long a relay's probe marks outlive their last write: the relay is gone by then.
const PROBES_TTL_SECS: i64 = 3600;

const INIT_TREE: &str = include_str!("lua/init_tree.lua");
const COMMIT_SCORES: &str = include_str!("lua/commit_scores.lua");
const COMMIT_ROUND: &str = include_str!("lua/commit_round.lua");
const LEASE: &str = include_str!("lua/lease.lua");

/// A cheap-to-clone handle; the connection manager reconnects by itself.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
}

fn eval(script: &str, keys: &[String], args: Vec<String>) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
    cmd
}

fn tree_keys(t: &TreeRef) -> TreeKeys {
    TreeKeys::new(&t.run, &t.question)
}

fn decode<T: DeserializeOwned>(key: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(key: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn reason_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Answer => "answer",
        FinishReason::Exhausted => "exhausted",
        FinishReason::Length => "length",
        FinishReason::Eos => "eos",
    }
}

fn parse_reason(s: &str) -> Option<FinishReason> {
    [
        FinishReason::Answer,
        FinishReason::Exhausted,
        FinishReason::Length,
        FinishReason::Eos,
    ]
    .into_iter()
    .find(|r| reason_name(*r) == s)
}

/// Fills a stored node with its value and finish reason.
fn assemble(
    key: &str,
    json: Option<String>,
    value: Option<String>,
    reason: Option<String>,
) -> Result<Option<Node>, StoreError> {
    let Some(json) = json else { return Ok(None) };
    let mut node: Node = decode(key, &json)?;
    node.value = value.and_then(|v| v.parse().ok());
    node.finished = reason.as_deref().and_then(parse_reason);
    Ok(Some(node))
}

fn parse_state(key: &str, fields: &HashMap<String, String>) -> Result<TreeState, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        key: key.to_owned(),
        reason: format!("bad or missing `{what}`"),
    };
    let num = |f: &str| -> Result<u32, StoreError> {
        fields
            .get(f)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt(f))
    };
    Ok(TreeState {
        round: num("round")?,
        restarts: num("restarts")?,
        status: fields
            .get("status")
            .and_then(|s| TreeStatus::parse(s))
            .ok_or_else(|| corrupt("status"))?,
    })
}

impl RedisStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let redacted = tsst_config::redact_url(url);
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

    async fn query<T: redis::FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        Ok(pipe.query_async(&mut conn).await?)
    }

    /// Deletes everything of a run: its trees and its records.
    pub async fn delete_run(&self, run: &str) -> Result<(), StoreError> {
        let rk = RunKeys::new(run);
        let mut conn = self.conn.clone();
        let order: Vec<String> = conn.lrange(rk.order(), 0, -1).await?;
        for q in order {
            let t = TreeKeys::new(run, &q);
            let state: HashMap<String, String> = conn.hgetall(t.state()).await?;
            let rounds: u32 = state.get("round").and_then(|r| r.parse().ok()).unwrap_or(0);
            let mut doomed = vec![
                t.nodes(),
                t.state(),
                t.values(),
                t.reasons(),
                t.finished(),
                t.verdicts(),
                t.outbox(),
                t.published(),
            ];
            for r in 0..=rounds + 1 {
                doomed.extend([t.frontier(r), t.children(r), t.barrier(r)]);
            }
            let _: () = conn.del(doomed).await?;
        }
        let _: () = conn
            .del(vec![
                rk.meta(),
                rk.questions(),
                rk.order(),
                rk.done(),
                rk.failed(),
                rk.records(),
            ])
            .await?;
        let _: () = conn.srem(keys::runs(), run).await?;
        Ok(())
    }
}

impl Store for RedisStore {
    async fn register_run(
        &self,
        record: &RunRecord,
        questions: &[Question],
    ) -> Result<bool, StoreError> {
        let run = &record.run;
        let k = RunKeys::new(run);
        let json = encode(&k.meta(), record)?;
        let mut conn = self.conn.clone();
        let created: bool = conn.hset_nx(k.meta(), "record", &json).await?;
        if !created {
            let existing: Option<String> = conn.hget(k.meta(), "record").await?;
            if existing.as_deref() != Some(json.as_str()) {
                return Err(StoreError::Conflict {
                    run: run.clone(),
                    what: "config",
                });
            }
            let stored = self.questions(run).await?;
            if stored != questions {
                return Err(StoreError::Conflict {
                    run: run.clone(),
                    what: "question set",
                });
            }
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !questions.is_empty() {
            let mut fields = Vec::with_capacity(questions.len());
            for q in questions {
                fields.push((q.id.clone(), encode(&k.questions(), q)?));
            }
            pipe.hset_multiple(k.questions(), &fields).ignore();
            let ids: Vec<&str> = questions.iter().map(|q| q.id.as_str()).collect();
            pipe.rpush(k.order(), ids).ignore();
        }
        pipe.hset(k.meta(), "questions", questions.len()).ignore();
        pipe.hset(k.meta(), "started", super::unix_now()).ignore();
        pipe.sadd(keys::runs(), run).ignore();
        let () = self.query(&pipe).await?;
        Ok(true)
    }

    async fn run_record(&self, run: &str) -> Result<RunRecord, StoreError> {
        let k = RunKeys::new(run);
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.hget(k.meta(), "record").await?;
        let json = json.ok_or_else(|| StoreError::UnknownRun(run.to_owned()))?;
        decode(&k.meta(), &json)
    }

    async fn questions(&self, run: &str) -> Result<Vec<Question>, StoreError> {
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
                let json = json.ok_or_else(|| StoreError::Corrupt {
                    key: key.clone(),
                    reason: "listed but not stored".into(),
                })?;
                decode(&key, &json)
            })
            .collect()
    }

    async fn runs(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut runs: Vec<String> = conn.smembers(keys::runs()).await?;
        runs.sort();
        Ok(runs)
    }

    async fn init_trees(&self, run: &str, questions: &[String]) -> Result<Vec<String>, StoreError> {
        if questions.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for q in questions {
            let t = TreeKeys::new(run, q);
            let root = Node::root(NodeId::root(run, q));
            let keys = [t.state(), t.frontier(0), t.nodes()];
            let args = vec![root.id.to_string(), encode(&t.nodes(), &root)?];
            pipe.add_command(eval(INIT_TREE, &keys, args));
        }
        let enqueued: Vec<String> = self.query(&pipe).await?;
        Ok(questions
            .iter()
            .zip(enqueued)
            .filter(|(_, e)| e != "1")
            .map(|(q, _)| q.clone())
            .collect())
    }

    async fn mark_enqueued(&self, run: &str, questions: &[String]) -> Result<(), StoreError> {
        if questions.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for q in questions {
            pipe.hset(TreeKeys::new(run, q).state(), "enqueued", 1)
                .ignore();
        }
        self.query(&pipe).await
    }

    async fn outboxes(
        &self,
        keys: &[(TreeRef, String)],
    ) -> Result<Vec<Option<Vec<Envelope<Task>>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (t, key) in keys {
            pipe.hget(tree_keys(t).outbox(), key);
        }
        let jsons: Vec<Option<String>> = self.query(&pipe).await?;
        keys.iter()
            .zip(jsons)
            .map(|((t, key), json)| {
                json.map(|j| decode(&format!("{}#{key}", tree_keys(t).outbox()), &j))
                    .transpose()
            })
            .collect()
    }

    async fn mark_published(&self, keys: &[(TreeRef, String)]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (t, key) in keys {
            pipe.hset(tree_keys(t).published(), key, 1).ignore();
        }
        self.query::<()>(&pipe).await
    }

    async fn published(&self, keys: &[(TreeRef, String)]) -> Result<Vec<bool>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (t, key) in keys {
            pipe.hexists(tree_keys(t).published(), key);
        }
        self.query(&pipe).await
    }

    async fn nodes(&self, wanted: &[(TreeRef, NodeId)]) -> Result<Vec<Option<Node>>, StoreError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (t, id) in wanted {
            let k = tree_keys(t);
            let field = id.to_string();
            pipe.hget(k.nodes(), &field)
                .hget(k.values(), &field)
                .hget(k.reasons(), &field);
        }
        let raw: Vec<Option<String>> = self.query(&pipe).await?;
        let mut raw = raw.into_iter();
        wanted
            .iter()
            .map(|(t, _)| {
                let (json, value, reason) = (
                    raw.next().flatten(),
                    raw.next().flatten(),
                    raw.next().flatten(),
                );
                assemble(&tree_keys(t).nodes(), json, value, reason)
            })
            .collect()
    }

    async fn commit_expand(&self, commits: &[ExpandCommit]) -> Result<(), StoreError> {
        if commits.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for c in commits {
            let k = tree_keys(&c.tree);
            for child in &c.children {
                pipe.hset_nx(k.nodes(), child.id.to_string(), encode(&k.nodes(), child)?)
                    .ignore();
            }
            if !c.children.is_empty() {
                let ids: Vec<String> = c.children.iter().map(|n| n.id.to_string()).collect();
                pipe.sadd(k.children(c.round), ids).ignore();
            }
            pipe.hset_nx(k.outbox(), &c.task_id, encode(&k.outbox(), &c.outbox)?)
                .ignore();
        }
        self.query(&pipe).await
    }

    async fn commit_scores(&self, commits: &[ScoreCommit]) -> Result<Vec<Barrier>, StoreError> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for c in commits {
            let k = tree_keys(&c.tree);
            let keys = [
                k.values(),
                k.barrier(c.round),
                k.frontier(c.round),
                k.state(),
                k.children(c.round),
            ];
            let mut args = vec![
                c.round.to_string(),
                c.parent.to_string(),
                c.children.len().to_string(),
            ];
            args.extend(c.children.iter().map(ToString::to_string));
            for (id, v) in &c.values {
                // `{}` prints the shortest text that parses back to the same f64.
                args.extend([id.to_string(), format!("{v}")]);
            }
            pipe.add_command(eval(COMMIT_SCORES, &keys, args));
        }
        let codes: Vec<u8> = self.query(&pipe).await?;
        Ok(codes
            .into_iter()
            .map(|c| match c {
                0 => Barrier::Waiting,
                1 => Barrier::Complete,
                3 => Barrier::Behind,
                4 => Barrier::Lost,
                _ => Barrier::Concluded,
            })
            .collect())
    }

    async fn rounds(&self, wanted: &[(TreeRef, u32)]) -> Result<Vec<RoundView>, StoreError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (t, round) in wanted {
            let k = tree_keys(t);
            pipe.hgetall(k.state())
                .lrange(k.frontier(*round), 0, -1)
                .smembers(k.children(*round))
                .llen(k.finished());
        }
        #[allow(clippy::type_complexity)]
        let listed: Vec<(HashMap<String, String>, Vec<String>, Vec<String>, u32)> =
            self.query(&pipe).await?;
        // One more round trip for every node of every round.
        let mut all: Vec<(TreeRef, NodeId)> = Vec::new();
        let mut shapes = Vec::with_capacity(wanted.len());
        for ((t, round), (state, frontier, children, finished)) in wanted.iter().zip(listed) {
            let k = tree_keys(t);
            if state.is_empty() {
                return Err(StoreError::UnknownTree {
                    run: t.run.clone(),
                    question: t.question.clone(),
                });
            }
            for id in frontier.iter().chain(&children) {
                let id = id.parse().map_err(|reason| StoreError::Corrupt {
                    key: k.frontier(*round),
                    reason,
                })?;
                all.push((t.clone(), id));
            }
            shapes.push((
                parse_state(&k.state(), &state)?,
                frontier.len(),
                children.len(),
                finished,
            ));
        }
        let mut nodes = self.nodes(&all).await?.into_iter().zip(&all);
        let mut take = |n: usize| -> Result<Vec<Node>, StoreError> {
            nodes
                .by_ref()
                .take(n)
                .map(|(node, (t, id))| {
                    node.ok_or_else(|| StoreError::Corrupt {
                        key: format!("{} {id}", tree_keys(t).nodes()),
                        reason: "listed but not stored".into(),
                    })
                })
                .collect()
        };
        shapes
            .into_iter()
            .map(|(state, n_frontier, n_children, finished)| {
                Ok(RoundView {
                    state,
                    frontier: take(n_frontier)?,
                    children: take(n_children)?,
                    finished,
                })
            })
            .collect()
    }

    async fn commit_rounds(&self, commits: &[RoundCommit]) -> Result<Vec<Concluded>, StoreError> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for c in commits {
            let k = tree_keys(&c.tree);
            let conclusion = serde_json::json!({
                "finished": c.finished.iter().map(|(id, r)| [id.to_string(), reason_name(*r).to_owned()]).collect::<Vec<_>>(),
                "frontier": c.next_frontier.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "done": c.done,
                "restarted": c.restarted,
            });
            let keys = [
                k.state(),
                k.frontier(c.round + 1),
                k.finished(),
                k.reasons(),
                k.outbox(),
                k.barrier(c.round),
                k.frontier(c.round),
                k.children(c.round),
            ];
            let args = vec![
                c.round.to_string(),
                conclusion.to_string(),
                round_outbox_key(c.round),
                encode(&k.outbox(), &c.outbox)?,
                c.children.to_string(),
            ];
            pipe.add_command(eval(COMMIT_ROUND, &keys, args));
        }
        let applied: Vec<u8> = self.query(&pipe).await?;
        Ok(applied
            .into_iter()
            .map(|a| match a {
                1 => Concluded::Now,
                2 => Concluded::Unready,
                _ => Concluded::Before,
            })
            .collect())
    }

    async fn commit_verdicts(&self, commits: &[VerdictCommit]) -> Result<(), StoreError> {
        if commits.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for c in commits {
            let k = tree_keys(&c.tree);
            for (id, v) in &c.verdicts {
                pipe.hset(k.verdicts(), id.to_string(), encode(&k.verdicts(), v)?)
                    .ignore();
            }
            pipe.hset_nx(
                k.outbox(),
                VERIFY_OUTBOX_KEY,
                encode(&k.outbox(), &c.outbox)?,
            )
            .ignore();
        }
        self.query(&pipe).await
    }

    async fn finish_trees(
        &self,
        run: &str,
        trees: &[(String, Option<String>)],
    ) -> Result<(Vec<bool>, Progress), StoreError> {
        if trees.is_empty() {
            return Ok((Vec::new(), self.progress(run).await?));
        }
        let rk = RunKeys::new(run);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (q, error) in trees {
            let status = if error.is_some() {
                TreeStatus::Failed
            } else {
                TreeStatus::Done
            };
            pipe.hset(TreeKeys::new(run, q).state(), "status", status.name())
                .ignore();
            if let Some(reason) = error {
                pipe.hset_nx(rk.failed(), q, reason).ignore();
            }
            pipe.sadd(rk.done(), q);
        }
        let newly: Vec<bool> = self.query(&pipe).await?;
        Ok((newly, self.progress(run).await?))
    }

    async fn progress(&self, run: &str) -> Result<Progress, StoreError> {
        let rk = RunKeys::new(run);
        let mut pipe = redis::pipe();
        pipe.hget(rk.meta(), "questions")
            .scard(rk.done())
            .hlen(rk.failed())
            .hget(rk.meta(), "started");
        let (total, done, failed, started): (Option<u32>, u32, u32, Option<u64>) =
            self.query(&pipe).await?;
        Ok(Progress {
            total: total.ok_or_else(|| StoreError::UnknownRun(run.to_owned()))?,
            done,
            failed,
            started,
        })
    }

    async fn put_records(&self, run: &str, records: &[(String, String)]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.hset_multiple(RunKeys::new(run).records(), records)
            .ignore();
        self.query(&pipe).await
    }

    async fn records(&self, run: &str) -> Result<HashMap<String, String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.hgetall(RunKeys::new(run).records()).await?)
    }

    async fn cached_verdicts(
        &self,
        keys: &[VerdictKey],
    ) -> Result<Vec<Option<Verdict>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.hget(keys::verdict_cache(k.source, &k.question), &k.answer);
        }
        let jsons: Vec<Option<String>> = self.query(&pipe).await?;
        keys.iter()
            .zip(jsons)
            .map(|(k, json)| {
                json.map(|j| decode(&keys::verdict_cache(k.source, &k.question), &j))
                    .transpose()
            })
            .collect()
    }

    async fn cache_verdicts(&self, entries: &[(VerdictKey, Verdict)]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (k, v) in entries {
            let key = keys::verdict_cache(k.source, &k.question);
            let json = encode(&key, v)?;
            pipe.hset(key, &k.answer, json).ignore();
        }
        self.query(&pipe).await
    }

    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let ms = ttl.as_millis().max(1).to_string();
        let held: i64 = eval(LEASE, &[keys::lease(name)], vec![holder.to_owned(), ms])
            .query_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    async fn mark_probe(&self, probe: &ProbeTask) -> Result<(), StoreError> {
        let key = keys::probes(&probe.relay);
        let mut pipe = redis::pipe();
        pipe.hset(&key, probe.role.name(), probe.seq)
            .ignore()
            .expire(&key, PROBES_TTL_SECS)
            .ignore();
        self.query::<()>(&pipe).await
    }

    async fn probes(&self, relay: &str) -> Result<HashMap<Role, u64>, StoreError> {
        let mut conn = self.conn.clone();
        let key = keys::probes(relay);
        let marks: HashMap<String, u64> = conn.hgetall(&key).await?;
        Ok(Role::ALL
            .into_iter()
            .filter_map(|r| marks.get(r.name()).map(|&seq| (r, seq)))
            .collect())
    }

    async fn beat(&self, beat: &WorkerBeat) -> Result<(), StoreError> {
        let key = keys::workers();
        let json = encode(&key, beat)?;
        let mut conn = self.conn.clone();
        let () = conn.hset(&key, &beat.name, json).await?;
        Ok(())
    }

    async fn workers(&self, now: u64, max_age: u64) -> Result<Vec<WorkerBeat>, StoreError> {
        let key = keys::workers();
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(&key).await?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (name, json) in all {
            match decode::<WorkerBeat>(&key, &json) {
                Ok(b) if b.seen.saturating_add(max_age) >= now => live.push(b),
                // Not renewed (a killed worker), or written by another version.
                _ => gone.push(name),
            }
        }
        if !gone.is_empty() {
            let () = conn.hdel(&key, gone).await?;
        }
        live.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(live)
    }

    async fn forget_worker(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = conn.hdel(keys::workers(), name).await?;
        Ok(())
    }

    async fn put_model_version(&self, version: &ModelVersion) -> Result<(), StoreError> {
        let json = serde_json::to_string(version).expect("a model version serialises");
        let mut conn = self.conn.clone();
        let _: () = conn
            .hset(keys::models(&version.run), version.version, json)
            .await?;
        Ok(())
    }

    async fn model_versions(&self, run: &str) -> Result<Vec<ModelVersion>, StoreError> {
        let key = keys::models(run);
        let mut conn = self.conn.clone();
        let all: HashMap<u32, String> = conn.hgetall(&key).await?;
        let mut versions = all
            .into_iter()
            .map(|(v, json)| {
                serde_json::from_str::<ModelVersion>(&json).map_err(|e| StoreError::Corrupt {
                    key: format!("{key} field {v}"),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    async fn positions(&self, trees: &[TreeRef]) -> Result<Vec<Option<Position>>, StoreError> {
        if trees.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for t in trees {
            let k = tree_keys(t);
            pipe.hgetall(k.state()).hlen(k.outbox());
        }
        let read: Vec<(HashMap<String, String>, u64)> = self.query(&pipe).await?;
        let (states, applied): (Vec<HashMap<String, String>>, Vec<u64>) = read.into_iter().unzip();
        let mut states: Vec<Option<TreeState>> = trees
            .iter()
            .zip(&states)
            .map(|(t, s)| {
                (!s.is_empty())
                    .then(|| parse_state(&tree_keys(t).state(), s))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        // A round's frontier never changes once written, so reading it after the
        // state is consistent.
        let mut pipe = redis::pipe();
        for (t, s) in trees.iter().zip(&states) {
            let (k, round) = (tree_keys(t), s.map_or(0, |s| s.round));
            pipe.lrange(k.frontier(round), 0, -1)
                .smembers(k.barrier(round));
        }
        let listed: Vec<(Vec<String>, Vec<String>)> = self.query(&pipe).await?;
        trees
            .iter()
            .zip(listed)
            .zip(states.iter_mut())
            .zip(applied)
            .map(|(((t, (frontier, scored)), state), applied)| {
                let Some(state) = state.take() else {
                    return Ok(None);
                };
                let key = tree_keys(t).frontier(state.round);
                let ids = |list: Vec<String>| {
                    list.iter()
                        .map(|id| {
                            id.parse().map_err(|reason| StoreError::Corrupt {
                                key: key.clone(),
                                reason,
                            })
                        })
                        .collect::<Result<Vec<NodeId>, _>>()
                };
                Ok(Some(Position {
                    state,
                    frontier: ids(frontier)?,
                    scored: ids(scored)?,
                    applied,
                }))
            })
            .collect()
    }

    async fn tree(&self, t: &TreeRef) -> Result<TreeView, StoreError> {
        let k = tree_keys(t);
        let mut pipe = redis::pipe();
        pipe.hgetall(k.state())
            .hgetall(k.nodes())
            .hgetall(k.values())
            .hgetall(k.reasons())
            .lrange(k.finished(), 0, -1)
            .hgetall(k.verdicts())
            .hget(RunKeys::new(&t.run).failed(), &t.question);
        #[allow(clippy::type_complexity)]
        let (state, nodes, mut values, mut reasons, finished, verdicts, error): (
            HashMap<String, String>,
            HashMap<String, String>,
            HashMap<String, String>,
            HashMap<String, String>,
            Vec<String>,
            HashMap<String, String>,
            Option<String>,
        ) = self.query(&pipe).await?;
        if state.is_empty() {
            return Err(StoreError::UnknownTree {
                run: t.run.clone(),
                question: t.question.clone(),
            });
        }
        let mut all = Vec::with_capacity(nodes.len());
        for (id, json) in nodes {
            let (value, reason) = (values.remove(&id), reasons.remove(&id));
            if let Some(n) = assemble(&k.nodes(), Some(json), value, reason)? {
                all.push(n);
            }
        }
        all.sort_by_key(|n| n.id);
        let parse_id = |id: &str| {
            id.parse::<NodeId>().map_err(|reason| StoreError::Corrupt {
                key: k.finished(),
                reason,
            })
        };
        Ok(TreeView {
            state: parse_state(&k.state(), &state)?,
            nodes: all,
            finished: finished
                .iter()
                .map(|id| parse_id(id))
                .collect::<Result<_, _>>()?,
            verdicts: verdicts
                .iter()
                .map(|(id, json)| Ok((parse_id(id)?, decode::<Verdict>(&k.verdicts(), json)?)))
                .collect::<Result<_, StoreError>>()?,
            error,
        })
    }
}
