//! Actix shell around `Store`: runs on its own arbiter so disk work never blocks analysis,
//! logs alerts, writes snapshots (flushing before it answers) and applies alert retention.

use std::time::Duration;

use actix::prelude::*;

use super::{AlertFilter, Store};
use crate::config::StoreConfig;
use crate::model::{now_ms, Alert};

pub struct StoreActor {
    store: Store,
    retention: StoreConfig,
}

impl StoreActor {
    pub fn new(store: Store, retention: StoreConfig) -> Self {
        StoreActor { store, retention }
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_secs(60), |act, _| {
            let r = &act.retention;
            match act
                .store
                .prune_alerts(now_ms(), r.alert_log_max_age.as_ms(), r.alert_log_max)
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "alert log retention applied"),
                Err(e) => tracing::error!(error = %e, "alert log retention failed"),
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

/// Append alert transitions to the alert log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LogAlerts(pub Vec<Alert>);

impl Handler<LogAlerts> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: LogAlerts, _: &mut Self::Context) {
        for a in &msg.0 {
            if let Err(e) = self.store.log_alert(a) {
                tracing::error!(error = %e, alert = %a.id, "cannot write alert log");
            }
        }
    }
}

/// Save device snapshots and flush; answers once they are durable.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SaveSnapshot(pub Vec<(String, Vec<u8>)>);

impl Handler<SaveSnapshot> for StoreActor {
    type Result = Result<(), String>;
    fn handle(&mut self, msg: SaveSnapshot, _: &mut Self::Context) -> Self::Result {
        let n = msg.0.len();
        self.store
            .save_snapshots(msg.0)
            .and_then(|_| self.store.flush())
            .map(|bytes| tracing::debug!(devices = n, flushed_bytes = bytes, "snapshot saved"))
            .map_err(|e| e.to_string())
    }
}

#[derive(Message)]
#[rtype(result = "Result<Vec<Alert>, String>")]
pub struct QueryAlerts(pub AlertFilter);

impl Handler<QueryAlerts> for StoreActor {
    type Result = Result<Vec<Alert>, String>;
    fn handle(&mut self, msg: QueryAlerts, _: &mut Self::Context) -> Self::Result {
        self.store.alerts(&msg.0).map_err(|e| e.to_string())
    }
}
