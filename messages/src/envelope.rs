//! The versioned envelope every message travels in, and decoding that never panics.
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bumped whenever a message changes incompatibly; a process refuses other versions.
pub const SCHEMA_VERSION: u32 = 1;

/// A task or event with the schema version and an idempotency id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub schema: u32,
    /// Deterministic id of the work this message asks for: delivering it twice must
    /// have the effect of delivering it once, and consumers dedupe by it.
    pub id: String,
    pub body: T,
}

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("message is not a JSON object with a `schema` field: {0}")]
    NotAnEnvelope(serde_json::Error),
    #[error("message has no schema version")]
    MissingVersion,
    #[error("message schema version {found} is not supported (this build speaks {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("malformed message: {0}")]
    Malformed(serde_json::Error),
}

#[derive(Debug, Error)]
#[error("cannot encode message: {0}")]
pub struct EncodeError(#[from] serde_json::Error);

impl<T> Envelope<T> {
    pub fn new(id: impl Into<String>, body: T) -> Self {
        Envelope {
            schema: SCHEMA_VERSION,
            id: id.into(),
            body,
        }
    }
}

impl<T: Serialize> Envelope<T> {
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(serde_json::to_vec(self)?)
    }
}

impl<T: DeserializeOwned> Envelope<T> {
    /// Checks the version before the body, so that a message from a newer or older
    /// build is reported as such rather than as a confusing field error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Header {
            schema: Option<u32>,
        }
        let header: Header = serde_json::from_slice(bytes).map_err(DecodeError::NotAnEnvelope)?;
        match header.schema {
            None => Err(DecodeError::MissingVersion),
            Some(found) if found != SCHEMA_VERSION => Err(DecodeError::UnsupportedVersion {
                found,
                supported: SCHEMA_VERSION,
            }),
            Some(_) => serde_json::from_slice(bytes).map_err(DecodeError::Malformed),
        }
    }
}
