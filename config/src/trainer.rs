//! The trainer (`config/trainer.yaml`): the commands one self-training round runs and
//! where they leave the models. Arguments and the two model directories may name
//! `{run}`, `{round}`, `{version}`, `{out}` (the version's folder), `{policy_data}`,
//! `{value_data}`, `{parent_policy}` and `{parent_value}` (the models the round
//! starts from). Commands are argument lists run without a shell.
use crate::error::{ConfigError, Issue};
use crate::yaml;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The names a command's arguments may use.
pub const PLACEHOLDERS: [&str; 8] = [
    "run",
    "round",
    "version",
    "out",
    "policy_data",
    "value_data",
    "parent_policy",
    "parent_value",
];

/// One stage of a round: a program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Seconds before the command is stopped.
    pub timeout_secs: u64,
    /// The earlier stages this one waits for; absent, all of them. `[]` starts it with
    /// the round, beside the others (the policy's and the value model's training need
    /// nothing of each other, and a GPU has room for both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
}

impl Stage {
    /// The names of the stages this one waits for, given the stages before it.
    pub fn waits_for<'a>(&'a self, earlier: &'a [Stage]) -> Vec<&'a str> {
        match &self.after {
            Some(names) => names.iter().map(String::as_str).collect(),
            None => earlier.iter().map(|s| s.name.as_str()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// Each version's folder is `<models_root>/<run>/v<version>`.
    pub models_root: PathBuf,
    /// The models round 0 starts from.
    pub base_policy: PathBuf,
    pub base_value: PathBuf,
    /// Run in order, each after all before it unless its `after` says otherwise; a
    /// round fails at the first that fails (the others still running are stopped).
    pub stages: Vec<Stage>,
    /// Where the stages leave the exported model directories.
    pub policy_dir: String,
    pub value_dir: String,
}

impl TrainerConfig {
    /// Reads, parses and validates a trainer config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = yaml::read_text(path)?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: TrainerConfig = yaml::parse(text, origin)?;
        let issues = config.issues();
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::invalid(origin, issues))
        }
    }

    fn issues(&self) -> Vec<Issue> {
        let mut v = Vec::new();
        if self.stages.is_empty() {
            v.push(Issue::new("stages", "must list at least one command"));
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.stages.iter().enumerate() {
            if !names.insert(s.name.as_str()) {
                v.push(Issue::new(
                    format!("stages[{i}].name"),
                    format!("`{}` names an earlier stage too", s.name),
                ));
            }
            if s.program.as_os_str().is_empty() {
                v.push(Issue::new(
                    format!("stages[{i}].program"),
                    "must not be empty",
                ));
            }
            if s.timeout_secs == 0 {
                v.push(Issue::new(
                    format!("stages[{i}].timeout_secs"),
                    "must be >= 1 (got 0)",
                ));
            }
            for (j, arg) in s.args.iter().enumerate() {
                unknown(&mut v, &format!("stages[{i}].args[{j}]"), arg);
            }
            for (j, name) in s.after.iter().flatten().enumerate() {
                if !self.stages[..i].iter().any(|e| &e.name == name) {
                    v.push(Issue::new(
                        format!("stages[{i}].after[{j}]"),
                        format!("`{name}` is not an earlier stage"),
                    ));
                }
            }
        }
        unknown(&mut v, "policy_dir", &self.policy_dir);
        unknown(&mut v, "value_dir", &self.value_dir);
        v
    }
}

/// `text` with each `{name}` replaced by `value(name)`; the first name `value` does
/// not know is the error. Text after an unclosed `{` is kept as it is.
pub fn expand_placeholders<'a>(
    text: &'a str,
    value: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        out.push_str(&rest[..open]);
        out.push_str(value(name).ok_or_else(|| name.to_owned())?);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An issue when `text` names something that is not a placeholder.
fn unknown(issues: &mut Vec<Issue>, field: &str, text: &str) {
    let known = |name: &str| PLACEHOLDERS.contains(&name).then_some("");
    if let Err(name) = expand_placeholders(text, known) {
        issues.push(Issue::new(
            field,
            format!(
                "`{{{name}}}` is not a placeholder (known: {})",
                PLACEHOLDERS.join(", ")
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "models_root: runs/models\nbase_policy: m/p\nbase_value: m/v\n\
        stages:\n  - name: policy\n    program: python3\n    args: [train.py, --out, '{out}/p']\n    timeout_secs: 60\n\
        policy_dir: '{out}/p/onnx'\nvalue_dir: '{out}/v/onnx'\n";

    #[test]
    fn a_good_file_loads() {
        let c = TrainerConfig::from_yaml_str(GOOD, Path::new("t.yaml")).unwrap();
        assert_eq!(c.stages[0].args[2], "{out}/p");
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = GOOD
            .replace("timeout_secs: 60", "timeout_secs: 0")
            .replace("'{out}/p/onnx'", "'{ouut}/p'");
        let err = TrainerConfig::from_yaml_str(&bad, Path::new("t.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.yaml"), "{err}");
        assert!(err.contains("stages[0].timeout_secs"), "{err}");
        assert!(
            err.contains("policy_dir") && err.contains("{ouut}"),
            "{err}"
        );
        let unknown_field = GOOD.replace("stages:", "stagez: []\nstages:");
        let err = TrainerConfig::from_yaml_str(&unknown_field, Path::new("t.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("stagez"), "{err}");
    }

    #[test]
    fn after_names_earlier_stages_only() {
        let two = GOOD.replace(
            "policy_dir:",
            "  - name: value\n    program: python3\n    timeout_secs: 60\n    after: []\npolicy_dir:",
        );
        let c = TrainerConfig::from_yaml_str(&two, Path::new("t.yaml")).unwrap();
        assert_eq!(c.stages[0].waits_for(&[]), Vec::<&str>::new());
        assert_eq!(c.stages[1].waits_for(&c.stages[..1]), Vec::<&str>::new());
        let sequential = two.replace("    after: []\n", "");
        let c = TrainerConfig::from_yaml_str(&sequential, Path::new("t.yaml")).unwrap();
        assert_eq!(c.stages[1].waits_for(&c.stages[..1]), vec!["policy"]);
        for bad in ["after: [value]", "after: [export]"] {
            let text = two.replace("after: []", bad);
            let err = TrainerConfig::from_yaml_str(&text, Path::new("t.yaml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("stages[1].after[0]"), "{err}");
        }
    }
}
