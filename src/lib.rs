//! edgewatch: an edge sensor collector. Sources decode samples, shards analyse them, the hub
//! fans alerts and summaries out, the store keeps state in sled. See docs/ARCHITECTURE.md.

pub mod analysis;
mod api;
pub mod app;
mod auth;
mod clock;
pub mod config;
pub mod decode;
mod fds;
#[doc(hidden)]
pub mod fuzzing;
mod hub;
pub mod model;
mod mqtt;
pub mod probe;
mod protocol;
mod reload;
pub mod replay;
mod service;
mod sinks;
pub mod sources;
pub mod status;
mod store;
pub mod tail;
mod timestamp;
mod upstream;
