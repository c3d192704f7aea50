//! The trainer: one self-training round's training as configured commands (train the
//! policy, train the value model, export both), each model version recorded in the
//! store's registry with what it came from, and a model-published event for the
//! workers once it is ready.
pub mod command;

use crate::broker::{Broker, BrokerError};
use crate::store::{Store, StoreError};
pub use command::{CommandError, Placeholders};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;
pub use tsst_config::{Stage, TrainerConfig};
use tsst_messages::{
    DataFile, Event, ModelKind, ModelVersion, StageReport, TrainTask, VersionStatus,
};

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("training data {path}: {reason}")]
    Data { path: PathBuf, reason: String },
    #[error("the stages left no model at {0} (no manifest.json)")]
    NoModel(PathBuf),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Records in a training JSON file (an array of LLaVA records).
fn count_records(path: &Path) -> Result<u64, TrainError> {
    let err = |reason: String| TrainError::Data {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| err(format!("not a JSON array: {e}")))?;
    Ok(records.len() as u64)
}

/// Trains the round `task` names: version `task.round`, from the previous round's
/// ready version (or the base models for round 0). A version already ready is
/// published again and returned as it is (a redelivered task trains nothing again,
/// and workers that missed the events of a publish that failed hear of it). Failures
/// are recorded in the registry with their reason before they are returned.
pub async fn train_round<S: Store, B: Broker>(
    store: &S,
    broker: &B,
    config: &TrainerConfig,
    task: &TrainTask,
) -> Result<ModelVersion, TrainError> {
    let versions = store.model_versions(&task.run).await?;
    if let Some(done) = versions
        .iter()
        .find(|v| v.version == task.round && v.status == VersionStatus::Ready)
    {
        publish(broker, done).await?;
        return Ok(done.clone());
    }
    let parent = versions
        .iter()
        .rev()
        .find(|v| v.version < task.round && v.status == VersionStatus::Ready);
    let (parent_policy, parent_value) = parent.map_or(
        (config.base_policy.clone(), config.base_value.clone()),
        |p| (p.policy.clone(), p.value.clone()),
    );
    let out = config
        .models_root
        .join(&task.run)
        .join(format!("v{}", task.round));
    let values = Placeholders::from([
        ("run", task.run.clone()),
        ("round", task.round.to_string()),
        ("version", task.round.to_string()),
        ("out", out.display().to_string()),
        ("policy_data", task.policy_data.display().to_string()),
        ("value_data", task.value_data.display().to_string()),
        ("parent_policy", parent_policy.display().to_string()),
        ("parent_value", parent_value.display().to_string()),
    ]);
    let mut version = ModelVersion {
        run: task.run.clone(),
        version: task.round,
        parent: parent.map(|p| p.version),
        data: Vec::new(),
        policy: command::expand("policy_dir", &config.policy_dir, &values)?.into(),
        value: command::expand("value_dir", &config.value_dir, &values)?.into(),
        status: VersionStatus::Training,
        stages: Vec::new(),
        started_at: now(),
        finished_at: None,
    };
    let result = run_stages(store, config, task, &values, &out, &mut version).await;
    if result.is_ok() {
        // Workers name models by path: one spelling for the registry, the events and
        // the runs that use the version, wherever they were started.
        for dir in [&mut version.policy, &mut version.value] {
            if let Ok(absolute) = dir.canonicalize() {
                *dir = absolute;
            }
        }
    }
    version.finished_at = Some(now());
    version.status = match &result {
        Ok(()) => VersionStatus::Ready,
        Err(e) => VersionStatus::Failed {
            reason: e.to_string(),
        },
    };
    store.put_model_version(&version).await?;
    if let Err(e) = result {
        tracing::error!(run = %task.run, version = task.round, error = %e, "training failed");
        return Err(e);
    }
    publish(broker, &version).await?;
    tracing::info!(run = %task.run, version = version.version, "model version ready");
    Ok(version)
}

/// The model-published events of a ready version, one per model.
async fn publish<B: Broker>(broker: &B, version: &ModelVersion) -> Result<(), TrainError> {
    let events: Vec<_> = [
        (ModelKind::Policy, &version.policy),
        (ModelKind::Value, &version.value),
    ]
    .into_iter()
    .map(|(model, path)| {
        Event::ModelPublished {
            model,
            name: version.run.clone(),
            version: version.version,
            path: path.clone(),
        }
        .envelope()
    })
    .collect();
    broker.publish_events(&events).await?;
    Ok(())
}

async fn run_stages<S: Store>(
    store: &S,
    config: &TrainerConfig,
    task: &TrainTask,
    values: &Placeholders,
    out: &Path,
    version: &mut ModelVersion,
) -> Result<(), TrainError> {
    for path in [&task.policy_data, &task.value_data] {
        version.data.push(DataFile {
            path: path.clone(),
            records: count_records(path)?,
        });
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::Data {
        path: out.to_owned(),
        reason: format!("cannot create the version's folder: {e}"),
    })?;
    store.put_model_version(version).await?;
    // Each stage starts once those it waits for are done; the first failure ends the
    // round, and dropping the stages still running kills their commands.
    let mut done = BTreeSet::new();
    let mut waiting: Vec<usize> = (0..config.stages.len()).collect();
    let mut running = FuturesUnordered::new();
    loop {
        waiting.retain(|&i| {
            let stage = &config.stages[i];
            let ready = stage
                .waits_for(&config.stages[..i])
                .iter()
                .all(|name| done.contains(*name));
            if ready {
                running.push(async move {
                    let started = std::time::Instant::now();
                    (stage, started, command::run(stage, values).await)
                });
            }
            !ready
        });
        let Some((stage, started, result)) = running.next().await else {
            break;
        };
        version.stages.push(StageReport {
            name: stage.name.clone(),
            seconds: started.elapsed().as_secs_f64(),
            exit_code: result.as_ref().ok().and_then(|f| f.exit_code),
        });
        result?;
        done.insert(stage.name.as_str());
        store.put_model_version(version).await?;
    }
    for dir in [&version.policy, &version.value] {
        if !dir.join("manifest.json").is_file() {
            return Err(TrainError::NoModel(dir.clone()));
        }
    }
    Ok(())
}
