//! Analysis: rolling statistics, detectors and alert lifecycles, sharded by device.
//! Logic lives in plain structs (`stats`, `detector`, `lifecycle`, `shard`); `actor` is the actix shell.

pub(crate) mod actor;
pub mod budget;
pub mod detector;
pub mod device;
pub(crate) mod history;
pub(crate) mod lifecycle;
pub mod samples;
pub mod shard;
pub mod stats;
pub mod trend;
