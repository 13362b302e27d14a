//! Sinks besides `/ws` and `[upstream]`: places alerts and summaries are delivered to
//! (`[[sink]]` in the config). Each has its own durable outbox in the store.

pub mod consumer;
pub mod mqtt;
pub mod remote_write;
