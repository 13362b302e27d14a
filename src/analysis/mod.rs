//! Analysis: rolling statistics, detectors and alert lifecycles, sharded by device.
//! Logic lives in plain structs (`stats`, `detectors`, `shard`); `actor` is the actix shell.

pub mod actor;
pub mod control;
pub mod detectors;
pub mod ensemble;
pub mod history;
pub mod novelty;
pub mod predict;
pub mod robust;
pub mod seasonal;
pub mod shard;
pub mod stats;
