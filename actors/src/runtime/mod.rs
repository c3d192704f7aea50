//! Running roles in a worker: actix actors fed by batching consumers.
mod context;
mod heartbeat;
mod models;
mod published;
mod worker;

pub use context::{Context, DeliveryOf, RunInfo};
pub use heartbeat::{heartbeat, BEAT_MAX_AGE};
pub use models::{Expand, ExpandJob, Models, PolicyActor, Score, ValueActor, Warm};
pub use published::preload_published;
// What `Models::new` takes, so callers need not name the backend crate.
pub use tsst_backend::{ModelFactory, ScriptedFactory};
pub use worker::{BatchSettings, RoleSpec, Worker};
