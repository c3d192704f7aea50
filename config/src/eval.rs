//! Evaluation and sampling runs (`config/eval/*.yaml`): the field names users of the
//! original tool already write, plus the search settings of TSST.md.
//!
//! Relative paths (`dataset_root`, `policy_model`, `value_model`) are kept as written
//! and therefore resolve against the current directory of the process, as they did in
//! the original tool, whose scripts were run from the repository root. They are not
//! made relative to the config file, so `config/eval/x.yaml` can say `data/aokvqa`.
use crate::error::{ConfigError, Issue};
use crate::yaml;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tsst_messages::{DataSource, SearchMode, SearchSpec, VerifierKind};
pub use tsst_messages::{Partition, Selection, StepDelimiter};

/// What an evaluation run does per question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Value-guided sentence-level beam search (TSST.md, "One round").
    MultipleChoiceStepsBeam,
    /// One greedy chain per question.
    MultipleChoiceDirect,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::MultipleChoiceStepsBeam => "multiple_choice_steps_beam",
            Task::MultipleChoiceDirect => "multiple_choice_direct",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A model to load: an exported model directory, or the deterministic test backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelRef {
    /// Written `scripted` or `scripted:<options>` (e.g. `scripted:30ms:flaky3`, the
    /// backend's): canned outputs for tests and benchmarks, no weights needed. Holds the
    /// text as the backend reads it (`scripted` in lower case, the options as written).
    Scripted(String),
    /// An exported model directory, relative to the current directory unless absolute.
    Path(PathBuf),
}

impl FromStr for ModelRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            Err("must be a model directory or `scripted` (got an empty string)".to_string())
        } else if s
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("scripted"))
            && matches!(s.as_bytes().get(8), None | Some(b':'))
        {
            // The backend reads the prefix in lower case; the options as written, checked
            // here so that a bad one fails the config, not the worker that loads it.
            let spec = format!("scripted{}", &s[8..]);
            match tsst_backend::parse_scripted(&spec) {
                Some(_) => Ok(ModelRef::Scripted(spec)),
                None => Err(format!(
                    "`{s}` has an unknown scripted option: the options are <N>ms, per<K>, \
                     flaky<K> and panic<K> (K >= 2), as in `scripted:30ms:flaky3`"
                )),
            }
        } else {
            Ok(ModelRef::Path(PathBuf::from(s)))
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Scripted(spec) => f.write_str(spec),
            ModelRef::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Serialize for ModelRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One `models[]` entry: a policy/value pair evaluated as one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    pub policy_model: ModelRef,
    /// Absent when `use_value` is false.
    pub value_model: Option<ModelRef>,
    /// Names the run in outputs; unique within a file.
    pub tag: String,
    /// False skips this entry without deleting it.
    pub run_flag: bool,
    /// False ranks candidates by mean token log-probability instead of the value model.
    pub use_value: bool,
}

/// A validated evaluation/sampling configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalConfig {
    /// Candidate next steps per frontier node per round.
    pub num_beams: u32,
    /// Token budget of a whole solution.
    pub max_length: u32,
    /// False means greedy decoding whatever `temperature` says.
    pub do_sample: bool,
    pub temperature: f64,
    /// Kept for compatibility with the original tool's files.
    pub num_return_sequences: u32,
    pub task: Task,
    pub dataset_name: DataSource,
    pub dataset_root: PathBuf,
    /// Split name: train, val or test (ScienceQA also has trainval, minitrain, minival,
    /// minitest).
    pub data_subset: String,
    /// `None`: the whole split.
    pub data_partition: Option<Partition>,
    /// Draw this many questions (with `seed`) instead of taking all.
    pub sample_size: Option<usize>,
    pub seed: u64,
    /// Candidates kept per round.
    pub branch: u32,
    /// Finished solutions to collect per question.
    pub n_consistency: u32,
    /// Tasks per model call of the in-process workers of `tsst run`.
    pub batch_size: u32,
    pub models: Vec<ModelSpec>,
    pub selection: Selection,
    /// Exponent `1/selection_temperature` applied to values when sampling.
    pub selection_temperature: f64,
    pub step_delimiter: StepDelimiter,
    /// `num_beams` is multiplied by this on the first round.
    pub first_round_multiplier: u32,
    pub max_rounds: u32,
    /// New tokens per step at most.
    pub step_max_tokens: u32,
    /// A node whose text grows past this many characters is finished.
    pub finish_max_chars: usize,
    /// Verified-correct solutions per question kept for the policy's next round (D+).
    pub dplus_per_question: u32,
    /// `answer` (default) or `scene`: a right answer counts only if every step is a
    /// fact of the scene (synthetic data).
    pub verifier: VerifierKind,
}

pub const DEFAULT_SEED: u64 = 42;
pub const DEFAULT_MAX_LENGTH: u32 = 1024;
pub const DEFAULT_SELECTION_TEMPERATURE: f64 = 0.5;
pub const DEFAULT_FIRST_ROUND_MULTIPLIER: u32 = 2;
pub const DEFAULT_MAX_ROUNDS: u32 = 30;
pub const DEFAULT_STEP_MAX_TOKENS: u32 = 256;
pub const DEFAULT_FINISH_MAX_CHARS: usize = 1000;

/// The file as written. Fields whose default depends on `task` are options here and
/// filled in by [`RawEval::resolve`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEval {
    num_beams: Option<u32>,
    #[serde(default = "default_max_length")]
    max_length: u32,
    do_sample: Option<bool>,
    temperature: Option<f64>,
    #[serde(default = "one")]
    num_return_sequences: u32,
    task: Task,
    dataset_name: String,
    dataset_root: PathBuf,
    data_subset: String,
    #[serde(default)]
    data_partition: Option<String>,
    #[serde(default)]
    sample_size: Option<usize>,
    #[serde(default = "default_seed")]
    seed: u64,
    branch: Option<u32>,
    n_consistency: Option<u32>,
    #[serde(default = "one")]
    batch_size: u32,
    models: Vec<RawModel>,
    #[serde(default)]
    selection: Selection,
    #[serde(default = "default_selection_temperature")]
    selection_temperature: f64,
    #[serde(default)]
    step_delimiter: StepDelimiter,
    #[serde(default = "default_first_round_multiplier")]
    first_round_multiplier: u32,
    #[serde(default = "default_max_rounds")]
    max_rounds: u32,
    #[serde(default = "default_step_max_tokens")]
    step_max_tokens: u32,
    #[serde(default = "default_finish_max_chars")]
    finish_max_chars: usize,
    #[serde(default = "one")]
    dplus_per_question: u32,
    #[serde(default)]
    verifier: VerifierKind,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    policy_model: String,
    #[serde(default)]
    value_model: Option<String>,
    tag: String,
    #[serde(default = "yes")]
    run_flag: bool,
    /// Defaults to whether a value model is named.
    #[serde(default)]
    use_value: Option<bool>,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_seed() -> u64 {
    DEFAULT_SEED
}
fn default_max_length() -> u32 {
    DEFAULT_MAX_LENGTH
}
fn default_selection_temperature() -> f64 {
    DEFAULT_SELECTION_TEMPERATURE
}
fn default_first_round_multiplier() -> u32 {
    DEFAULT_FIRST_ROUND_MULTIPLIER
}
fn default_max_rounds() -> u32 {
    DEFAULT_MAX_ROUNDS
}
fn default_step_max_tokens() -> u32 {
    DEFAULT_STEP_MAX_TOKENS
}
fn default_finish_max_chars() -> usize {
    DEFAULT_FINISH_MAX_CHARS
}

/// Defaults that differ by task: beam search samples a tree, direct is one greedy chain.
struct TaskDefaults {
    num_beams: u32,
    do_sample: bool,
    temperature: f64,
    branch: u32,
    n_consistency: u32,
}

fn task_defaults(task: Task) -> TaskDefaults {
    match task {
        Task::MultipleChoiceStepsBeam => TaskDefaults {
            num_beams: 3,
            do_sample: true,
            temperature: 0.7,
            branch: 3,
            n_consistency: 5,
        },
        Task::MultipleChoiceDirect => TaskDefaults {
            num_beams: 1,
            do_sample: false,
            temperature: 0.0,
            branch: 1,
            n_consistency: 1,
        },
    }
}

impl RawEval {
    /// Typed conversion; collects every field that does not convert.
    fn resolve(self, issues: &mut Vec<Issue>) -> Option<EvalConfig> {
        let d = task_defaults(self.task);
        let dataset_name = DataSource::from_str(&self.dataset_name)
            .map_err(|e| issues.push(Issue::new("dataset_name", e)))
            .ok();
        let data_partition = match self.data_partition.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(p) => Partition::from_str(p)
                .map(Some)
                .map_err(|e| issues.push(Issue::new("data_partition", e)))
                .ok(),
        };
        let mut models = Vec::with_capacity(self.models.len());
        for (i, m) in self.models.into_iter().enumerate() {
            if let Some(m) = m.resolve(i, issues) {
                models.push(m);
            }
        }
        Some(EvalConfig {
            num_beams: self.num_beams.unwrap_or(d.num_beams),
            max_length: self.max_length,
            do_sample: self.do_sample.unwrap_or(d.do_sample),
            temperature: self.temperature.unwrap_or(d.temperature),
            num_return_sequences: self.num_return_sequences,
            task: self.task,
            dataset_name: dataset_name?,
            dataset_root: self.dataset_root,
            data_subset: self.data_subset.trim().to_string(),
            data_partition: data_partition?,
            sample_size: self.sample_size,
            seed: self.seed,
            branch: self.branch.unwrap_or(d.branch),
            n_consistency: self.n_consistency.unwrap_or(d.n_consistency),
            batch_size: self.batch_size,
            models,
            selection: self.selection,
            selection_temperature: self.selection_temperature,
            step_delimiter: self.step_delimiter,
            first_round_multiplier: self.first_round_multiplier,
            max_rounds: self.max_rounds,
            step_max_tokens: self.step_max_tokens,
            finish_max_chars: self.finish_max_chars,
            dplus_per_question: self.dplus_per_question,
            verifier: self.verifier,
        })
    }
}

impl RawModel {
    fn resolve(self, i: usize, issues: &mut Vec<Issue>) -> Option<ModelSpec> {
        let policy_model = ModelRef::from_str(&self.policy_model)
            .map_err(|e| issues.push(Issue::new(format!("models[{i}].policy_model"), e)))
            .ok();
        // The original tool's files leave `value_model: ''` on entries that do not use it.
        let value_model = match self.value_model.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(v) => ModelRef::from_str(v)
                .map(Some)
                .map_err(|e| issues.push(Issue::new(format!("models[{i}].value_model"), e)))
                .ok(),
        }?;
        let use_value = self.use_value.unwrap_or(value_model.is_some());
        Some(ModelSpec {
            policy_model: policy_model?,
            value_model,
            tag: self.tag.trim().to_string(),
            run_flag: self.run_flag,
            use_value,
        })
    }
}

/// Split names each source publishes (TSST.md, "Dataset formats").
fn known_subsets(source: DataSource) -> &'static [&'static str] {
    match source {
        DataSource::Aokvqa => &["train", "val", "test"],
        DataSource::Scienceqa => &[
            "train",
            "val",
            "test",
            "trainval",
            "minitrain",
            "minival",
            "minitest",
        ],
        DataSource::Vcr => &["train", "val"],
    }
}

fn at_least(issues: &mut Vec<Issue>, field: &str, value: u64, min: u64) {
    if value < min {
        issues.push(Issue::new(field, format!("must be >= {min} (got {value})")));
    }
}

impl EvalConfig {
    /// Reads, parses and validates an eval config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = yaml::read_text(path)?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let raw: RawEval = yaml::parse(text, origin)?;
        let mut issues = Vec::new();
        let config = raw.resolve(&mut issues);
        match config {
            Some(c) if issues.is_empty() => {
                c.validate(origin)?;
                Ok(c)
            }
            _ => Err(ConfigError::invalid(origin, issues)),
        }
    }

    /// The configuration as YAML that [`EvalConfig::from_yaml_str`] reads back equal.
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_saphyr::to_string(self).map_err(|e| ConfigError::Serialize {
            message: e.to_string(),
        })
    }

    /// Checks every rule; for configurations built in code as well as loaded ones.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let issues = self.issues();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::invalid(origin, issues))
        }
    }

    fn issues(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        let v = &mut issues;
        at_least(v, "num_beams", self.num_beams.into(), 1);
        at_least(v, "branch", self.branch.into(), 1);
        at_least(v, "n_consistency", self.n_consistency.into(), 1);
        at_least(v, "max_length", self.max_length.into(), 1);
        at_least(v, "batch_size", self.batch_size.into(), 1);
        at_least(
            v,
            "num_return_sequences",
            self.num_return_sequences.into(),
            1,
        );
        at_least(
            v,
            "first_round_multiplier",
            self.first_round_multiplier.into(),
            1,
        );
        at_least(v, "step_max_tokens", self.step_max_tokens.into(), 1);
        at_least(v, "finish_max_chars", self.finish_max_chars as u64, 1);
        at_least(v, "dplus_per_question", self.dplus_per_question.into(), 1);
        if !(1..=1000).contains(&self.max_rounds) {
            v.push(Issue::new(
                "max_rounds",
                format!("must be between 1 and 1000 (got {})", self.max_rounds),
            ));
        }
        if let Some(n) = self.sample_size {
            at_least(v, "sample_size", n as u64, 1);
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            v.push(Issue::new(
                "temperature",
                format!("must be >= 0 (got {})", self.temperature),
            ));
        } else if self.do_sample && self.temperature == 0.0 {
            // Rejected rather than silently run greedy: the two fields disagree, and
            // greedy beam search merges all siblings into one chain.
            v.push(Issue::new(
                "temperature",
                "must be > 0 when do_sample is true (got 0); for greedy decoding set do_sample: false",
            ));
        }
        if !(self.selection_temperature.is_finite() && self.selection_temperature > 0.0) {
            v.push(Issue::new(
                "selection_temperature",
                format!("must be > 0 (got {})", self.selection_temperature),
            ));
        }
        if self.task == Task::MultipleChoiceDirect && self.num_beams != 1 {
            v.push(Issue::new(
                "num_beams",
                format!(
                    "must be 1 for task {} (got {})",
                    Task::MultipleChoiceDirect,
                    self.num_beams
                ),
            ));
        }
        let subsets = known_subsets(self.dataset_name);
        if !subsets.contains(&self.data_subset.as_str()) {
            v.push(Issue::new(
                "data_subset",
                format!(
                    "must be one of {} for {} (got \"{}\")",
                    subsets.join(", "),
                    self.dataset_name,
                    self.data_subset
                ),
            ));
        }
        if self.dataset_root.as_os_str().is_empty() {
            v.push(Issue::new("dataset_root", "must not be empty"));
        }
        self.model_issues(v);
        issues
    }

    fn model_issues(&self, v: &mut Vec<Issue>) {
        if self.models.is_empty() {
            v.push(Issue::new("models", "must list at least one model"));
        } else if !self.models.iter().any(|m| m.run_flag) {
            v.push(Issue::new(
                "models",
                "at least one model must have run_flag: true",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, m) in self.models.iter().enumerate() {
            if m.tag.is_empty() {
                v.push(Issue::new(format!("models[{i}].tag"), "must not be empty"));
            } else if seen.contains(&m.tag.as_str()) {
                v.push(Issue::new(
                    format!("models[{i}].tag"),
                    format!("duplicate tag \"{}\"", m.tag),
                ));
            } else {
                seen.push(&m.tag);
            }
            if m.use_value && m.value_model.is_none() {
                v.push(Issue::new(
                    format!("models[{i}].value_model"),
                    "is required when use_value is true",
                ));
            }
        }
    }

    /// The temperature the policy samples with: 0 (greedy) when `do_sample` is false.
    pub fn effective_temperature(&self) -> f64 {
        if self.do_sample {
            self.temperature
        } else {
            0.0
        }
    }

    /// The search settings a run of `model` stores with itself. Direct evaluation is
    /// the same loop held to one greedy chain.
    pub fn search_spec(&self, model: &ModelSpec) -> SearchSpec {
        let direct = self.task == Task::MultipleChoiceDirect;
        SearchSpec {
            mode: if direct {
                SearchMode::Direct
            } else {
                SearchMode::Beam
            },
            seed: self.seed,
            num_beams: if direct { 1 } else { self.num_beams },
            first_round_multiplier: if direct {
                1
            } else {
                self.first_round_multiplier
            },
            branch: if direct { 1 } else { self.branch },
            n_consistency: if direct { 1 } else { self.n_consistency },
            temperature: if direct {
                0.0
            } else {
                self.effective_temperature()
            },
            max_length: self.max_length,
            step_max_tokens: self.step_max_tokens,
            finish_max_chars: self.finish_max_chars as u32,
            max_rounds: self.max_rounds,
            selection: self.selection,
            selection_temperature: self.selection_temperature,
            step_delimiter: self.step_delimiter,
            use_value: model.use_value && !direct,
            policy_model: model.policy_model.to_string(),
            value_model: model.value_model.as_ref().map(ToString::to_string),
            tag: model.tag.clone(),
        }
    }

    /// The entries with `run_flag: true`, in file order.
    pub fn active_models(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.iter().filter(|m| m.run_flag)
    }

    /// The model directories of the active entries that hold no exported model on
    /// this machine (no `manifest.json`), one issue per field. Not part of validation:
    /// a cluster's config names directories on its GPU workers, which the machine that
    /// queues the run may not have, so `tsst config check` and a cluster run warn,
    /// and an embedded run, which loads them itself, refuses to start.
    /// Scripted models need no directory.
    pub fn missing_models(&self) -> Vec<Issue> {
        let mut out = Vec::new();
        for (i, m) in self.models.iter().enumerate().filter(|(_, m)| m.run_flag) {
            let fields = [
                ("policy_model", Some(&m.policy_model)),
                (
                    "value_model",
                    m.value_model.as_ref().filter(|_| m.use_value),
                ),
            ];
            for (field, model) in fields {
                let Some(ModelRef::Path(dir)) = model else {
                    continue;
                };
                if !dir.join("manifest.json").is_file() {
                    let what = if dir.is_dir() {
                        "has no manifest.json (not an exported model)"
                    } else {
                        "does not exist"
                    };
                    out.push(Issue::new(
                        format!("models[{i}].{field}"),
                        format!("{} {what}", dir.display()),
                    ));
                }
            }
        }
        out
    }

    /// Legal but probably unintended settings, for `tsst config check` to print.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.task == Task::MultipleChoiceStepsBeam && !self.do_sample && self.num_beams > 1 {
            out.push(format!(
                "do_sample is false: the {} candidates of a node will be identical and merged into one",
                self.num_beams
            ));
        }
        if self.task == Task::MultipleChoiceDirect && self.do_sample {
            out.push("do_sample is true: direct evaluation is normally greedy".to_string());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EvalConfig, ConfigError> {
        EvalConfig::from_yaml_str(text, Path::new("x.yaml"))
    }

    const MINIMAL: &str = "\
task: multiple_choice_steps_beam
dataset_name: A-OKVQA
dataset_root: data/aokvqa
data_subset: val
models:
  - policy_model: scripted
    value_model: scripted
    tag: base
";

    #[test]
    fn scripted_models_keep_their_options_and_other_names_are_directories() {
        for (text, read) in [
            ("scripted", "scripted"),
            ("Scripted", "scripted"),
            ("SCRIPTED:30ms:flaky3", "scripted:30ms:flaky3"),
        ] {
            let m: ModelRef = text.parse().unwrap();
            assert_eq!(m, ModelRef::Scripted(read.into()));
            assert_eq!(m.to_string(), read);
        }
        for text in ["scripted-run", "scriptedé", "models/scripted"] {
            assert_eq!(text.parse(), Ok(ModelRef::Path(text.into())));
        }
        for text in [
            "scripted:",
            "scripted:fast",
            "scripted:30",
            "scripted:panic1",
        ] {
            let err = text.parse::<ModelRef>().unwrap_err();
            assert!(err.contains(text) && err.contains("flaky<K>"), "{err}");
        }
    }

    #[test]
    fn missing_models_are_named_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let exported = dir.path().join("exported");
        std::fs::create_dir(&exported).unwrap();
        std::fs::write(exported.join("manifest.json"), "{}").unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let gone = dir.path().join("gone");
        let text = format!(
            "task: multiple_choice_steps_beam\ndataset_name: aokvqa\ndataset_root: d\ndata_subset: val\nmodels:\n\
             - {{policy_model: {}, value_model: {}, tag: a}}\n\
             - {{policy_model: scripted, value_model: 'scripted:30ms', tag: b}}\n\
             - {{policy_model: {}, value_model: {}, use_value: false, tag: c}}\n\
             - {{policy_model: {}, value_model: scripted, run_flag: false, tag: d}}\n",
            exported.display(),
            empty.display(),
            gone.display(),
            gone.display(),
            gone.display(),
        );
        let missing: Vec<String> = parse(&text)
            .unwrap()
            .missing_models()
            .iter()
            .map(ToString::to_string)
            .collect();
        // Not `c`'s unused value model, not `d` (run_flag false), not the scripted ones.
        assert_eq!(
            missing,
            [
                format!(
                    "models[0].value_model: {} has no manifest.json (not an exported model)",
                    empty.display()
                ),
                format!("models[2].policy_model: {} does not exist", gone.display()),
            ]
        );
    }

    #[test]
    fn minimal_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.dataset_name, DataSource::Aokvqa);
        assert_eq!((c.num_beams, c.branch, c.n_consistency), (3, 3, 5));
        assert_eq!(c.selection, Selection::Sample);
        assert_eq!(c.step_delimiter, StepDelimiter::Period);
        assert_eq!(c.selection_temperature, 0.5);
        assert_eq!((c.first_round_multiplier, c.max_rounds), (2, 30));
        assert_eq!((c.step_max_tokens, c.finish_max_chars), (256, 1000));
        assert_eq!(c.data_partition, None);
        let m = &c.models[0];
        assert!(m.run_flag && m.use_value);
        assert_eq!(m.policy_model, ModelRef::Scripted("scripted".into()));
        let spec = c.search_spec(m);
        assert_eq!(spec.samples_in_round(0), 6);
        assert_eq!(spec.samples_in_round(1), 3);
        assert_eq!(spec.policy_model, "scripted");
    }

    #[test]
    fn defaults_round_trip() {
        let c = parse(MINIMAL).unwrap();
        let text = c.to_yaml().unwrap();
        assert_eq!(parse(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn direct_defaults_are_greedy() {
        let c = parse(&MINIMAL.replace("steps_beam", "direct")).unwrap();
        assert_eq!(c.num_beams, 1);
        assert!(!c.do_sample);
        assert_eq!(c.effective_temperature(), 0.0);
    }

    #[test]
    fn partition_parses_inclusive() {
        let p: Partition = "440_499".parse().unwrap();
        assert_eq!((p.start, p.end, p.len()), (440, 499, 60));
        assert_eq!(p.to_string(), "440_499");
        assert!("9_3".parse::<Partition>().is_err());
        assert!("12".parse::<Partition>().is_err());
        assert!("a_3".parse::<Partition>().is_err());
        assert_eq!("5_5".parse::<Partition>().unwrap().len(), 1);
    }

    #[test]
    fn all_issues_are_listed() {
        let text = format!("{MINIMAL}branch: 0\nn_consistency: 0\n");
        let e = parse(&text).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("x.yaml: branch: must be >= 1 (got 0)"),
            "{msg}"
        );
        assert!(
            msg.contains("x.yaml: n_consistency: must be >= 1 (got 0)"),
            "{msg}"
        );
        assert_eq!(e.issues().len(), 2);
    }

    #[test]
    fn greedy_sampling_is_rejected() {
        let text = format!("{MINIMAL}do_sample: true\ntemperature: 0\n");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(
            msg.contains("temperature: must be > 0 when do_sample"),
            "{msg}"
        );
    }

    #[test]
    fn subset_is_checked_per_source() {
        let text = MINIMAL
            .replace("A-OKVQA", "vcr")
            .replace("data_subset: val", "data_subset: test");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(
            msg.contains("data_subset: must be one of train, val for vcr"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_scripted_option_fails_the_config_at_its_field() {
        let text = MINIMAL.replace("value_model: scripted", "value_model: 'scripted:5s'");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(
            msg.contains("x.yaml: models[0].value_model: `scripted:5s` has an unknown"),
            "{msg}"
        );
    }

    #[test]
    fn empty_value_model_means_none() {
        let text = MINIMAL.replace(
            "value_model: scripted",
            "value_model: ''\n    use_value: false",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.models[0].value_model, None);
    }

    #[test]
    fn unquoted_partition_is_read_as_written() {
        let c = parse(&format!("{MINIMAL}data_partition: 440_499\n")).unwrap();
        assert_eq!(
            c.data_partition,
            Some(Partition {
                start: 440,
                end: 499
            })
        );
    }

    #[test]
    fn numeric_tag_is_a_tag() {
        let c = parse(&MINIMAL.replace("tag: base", "tag: 1")).unwrap();
        assert_eq!(c.models[0].tag, "1");
    }
}
