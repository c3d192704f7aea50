//! Commands that need no services: config and dataset checks, the synthetic
//! benchmark, offline labelling.
use crate::cli::{ConfigCommand, DataCommand, LabelArgs, WarmupArgs};
use anyhow::{bail, Result};
use tsst_actors::{llm::Generation, warmup};
use tsst_datasets::synth::{self, SynthOptions};
use tsst_labels::{write_records, DatasetOptions, OutputFormat};

pub fn config(command: ConfigCommand) -> Result<()> {
    let ConfigCommand::Check { files } = command;
    let mut bad = 0;
    for file in &files {
        match tsst_config::check_file_with_warnings(file) {
            Ok((kind, warnings)) => {
                println!("ok    {} ({kind:?})", file.display());
                for w in warnings {
                    println!("      warning: {w}");
                }
            }
            Err(e) => {
                bad += 1;
                println!("error {e}");
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} config files are invalid", files.len());
    }
    Ok(())
}

pub fn data(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Check {
            source,
            root,
            split,
        } => {
            let report = tsst_datasets::check(source, &root, split.as_deref())?;
            show(&report);
            Ok(())
        }
        DataCommand::Synth(args) => {
            let summary = synth::generate(&SynthOptions {
                out: args.out,
                n: args.n,
                seed: args.seed,
                difficulty: args.difficulty,
                splits: args.splits,
                ..SynthOptions::default()
            })?;
            show(&summary);
            Ok(())
        }
    }
}

pub fn label(args: LabelArgs) -> Result<()> {
    let mut offline = tsst_labels::OfflineArgs::new(args.input, args.value_out, args.policy_out);
    offline.k = args.k;
    offline.image_root = args.image_root;
    offline.jsonl = args.jsonl;
    let report = tsst_labels::run_offline(&offline)?;
    show(&report);
    Ok(())
}

/// Prints a report, ending it with exactly one newline whatever its Display does.
pub fn show(report: &impl std::fmt::Display) {
    println!("{}", report.to_string().trim_end());
}

/// `tsst warmup`.
pub async fn warmup(args: WarmupArgs) -> Result<()> {
    let config = tsst_config::EvalConfig::load(&args.config)?;
    let root = &config.dataset_root;
    let loaded = tsst_datasets::load(config.dataset_name, root, &args.split)?;
    for bad in &loaded.bad {
        tracing::warn!("skipping bad record {bad}");
    }
    let options = DatasetOptions {
        image_root: Some(root.canonicalize().unwrap_or_else(|_| root.clone())),
        ..DatasetOptions::default()
    };
    let grounded = root.join(tsst_datasets::synth::META_FILE).exists();
    let w = if grounded {
        warmup::from_rationales(&loaded.questions, &options)?
    } else {
        let Some(llm) = crate::services::llm(args.llm.as_deref())? else {
            bail!(
                "{} has no grounded chains: give --llm config/llm_verifier_config.yaml to have the endpoint write them",
                root.display()
            );
        };
        let generation = warmup_generation(&args)?;
        warmup::from_llm(&loaded.questions, &llm, args.samples, generation, &options).await?
    };
    std::fs::create_dir_all(&args.out)?;
    write_records(
        &args.out.join("warmup_policy.json"),
        &w.policy,
        OutputFormat::JsonArray,
    )?;
    write_records(
        &args.out.join("warmup_value.json"),
        &w.value,
        OutputFormat::JsonArray,
    )?;
    println!(
        "{} questions ({}): {} chains kept, {}, {} unanswered; wrote {}: warmup_policy.json ({} records), warmup_value.json ({} records)",
        w.questions,
        if grounded { "grounded chains" } else { "LLM chains" },
        w.kept,
        w.dropped,
        w.unanswered.len(),
        args.out.display(),
        w.policy.len(),
        w.value.len()
    );
    for (q, reason) in w.unanswered.iter().take(10) {
        println!("  unanswered {q}: {reason}");
    }
    let asked = w.kept + w.dropped.total() + w.unanswered.len();
    if w.kept == 0 {
        bail!("no chain was kept out of {asked}: {}", warmup_hint(&w));
    }
    if w.kept * 4 < asked {
        tracing::warn!(
            "only {} of {asked} chains were kept: {}",
            w.kept,
            warmup_hint(&w)
        );
    }
    Ok(())
}

/// The chains' generation settings: the flags, checked.
fn warmup_generation(args: &WarmupArgs) -> Result<Generation> {
    let temperature = args
        .temperature
        .unwrap_or(if args.samples > 1 { 0.7 } else { 0.0 });
    if !(temperature.is_finite() && temperature >= 0.0) {
        bail!("--temperature {temperature} must be a number >= 0");
    }
    if args.samples > 1 && temperature == 0.0 {
        bail!(
            "--samples {} at --temperature 0 asks for {} identical greedy chains: give a temperature above 0",
            args.samples,
            args.samples
        );
    }
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    Ok(Generation {
        max_tokens: args.max_new_tokens,
        temperature,
    })
}

/// What to change, judging from the largest cause of loss.
fn warmup_hint(w: &warmup::Warmup) -> String {
    let d = &w.dropped;
    let causes = [
        (
            d.cut_at_length,
            "chains were cut at the token budget: raise --max-new-tokens",
        ),
        (
            d.no_final_answer,
            "chains ended without \"Final Answer:\": check the endpoint's model follows the prompt",
        ),
        (d.wrong, "final answers were wrong: try more --samples"),
        (d.undecided, "final answers named no option"),
        (w.unanswered.len(), "requests failed: check the endpoint"),
    ];
    let (n, why) = causes.iter().max_by_key(|(n, _)| *n).expect("non-empty");
    format!("{n} {why}")
}
