//! The LLM verifier's endpoint: OpenAI-compatible chat completions with a concurrency
//! limit, a timeout, and retries with exponential backoff and jitter that honour
//! `Retry-After`. The API key goes in one header and nowhere else: not in errors, not
//! in logs.
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::sync::Semaphore;
use tsst_config::VerifierConfig;
use tsst_labels::ChatMessage;

#[derive(Debug, Error)]
pub enum LlmError {
    /// Worth trying again later: refused connections, timeouts, 429, 5xx.
    #[error("verifier endpoint {url} unavailable after {attempts} attempts: {reason}")]
    Unavailable {
        url: String,
        attempts: u32,
        reason: String,
    },
    /// The endpoint refused the request itself (bad model name, bad key): retrying
    /// cannot help; the operator must fix the configuration.
    #[error("verifier endpoint {url} rejected the request with HTTP {status}: {body}")]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
    #[error("verifier endpoint {url} sent a reply without a message: {reason}")]
    BadReply { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl LlmError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, LlmError::Unavailable { .. })
    }
}

#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// Base URL up to `/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    pub temperature: f64,
    pub max_tokens: u32,
    pub concurrency: usize,
    pub timeout: Duration,
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl LlmSettings {
    pub fn from_config(c: &VerifierConfig) -> Self {
        LlmSettings {
            base_url: c
                .config
                .openai_api_base
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
            model: c.model.clone(),
            temperature: c.temp_llm,
            max_tokens: c.max_new_tokens,
            concurrency: c.config.concurrency.max(1) as usize,
            timeout: Duration::from_secs(c.config.timeout_secs.max(1)),
            max_retries: c.config.max_retries,
            backoff_base: Duration::from_millis(c.config.backoff_base_ms),
            backoff_max: Duration::from_millis(c.config.backoff_max_ms),
        }
    }
}

/// How one request generates: the verifier's judgement needs a few tokens at
/// temperature 0, a warm-up chain hundreds, sampled when several are asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generation {
    pub max_tokens: u32,
    pub temperature: f64,
}

/// A reply's text and why the endpoint stopped (`"length"`: cut at `max_tokens`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    pub finish_reason: Option<String>,
}

impl Reply {
    pub fn cut_at_length(&self) -> bool {
        self.finish_reason.as_deref() == Some("length")
    }
}

#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    settings: Arc<LlmSettings>,
    key: Option<Arc<str>>,
    permits: Arc<Semaphore>,
    jitter: Arc<AtomicU64>,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f64,
    max_tokens: u32,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

/// What one attempt came to.
enum Attempt {
    Reply(Reply),
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Fail(LlmError),
}

impl LlmClient {
    /// `key` is the secret itself (read from the environment variable the config names).
    pub fn new(settings: LlmSettings, key: Option<String>) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| LlmError::Client(e.to_string()))?;
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(LlmClient {
            http,
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            settings: Arc::new(settings),
            key: key.map(Arc::from),
            jitter: Arc::new(AtomicU64::new(seed)),
        })
    }

    /// How long a question whose verification failed waits before it is tried again.
    pub fn retry_wait(&self) -> Duration {
        self.settings.backoff_max
    }

    fn url(&self) -> String {
        format!("{}/chat/completions", self.settings.base_url)
    }

    /// The configured generation settings (the verifier's).
    pub fn generation(&self) -> Generation {
        Generation {
            max_tokens: self.settings.max_tokens,
            temperature: self.settings.temperature,
        }
    }

    /// Sends the messages with the configured settings and returns the reply text.
    pub async fn chat(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        Ok(self.complete(messages, self.generation()).await?.text)
    }

    /// Sends the messages with the given settings, retrying what may pass.
    pub async fn complete(
        &self,
        messages: &[ChatMessage],
        generation: Generation,
    ) -> Result<Reply, LlmError> {
        let url = self.url();
        let attempts = self.settings.max_retries + 1;
        let mut last = String::new();
        for attempt in 0..attempts {
            let outcome = {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|e| LlmError::Client(e.to_string()))?;
                self.attempt(&url, messages, generation).await
            };
            let result = match &outcome {
                Attempt::Reply(_) => "ok",
                Attempt::Fail(LlmError::Rejected { .. }) => "rejected",
                Attempt::Fail(_) => "unparsable",
                Attempt::Retry { .. } => "error",
            };
            metrics::counter!(crate::metrics::VERIFIER_CALLS, "result" => result).increment(1);
            match outcome {
                Attempt::Reply(reply) => return Ok(reply),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { reason, after } => {
                    tracing::warn!(url = %tsst_config::redact_url(&url), attempt = attempt + 1, %reason, "verifier request failed");
                    last = reason;
                    if attempt + 1 < attempts {
                        tokio::time::sleep(after.unwrap_or_else(|| self.backoff(attempt))).await;
                    }
                }
            }
        }
        Err(LlmError::Unavailable {
            url: tsst_config::redact_url(&url),
            attempts,
            reason: last,
        })
    }

    async fn attempt(
        &self,
        url: &str,
        messages: &[ChatMessage],
        generation: Generation,
    ) -> Attempt {
        let body = ChatRequest {
            model: &self.settings.model,
            messages,
            temperature: generation.temperature,
            max_tokens: generation.max_tokens,
        };
        let mut request = self.http.post(url).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(r) => r,
            // reqwest's error text names the URL and the cause, never the headers.
            Err(e) => {
                return Attempt::Retry {
                    reason: describe(&e),
                    after: None,
                }
            }
        };
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            let after = retry_after(response.headers());
            return Attempt::Retry {
                reason: format!("HTTP {}", status.as_u16()),
                after: after.map(|a| {
                    a.min(
                        self.settings
                            .backoff_max
                            .max(a.min(Duration::from_secs(300))),
                    )
                }),
            };
        }
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) => {
                return Attempt::Retry {
                    reason: describe(&e),
                    after: None,
                }
            }
        };
        if !status.is_success() {
            return Attempt::Fail(LlmError::Rejected {
                url: tsst_config::redact_url(url),
                status: status.as_u16(),
                body: excerpt(&text),
            });
        }
        match serde_json::from_str::<ChatResponse>(&text) {
            Ok(r) => match r.choices.into_iter().next().and_then(|c| {
                let finish_reason = c.finish_reason;
                c.message.content.map(|text| Reply {
                    text,
                    finish_reason,
                })
            }) {
                Some(reply) => Attempt::Reply(reply),
                None => Attempt::Fail(LlmError::BadReply {
                    url: tsst_config::redact_url(url),
                    reason: "no choices[0].message.content".into(),
                }),
            },
            Err(e) => Attempt::Fail(LlmError::BadReply {
                url: tsst_config::redact_url(url),
                reason: e.to_string(),
            }),
        }
    }

    /// Exponential backoff with full jitter in its upper half: base * 2^attempt, capped,
    /// then scaled by a random factor in [0.5, 1).
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .settings
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.settings.backoff_max);
        let r = tsst_messages::splitmix64(self.jitter.fetch_add(0x9e37_79b9, Ordering::Relaxed));
        let factor = 0.5 + 0.5 * ((r >> 11) as f64 / (1u64 << 53) as f64);
        exp.mul_f64(factor)
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        // Without the URL (already known) and never with headers.
        e.without_url_ref().to_string()
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(url.as_str(), "<endpoint>");
        }
        text
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(200).collect();
    if body.chars().count() > 200 {
        s.push('…');
    }
    s
}
