//! `tsst config check FILE...`: tell the three kinds of file apart and validate one.
use crate::error::{ConfigError, Issue};
use crate::eval::EvalConfig;
use crate::trainer::TrainerConfig;
use crate::verifier::VerifierConfig;
use crate::worker::WorkerConfig;
use crate::yaml;
use std::fmt;
use std::path::Path;

/// Which schema a file follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigKind {
    /// `config/eval/*.yaml`, `config/demo.yaml`.
    Eval,
    /// `config/llm_verifier_config.yaml`.
    Verifier,
    /// `config/worker.yaml`.
    Worker,
    /// `config/trainer.yaml`.
    Trainer,
}

impl ConfigKind {
    pub fn name(self) -> &'static str {
        match self {
            ConfigKind::Eval => "eval",
            ConfigKind::Verifier => "verifier",
            ConfigKind::Worker => "worker",
            ConfigKind::Trainer => "trainer",
        }
    }
}

impl fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decides the kind of a file: by its name first (`llm_verifier_config*` is a
/// verifier file, `worker*` a worker file, `trainer*` a trainer file), then by its
/// top-level keys (`temp_llm`, `max_new_tokens` or `config` mean verifier; `stages`
/// or `models_root` trainer; `amqp_url`, `redis_url`, `roles`,
/// `pool`, `prefetch`, `device` or `ort_dylib_path` mean worker), else eval. The name
/// wins so that a broken file is still checked against the schema the user meant.
pub fn detect_kind(path: &Path, text: &str) -> ConfigKind {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.starts_with("llm_verifier_config") {
        return ConfigKind::Verifier;
    }
    if name.starts_with("worker") {
        return ConfigKind::Worker;
    }
    if name.starts_with("trainer") {
        return ConfigKind::Trainer;
    }
    let keys = yaml::top_level_keys(text);
    let has = |names: &[&str]| keys.iter().any(|k| names.contains(&k.as_str()));
    if has(&["temp_llm", "max_new_tokens", "config"]) {
        ConfigKind::Verifier
    } else if has(&["stages", "models_root"]) {
        ConfigKind::Trainer
    } else if has(&[
        "amqp_url",
        "redis_url",
        "roles",
        "pool",
        "prefetch",
        "device",
        "ort_dylib_path",
    ]) {
        ConfigKind::Worker
    } else {
        ConfigKind::Eval
    }
}

/// Reads `path`, detects its kind (see [`detect_kind`]) and validates it.
pub fn check_file(path: &Path) -> Result<ConfigKind, ConfigError> {
    check_file_with_warnings(path).map(|(kind, _)| kind)
}

/// [`check_file`], also returning legal-but-suspicious settings worth printing.
pub fn check_file_with_warnings(path: &Path) -> Result<(ConfigKind, Vec<String>), ConfigError> {
    let text = yaml::read_text(path)?;
    let kind = detect_kind(path, &text);
    let warnings = match kind {
        ConfigKind::Eval => {
            let config = EvalConfig::from_yaml_str(&text, path)?;
            let mut warnings = config.warnings();
            warnings.extend(config.missing_models().iter().map(missing_here));
            warnings
        }
        ConfigKind::Verifier => {
            VerifierConfig::from_yaml_str(&text, path)?;
            Vec::new()
        }
        ConfigKind::Worker => {
            WorkerConfig::from_yaml_str(&text, path)?;
            Vec::new()
        }
        ConfigKind::Trainer => {
            TrainerConfig::from_yaml_str(&text, path)?;
            Vec::new()
        }
    };
    Ok((kind, warnings))
}

/// A model directory this machine lacks, as a warning: the workers may have it.
pub fn missing_here(issue: &Issue) -> String {
    format!("{issue} on this machine (fine only if the workers that load it have it)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_then_content() {
        let p = Path::new;
        assert_eq!(
            detect_kind(p("a/llm_verifier_config.yaml"), ""),
            ConfigKind::Verifier
        );
        assert_eq!(
            detect_kind(p("worker.local.yaml"), "task: x"),
            ConfigKind::Worker
        );
        assert_eq!(
            detect_kind(p("x.yaml"), "model: m\nconfig:\n  a: 1\n"),
            ConfigKind::Verifier
        );
        assert_eq!(
            detect_kind(p("x.yaml"), "# c\nroles: [scorer]\n"),
            ConfigKind::Worker
        );
        assert_eq!(
            detect_kind(p("x.yaml"), "task: a\nmodels: []\n"),
            ConfigKind::Eval
        );
    }

    #[test]
    fn missing_file_names_it() {
        let err = check_file(Path::new("no/such/file.yaml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no/such/file.yaml: cannot read"),
            "{err}"
        );
    }
}
