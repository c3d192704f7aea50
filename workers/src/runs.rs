//! From an eval config to the runs it asks for: one per active model entry, each with
//! the questions its dataset selection gives.
use anyhow::{bail, Context as _, Result};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::Path;
use tsst_config::EvalConfig;
use tsst_datasets::{Selected, Selection};
use tsst_messages::{DatasetSpec, LabelSpec, Question, RunRecord, SearchSpec};

pub struct PlannedRun {
    pub record: RunRecord,
    /// In dataset order, with a placeholder for each selected record that failed to
    /// load (see `failed`).
    pub questions: Vec<Question>,
    /// The placeholders' ids and why their records failed to load: they are failed
    /// questions of the run, not searched.
    pub failed: HashMap<String, String>,
}

impl PlannedRun {
    /// Questions that will be searched.
    pub fn runnable(&self) -> usize {
        self.questions.len() - self.failed.len()
    }
}

/// What a config asks for: its runs and what its selection took from the split (the
/// questions themselves are in the runs).
pub struct Plan {
    pub config: EvalConfig,
    pub runs: Vec<PlannedRun>,
    pub selected: Selected,
}

/// The runs of a config. `run` names them (default: the config's file name); with
/// several active models each run is `<run>-<tag>`; with shards, `-s<i>of<n>` follows.
pub fn plan(config_path: &Path, run: Option<&str>, shards: usize) -> Result<Plan> {
    plan_config(EvalConfig::load(config_path)?, config_path, run, shards)
}

/// [`plan`] of a config already loaded from `config_path` (what a caller checks before
/// the dataset is read).
pub fn plan_config(
    config: EvalConfig,
    config_path: &Path,
    run: Option<&str>,
    shards: usize,
) -> Result<Plan> {
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
    let mut selected = select(&config, &dataset)?;
    let (questions, failed) = in_place(&mut selected, &dataset);
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
                // No questions at all is `Plan::check`'s error; an empty shard is not.
                if questions.len() > failed.len() {
                    tracing::warn!(run, "shard has no questions; skipped");
                }
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
                        verifier: config.verifier,
                    },
                },
                failed: part
                    .iter()
                    .filter_map(|q| Some((q.id.clone(), failed.get(&q.id)?.clone())))
                    .collect(),
                questions: part,
            });
        }
    }
    Ok(Plan {
        config,
        runs,
        selected,
    })
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

/// Takes the questions out of the selection in dataset order, a placeholder in the
/// place of each record that failed to load, with the placeholders' reasons.
fn in_place(
    selected: &mut Selected,
    dataset: &DatasetSpec,
) -> (Vec<Question>, HashMap<String, String>) {
    let mut loaded: HashMap<String, Question> = std::mem::take(&mut selected.questions)
        .into_iter()
        .map(|q| (q.id.clone(), q))
        .collect();
    let mut failed = HashMap::new();
    for bad in &selected.failed {
        tracing::warn!(source = %dataset.source, "selected record {bad}; it fails in the results");
        failed.insert(bad.id.clone(), bad.reason.clone());
    }
    let questions = selected
        .ids
        .iter()
        .map(|id| {
            loaded
                .remove(id)
                .unwrap_or_else(|| tsst_actors::pipeline::unloadable(dataset.source, id))
        })
        .collect();
    (questions, failed)
}

impl Plan {
    /// An error when the selection left nothing to run.
    pub fn check(&self) -> Result<()> {
        if self.runs.iter().all(|r| r.runnable() == 0) {
            let s = &self.selected;
            bail!(
                "no usable questions in {} split {} of {}: {} selected, {} failed to load{}",
                self.config.dataset_name,
                self.config.data_subset,
                self.config.dataset_root.display(),
                s.ids.len(),
                s.failed.len(),
                s.failed
                    .first()
                    .map_or_else(String::new, |b| format!(" (first: {b})"))
            );
        }
        Ok(())
    }

    /// The dry run's report: the split's counts, each run's size, and every selected
    /// id in order with its index in the dataset order.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let s = &self.selected;
        let mut out = format!(
            "dry run: nothing queued\n{} split {}: {} records, {} bad; selected {} ({} to run, {} failed to load)",
            c.dataset_name,
            c.data_subset,
            s.split_records,
            s.split_bad.len(),
            s.ids.len(),
            s.ids.len() - s.failed.len(),
            s.failed.len()
        );
        let how = [
            c.data_partition.map(|p| format!("data_partition {p}")),
            c.sample_size.map(|n| format!("sample_size {n}")),
            Some(format!("seed {}", c.seed)),
        ];
        out.push_str(&format!(
            " by {}\n",
            how.into_iter().flatten().collect::<Vec<_>>().join(", ")
        ));
        for run in &self.runs {
            out.push_str(&format!(
                "run {}: {} questions\n",
                run.record.run,
                run.runnable()
            ));
        }
        let failed: std::collections::HashMap<&str, &str> = s
            .failed
            .iter()
            .map(|b| (b.id.as_str(), b.reason.as_str()))
            .collect();
        out.push_str("index\tid\n");
        for (pos, id) in s.positions.iter().zip(&s.ids) {
            match failed.get(id.as_str()) {
                Some(reason) => out.push_str(&format!("{pos}\t{id}\tnot run: {reason}\n")),
                None => out.push_str(&format!("{pos}\t{id}\n")),
            }
        }
        out
    }
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
