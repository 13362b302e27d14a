//! The process signals the appliance acts on: SIGINT/SIGTERM stop it, SIGHUP reloads the config.
//! Listeners are installed once, so a signal that arrives while a reload is running is not lost.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Stop,
    Reload,
}

pub struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
    hup: Option<Signal>,
}

fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch {name}");
            None
        }
    }
}

async fn recv(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

impl Signals {
    /// Installs the handlers (from then on SIGHUP no longer terminates the process). Needs a
    /// tokio runtime.
    pub fn install() -> Self {
        Signals {
            term: listen(SignalKind::terminate(), "SIGTERM"),
            int: listen(SignalKind::interrupt(), "SIGINT"),
            hup: listen(SignalKind::hangup(), "SIGHUP (config reload is off)"),
        }
    }

    /// Waits for the next request; signals received since the previous call are not lost.
    pub async fn next(&mut self) -> Request {
        tokio::select! {
            _ = recv(&mut self.term) => Request::Stop,
            _ = recv(&mut self.int) => Request::Stop,
            _ = recv(&mut self.hup) => Request::Reload,
        }
    }
}
