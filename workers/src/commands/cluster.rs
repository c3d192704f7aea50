//! The distributed-mode commands that talk to the store: enqueue, results, status.
use crate::cli::{EnqueueArgs, ResultsArgs, ServiceArgs, StatusArgs};
use crate::runs;
use crate::snapshot::Snapshot;
use anyhow::{Context as _, Result};
use std::io::Write;
use tsst_actors::pipeline::{enqueue_with_failures as enqueue_run, results as run_results};
use tsst_labels::RunMetrics;

pub async fn enqueue(args: EnqueueArgs, services: &ServiceArgs) -> Result<()> {
    let plan = runs::plan(&args.config, args.run.as_deref(), args.shards)?;
    if args.dry_run {
        print!("{}", plan.describe());
        return plan.check();
    }
    plan.check()?;
    let d = services.require("enqueue", "tsst-enqueue").await?;
    for run in plan.runs {
        let e = enqueue_run(
            &d.store,
            &d.broker,
            &run.record,
            &run.questions,
            &run.failed,
        )
        .await?;
        println!(
            "{}: {} questions, {} ({} tasks published)",
            run.record.run,
            e.questions,
            if e.new_run {
                "enqueued"
            } else {
                "already enqueued, resumed"
            },
            e.published
        );
    }
    d.broker.close().await;
    Ok(())
}

pub async fn results(args: ResultsArgs, services: &ServiceArgs) -> Result<()> {
    let d = services.require("results", "tsst-results").await?;
    let res = run_results(&d.store, &args.run).await?;
    if let Some(dir) = &args.datasets {
        let (dplus, dv) = super::run::write_datasets(&d.store, dir, &args.run).await?;
        eprintln!(
            "wrote {}: dplus.json ({dplus} policy records), dv.json ({dv} value records)",
            dir.display()
        );
    }
    d.broker.close().await;
    if args.summary {
        super::local::show(&RunMetrics::compute(&res));
        return Ok(());
    }
    let mut text = String::new();
    for r in &res {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}

pub async fn status(args: StatusArgs, services: &ServiceArgs) -> Result<()> {
    let management = args.management.client(services)?;
    let d = services.require("status", "tsst-status").await?;
    let snapshot = Snapshot::take(&d, management.as_ref(), Some(&args.runs)).await;
    d.broker.close().await;
    let snapshot = snapshot?;
    if let Some(run) = snapshot.unknown_runs.first() {
        anyhow::bail!("no run `{run}` in the store (tsst status lists them all)");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", snapshot.render());
    }
    Ok(())
}
