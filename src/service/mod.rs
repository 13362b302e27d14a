//! Running as a systemd service: readiness, reload and status notifications (`notify`), and the
//! watchdog that feeds systemd's only while every pipeline actor answers a ping (`watchdog`).

pub mod notify;
pub mod signals;
pub mod watchdog;
