//! Loads each model version a trainer publishes as its event arrives, so the first
//! batch that needs it does not wait for the load.
use super::Context;
use crate::broker::AmqpBroker;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tsst_messages::{Event, ModelKind};

/// Preloads every `ModelPublished` event's model until `stop`. A lost subscription
/// is made again with backoff; nothing here stops the worker. Events are not
/// persisted: a worker that was away loads a version with its first batch instead.
pub async fn preload_published<S: Store>(
    ctx: Arc<Context<S, AmqpBroker>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = Duration::from_millis(200);
    loop {
        let subscribed = tokio::select! {
            _ = stop.changed() => return,
            s = ctx.broker.events() => s,
        };
        match subscribed {
            Ok(mut events) => {
                tracing::info!("watching for published models");
                wait = Duration::from_millis(200);
                loop {
                    let event = tokio::select! {
                        _ = stop.changed() => return,
                        e = events.next() => e,
                    };
                    let Some(event) = event else { break };
                    if let Event::ModelPublished {
                        model,
                        name,
                        version,
                        path,
                    } = event.body
                    {
                        let path = path.display().to_string();
                        match ctx.models.preload(model == ModelKind::Policy, &path).await {
                            Ok(()) => {
                                tracing::info!(run = %name, version, model = %path, "loaded a published model ahead of its first batch")
                            }
                            Err(e) => {
                                tracing::warn!(run = %name, version, model = %path, error = %e, "could not load a published model; its first batch will try again")
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot subscribe to events; trying again"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}
