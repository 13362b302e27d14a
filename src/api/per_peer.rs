//! A cap on the API connections one peer address holds: a connection over it is shut at once
//! (before a byte is read), so one host cannot take every slot from `/healthz` and the dashboard.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::Extensions;

use crate::status::{PipelineStats, RateLimitedLog};

/// Open connections per peer, shared by the server's connection hook.
pub struct PerPeer {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    log: Mutex<RateLimitedLog>,
}

/// One admitted connection's count, kept in its connection data; released when it closes.
struct Held {
    ip: IpAddr,
    table: Arc<PerPeer>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut m) = self.table.open.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

impl PerPeer {
    /// `cap` connections per address; 0: no cap.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(PerPeer {
            cap,
            open: Mutex::new(HashMap::new()),
            log: Mutex::new(RateLimitedLog::new(5, Duration::from_secs(10))),
        })
    }

    /// Takes a place for `ip`; `None` when it already holds `cap` connections.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Held> {
        let mut m = self.open.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if self.cap > 0 && *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Held {
            ip,
            table: self.clone(),
        })
    }

    /// The server's `on_connect` hook: counts the connection, or shuts it over the cap.
    pub fn on_connect(
        self: &Arc<Self>,
        io: &dyn std::any::Any,
        ext: &mut Extensions,
        stats: &PipelineStats,
    ) {
        let Some(tcp) = io.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let Ok(peer) = tcp.peer_addr() else { return };
        match self.take(peer.ip()) {
            Some(held) => {
                ext.insert(Arc::new(held));
            }
            None => {
                // the dispatcher reads EOF at once and frees the server's slot
                let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Both);
                let n = stats.api_refused_per_ip.fetch_add(1, Relaxed) + 1;
                if let Ok(mut l) = self.log.lock() {
                    if let (true, suppressed) = l.allow() {
                        tracing::warn!(%peer, cap = self.cap, refused = n, suppressed_before = suppressed.unwrap_or(0), "API connection refused: api.max_connections_per_ip reached");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PerPeer;

    #[test]
    fn each_address_gets_its_cap_and_closing_frees_a_place() {
        let t = PerPeer::new(2);
        let a = "10.0.0.1".parse().expect("ip");
        let b = "10.0.0.2".parse().expect("ip");
        let a1 = t.take(a).expect("1st");
        let _a2 = t.take(a).expect("2nd");
        assert!(t.take(a).is_none(), "over the cap");
        let _b1 = t.take(b).expect("another address");
        drop(a1);
        assert!(t.take(a).is_some(), "a place freed");
        let open = PerPeer::new(0);
        let held: Vec<_> = (0..100).filter_map(|_| open.take(a)).collect();
        assert_eq!(held.len(), 100, "0: no cap");
    }
}
