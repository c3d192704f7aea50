//! The actors of tsst and what they run on: the RabbitMQ bridge and the Redis store.
pub mod broker;
pub mod store;
