//! Queue statistics for `tsst status`, `tsst monitor` and `tsst autoscale`: RabbitMQ's
//! management API gives ready and unacknowledged counts, consumers and rates; where
//! it is off or unreachable, a passive declare gives the ready count and consumers
//! (live, but no unacknowledged count and no rates).
use super::{AmqpBroker, BrokerError};
use reqwest::Url;
use serde::Serialize;
use std::time::Duration;

/// One queue as the broker sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub ready: u64,
    /// Delivered, not yet acknowledged (management API only).
    pub unacked: Option<u64>,
    pub consumers: u64,
    /// Messages per second (management API only; it samples every few seconds).
    pub publish_rate: Option<f64>,
    pub deliver_rate: Option<f64>,
}

impl QueueStats {
    /// The work a pool has in front of it: waiting plus in hand.
    pub fn backlog(&self) -> u64 {
        self.ready + self.unacked.unwrap_or(0)
    }
}

/// A client of the management API of one virtual host.
#[derive(Clone)]
pub struct Management {
    http: reqwest::Client,
    /// Without credentials: safe to print.
    base: Url,
    user: String,
    password: String,
    vhost: String,
}

#[derive(Debug, thiserror::Error)]
#[error("RabbitMQ management API at {url}: {reason}")]
pub struct ManagementError {
    pub url: String,
    pub reason: String,
}

impl Management {
    /// `explicit` (e.g. `http://user:pass@broker:15672`) or, by default, the AMQP URL's
    /// host on port 15672 with its credentials; the virtual host is the AMQP URL's.
    pub fn new(amqp_url: &str, explicit: Option<&str>) -> Result<Self, ManagementError> {
        let fail = |url: &str, reason: String| ManagementError {
            url: tsst_config::redact_url(url),
            reason,
        };
        let amqp = Url::parse(amqp_url).map_err(|e| fail(amqp_url, e.to_string()))?;
        let vhost = match amqp.path().trim_start_matches('/') {
            "" => "/".to_owned(),
            v => percent_decode(v),
        };
        let mut base = match explicit {
            Some(u) => Url::parse(u).map_err(|e| fail(u, e.to_string()))?,
            None => {
                let host = amqp.host_str().unwrap_or("127.0.0.1");
                let scheme = if amqp.scheme() == "amqps" {
                    "https"
                } else {
                    "http"
                };
                Url::parse(&format!("{scheme}://{host}:15672/"))
                    .map_err(|e| fail(amqp_url, e.to_string()))?
            }
        };
        let from = if explicit.is_some() && !base.username().is_empty() {
            base.clone()
        } else {
            amqp.clone()
        };
        let user = percent_decode(from.username());
        let password = percent_decode(from.password().unwrap_or(""));
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| fail(base.as_str(), e.to_string()))?;
        Ok(Management {
            http,
            base,
            user: if user.is_empty() {
                "guest".into()
            } else {
                user
            },
            password: if password.is_empty() {
                "guest".into()
            } else {
                password
            },
            vhost,
        })
    }

    /// Where it asks, without credentials.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// One queue's statistics.
    pub async fn queue(&self, name: &str) -> Result<QueueStats, ManagementError> {
        let fail = |reason: String| ManagementError {
            url: self.base.to_string(),
            reason,
        };
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| fail("not a base URL".into()))?
            .pop_if_empty()
            .extend(["api", "queues", &self.vhost, name]);
        let reply = self
            .http
            .get(url)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        if !reply.status().is_success() {
            return Err(fail(format!("HTTP {} for queue {name}", reply.status())));
        }
        let q: serde_json::Value = reply
            .json()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        let rate = |which: &str| q["message_stats"][which]["rate"].as_f64();
        Ok(QueueStats {
            queue: name.to_owned(),
            ready: q["messages_ready"].as_u64().unwrap_or(0),
            unacked: Some(q["messages_unacknowledged"].as_u64().unwrap_or(0)),
            consumers: q["consumers"].as_u64().unwrap_or(0),
            publish_rate: Some(rate("publish_details").unwrap_or(0.0)),
            deliver_rate: Some(rate("deliver_get_details").unwrap_or(0.0)),
        })
    }
}

impl AmqpBroker {
    /// A queue's ready count and consumers by a passive declare (no management API).
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let (ready, consumers) = self.declare_passive(queue).await?;
        Ok(QueueStats {
            queue: queue.to_owned(),
            ready: u64::from(ready),
            consumers: u64::from(consumers),
            ..Default::default()
        })
    }
}

/// `%2f` -> `/` in URL user, password and vhost parts.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_endpoint_follows_the_amqp_url() {
        let m = Management::new("amqp://bob:s%40cret@broker:5672/%2f", None).unwrap();
        assert_eq!(m.url(), "http://broker:15672/");
        assert_eq!((m.user.as_str(), m.password.as_str()), ("bob", "s@cret"));
        assert_eq!(m.vhost, "/");
        let m = Management::new(
            "amqps://u:p@broker/prod",
            Some("https://admin:pw@mgmt.example:443/rabbit/"),
        )
        .unwrap();
        assert_eq!(m.url(), "https://mgmt.example/rabbit/");
        assert_eq!((m.user.as_str(), m.vhost.as_str()), ("admin", "prod"));
    }
}
