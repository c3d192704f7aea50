//! Worker processes (`config/worker.yaml`): which roles to run, how many of each,
//! and where the broker and store are. `tsst worker` takes `amqp_url` / `redis_url`
//! when neither `--amqp`/`--redis` nor `TSST_AMQP_URL`/`TSST_REDIS_URL` name them.
use crate::error::{ConfigError, Issue};
use crate::url::ServiceUrl;
use crate::yaml;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tsst_messages::Role;

pub const AMQP_SCHEMES: [&str; 2] = ["amqp", "amqps"];
pub const REDIS_SCHEMES: [&str; 4] = ["redis", "rediss", "redis+unix", "unix"];

pub const DEFAULT_PREFETCH: u16 = 8;
pub const DEFAULT_BATCH_MAX_SIZE: u32 = 16;
pub const DEFAULT_BATCH_MAX_WAIT_MS: u64 = 10;

/// Where models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(u32),
}

impl Device {
    pub fn is_gpu(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        if t == "cpu" {
            return Ok(Device::Cpu);
        }
        // Bare `cuda` means the first GPU, as in PyTorch.
        if t == "cuda" {
            return Ok(Device::Cuda(0));
        }
        t.strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("must be `cpu` or `cuda:N` (got `{s}`)"))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for Device {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Dynamic batching of model calls: a batch goes out when full or when its oldest
/// request has waited `max_wait_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_batch_max_size")]
    pub max_size: u32,
    #[serde(default = "default_batch_max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_size: DEFAULT_BATCH_MAX_SIZE,
            max_wait_ms: DEFAULT_BATCH_MAX_WAIT_MS,
        }
    }
}

fn default_batch_max_size() -> u32 {
    DEFAULT_BATCH_MAX_SIZE
}
fn default_batch_max_wait_ms() -> u64 {
    DEFAULT_BATCH_MAX_WAIT_MS
}
fn default_prefetch() -> u16 {
    DEFAULT_PREFETCH
}

/// A validated worker configuration. `Debug` shows URLs with passwords hidden.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerConfig {
    /// RabbitMQ; `None` runs every role in this process over in-memory channels.
    pub amqp_url: Option<ServiceUrl>,
    /// Redis for run state; `None` keeps it in memory.
    pub redis_url: Option<ServiceUrl>,
    /// Roles this process runs, without duplicates.
    pub roles: Vec<Role>,
    /// Concurrent actors/consumers per role; roles not listed get 1.
    pub pool: BTreeMap<Role, u32>,
    /// Unacknowledged messages a consumer may hold.
    pub prefetch: u16,
    pub batch: BatchConfig,
    pub device: Device,
    /// The ONNX Runtime shared library, when it is not found by the default search.
    pub ort_dylib_path: Option<PathBuf>,
}

impl Default for WorkerConfig {
    /// Embedded mode: every role, one of each, on the CPU.
    fn default() -> Self {
        WorkerConfig {
            amqp_url: None,
            redis_url: None,
            roles: Role::ALL.to_vec(),
            pool: BTreeMap::new(),
            prefetch: DEFAULT_PREFETCH,
            batch: BatchConfig::default(),
            device: Device::Cpu,
            ort_dylib_path: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    #[serde(default)]
    amqp_url: Option<String>,
    #[serde(default)]
    redis_url: Option<String>,
    /// Strings, not `Role`s, so an unknown role is reported with its index.
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    pool: BTreeMap<String, u32>,
    #[serde(default = "default_prefetch")]
    prefetch: u16,
    #[serde(default)]
    batch: BatchConfig,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    ort_dylib_path: Option<PathBuf>,
}

/// An optional URL field: blank means absent.
fn optional_url(
    value: Option<&str>,
    schemes: &[&str],
    field: &str,
    issues: &mut Vec<Issue>,
) -> Option<ServiceUrl> {
    let value = value.map(str::trim).filter(|v| !v.is_empty())?;
    ServiceUrl::parse(value, schemes)
        .map_err(|rule| issues.push(Issue::new(field, rule)))
        .ok()
}

impl RawWorker {
    fn resolve(self, issues: &mut Vec<Issue>) -> WorkerConfig {
        let amqp_url = optional_url(self.amqp_url.as_deref(), &AMQP_SCHEMES, "amqp_url", issues);
        let redis_url = optional_url(
            self.redis_url.as_deref(),
            &REDIS_SCHEMES,
            "redis_url",
            issues,
        );
        let roles = match self.roles {
            None => Role::ALL.to_vec(),
            Some(names) => {
                let mut roles = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    match Role::from_str(name) {
                        Ok(r) if roles.contains(&r) => issues.push(Issue::new(
                            format!("roles[{i}]"),
                            format!("duplicate role `{r}`"),
                        )),
                        Ok(r) => roles.push(r),
                        Err(e) => issues.push(Issue::new(format!("roles[{i}]"), e)),
                    }
                }
                roles
            }
        };
        let mut pool = BTreeMap::new();
        for (name, size) in self.pool {
            match Role::from_str(&name) {
                Ok(r) => {
                    pool.insert(r, size);
                }
                Err(e) => issues.push(Issue::new(format!("pool.{name}"), e)),
            }
        }
        let device = match self.device.as_deref() {
            None => Device::Cpu,
            Some(d) => Device::from_str(d)
                .map_err(|e| issues.push(Issue::new("device", e)))
                .unwrap_or_default(),
        };
        WorkerConfig {
            amqp_url,
            redis_url,
            roles,
            pool,
            prefetch: self.prefetch,
            batch: self.batch,
            device,
            ort_dylib_path: self.ort_dylib_path,
        }
    }
}

impl WorkerConfig {
    /// Reads, parses and validates a worker config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = yaml::read_text(path)?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let raw: RawWorker = yaml::parse(text, origin)?;
        let mut issues = Vec::new();
        let config = raw.resolve(&mut issues);
        issues.extend(config.issues());
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::invalid(origin, issues))
        }
    }

    /// The configuration as YAML that [`WorkerConfig::from_yaml_str`] reads back equal.
    /// Contains the URLs in full, passwords included: for files, not for logs.
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
        let mut v = Vec::new();
        if self.roles.is_empty() {
            v.push(Issue::new(
                "roles",
                "must list at least one role (omit the field to run all)",
            ));
        }
        for (role, size) in &self.pool {
            if *size < 1 {
                v.push(Issue::new(format!("pool.{role}"), "must be >= 1 (got 0)"));
            }
        }
        if self.prefetch < 1 {
            v.push(Issue::new("prefetch", "must be >= 1 (got 0)"));
        }
        if self.batch.max_size < 1 {
            v.push(Issue::new("batch.max_size", "must be >= 1 (got 0)"));
        }
        if matches!(&self.ort_dylib_path, Some(p) if p.as_os_str().is_empty()) {
            v.push(Issue::new(
                "ort_dylib_path",
                "must not be empty (omit it to use the default search)",
            ));
        }
        v
    }

    /// No broker: every role runs in this process.
    pub fn is_embedded(&self) -> bool {
        self.amqp_url.is_none()
    }

    /// Concurrent actors/consumers for `role`.
    pub fn pool_size(&self, role: Role) -> u32 {
        self.pool.get(&role).copied().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WorkerConfig, ConfigError> {
        WorkerConfig::from_yaml_str(text, Path::new("w.yaml"))
    }

    #[test]
    fn empty_file_is_default_embedded() {
        let c = parse("{}").unwrap();
        assert_eq!(c, WorkerConfig::default());
        assert!(c.is_embedded());
        assert_eq!(c.pool_size(Role::Verifier), 1);
        let text = c.to_yaml().unwrap();
        assert_eq!(parse(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn full_file_round_trips() {
        let text = "\
amqp_url: amqp://tsst:hunter2@rabbit:5672/%2f
redis_url: redis://redis:6379/0
roles: [generator, verifier]
pool: { verifier: 8 }
prefetch: 4
batch: { max_size: 32, max_wait_ms: 5 }
device: cuda:1
";
        let c = parse(text).unwrap();
        assert_eq!(c.roles, vec![Role::Generator, Role::Verifier]);
        assert_eq!(c.pool_size(Role::Verifier), 8);
        assert_eq!(c.device, Device::Cuda(1));
        assert!(!format!("{c:?}").contains("hunter2"));
        let again = parse(&c.to_yaml().unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_roles_are_named_by_index() {
        let msg = parse("roles: [generator, bogus, generator]\npool: { nope: 2 }\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("w.yaml: roles[1]: unknown role `bogus`"),
            "{msg}"
        );
        assert!(
            msg.contains("w.yaml: roles[2]: duplicate role `generator`"),
            "{msg}"
        );
        assert!(msg.contains("w.yaml: pool.nope: unknown role"), "{msg}");
    }
}
