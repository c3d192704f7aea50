//! Which backend serves a model name. A worker asks its factory once per model, on the
//! model's own thread, and keeps what it gets.
use crate::{
    parse_scripted, BackendError, PolicyBackend, ScriptedPolicy, ScriptedValue, ValueBackend,
};

/// Loads backends for model names (`scripted` or an exported model directory).
pub trait ModelFactory: Send + Sync + 'static {
    fn policy(&self, name: &str) -> Result<Box<dyn PolicyBackend>, BackendError>;
    fn value(&self, name: &str) -> Result<Box<dyn ValueBackend>, BackendError>;
}

/// Serves only the scripted backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScriptedFactory;

impl ScriptedFactory {
    fn unsupported(name: &str) -> BackendError {
        BackendError {
            backend: format!("model `{name}`"),
            reason:
                "this worker serves only `scripted[:<N>ms][:per<K>][:flaky<K>][:panic<K>]` models"
                    .into(),
        }
    }
}

impl ModelFactory for ScriptedFactory {
    fn policy(&self, name: &str) -> Result<Box<dyn PolicyBackend>, BackendError> {
        let behaviour = parse_scripted(name).ok_or_else(|| Self::unsupported(name))?;
        Ok(Box::new(ScriptedPolicy::new(behaviour)))
    }

    fn value(&self, name: &str) -> Result<Box<dyn ValueBackend>, BackendError> {
        let behaviour = parse_scripted(name).ok_or_else(|| Self::unsupported(name))?;
        Ok(Box::new(ScriptedValue::new(behaviour)))
    }
}
