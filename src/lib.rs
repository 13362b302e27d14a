//! edgewatch: an edge sensor collector. Sources decode samples, shards analyse them, the hub
//! fans alerts and summaries out, the store keeps state in sled. See docs/ARCHITECTURE.md.

pub mod analysis;
pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod decode;
pub mod hub;
pub mod model;
pub mod mqtt;
pub mod protocol;
pub mod reload;
pub mod replay;
pub mod service;
pub mod sinks;
pub mod sources;
pub mod status;
pub mod store;
pub mod tail;
pub mod timestamp;
pub mod upstream;
