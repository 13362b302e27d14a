//! Analysis: rolling statistics, detectors and alert lifecycles, sharded by device.
//! Logic lives in plain structs (`stats`, `detector`, `lifecycle`, `shard`); `actor` is the actix shell.

pub mod actor;
pub mod detector;
pub mod history;
pub mod lifecycle;
pub mod shard;
pub mod stats;
