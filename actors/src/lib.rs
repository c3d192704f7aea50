//! The actors of tsst and what they run on: the search logic, the model actors,
//! the RabbitMQ bridge, the Redis store and the worker runtime.
pub mod broker;
pub mod heal;
pub mod llm;
pub mod metrics;
pub mod outcome;
pub mod pipeline;
pub mod roles;
pub mod runtime;
pub mod search;
pub mod store;
pub mod train;
pub mod warmup;
