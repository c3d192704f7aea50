//! The actors of tsst and what they run on: the search logic, the model backends,
//! the RabbitMQ bridge and the Redis store.
pub mod backend;
pub mod broker;
pub mod search;
pub mod store;
