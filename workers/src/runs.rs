//! From an eval config to the runs it asks for: one per active model entry, each with
//! the questions its dataset selection gives.
use anyhow::{bail, Context as _, Result};
use std::num::NonZeroUsize;
use std::path::Path;
use tsst_config::EvalConfig;
use tsst_datasets::{Selected, Selection};
use tsst_messages::{DatasetSpec, LabelSpec, Question, RunRecord, SearchSpec};

pub struct PlannedRun {
    pub record: RunRecord,
    pub questions: Vec<Question>,
}

/// The runs of a config. `run` names them (default: the config's file name); with
/// several active models each run is `<run>-<tag>`; with shards, `-s<i>of<n>` follows.
pub fn plan(
    config_path: &Path,
    run: Option<&str>,
    shards: usize,
) -> Result<(EvalConfig, Vec<PlannedRun>)> {
    let config = EvalConfig::load(config_path)?;
    for warning in config.warnings() {
        tracing::warn!("{}: {warning}", config_path.display());
    }
    let base = match run {
        Some(r) => r.to_owned(),
        None => config_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into()),
    };
    // Absolute, so workers on other machines with the same mount and the labeler's
    // relative image paths agree on what it means.
    let root = config
        .dataset_root
        .canonicalize()
        .unwrap_or_else(|_| config.dataset_root.clone());
    let dataset = DatasetSpec {
        source: config.dataset_name,
        root,
        split: config.data_subset.clone(),
        partition: config.data_partition.map(|p| p.to_string()),
        sample_size: config.sample_size,
    };
    let questions = load_questions(&config, &dataset)?;
    let active: Vec<_> = config.active_models().collect();
    if active.is_empty() {
        bail!("{}: no model has run_flag: true", config_path.display());
    }
    let shards = NonZeroUsize::new(shards).context("--shards must be at least 1")?;
    let mut runs = Vec::new();
    for model in &active {
        let name = if active.len() == 1 && run.is_some() {
            base.clone()
        } else {
            format!("{base}-{}", model.tag)
        };
        let parts = tsst_datasets::shard(questions.clone(), shards);
        for (i, part) in parts.into_iter().enumerate() {
            let run = if shards.get() == 1 {
                name.clone()
            } else {
                format!("{name}-s{i}of{shards}")
            };
            if part.is_empty() {
                tracing::warn!(run, "shard has no questions; skipped");
                continue;
            }
            tsst_messages::validate_run_id(&run).map_err(anyhow::Error::msg)?;
            runs.push(PlannedRun {
                record: RunRecord {
                    run,
                    search: absolute_models(config.search_spec(model)),
                    dataset: dataset.clone(),
                    labels: LabelSpec {
                        dplus_per_question: config.dplus_per_question,
                    },
                },
                questions: part,
            });
        }
    }
    Ok((config, runs))
}

/// The config's selection from its dataset split.
pub fn select(config: &EvalConfig, dataset: &DatasetSpec) -> Result<Selected> {
    let selection = Selection {
        split: dataset.split.clone(),
        partition: dataset.partition.clone(),
        sample_size: dataset.sample_size,
        seed: config.seed,
    };
    tsst_datasets::load_selection(dataset.source, &dataset.root, &selection)
        .with_context(|| format!("loading {} from {}", dataset.source, dataset.root.display()))
}

fn load_questions(config: &EvalConfig, dataset: &DatasetSpec) -> Result<Vec<Question>> {
    let loaded = select(config, dataset)?;
    for bad in &loaded.failed {
        tracing::warn!(source = %dataset.source, "selected record {bad}; not run");
    }
    if loaded.questions.is_empty() {
        bail!(
            "no usable questions in {} split {} of {}",
            dataset.source,
            dataset.split,
            dataset.root.display()
        );
    }
    Ok(loaded.questions)
}

/// Model directories as absolute paths where they exist here, so that workers started
/// in another directory (with the same mounts) load the same models.
fn absolute_models(mut spec: SearchSpec) -> SearchSpec {
    spec.policy_model = absolute_dir(&spec.policy_model);
    spec.value_model = spec.value_model.as_deref().map(absolute_dir);
    spec
}

fn absolute_dir(name: &str) -> String {
    std::fs::canonicalize(name)
        .ok()
        .filter(|p| p.is_dir())
        .map_or_else(|| name.to_owned(), |p| p.display().to_string())
}
