//! Which model backends a worker has loaded, by the name a run's spec gives. A model
//! is loaded once per worker and shared by the role instances that use it.
use crate::backend::{
    parse_scripted, BackendError, PolicyBackend, ScriptedPolicy, ScriptedValue, ValueBackend,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub type SharedPolicy = Arc<Mutex<Box<dyn PolicyBackend>>>;
pub type SharedValue = Arc<Mutex<Box<dyn ValueBackend>>>;

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
            reason: "this worker serves only `scripted[:<N>ms][:flaky<K>]` models".into(),
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

pub struct Models {
    factory: Box<dyn ModelFactory>,
    policies: Mutex<HashMap<String, SharedPolicy>>,
    values: Mutex<HashMap<String, SharedValue>>,
}

impl Models {
    pub fn new(factory: impl ModelFactory) -> Self {
        Models {
            factory: Box::new(factory),
            policies: Mutex::new(HashMap::new()),
            values: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self, name: &str) -> Result<SharedPolicy, BackendError> {
        let mut loaded = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = loaded.get(name) {
            return Ok(p.clone());
        }
        let p: SharedPolicy = Arc::new(Mutex::new(self.factory.policy(name)?));
        loaded.insert(name.to_owned(), p.clone());
        Ok(p)
    }

    pub fn value(&self, name: &str) -> Result<SharedValue, BackendError> {
        let mut loaded = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = loaded.get(name) {
            return Ok(v.clone());
        }
        let v: SharedValue = Arc::new(Mutex::new(self.factory.value(name)?));
        loaded.insert(name.to_owned(), v.clone());
        Ok(v)
    }
}
