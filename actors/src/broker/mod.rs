//! The work queues.
mod amqp;

pub use amqp::{AmqpBroker, AmqpConsumer, AmqpDelivery};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("cannot connect to RabbitMQ at {0}: {1}")]
    Connect(String, lapin::Error),
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused message {0}")]
    Nacked(String),
    #[error("message {0} could not be routed to any queue (is the topology declared?)")]
    Unroutable(String),
    #[error("message {0} was published without confirmation")]
    Unconfirmed(String),
    #[error(transparent)]
    Encode(#[from] tsst_messages::EncodeError),
}

/// A URL with its password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let slash = if rest.contains('/') { "/" } else { "" };
    format!("{scheme}://{user}:***@{host}{slash}{path}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://:pw@host:6379"),
            "redis://:***@host:6379"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
