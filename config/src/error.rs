//! The one error type of this crate. Its `Display` is the complete message a user
//! sees, so callers print it as is: `FILE[:LINE:COL]: FIELD: RULE`.
use std::fmt;
use std::path::{Path, PathBuf};

/// One broken rule in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted path of the offending field, e.g. `models[1].tag` or `config.api_key_env`.
    pub field: String,
    /// What is wrong, in words a user can act on. Never contains a secret.
    pub rule: String,
}

impl Issue {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Issue {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// Where a YAML syntax or type error was found, when the parser knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based.
    pub line: u64,
    /// 1-based, in characters.
    pub column: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (missing, a directory, no permission, not UTF-8).
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed, a field is unknown or has the wrong type.
    #[error("{}", render_parse(path, *position, field.as_deref(), message))]
    Parse {
        path: PathBuf,
        position: Option<Position>,
        /// Best-effort path of the field the parser stopped at; `None` at the top level.
        field: Option<String>,
        message: String,
    },
    /// The file parsed but breaks one or more rules; all of them are listed so a user
    /// can fix a file in one pass.
    #[error("{}", render_issues(path, issues))]
    Invalid { path: PathBuf, issues: Vec<Issue> },
    /// An environment override (`TSST_AMQP_URL`, ...) or the variable named by
    /// `api_key_env` holds an unusable value. The value itself is never shown.
    #[error("environment variable {var}: {rule}")]
    Env { var: String, rule: String },
    /// Writing a configuration back to YAML failed.
    #[error("cannot write configuration as YAML: {message}")]
    Serialize { message: String },
}

impl ConfigError {
    pub(crate) fn invalid(path: &Path, issues: Vec<Issue>) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            issues,
        }
    }

    /// The file the error is about, if it is about a file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::Parse { path, .. }
            | ConfigError::Invalid { path, .. } => Some(path),
            ConfigError::Env { .. } | ConfigError::Serialize { .. } => None,
        }
    }

    /// The rule violations, empty for errors that are not [`ConfigError::Invalid`].
    pub fn issues(&self) -> &[Issue] {
        match self {
            ConfigError::Invalid { issues, .. } => issues,
            _ => &[],
        }
    }
}

fn render_parse(
    path: &Path,
    position: Option<Position>,
    field: Option<&str>,
    message: &str,
) -> String {
    let mut out = path.display().to_string();
    if let Some(p) = position {
        out.push_str(&format!(":{}:{}", p.line, p.column));
    }
    if let Some(f) = field {
        out.push_str(": ");
        out.push_str(f);
    }
    out.push_str(": ");
    out.push_str(message);
    out
}

/// One line per issue, each with the file name, so `grep`-style tools and editors can
/// jump to every one of them.
fn render_issues(path: &Path, issues: &[Issue]) -> String {
    let mut lines = issues
        .iter()
        .map(|i| format!("{}: {}: {}", path.display(), i.field, i.rule));
    let Some(mut out) = lines.next() else {
        return format!("{}: invalid configuration", path.display());
    };
    for line in lines {
        out.push('\n');
        out.push_str(&line);
    }
    out
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}
