//! The LLM verifier endpoint (`config/llm_verifier_config.yaml`).
//!
//! The API key never lives in the file: `config.api_key_env` names the environment
//! variable that holds it. A file that contains a key is refused, and the refusal
//! names the field without repeating the value, so the message is safe to paste.
use crate::error::{ConfigError, Issue};
use crate::secret::{is_env_var_name, looks_like_secret, Secret};
use crate::url::ServiceUrl;
use crate::yaml;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::Path;

pub const DEFAULT_VERIFIER_MODEL: &str = "meta-llama/Meta-Llama-3-70B-Instruct";
pub const DEFAULT_API_BASE: &str = "http://localhost:8000/v1";
pub const DEFAULT_API_KEY_ENV: &str = "TSST_VERIFIER_API_KEY";

/// A validated verifier configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifierConfig {
    /// Model name sent in each chat-completions request.
    pub model: String,
    /// Sampling temperature of the verifier (0 = deterministic, the reference setting).
    pub temp_llm: f64,
    /// The reply is one word (True/False/Unknown), so a few tokens suffice.
    pub max_new_tokens: u32,
    pub config: EndpointConfig,
}

/// How to reach the OpenAI-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointConfig {
    pub openai_api_base: ServiceUrl,
    /// Name of the environment variable holding the key; `None` for servers that need
    /// no key (a local vLLM without `--api-key`).
    pub api_key_env: Option<String>,
    /// Requests in flight at once.
    pub concurrency: u32,
    pub timeout_secs: u64,
    /// Retries after the first attempt, on timeouts, 429 and 5xx.
    pub max_retries: u32,
    /// First retry delay; doubled per retry up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

pub const DEFAULT_CONCURRENCY: u32 = 8;
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_MAX_RETRIES: u32 = 5;
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 500;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 30_000;

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            model: DEFAULT_VERIFIER_MODEL.to_string(),
            temp_llm: 0.0,
            max_new_tokens: 16,
            config: EndpointConfig {
                openai_api_base: ServiceUrl::trusted(DEFAULT_API_BASE),
                api_key_env: Some(DEFAULT_API_KEY_ENV.to_string()),
                concurrency: DEFAULT_CONCURRENCY,
                timeout_secs: DEFAULT_TIMEOUT_SECS,
                max_retries: DEFAULT_MAX_RETRIES,
                backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
                backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            },
        }
    }
}

/// Swallows whatever value a forbidden key field has, so only its presence is known
/// and the value is never stored or printed.
#[derive(Debug)]
struct Refused;

impl<'de> Deserialize<'de> for Refused {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Refused)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerifier {
    model: String,
    #[serde(default)]
    temp_llm: f64,
    #[serde(default = "default_max_new_tokens")]
    max_new_tokens: u32,
    config: RawEndpoint,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    openai_api_base: String,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default = "default_concurrency")]
    concurrency: u32,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_backoff_base_ms")]
    backoff_base_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    backoff_max_ms: u64,
}

/// A lenient first pass that only looks for key fields, so a key gets its own
/// refusal rather than a generic "unknown field" error, and the strict schema's
/// list of expected fields does not advertise key fields as valid.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyProbe {
    openai_api_key: Option<Refused>,
    api_key: Option<Refused>,
    key: Option<Refused>,
    config: Option<KeyProbeInner>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyProbeInner {
    openai_api_key: Option<Refused>,
    api_key: Option<Refused>,
    key: Option<Refused>,
}

impl KeyProbe {
    fn issues(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        refuse_keys(
            "",
            [
                ("openai_api_key", &self.openai_api_key),
                ("api_key", &self.api_key),
                ("key", &self.key),
            ],
            &mut issues,
        );
        if let Some(c) = &self.config {
            refuse_keys(
                "config.",
                [
                    ("openai_api_key", &c.openai_api_key),
                    ("api_key", &c.api_key),
                    ("key", &c.key),
                ],
                &mut issues,
            );
        }
        issues
    }
}

fn default_max_new_tokens() -> u32 {
    16
}
fn default_concurrency() -> u32 {
    DEFAULT_CONCURRENCY
}
fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}
fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}
fn default_backoff_base_ms() -> u64 {
    DEFAULT_BACKOFF_BASE_MS
}
fn default_backoff_max_ms() -> u64 {
    DEFAULT_BACKOFF_MAX_MS
}

fn refuse_keys(prefix: &str, fields: [(&str, &Option<Refused>); 3], issues: &mut Vec<Issue>) {
    for (name, value) in fields {
        if value.is_some() {
            issues.push(Issue::new(
                format!("{prefix}{name}"),
                "API keys must not be written in config files (value not shown); \
                 delete it and export the key in the environment variable named by \
                 config.api_key_env",
            ));
        }
    }
}

impl RawVerifier {
    fn resolve(self, issues: &mut Vec<Issue>) -> Option<VerifierConfig> {
        let e = self.config;
        let base = parse_api_base(&e.openai_api_base)
            .map_err(|rule| issues.push(Issue::new("config.openai_api_base", rule)))
            .ok();
        let api_key_env = match e.api_key_env.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => {
                if let Err(rule) = check_env_name(name) {
                    issues.push(Issue::new("config.api_key_env", rule));
                }
                Some(name.to_string())
            }
        };
        Some(VerifierConfig {
            model: self.model.trim().to_string(),
            temp_llm: self.temp_llm,
            max_new_tokens: self.max_new_tokens,
            config: EndpointConfig {
                openai_api_base: base?,
                api_key_env,
                concurrency: e.concurrency,
                timeout_secs: e.timeout_secs,
                max_retries: e.max_retries,
                backoff_base_ms: e.backoff_base_ms,
                backoff_max_ms: e.backoff_max_ms,
            },
        })
    }
}

fn parse_api_base(url: &str) -> Result<ServiceUrl, String> {
    let url = ServiceUrl::parse(url, &["http", "https"])?;
    if url.as_str().contains('@') {
        return Err(
            "must not embed credentials (user:password@); put the key in the environment \
             variable named by config.api_key_env"
                .to_string(),
        );
    }
    Ok(url)
}

/// The rule broken by an `api_key_env` value. The value is never echoed: a user who
/// pasted the key itself here must not see it printed back into a log.
fn check_env_name(name: &str) -> Result<(), String> {
    if looks_like_secret(name) {
        Err(
            "must be the NAME of an environment variable, but looks like an API key \
             (value not shown); write e.g. TSST_VERIFIER_API_KEY and export the key there"
                .to_string(),
        )
    } else if !is_env_var_name(name) {
        Err(
            "must be an environment variable name in UPPER_SNAKE_CASE, e.g. \
             TSST_VERIFIER_API_KEY (value not shown)"
                .to_string(),
        )
    } else {
        Ok(())
    }
}

impl VerifierConfig {
    /// Reads, parses and validates a verifier config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = yaml::read_text(path)?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        // A file that does not even parse leniently gets the strict parser's error.
        if let Ok(probe) = serde_saphyr::from_str::<KeyProbe>(text) {
            let refused = probe.issues();
            if !refused.is_empty() {
                return Err(ConfigError::invalid(origin, refused));
            }
        }
        let raw: RawVerifier = yaml::parse(text, origin)?;
        let mut issues = Vec::new();
        match raw.resolve(&mut issues) {
            Some(c) if issues.is_empty() => {
                c.validate(origin)?;
                Ok(c)
            }
            _ => Err(ConfigError::invalid(origin, issues)),
        }
    }

    /// The configuration as YAML that [`VerifierConfig::from_yaml_str`] reads back equal.
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_saphyr::to_string(self).map_err(|e| ConfigError::Serialize {
            message: e.to_string(),
        })
    }

    /// Checks every rule; for configurations built in code as well as loaded ones.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let mut v = Vec::new();
        let e = &self.config;
        if self.model.is_empty() {
            v.push(Issue::new("model", "must not be empty"));
        }
        if !(self.temp_llm.is_finite() && self.temp_llm >= 0.0) {
            v.push(Issue::new(
                "temp_llm",
                format!("must be >= 0 (got {})", self.temp_llm),
            ));
        }
        if self.max_new_tokens < 1 {
            v.push(Issue::new("max_new_tokens", "must be >= 1 (got 0)"));
        }
        if let Err(rule) = parse_api_base(e.openai_api_base.as_str()) {
            v.push(Issue::new("config.openai_api_base", rule));
        }
        if let Some(Err(rule)) = e.api_key_env.as_deref().map(check_env_name) {
            v.push(Issue::new("config.api_key_env", rule));
        }
        if e.concurrency < 1 {
            v.push(Issue::new("config.concurrency", "must be >= 1 (got 0)"));
        }
        if e.timeout_secs < 1 {
            v.push(Issue::new("config.timeout_secs", "must be >= 1 (got 0)"));
        }
        if e.backoff_base_ms > e.backoff_max_ms {
            v.push(Issue::new(
                "config.backoff_base_ms",
                format!(
                    "must not exceed config.backoff_max_ms ({} > {})",
                    e.backoff_base_ms, e.backoff_max_ms
                ),
            ));
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::invalid(origin, v))
        }
    }

    /// The API key from the environment variable named by `config.api_key_env`.
    ///
    /// `Ok(None)` when no variable is named, or it is unset or empty: local servers
    /// need no key, and a server that does will answer 401, which the client reports.
    pub fn api_key(&self) -> Result<Option<Secret>, ConfigError> {
        self.api_key_from(|name| std::env::var_os(name))
    }

    /// [`VerifierConfig::api_key`] with the environment passed in, for tests.
    pub fn api_key_from(
        &self,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Option<Secret>, ConfigError> {
        let Some(var) = self.config.api_key_env.as_deref() else {
            return Ok(None);
        };
        match env(var) {
            None => Ok(None),
            Some(value) => {
                let value = value.into_string().map_err(|_| ConfigError::Env {
                    var: var.to_string(),
                    rule: "is not valid UTF-8 (named by config.api_key_env)".to_string(),
                })?;
                let value = value.trim();
                Ok((!value.is_empty()).then(|| Secret::new(value)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<VerifierConfig, ConfigError> {
        VerifierConfig::from_yaml_str(text, Path::new("v.yaml"))
    }

    const GOOD: &str = "\
model: meta-llama/Meta-Llama-3-70B-Instruct
temp_llm: 0
max_new_tokens: 16
config:
  openai_api_base: http://localhost:8000/v1
  api_key_env: TSST_VERIFIER_API_KEY
";

    #[test]
    fn default_base_is_valid() {
        assert!(parse_api_base(DEFAULT_API_BASE).is_ok());
    }

    #[test]
    fn defaults_round_trip() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c, VerifierConfig::default());
        let text = c.to_yaml().unwrap();
        assert_eq!(parse(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn key_in_file_is_refused_without_echo() {
        let text = GOOD.replace(
            "  api_key_env",
            "  openai_api_key: sk-verysecret123\n  api_key_env",
        );
        let msg = parse(&text).unwrap_err().to_string();
        assert!(
            msg.contains("v.yaml: config.openai_api_key: API keys must not"),
            "{msg}"
        );
        assert!(!msg.contains("verysecret"), "{msg}");
    }

    #[test]
    fn key_as_env_name_is_refused_without_echo() {
        let text = GOOD.replace("TSST_VERIFIER_API_KEY", "sk-proj-abcdef0123456789");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains("config.api_key_env"), "{msg}");
        assert!(!msg.contains("abcdef0123456789"), "{msg}");
    }

    #[test]
    fn base_must_be_http() {
        let msg = parse(&GOOD.replace("http://localhost:8000/v1", "localhost:8000"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("v.yaml: config.openai_api_base: must be a URL"),
            "{msg}"
        );
    }

    #[test]
    fn api_key_reads_named_variable() {
        let c = VerifierConfig::default();
        let key = c
            .api_key_from(|n| (n == "TSST_VERIFIER_API_KEY").then(|| "k-1".into()))
            .unwrap()
            .unwrap();
        assert_eq!(key.expose(), "k-1");
        assert_eq!(c.api_key_from(|_| None).unwrap(), None);
        assert_eq!(c.api_key_from(|_| Some("".into())).unwrap(), None);
    }
}
