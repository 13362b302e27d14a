//! sd_notify messages to systemd (READY, RELOADING, STOPPING, STATUS, WATCHDOG). Every call is a
//! no-op when the process was not started by systemd (no `NOTIFY_SOCKET`), so one binary runs anywhere.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Every source, the store and the API are up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A config reload starts; `ready` ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(mono) => send(&[NotifyState::Reloading, mono]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// One line shown by `systemctl status`.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// Keep-alive for `WatchdogSec=`; call only when the pipeline is known to be alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// `WatchdogSec=` of the unit, when systemd enabled the watchdog for this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Waits until every source reports healthy (listening, connected, running), at most `max`;
/// returns the ids of those still down (a TCP peer that is away must not block start-up forever).
pub async fn wait_sources_up(status: &crate::status::StatusBoard, max: Duration) -> Vec<String> {
    use std::sync::atomic::Ordering::Relaxed;
    let end = tokio::time::Instant::now() + max;
    loop {
        let down: Vec<String> = status
            .sources()
            .iter()
            .filter(|s| !s.healthy.load(Relaxed))
            .map(|s| s.id.clone())
            .collect();
        if down.is_empty() || tokio::time::Instant::now() >= end {
            return down;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// READY=1 once the sources are up (or `max` passed), with a status line saying which are not.
pub async fn ready_when_up(status: &crate::status::StatusBoard, api: &str, max: Duration) {
    let down = wait_sources_up(status, max).await;
    let n = status.sources().len();
    let line = if down.is_empty() {
        format!("running: {n} sources up, API at http://{api}/")
    } else {
        tracing::warn!(sources = %down.join(","), "sources not up yet at start-up; they keep retrying");
        format!(
            "running: sources not up yet: {}; API at http://{api}/",
            down.join(",")
        )
    };
    ready(&line);
}
