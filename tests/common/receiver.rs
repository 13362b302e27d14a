//! A real upstream receiver for tests: a tokio-tungstenite WebSocket server on loopback that
//! records every message per connection and acknowledges by `seq` as a test script tells it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// How the receiver behaves.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Send `{"type":"ack","seq":N}` for each message with a seq.
    pub ack: bool,
    /// Wait this long before handling each message (a slow receiver).
    pub delay: Duration,
    /// First connection only: after this many messages (hello excluded), stop acking and...
    pub ack_first: Option<usize>,
    /// ...drop the connection abruptly after this many.
    pub drop_after: Option<usize>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            ack: true,
            delay: Duration::ZERO,
            ack_first: None,
            drop_after: None,
        }
    }
}

/// Messages received, as (connection number, message).
pub type Log = Arc<Mutex<Vec<(usize, Value)>>>;

pub struct Receiver {
    pub addr: SocketAddr,
    pub log: Log,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// Listens on `addr` (use port 0 for any free port).
    pub fn start(addr: &str, b: Behaviour) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let local = listener.local_addr().expect("addr");
        let sink = log.clone();
        rt.spawn(async move {
            let mut conn = 0usize;
            while let Ok((stream, _)) = listener.accept().await {
                conn += 1;
                let (sink, n) = (sink.clone(), conn);
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let mut seen = 0usize;
                    while let Some(Ok(msg)) = ws.next().await {
                        let Message::Text(t) = msg else { continue };
                        let v: Value = serde_json::from_str(&t).expect("receiver got JSON");
                        if !b.delay.is_zero() {
                            tokio::time::sleep(b.delay).await;
                        }
                        let is_hello = v["type"] == "hello";
                        let seq = v["seq"].as_u64();
                        sink.lock().expect("log").push((n, v));
                        if is_hello {
                            continue;
                        }
                        seen += 1;
                        let first = n == 1;
                        let acking = b.ack && !(first && b.ack_first.is_some_and(|k| seen > k));
                        if let (true, Some(seq)) = (acking, seq) {
                            let ack = serde_json::json!({"type": "ack", "seq": seq}).to_string();
                            if ws.send(Message::text(ack)).await.is_err() {
                                return;
                            }
                        }
                        if first && b.drop_after.is_some_and(|k| seen >= k) {
                            return; // dropped without a close frame
                        }
                    }
                });
            }
        });
        Receiver {
            addr: local,
            log,
            rt: Some(rt),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Stops listening and drops every connection (an outage).
    pub fn stop(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }

    pub fn messages(&self) -> Vec<(usize, Value)> {
        self.log.lock().expect("log").clone()
    }

    /// Waits until `pred` holds for the log (panics after `timeout`).
    pub fn wait(&self, timeout: Duration, what: &str, pred: impl Fn(&[(usize, Value)]) -> bool) {
        let end = Instant::now() + timeout;
        loop {
            if pred(&self.log.lock().expect("log")) {
                return;
            }
            assert!(
                Instant::now() < end,
                "receiver: no {what} within {timeout:?}; got {} messages",
                self.messages().len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Messages of a type, in arrival order.
pub fn of_type<'a>(log: &'a [(usize, Value)], t: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|(_, v)| v["type"] == t)
        .map(|(_, v)| v)
        .collect()
}
