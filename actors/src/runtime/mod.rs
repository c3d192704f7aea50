//! Running roles in a worker: actix actors fed by batching consumers.
mod context;
mod models;
mod worker;

pub use context::{Context, DeliveryOf, RunInfo};
pub use models::{ModelFactory, Models, ScriptedFactory, SharedPolicy, SharedValue};
pub use worker::{BatchSettings, RoleSpec, Worker};
