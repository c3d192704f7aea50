//! `tsst run` and `tsst demo`: a config's runs from start to results.
use crate::cli::{DemoArgs, RunArgs, ServiceArgs};
use crate::commands::worker::{batch_settings, role_specs, shutdown_signal};
use crate::runs::{self, PlannedRun};
use crate::services;
use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tsst_actors::broker::{Broker, MemoryBroker};
use tsst_actors::pipeline::{enqueue_with_failures, follow, results, training_records};
use tsst_actors::runtime::Worker;
use tsst_actors::store::{MemoryStore, Store};
use tsst_datasets::synth::{self, SynthOptions};
use tsst_labels::{write_records, OutputFormat, RunMetrics};
use tsst_messages::results::{QuestionResult, QuestionStatus};
use tsst_messages::Role;

pub async fn run(args: RunArgs, services: &ServiceArgs) -> Result<()> {
    let config = tsst_config::EvalConfig::load(&args.config)?;
    let missing = config.missing_models();
    if services.embedded() && !missing.is_empty() {
        // This process loads the models: a missing one would fail every question
        // after its retries, so say which field names it before anything runs.
        let lines: Vec<String> = missing.iter().map(|i| format!("  {i}")).collect();
        bail!(
            "{}: no exported model where the config says:\n{}",
            args.config.display(),
            lines.join("\n")
        );
    }
    for issue in &missing {
        tracing::warn!(
            "{}: {}",
            args.config.display(),
            tsst_config::missing_here(issue)
        );
    }
    let plan = runs::plan_config(config, &args.config, args.run.as_deref(), 1)?;
    if args.dry_run {
        print!("{}", plan.describe());
        return plan.check();
    }
    plan.check()?;
    let runs::Plan {
        config,
        runs: planned,
        ..
    } = plan;
    if services.embedded() {
        let mut worker_config =
            services::worker_config(args.worker_config.as_deref(), args.device.as_deref())?;
        if args.ort_lib.is_some() {
            worker_config.ort_dylib_path = args.ort_lib.clone();
        }
        let (store, broker) = (MemoryStore::new(), MemoryBroker::new());
        let llm = services::llm(args.verifier.as_deref())?;
        let ctx = Arc::new(services::context(
            store.clone(),
            broker.clone(),
            &worker_config,
            llm,
        ));
        let roles = role_specs(
            &worker_config,
            &[Role::Generator, Role::Scorer, Role::Verifier, Role::Labeler],
        );
        // The config's batch_size is the batch of the in-process workers unless --batch
        // says otherwise; a cluster's workers take theirs from their worker config.
        let batch = batch_settings(&worker_config, args.batch.or(Some(config.batch_size)));
        let mut worker = Worker::start(ctx, &roles, batch);
        // A role that stops (its endpoint rejects every request) would leave the run
        // waiting forever: stop with its reason instead.
        let outcome = tokio::select! {
            outcome = run_all(&store, &broker, planned, &args.out, args.quiet, shutdown_signal()) => outcome,
            reason = worker.any_stopped() => Err(anyhow::anyhow!("a role stopped: {reason}")),
        };
        worker.shutdown().await;
        outcome
    } else {
        let d = services.connect("tsst-run").await?;
        let outcome = run_all(
            &d.store,
            &d.broker,
            planned,
            &args.out,
            args.quiet,
            shutdown_signal(),
        )
        .await;
        d.broker.close().await;
        outcome
    }
}

/// Runs each planned run to its end and writes its outputs. On `stop` (Ctrl-C or
/// SIGTERM) the run under way writes what has finished so far, its unfinished
/// questions as `pending`, and the command fails saying so: an interrupted run keeps
/// its finished work (an embedded run's store lives only in this process).
async fn run_all<S: Store, B: Broker>(
    store: &S,
    broker: &B,
    planned: Vec<PlannedRun>,
    out: &Path,
    quiet: bool,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut stop = std::pin::pin!(stop);
    let mut failed = Vec::new();
    for PlannedRun {
        record,
        questions,
        failed: unloadable,
    } in planned
    {
        let started = Instant::now();
        let e = enqueue_with_failures(store, broker, &record, &questions, &unloadable).await?;
        tracing::info!(run = %record.run, questions = e.questions, published = e.published, "enqueued");
        let bar = progress_bar(&record.run, e.questions as u64, quiet);
        // Without a bar to show it (--quiet, or stderr not a terminal), progress goes
        // to the log.
        let log_progress = bar.is_hidden();
        let mut logged = ProgressLog::default();
        let interrupted = tokio::select! {
            p = follow(store, &record.run, Duration::from_millis(100), |p| {
                bar.set_position(u64::from(p.done));
                if p.failed > 0 {
                    bar.set_message(format!("{} failed", p.failed));
                }
                if log_progress {
                    logged.note(&record.run, p);
                }
            }) => {
                p?;
                false
            }
            () = &mut stop => true,
        };
        bar.finish_and_clear();
        let res = results(store, &record.run).await?;
        let folder = out.join(&record.run);
        let metrics = RunMetrics::compute(&res);
        let written = write_outputs(store, &folder, &record.run, &res, &metrics).await?;
        print_summary(&record.run, &res, &metrics, started.elapsed());
        println!("{written}");
        if interrupted {
            bail!(
                "interrupted after {:.0} s: {} of {} questions of run {} had finished; \
                 they are in {} (the others with status \"pending\")",
                started.elapsed().as_secs_f64(),
                finished(&res).count(),
                res.len(),
                record.run,
                folder.display()
            );
        }
        failed.extend(
            res.iter()
                .filter(|r| r.status == QuestionStatus::Failed)
                .map(|r| {
                    format!(
                        "{}/{}: {}",
                        r.run,
                        r.question_id,
                        r.error.as_deref().unwrap_or("no reason recorded")
                    )
                }),
        );
    }
    if let Some(first) = failed.first() {
        // The results are written; the command still reports that work failed.
        bail!(
            "{} question(s) failed (status \"failed\" in results.jsonl); first: {first}",
            failed.len()
        );
    }
    Ok(())
}

/// Without a progress bar, a log line when questions finish, at most every
/// 10 s and always for the last: a run in the background shows how far it got.
#[derive(Default)]
struct ProgressLog {
    last: Option<Instant>,
}

impl ProgressLog {
    fn note(&mut self, run: &str, p: tsst_actors::store::Progress) {
        if p.done == 0 && !p.complete() {
            return;
        }
        if !p.complete()
            && self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        self.last = Some(Instant::now());
        tracing::info!(
            run,
            done = p.done,
            failed = p.failed,
            total = p.total,
            "questions finished"
        );
    }
}

fn progress_bar(run: &str, total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} questions {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(run.to_owned());
    bar
}

/// Writes a run's results, its metrics and training data into `folder`; returns a
/// line saying what was written.
async fn write_outputs<S: Store>(
    store: &S,
    folder: &Path,
    run: &str,
    results: &[QuestionResult],
    metrics: &RunMetrics,
) -> Result<String> {
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    let path = folder.join("results.jsonl");
    let mut text = String::new();
    for r in results {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let path = folder.join("metrics.json");
    let json = serde_json::to_string_pretty(&metrics.to_json())?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    let (dplus, dv) = write_datasets(store, folder, run).await?;
    Ok(format!(
        "wrote {}: results.jsonl, metrics.json, dplus.json ({dplus} policy records), dv.json ({dv} value records)",
        folder.display()
    ))
}

/// Writes D+ (`dplus.json`) and Dv (`dv.json`) of a run; returns their record counts.
pub async fn write_datasets<S: Store>(
    store: &S,
    folder: &Path,
    run: &str,
) -> Result<(usize, usize)> {
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    let (dplus, dv) = training_records(store, run).await?;
    write_records(&folder.join("dplus.json"), &dplus, OutputFormat::JsonArray)?;
    write_records(&folder.join("dv.json"), &dv, OutputFormat::JsonArray)?;
    Ok((dplus.len(), dv.len()))
}

/// The questions whose work is over (done or failed); metrics count the others apart.
fn finished(results: &[QuestionResult]) -> impl Iterator<Item = &QuestionResult> {
    results
        .iter()
        .filter(|r| r.status != QuestionStatus::Pending)
}

fn print_summary(run: &str, results: &[QuestionResult], metrics: &RunMetrics, took: Duration) {
    let over: Vec<&QuestionResult> = finished(results).collect();
    let solutions: usize = over.iter().map(|r| r.solutions.len()).sum();
    let rounds: u32 = over.iter().map(|r| r.rounds).sum();
    let questions = if over.len() == results.len() {
        format!("{} questions", results.len())
    } else {
        format!("{} of {} questions finished", over.len(), results.len())
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "run {run}: {questions}, {solutions} solutions, {:.1} rounds per question, {:.1}s",
        f64::from(rounds) / over.len().max(1) as f64,
        took.as_secs_f64()
    );
    let _ = writeln!(out, "{}", metrics.to_string().trim_end());
}

/// Generates the synthetic benchmark where the demo configs expect it, fetches the
/// ONNX Runtime library when a model needs it and none is installed, then runs the
/// direct config and the beam config and compares them.
pub async fn demo(args: DemoArgs, services: &ServiceArgs) -> Result<()> {
    let configs = [&args.direct, &args.config];
    let mut ort_lib = None;
    for path in configs {
        let config = tsst_config::EvalConfig::load(path)?;
        let root = &config.dataset_root;
        if !root
            .join(tsst_datasets::aokvqa::annotations_file(&config.data_subset))
            .exists()
        {
            println!(
                "generating {} synthetic questions ({}) in {}",
                args.n,
                args.difficulty,
                root.display()
            );
            let summary = synth::generate(&SynthOptions {
                out: root.clone(),
                n: args.n,
                seed: config.seed,
                difficulty: args.difficulty,
                ..SynthOptions::default()
            })?;
            tracing::info!("{summary}");
        }
        let needs_ort = config.active_models().any(|m| {
            [Some(&m.policy_model), m.value_model.as_ref()]
                .into_iter()
                .flatten()
                .any(|r| matches!(r, tsst_config::ModelRef::Path(_)))
        });
        if needs_ort && ort_lib.is_none() {
            ort_lib = ensure_ort()?;
        }
    }
    let mut lines = Vec::new();
    for path in configs {
        run(
            RunArgs {
                config: path.clone(),
                run: None,
                out: args.out.clone(),
                worker_config: None,
                batch: None,
                quiet: false,
                verifier: None,
                device: None,
                ort_lib: ort_lib.clone(),
                dry_run: false,
            },
            services,
        )
        .await?;
        for planned in runs::plan(path, None, 1)?.runs {
            let folder = args.out.join(&planned.record.run);
            let text = std::fs::read_to_string(folder.join("metrics.json"))
                .with_context(|| format!("reading {}", folder.join("metrics.json").display()))?;
            let m: serde_json::Value = serde_json::from_str(&text)?;
            let overall = &m["overall"];
            let get = |k: &str| overall[k].as_f64().unwrap_or(f64::NAN);
            lines.push((planned.record.run, get("greedy"), get("voting"), folder));
        }
    }
    println!("\ndemo: accuracy on the held-out questions (chance 0.25 with four options)");
    for (run, greedy, voting, _) in &lines {
        println!("  {run:<24} {greedy:.3} (majority vote {voting:.3})");
    }
    if let [(direct, d, ..), (beam, b, _, folder), ..] = &lines[..] {
        println!(
            "  {beam} - {direct}: {:+.1} points; the next round's training data: {}/dplus.json and dv.json",
            100.0 * (b - d),
            folder.display()
        );
    }
    Ok(())
}

/// An installed ONNX Runtime library, or `tools/fetch-ort.sh` run to install one (the
/// PyPI wheel, into the ignored `.ort/`), so that a newcomer's first command works.
fn ensure_ort() -> Result<Option<PathBuf>> {
    if tsst_models::ort_lib::candidates(None, false)
        .iter()
        .any(|p| p.exists())
    {
        return Ok(None);
    }
    let script = Path::new("tools/fetch-ort.sh");
    if !script.exists() {
        anyhow::bail!(
            "the ONNX Runtime library is not installed and {} is not here: run from the repository root, or set ORT_DYLIB_PATH",
            script.display()
        );
    }
    println!("fetching the ONNX Runtime library (onnxruntime==1.31.1 from PyPI)");
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .context("running tools/fetch-ort.sh")?;
    if !out.status.success() {
        anyhow::bail!(
            "tools/fetch-ort.sh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(Some(PathBuf::from(path)))
}
