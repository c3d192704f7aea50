//! The command line.
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use tsst_datasets::synth::{Difficulty, SplitFractions};
use tsst_messages::{DataSource, Role};

#[derive(Debug, Parser)]
#[command(
    name = "tsst",
    version,
    about = "Tree-Searched Self-Training for vision-language models"
)]
pub struct Cli {
    #[command(flatten)]
    pub services: ServiceArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the broker and the store are. With neither, everything runs in this process.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f
    #[arg(long, global = true, env = "TSST_AMQP_URL", hide_env_values = true)]
    pub amqp: Option<String>,
    /// Redis URL, e.g. redis://127.0.0.1:6379
    #[arg(long, global = true, env = "TSST_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// Prefix of queue and exchange names: deployments sharing a broker use different ones.
    #[arg(long, global = true, env = "TSST_NAMESPACE", default_value = "tsst")]
    pub namespace: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check datasets and generate the synthetic benchmark.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Register a run and queue its questions (distributed mode).
    Enqueue(EnqueueArgs),
    /// Serve roles from the queues until SIGTERM or Ctrl-C (distributed mode).
    Worker(WorkerArgs),
    /// Keep a pool of local worker processes sized to the queues: grow while work
    /// waits, drain and shrink when it is gone, restart a worker that dies; one per
    /// GPU by default (distributed mode).
    Autoscale(AutoscaleArgs),
    /// Run an evaluation config: in this process (embedded) or on the cluster.
    Run(RunArgs),
    /// Generate the synthetic benchmark if missing, then run config/demo.yaml.
    Demo(DemoArgs),
    /// Print a run's results as JSONL (distributed mode).
    Results(ResultsArgs),
    /// A live dashboard of the cluster: queue throughput over time, workers, run
    /// progress, recent failures (distributed mode; q quits, Tab/arrows switch run).
    Monitor(MonitorArgs),
    /// Show the progress of runs (distributed mode).
    Status(StatusArgs),
    /// Inspect a question's search tree (distributed mode).
    Tree {
        #[command(subcommand)]
        command: TreeCommand,
    },
    /// The dead-letter queues: what was rejected, why, and replaying it once the
    /// cause is fixed (distributed mode).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Label a results file offline: value data (Dv) and policy data (D+).
    Label(LabelArgs),
    /// Round 0's data: step-by-step chains for the training questions (policy SFT)
    /// and their linearly scored prefixes (value SFT).
    Warmup(WarmupArgs),
    /// Train one self-training round's models with the trainer config's commands and
    /// record the version in the model registry (distributed mode: the registry is in
    /// Redis, the model-published events go to the broker).
    Train(TrainArgs),
    /// List a self-training run's model versions from the registry (distributed mode).
    Models(ModelsArgs),
    /// Self-training: warm-up data and round 0's training, then each round samples the
    /// training split with beam search, verifies, labels, trains both models and
    /// evaluates them; resumable (run it again and it continues where it stopped).
    Selftrain(SelftrainArgs),
    /// Print a self-training run's report (the table of `<out>/report.md`).
    Report(ReportArgs),
    /// Evaluate model versions of a self-training run with a config (direct or beam,
    /// on the config's split) and print their metrics side by side.
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The evaluation config; its one active model is replaced by each version's.
    #[arg(long)]
    pub config: PathBuf,
    /// The self-training run's folder (`tsst selftrain --out`); runs go to its `eval/`.
    #[arg(long)]
    pub selftrain: PathBuf,
    /// Versions to evaluate, comma separated (default: every ready one).
    #[arg(long, value_delimiter = ',')]
    pub versions: Vec<u32>,
    #[command(flatten)]
    pub runs: RunsArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The self-training run's folder (`tsst selftrain --out`).
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct SelftrainArgs {
    /// The beam-search config: dataset, search settings and round 0's models; each
    /// round samples its training split with the previous round's models.
    #[arg(long)]
    pub config: PathBuf,
    /// The trainer config (the training and export commands).
    #[arg(long)]
    pub trainer: PathBuf,
    /// Rounds after round 0 (the warm-up's training).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Configs every model version is evaluated with (e.g. the dataset's direct and
    /// beam configs, on their own splits); repeatable.
    #[arg(long = "eval")]
    pub evals: Vec<PathBuf>,
    /// The self-training run's folder: its state, each round's data and runs, the report.
    #[arg(long, default_value = "runs/selftrain")]
    pub out: PathBuf,
    /// Names the run and its model versions (default: the config's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Exported policy and value model directories trained elsewhere (e.g. by
    /// tools/train/warmup.py) to be version 0: round 0's warm-up data and training
    /// are skipped, its evaluations run.
    #[arg(long, num_args = 2, value_names = ["POLICY", "VALUE"])]
    pub warm_start: Option<Vec<PathBuf>>,
    /// Each round searches questions no earlier round searched: round k takes the
    /// k-th block of the config's `data_partition` size, starting at its first
    /// question (fine-tuning twice on chains of the same questions overfits them).
    #[arg(long)]
    pub fresh_questions: bool,
    #[command(flatten)]
    pub runs: RunsArgs,
}

/// How the `tsst run`s of `selftrain` and `eval` run.
#[derive(Debug, Clone, Args)]
pub struct RunsArgs {
    /// Worker config for the in-process workers of embedded mode.
    #[arg(long)]
    pub worker_config: Option<PathBuf>,
    /// Largest batch a role processes at once (embedded mode).
    #[arg(long)]
    pub batch: Option<u32>,
    /// Where ONNX models run in embedded mode: cpu or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// LLM verifier config (embedded mode); for selftrain also the warm-up's chain
    /// writer when the dataset has no grounded chains.
    #[arg(long)]
    pub verifier: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The trainer config (commands, model folders).
    #[arg(long)]
    pub config: PathBuf,
    /// The self-training run.
    #[arg(long)]
    pub run: String,
    /// The round to train; its version number.
    #[arg(long)]
    pub round: u32,
    /// D+: the policy's training data.
    #[arg(long)]
    pub policy_data: PathBuf,
    /// Dv: the value model's training data.
    #[arg(long)]
    pub value_data: PathBuf,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// The self-training run.
    pub run: String,
    /// Print the registry's records as JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WarmupArgs {
    /// The eval config naming the dataset.
    #[arg(long)]
    pub config: PathBuf,
    /// The split whose questions get chains.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// The LLM endpoint config that writes the chains (the verifier's); not needed for
    /// datasets with grounded chains (the synthetic benchmark).
    #[arg(long)]
    pub llm: Option<PathBuf>,
    /// Chains asked per question.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// The token budget of one chain (the verifier config's `max_new_tokens` is the
    /// judge's few-token budget and would cut every chain).
    #[arg(long, default_value_t = 768)]
    pub max_new_tokens: u32,
    /// Sampling temperature of the chains; by default 0.7 when several samples are
    /// asked per question (identical greedy samples would be wasted), else 0.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Writes warmup_policy.json and warmup_value.json here.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate eval, verifier and worker configs; exit 1 if any is invalid.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Load a dataset and report counts and every bad record.
    Check {
        #[arg(long)]
        source: DataSource,
        #[arg(long)]
        root: PathBuf,
        /// A single split; by default every split found.
        #[arg(long)]
        split: Option<String>,
    },
    /// Draw the synthetic visual-reasoning benchmark (A-OKVQA format).
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    #[arg(long)]
    pub out: PathBuf,
    /// Questions over all splits.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// easy | medium | hard
    #[arg(long, default_value = "medium")]
    pub difficulty: Difficulty,
    /// Train, val and test fractions.
    #[arg(long, default_value = "0.8,0.1,0.1")]
    pub splits: SplitFractions,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// Run id; default `<config name>-<model tag>`. With several active models each
    /// gets `<run>-<tag>`.
    #[arg(long)]
    pub run: Option<String>,
    /// Split each run into this many runs of disjoint questions (`<run>-s<i>of<n>`),
    /// to follow, collect or prioritise separately.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Print the selected question ids in order, with counts, and queue nothing (no
    /// services needed).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Roles to serve, comma separated: generator,scorer,verifier,labeler.
    #[arg(long, value_delimiter = ',')]
    pub roles: Option<Vec<Role>>,
    /// Worker config (pool sizes, batching, device).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Largest batch a role processes at once.
    #[arg(long)]
    pub batch: Option<u32>,
    /// Name shown in the broker's connection list.
    #[arg(long)]
    pub name: Option<String>,
    /// LLM verifier config (e.g. config/llm_verifier_config.yaml) for answers the
    /// rule cannot decide; without it they are recorded as not correct.
    #[arg(long)]
    pub verifier: Option<PathBuf>,
    /// Where ONNX models run: cpu or cuda:N (overrides the worker config).
    #[arg(long)]
    pub device: Option<String>,
    /// Trainer config (e.g. config/trainer.yaml): serve the trainer role, one
    /// self-training round per train task.
    #[arg(long)]
    pub trainer: Option<PathBuf>,
    /// Re-drive unfinished trees whose state has not changed for this many seconds
    /// (trees whose tasks a store rollback lost); 0 turns the relay off.
    #[arg(long, default_value_t = 120, env = "TSST_RELAY_STALL_SECS")]
    pub relay_stall_secs: u64,
    /// Where to serve Prometheus metrics (GET /metrics), e.g. 0.0.0.0:9187 in a
    /// container; `off` serves none. Default 127.0.0.1:9187, skipped with a warning
    /// when another worker on the host holds that port.
    #[arg(long, env = "TSST_METRICS")]
    pub metrics: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub run: Option<String>,
    /// Where embedded runs write `<run>/results.jsonl`.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Worker config for the in-process workers of embedded mode.
    #[arg(long)]
    pub worker_config: Option<PathBuf>,
    /// Largest batch a role processes at once (embedded mode).
    #[arg(long)]
    pub batch: Option<u32>,
    /// No progress bar (for logs).
    #[arg(long)]
    pub quiet: bool,
    /// LLM verifier config for the in-process verifier (embedded mode).
    #[arg(long)]
    pub verifier: Option<PathBuf>,
    /// Where ONNX models run in embedded mode: cpu or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// The ONNX Runtime library (libonnxruntime.so.1.31.1); by default ORT_DYLIB_PATH,
    /// then where tools/fetch-ort.sh installs it.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Print the selected question ids in order, with counts, and run nothing (no
    /// services needed).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The beam-search config.
    #[arg(long, default_value = "config/demo.yaml")]
    pub config: PathBuf,
    /// The direct (one greedy chain) config the beam search is compared with.
    #[arg(long, default_value = "config/demo-direct.yaml")]
    pub direct: PathBuf,
    /// Questions of the synthetic benchmark to generate when it is missing (a tenth
    /// of them are the test split the demo configs use).
    #[arg(long, default_value_t = 500)]
    pub n: usize,
    /// Difficulty of the generated benchmark (the demo models learned `easy`).
    #[arg(long, default_value = "easy")]
    pub difficulty: tsst_datasets::synth::Difficulty,
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    pub run: String,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the run's metrics instead of the JSONL.
    #[arg(long)]
    pub summary: bool,
    /// Also write the next round's training data here: dplus.json (policy) and
    /// dv.json (value), LLaVA training JSON.
    #[arg(long)]
    pub datasets: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TreeCommand {
    /// A question's search tree: indented in the terminal (round, value, kept /
    /// finished / pruned, verdict, * on the chosen path), and as an SVG picture.
    Show(TreeShowArgs),
}

#[derive(Debug, Args)]
pub struct TreeShowArgs {
    pub run: String,
    pub question: String,
    /// Also write the tree as an SVG picture here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Also write an HTML page with the picture and the question here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Every dead letter: task id, run, question, the worker that rejected it, why.
    List {
        #[arg(long)]
        role: Option<Role>,
    },
    /// Puts dead letters back on their role's queue (all, or one role's, or one run's).
    Replay {
        #[arg(long)]
        role: Option<Role>,
        #[arg(long)]
        run: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct AutoscaleArgs {
    /// The roles every worker of the pool serves; the pool is sized to their queues.
    #[arg(long, value_delimiter = ',', default_value = "generator,scorer")]
    pub roles: Vec<Role>,
    /// Fewest workers kept running (0: none while the queues are empty).
    #[arg(long, default_value_t = 1)]
    pub min: usize,
    /// Most workers (by default one per GPU of --gpus, else 4).
    #[arg(long)]
    pub max: Option<usize>,
    /// GPUs to spread workers over, round robin (each worker sees one through
    /// CUDA_VISIBLE_DEVICES and runs on cuda:0); none: CPU workers.
    #[arg(long, value_delimiter = ',')]
    pub gpus: Vec<u32>,
    /// Size the pool to drain the backlog in about this many seconds at the measured
    /// per-worker rate.
    #[arg(long, default_value_t = 60)]
    pub target_secs: u64,
    /// Seconds the pool must have wanted fewer workers, and since the last change,
    /// before one is drained (hysteresis: a short lull shrinks nothing).
    #[arg(long, default_value_t = 120)]
    pub cooldown_secs: u64,
    /// Seconds between two looks at the queues.
    #[arg(long, default_value_t = 5)]
    pub interval_secs: u64,
    /// First port of the workers' metrics endpoints (worker i serves base+i), which
    /// the pool reads its per-worker rate from.
    #[arg(long, default_value_t = 9300)]
    pub metrics_base_port: u16,
    #[command(flatten)]
    pub management: ManagementArgs,
    /// More arguments for every `tsst worker` (after --), e.g. -- --batch 64 --config worker.yaml
    #[arg(last = true)]
    pub worker_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Runs to show; all by default.
    pub runs: Vec<String>,
    /// Seconds between two looks at the queues.
    #[arg(long, default_value_t = 1.0)]
    pub interval_secs: f64,
    #[command(flatten)]
    pub management: ManagementArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Runs to show; all by default.
    pub runs: Vec<String>,
    /// One JSON object (queues, dead letters, workers, runs) instead of the report.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub management: ManagementArgs,
}

#[derive(Debug, Args)]
pub struct ManagementArgs {
    /// RabbitMQ's management API (unacknowledged counts, rates), e.g.
    /// http://user:pass@broker:15672; by default the AMQP URL's host on port 15672 with
    /// its credentials. `off`: ready counts and consumers only, by passive declares.
    #[arg(long, env = "TSST_RABBITMQ_MANAGEMENT", hide_env_values = true)]
    pub management: Option<String>,
}

impl ManagementArgs {
    pub fn client(
        &self,
        services: &ServiceArgs,
    ) -> anyhow::Result<Option<tsst_actors::broker::Management>> {
        let (Some(amqp), explicit) = (&services.amqp, self.management.as_deref()) else {
            return Ok(None);
        };
        if explicit == Some("off") {
            return Ok(None);
        }
        Ok(Some(tsst_actors::broker::Management::new(amqp, explicit)?))
    }
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// A results file (`tsst results RUN` or an embedded run's results.jsonl).
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub value_out: PathBuf,
    #[arg(long)]
    pub policy_out: PathBuf,
    /// Correct solutions per question in D+.
    #[arg(long, default_value_t = 1)]
    pub k: usize,
    /// Write image paths relative to this folder.
    #[arg(long)]
    pub image_root: Option<PathBuf>,
    /// JSONL instead of a JSON array.
    #[arg(long)]
    pub jsonl: bool,
}
