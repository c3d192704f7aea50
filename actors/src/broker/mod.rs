//! The work queues: RabbitMQ in distributed mode, an in-process queue in embedded
//! mode, behind one trait held to one conformance suite (`tests/broker_conformance.rs`).
mod amqp;
mod management;
mod memory;

pub use amqp::{AmqpBroker, AmqpConsumer, AmqpDelivery, EventStream};
pub use management::{Management, ManagementError, QueueStats};
pub use memory::{MemoryBroker, MemoryConsumer, MemoryDelivery};
use std::future::Future;
use thiserror::Error;
use tsst_messages::{Envelope, Event, Role, Task};

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
    #[error("RabbitMQ did not answer within {secs} s: {what}")]
    TimedOut { what: &'static str, secs: u64 },
    #[error(transparent)]
    Encode(#[from] tsst_messages::EncodeError),
}

/// `Unpin`: a broker and its deliveries live in actors' state.
pub trait Broker: Clone + Send + Sync + Unpin + 'static {
    type Consumer: Consumer;

    /// Declares queues and exchanges; safe to call from every process that starts.
    fn declare(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Publishes tasks to their roles' queues; returns once the broker holds them all.
    fn publish(
        &self,
        tasks: &[Envelope<Task>],
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Publishes events to every subscriber (best effort: events are for display).
    fn publish_events(
        &self,
        events: &[Envelope<Event>],
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Starts consuming `role`'s queue with at most `prefetch` unsettled deliveries.
    fn consume(
        &self,
        role: Role,
        prefetch: u16,
    ) -> impl Future<Output = Result<Self::Consumer, BrokerError>> + Send;
}

pub trait Consumer: Send + 'static {
    type Delivery: Delivery;

    /// The next delivery; `None` once the consumer is closed.
    fn next(&mut self) -> impl Future<Output = Option<Result<Self::Delivery, BrokerError>>> + Send;
}

/// A message taken from a queue. Settle it once: ack only after its effect is
/// committed; a delivery dropped unsettled goes back to the queue.
pub trait Delivery: Send + Sync + Unpin + 'static {
    fn data(&self) -> &[u8];
    fn redelivered(&self) -> bool;
    /// Which delivery of the message this is: 1 the first time, more after requeues
    /// or after a consumer was lost holding it.
    fn attempt(&self) -> u32;
    fn ack(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Acks a batch taken from one consumer, in as few frames as the broker allows.
    fn ack_all(deliveries: Vec<Self>) -> impl Future<Output = Result<(), BrokerError>> + Send
    where
        Self: Sized,
    {
        async move {
            for d in deliveries {
                d.ack().await?;
            }
            Ok(())
        }
    }
    /// Its consumer's channel is gone, so the broker has put it back already (another
    /// consumer, or this one's next subscription, gets it again): processing it would
    /// only repeat work.
    fn lost(&self) -> bool {
        false
    }
    /// Puts it back for another consumer.
    fn requeue(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Moves it to the role's dead-letter queue with `reason`.
    fn dead_letter(&self, reason: &str) -> impl Future<Output = Result<(), BrokerError>> + Send;
}
