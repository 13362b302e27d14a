//! edgewatch: an edge sensor collector. Sources decode samples, shards analyse them, the hub
//! fans alerts and summaries out, the store keeps state in sled. See docs/ARCHITECTURE.md.

pub mod analysis;
pub mod api;
pub mod app;
pub mod config;
pub mod decode;
pub mod hub;
pub mod model;
pub mod replay;
pub mod sources;
pub mod status;
pub mod store;
