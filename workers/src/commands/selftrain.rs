//! `tsst selftrain`: the whole TSST loop as one resumable command.
//!
//! Round 0: warm-up data (`tsst warmup`) and training from the trainer config's base
//! models. Round r >= 1: beam search over the training split with version r-1 (a
//! `tsst run` of a config written for that round), whose D+ and Dv train version r.
//! Every version is evaluated with each `--eval` config. Stages are recorded in
//! `<out>/selftrain.json` as they finish (written atomically, with the model
//! registry's records), so a command killed anywhere and started again repeats only
//! the stage it was in. `<out>/report.json`, `<out>/report.md` and `<out>/report.svg`
//! hold the metrics of every round; `tsst report <out>` prints the table.
use crate::cli::{EvalArgs, RunArgs, RunsArgs, SelftrainArgs, ServiceArgs, WarmupArgs};
use crate::commands::{local, run};
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use tsst_actors::broker::{Broker, MemoryBroker};
use tsst_actors::store::{MemoryStore, Store};
use tsst_actors::train::{train_round, TrainerConfig};
use tsst_config::{EvalConfig, ModelRef};
use tsst_messages::{ModelVersion, Partition, TrainTask};

/// What `<out>/selftrain.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Finished stages, in order (`r0/warmup`, `r0/train`, `r0/eval/<config>`, ...).
    done: Vec<String>,
    /// The model registry of an embedded run (a cluster's is in Redis).
    versions: Vec<ModelVersion>,
}

impl State {
    fn load(path: &Path) -> Result<State> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: not a self-training state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    fn is_done(&self, stage: &str) -> bool {
        self.done.iter().any(|s| s == stage)
    }
}

struct Loop<'a> {
    args: &'a SelftrainArgs,
    services: &'a ServiceArgs,
    name: String,
    config: EvalConfig,
    trainer: TrainerConfig,
    state_path: PathBuf,
    state: State,
}

pub async fn selftrain(args: SelftrainArgs, services: &ServiceArgs) -> Result<()> {
    let config = EvalConfig::load(&args.config)?;
    if config.active_models().count() != 1 {
        bail!(
            "{}: self-training needs exactly one model with run_flag: true",
            args.config.display()
        );
    }
    for eval in &args.evals {
        EvalConfig::load(eval)?;
    }
    let trainer = TrainerConfig::load(&args.trainer)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let state_path = args.out.join("selftrain.json");
    let name = args.name.clone().unwrap_or_else(|| stem(&args.config));
    let mut l = Loop {
        args: &args,
        services,
        name,
        config,
        trainer,
        state: State::load(&state_path)?,
        state_path,
    };
    if !l.state.done.is_empty() {
        println!(
            "resuming {}: {} stages done before",
            l.name,
            l.state.done.len()
        );
    }
    for round in 0..=args.rounds {
        match (round, &args.warm_start) {
            (0, Some(models)) => l.adopt(&models[0], &models[1]).await?,
            (0, None) => {
                let (policy_data, value_data) = l.warmup().await?;
                l.train(0, policy_data, value_data).await?;
            }
            _ => {
                let (policy_data, value_data) = l.search(round).await?;
                l.train(round, policy_data, value_data).await?;
            }
        }
        for eval in &args.evals {
            l.evaluate(round, eval).await?;
        }
        l.report()?;
    }
    println!(
        "{}: {} rounds done; report in {}",
        l.name,
        args.rounds,
        args.out.join("report.md").display()
    );
    Ok(())
}

/// Round `round`'s questions under `--fresh-questions`: the `round`-th block (from 1)
/// of the config's partition size, starting at the partition's first question.
fn fresh_block(config: &EvalConfig, round: u32) -> Result<Partition> {
    let first = config.data_partition.with_context(|| {
        "--fresh-questions needs a data_partition in the search config (the first round's questions)"
    })?;
    let len = first.len();
    let start = first.start + len * (round as usize - 1);
    Ok(Partition {
        start,
        end: start + len - 1,
    })
}

/// `tsst report`: the run's table.
pub fn report(out: &Path) -> Result<()> {
    let path = out.join("report.md");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is {} a tsst selftrain --out folder?)",
            path.display(),
            out.display()
        )
    })?;
    print!("{text}");
    Ok(())
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "selftrain".into())
}

impl Loop<'_> {
    fn round_dir(&self, round: u32) -> PathBuf {
        self.args.out.join(format!("r{round}"))
    }

    /// Whether `stage` was done before (then it is skipped).
    fn skip(&self, stage: &str) -> bool {
        let done = self.state.is_done(stage);
        if done {
            tracing::info!(stage, "done before; skipped");
        } else {
            tracing::info!(stage, "starting");
        }
        done
    }

    /// Records `stage` as done.
    fn finish(&mut self, stage: &str) -> Result<()> {
        self.state.done.push(stage.to_owned());
        self.state.save(&self.state_path)
    }

    async fn warmup(&mut self) -> Result<(PathBuf, PathBuf)> {
        let out = self.round_dir(0);
        let stage = "r0/warmup";
        if !self.skip(stage) {
            local::warmup(WarmupArgs {
                config: self.args.config.clone(),
                split: "train".into(),
                llm: self.args.runs.verifier.clone(),
                samples: 1,
                max_new_tokens: 768,
                temperature: None,
                out: out.clone(),
            })
            .await
            .with_context(|| format!("stage {stage}"))?;
            self.finish(stage)?;
        }
        Ok((
            out.join("warmup_policy.json"),
            out.join("warmup_value.json"),
        ))
    }

    /// Beam search over the training split with the previous version.
    async fn search(&mut self, round: u32) -> Result<(PathBuf, PathBuf)> {
        let run = format!("{}-r{round}-search", self.name);
        let out = self.round_dir(round).join("search");
        let stage = format!("r{round}/search");
        if !self.skip(&stage) {
            let mut config = self.config.clone();
            config.data_subset = "train".into();
            if self.args.fresh_questions {
                config.data_partition = Some(fresh_block(&config, round)?);
            }
            let config_path = self.with_version(config, round - 1, round, &run)?;
            self.run(config_path, run.clone(), out.clone())
                .await
                .with_context(|| format!("stage {stage}"))?;
            self.finish(&stage)?;
        }
        let folder = out.join(&run);
        Ok((folder.join("dplus.json"), folder.join("dv.json")))
    }

    async fn evaluate(&mut self, round: u32, eval: &Path) -> Result<()> {
        let run = format!("{}-r{round}-{}", self.name, stem(eval));
        let stage = format!("r{round}/eval/{}", stem(eval));
        if self.skip(&stage) {
            return Ok(());
        }
        let config = EvalConfig::load(eval)?;
        let config_path = self.with_version(config, round, round, &run)?;
        self.run(config_path, run, self.round_dir(round).join("eval"))
            .await
            .with_context(|| format!("stage {stage}"))?;
        self.finish(&stage)
    }

    /// `config` with version `version`'s models, kept as `<round dir>/<run>.yaml`
    /// (what each round ran is there to read).
    fn with_version(
        &self,
        config: EvalConfig,
        version: u32,
        round: u32,
        run: &str,
    ) -> Result<PathBuf> {
        let v = self
            .state_version(version)
            .with_context(|| format!("model version {version} is not ready"))?;
        config_for(config, v, &self.round_dir(round), run)
    }

    fn state_version(&self, version: u32) -> Option<&ModelVersion> {
        self.state
            .versions
            .iter()
            .find(|v| v.version == version && v.status == tsst_messages::VersionStatus::Ready)
    }

    fn run(
        &self,
        config: PathBuf,
        run: String,
        out: PathBuf,
    ) -> impl Future<Output = Result<()>> + '_ {
        run::run(run_args(&self.args.runs, config, run, out), self.services)
    }

    /// Version 0 is `policy` and `value` as they are (`--warm-start`): registered as
    /// ready, with no parent and no data.
    async fn adopt(&mut self, policy: &Path, value: &Path) -> Result<()> {
        let stage = "r0/adopt";
        if self.skip(stage) {
            return Ok(());
        }
        let mut dirs = Vec::new();
        for dir in [policy, value] {
            if !dir.join("manifest.json").is_file() {
                bail!(
                    "--warm-start {}: not an exported model directory (no manifest.json)",
                    dir.display()
                );
            }
            dirs.push(absolute(dir));
        }
        let now = tsst_actors::store::unix_now();
        let version = ModelVersion {
            run: self.name.clone(),
            version: 0,
            parent: None,
            data: Vec::new(),
            policy: dirs[0].clone(),
            value: dirs[1].clone(),
            status: tsst_messages::VersionStatus::Ready,
            stages: Vec::new(),
            started_at: now,
            finished_at: Some(now),
        };
        if !self.services.embedded() {
            let d = self.services.connect("tsst-selftrain").await?;
            let put = d.store.put_model_version(&version).await;
            d.broker.close().await;
            put?;
        }
        self.state.versions = vec![version];
        self.state.save(&self.state_path)?;
        self.finish(stage)
    }

    /// Trains version `round` on the data; the registry is the cluster's (Redis) or,
    /// embedded, the state file's.
    async fn train(&mut self, round: u32, policy_data: PathBuf, value_data: PathBuf) -> Result<()> {
        let stage = format!("r{round}/train");
        if self.skip(&stage) {
            return Ok(());
        }
        let task = TrainTask {
            run: self.name.clone(),
            round,
            policy_data,
            value_data,
        };
        let (trained, versions) = if self.services.embedded() {
            let (store, broker) = (MemoryStore::new(), MemoryBroker::new());
            broker.declare().await?;
            for v in &self.state.versions {
                store.put_model_version(v).await?;
            }
            let trained = train_round(&store, &broker, &self.trainer, &task).await;
            (trained, store.model_versions(&self.name).await?)
        } else {
            let d = self.services.connect("tsst-selftrain").await?;
            d.broker.declare().await?;
            let trained = train_round(&d.store, &d.broker, &self.trainer, &task).await;
            let versions = d.store.model_versions(&self.name).await?;
            d.broker.close().await;
            (trained, versions)
        };
        // A failed version is recorded too, with its reason.
        self.state.versions = versions;
        self.state.save(&self.state_path)?;
        trained.with_context(|| format!("stage {stage}"))?;
        self.finish(&stage)
    }

    /// `report.json` (every round's version, data counts and metrics), `report.md` and
    /// `report.svg` (greedy accuracy per round, one line per evaluation config).
    fn report(&self) -> Result<()> {
        let mut rounds = Vec::new();
        let mut md = format!(
            "# Self-training {}\n\n| round | version | parent | D+ | Dv | metrics |\n|---|---|---|---|---|---|\n",
            self.name
        );
        for v in &self.state.versions {
            let mut metrics = serde_json::Map::new();
            let mut cells = Vec::new();
            for eval in &self.args.evals {
                let run = format!("{}-r{}-{}", self.name, v.version, stem(eval));
                let path = self
                    .round_dir(v.version)
                    .join("eval")
                    .join(&run)
                    .join("metrics.json");
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let m: serde_json::Value = serde_json::from_str(&text)?;
                let overall = &m["overall"];
                // Faithfulness where chains were checked against a scene (synthetic).
                let faithful = overall["faithful"]
                    .as_f64()
                    .map(|f| format!(", faithful {f:.3}"))
                    .unwrap_or_default();
                cells.push(format!(
                    "{}: greedy {:.3}, voting {:.3}{faithful}",
                    stem(eval),
                    overall["greedy"].as_f64().unwrap_or(f64::NAN),
                    overall["voting"].as_f64().unwrap_or(f64::NAN)
                ));
                metrics.insert(stem(eval), m);
            }
            let records: Vec<u64> = v.data.iter().map(|d| d.records).collect();
            md += &format!(
                "| {} | v{} | {} | {} | {} | {} |\n",
                v.version,
                v.version,
                v.parent.map_or("base".to_owned(), |p| format!("v{p}")),
                records.first().copied().unwrap_or(0),
                records.get(1).copied().unwrap_or(0),
                if cells.is_empty() {
                    "-".to_owned()
                } else {
                    cells.join("; ")
                }
            );
            rounds.push(serde_json::json!({
                "round": v.version, "version": v, "metrics": metrics,
            }));
        }
        std::fs::write(self.args.out.join("report.svg"), self.plot())?;
        let json = serde_json::json!({ "name": self.name, "rounds": rounds });
        std::fs::write(
            self.args.out.join("report.json"),
            serde_json::to_string_pretty(&json)?,
        )?;
        std::fs::write(self.args.out.join("report.md"), md)?;
        Ok(())
    }
}

impl Loop<'_> {
    /// An SVG line chart of each evaluation's greedy accuracy over the rounds.
    fn plot(&self) -> String {
        const W: f64 = 480.0;
        const H: f64 = 300.0;
        const PAD: f64 = 40.0;
        const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
        let rounds = self.state.versions.len().max(2) - 1;
        let x = |r: usize| PAD + (W - 2.0 * PAD) * r as f64 / rounds as f64;
        let y = |acc: f64| H - PAD - (H - 2.0 * PAD) * acc;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
             <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"black\"/>\n\
             <text x=\"{PAD}\" y=\"20\" font-size=\"14\">{} greedy accuracy per round</text>\n",
            self.name,
            b = H - PAD,
            r = W - PAD
        );
        for (k, eval) in self.args.evals.iter().enumerate() {
            let points: Vec<String> = self
                .state
                .versions
                .iter()
                .filter_map(|v| {
                    let run = format!("{}-r{}-{}", self.name, v.version, stem(eval));
                    let path = self
                        .round_dir(v.version)
                        .join("eval")
                        .join(run)
                        .join("metrics.json");
                    let m: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
                    let acc = m["overall"]["greedy"].as_f64()?;
                    Some(format!("{:.1},{:.1}", x(v.version as usize), y(acc)))
                })
                .collect();
            let colour = COLOURS[k % COLOURS.len()];
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n\
                 <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{colour}\">{}</text>\n",
                points.join(" "),
                W - PAD - 100.0,
                PAD + 16.0 * (k as f64 + 1.0),
                stem(eval)
            );
        }
        svg + "</svg>\n"
    }
}

/// Writes `config` with its active model replaced by `v`'s models as `<dir>/<run>.yaml`.
fn config_for(mut config: EvalConfig, v: &ModelVersion, dir: &Path, run: &str) -> Result<PathBuf> {
    for m in config.models.iter_mut().filter(|m| m.run_flag) {
        m.policy_model = ModelRef::Path(absolute(&v.policy));
        if m.use_value {
            m.value_model = Some(ModelRef::Path(absolute(&v.value)));
        }
    }
    config.dataset_root = absolute(&config.dataset_root);
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{run}.yaml"));
    std::fs::write(&path, config.to_yaml()?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `tsst eval`: a config run with model versions of a self-training run, then a
/// table of their metrics.
pub async fn eval(args: EvalArgs, services: &ServiceArgs) -> Result<()> {
    let config = EvalConfig::load(&args.config)?;
    if config.active_models().count() != 1 {
        bail!(
            "{}: evaluating versions needs exactly one model with run_flag: true",
            args.config.display()
        );
    }
    let state = State::load(&args.selftrain.join("selftrain.json"))?;
    let ready: Vec<&ModelVersion> = state
        .versions
        .iter()
        .filter(|v| v.status == tsst_messages::VersionStatus::Ready)
        .collect();
    let chosen: Vec<&ModelVersion> = if args.versions.is_empty() {
        ready
    } else {
        args.versions
            .iter()
            .map(|n| {
                ready
                    .iter()
                    .copied()
                    .find(|v| v.version == *n)
                    .with_context(|| {
                        format!(
                            "version {n} is not a ready version of {}",
                            args.selftrain.display()
                        )
                    })
            })
            .collect::<Result<_>>()?
    };
    if chosen.is_empty() {
        bail!("{} has no ready model version", args.selftrain.display());
    }
    let out = args.selftrain.join("eval");
    let mut table = String::from(
        "| version | questions | greedy | absolute | voting |\n|---|---|---|---|---|\n",
    );
    for v in chosen {
        let run = format!("{}-v{}", stem(&args.config), v.version);
        let path = config_for(config.clone(), v, &out, &run)?;
        run::run(
            run_args(&args.runs, path, run.clone(), out.clone()),
            services,
        )
        .await
        .with_context(|| format!("evaluating version {}", v.version))?;
        let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            out.join(&run).join("metrics.json"),
        )?)?;
        let o = &metrics["overall"];
        table += &format!(
            "| v{} | {} | {:.3} | {:.3} | {:.3} |\n",
            v.version,
            o["questions"],
            o["greedy"].as_f64().unwrap_or(f64::NAN),
            o["absolute"].as_f64().unwrap_or(f64::NAN),
            o["voting"].as_f64().unwrap_or(f64::NAN)
        );
    }
    print!("{table}");
    Ok(())
}

/// The `tsst run` of `config` as `run`, writing under `out`.
fn run_args(r: &RunsArgs, config: PathBuf, run: String, out: PathBuf) -> RunArgs {
    RunArgs {
        config,
        run: Some(run),
        out,
        worker_config: r.worker_config.clone(),
        batch: r.batch,
        quiet: r.quiet,
        verifier: r.verifier.clone(),
        device: r.device.clone(),
        ort_lib: None,
        dry_run: false,
    }
}

fn absolute(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_questions_take_the_next_blocks_of_the_partition_size() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut config =
            EvalConfig::load(&root.join("config/selftrain/small-search.yaml")).unwrap();
        let first = config.data_partition.unwrap();
        assert_eq!((first.start, first.end), (16000, 16399));
        let blocks: Vec<String> = (1..=3)
            .map(|r| fresh_block(&config, r).unwrap().to_string())
            .collect();
        assert_eq!(blocks, ["16000_16399", "16400_16799", "16800_17199"]);
        config.data_partition = None;
        let err = fresh_block(&config, 1).unwrap_err().to_string();
        assert!(err.contains("data_partition"), "{err}");
    }
}
