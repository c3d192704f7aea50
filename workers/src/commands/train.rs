//! `tsst train` (one round's training, recorded in the model registry) and `tsst
//! models` (the registry of a run).
use crate::cli::{ModelsArgs, ServiceArgs, TrainArgs};
use anyhow::{Context as _, Result};
use tsst_actors::broker::Broker;
use tsst_actors::store::Store;
use tsst_actors::train::{train_round, TrainerConfig};
use tsst_messages::{TrainTask, VersionStatus};

pub async fn train(args: TrainArgs, services: &ServiceArgs) -> Result<()> {
    let config = TrainerConfig::load(&args.config)?;
    let d = services.require("train", "tsst-train").await?;
    // The events exchange the model-published events go to (declaring is idempotent).
    d.broker
        .declare()
        .await
        .context("declaring the queues and exchanges")?;
    let task = TrainTask {
        run: args.run,
        round: args.round,
        policy_data: args.policy_data,
        value_data: args.value_data,
    };
    let version = train_round(&d.store, &d.broker, &config, &task)
        .await
        .with_context(|| format!("training round {} of {}", task.round, task.run))?;
    println!(
        "{} version {}: ready; policy {}, value {}",
        version.run,
        version.version,
        version.policy.display(),
        version.value.display()
    );
    d.broker.close().await;
    Ok(())
}

pub async fn models(args: ModelsArgs, services: &ServiceArgs) -> Result<()> {
    let d = services.require("models", "tsst-models").await?;
    let versions = d.store.model_versions(&args.run).await?;
    for v in &versions {
        if args.json {
            println!("{}", serde_json::to_string(v)?);
            continue;
        }
        let status = match &v.status {
            VersionStatus::Training => "training".to_owned(),
            VersionStatus::Ready => "ready".to_owned(),
            VersionStatus::Failed { reason } => format!("failed: {reason}"),
        };
        let records: Vec<String> = v.data.iter().map(|f| f.records.to_string()).collect();
        println!(
            "v{} parent {} records {} {} policy {}",
            v.version,
            v.parent.map_or("-".to_owned(), |p| format!("v{p}")),
            records.join("/"),
            status,
            v.policy.display()
        );
    }
    if versions.is_empty() {
        println!("no model versions for run {}", args.run);
    }
    d.broker.close().await;
    Ok(())
}
