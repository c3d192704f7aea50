//! The distributed-mode commands that talk to the store: enqueue, results, status,
//! tree show.
use crate::cli::{EnqueueArgs, ResultsArgs, ServiceArgs, StatusArgs, TreeShowArgs};
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
    let snapshot = match Snapshot::prepare(&d).await {
        Ok(()) => Snapshot::take(&d, management.as_ref(), Some(&args.runs)).await,
        Err(e) => Err(e),
    };
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

pub async fn tree_show(args: TreeShowArgs, services: &ServiceArgs) -> Result<()> {
    use tsst_actors::store::{Store, TreeRef};
    let d = services.require("tree show", "tsst-tree").await?;
    let found = async {
        let questions = d.store.questions(&args.run).await?;
        let question = questions
            .into_iter()
            .find(|q| q.id == args.question)
            .with_context(|| format!("run {} has no question {}", args.run, args.question))?;
        let tree = d
            .store
            .tree(&TreeRef::new(&args.run, &args.question))
            .await?;
        anyhow::Ok((question, tree))
    }
    .await;
    d.broker.close().await;
    let (question, tree) = found?;
    let shape = crate::tree_view::Shape::new(&tree)
        .with_context(|| format!("{}/{}: the tree has no root", args.run, args.question))?;
    println!(
        "{} / {}: {} (round {}, {}{}{})",
        args.run,
        question.id,
        question.question,
        tree.state.round,
        tree.state.status.name(),
        tree.error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        if tree.state.restarts > 0 {
            format!(", {} restarts", tree.state.restarts)
        } else {
            String::new()
        }
    );
    print!("{}", shape.text());
    let title = format!("{} / {}: {}", args.run, question.id, question.question);
    let svg = shape.svg(&title);
    if let Some(path) = &args.svg {
        std::fs::write(path, &svg).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.html {
        let choices: String = question
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| format!("<li>({}) {}</li>", (b'A' + i as u8) as char, html_escape(c)))
            .collect();
        let page = format!(
            "<!doctype html><meta charset=\"utf-8\"><title>{t}</title>\
             <h1>{t}</h1><ol type=\"A\">{choices}</ol><p>correct: ({})</p>{svg}",
            (b'A' + question.answer as u8) as char,
            t = html_escape(&title),
        );
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
