//! Analysis: rolling statistics, detectors and alert lifecycles, sharded by device.
//! Logic lives in plain structs (`stats`, `detectors`, `shard`); `actor` is the actix shell.

pub mod actor;
pub mod detectors;
pub mod history;
pub mod shard;
pub mod stats;
