//! The upstream receiver of the power-cut test: a WebSocket server on a fixed loopback port that
//! can be up (acking, slow, or silent) or down, recording every message and whether it acked it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// How the receiver answers while it is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Acks every message at once.
    Ack = 0,
    /// Waits 10 ms per message, then acks (slower than the load at times of backlog).
    Slow = 1,
    /// Receives but never acks.
    Silent = 2,
}

/// One message as received: its JSON and whether the receiver sent an ack for it.
#[derive(Clone, Debug)]
pub struct Got {
    pub msg: Value,
    pub acked: bool,
}

pub type Log = Arc<Mutex<Vec<Got>>>;

pub struct Receiver {
    port: u16,
    mode: Arc<AtomicU8>,
    pub log: Log,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// A receiver for `port`, down until `up`.
    pub fn new(port: u16) -> Self {
        Receiver {
            port,
            mode: Arc::new(AtomicU8::new(Mode::Ack as u8)),
            log: Arc::default(),
            rt: None,
        }
    }

    pub fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Relaxed);
    }

    pub fn is_up(&self) -> bool {
        self.rt.is_some()
    }

    /// Starts listening (no-op when up).
    pub fn up(&mut self) {
        if self.rt.is_some() {
            return;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().expect("socket");
            s.set_reuseaddr(true).expect("reuseaddr");
            s.bind(([127, 0, 0, 1], self.port).into())
                .unwrap_or_else(|e| panic!("bind receiver port {}: {e}", self.port));
            s.listen(16).expect("listen")
        });
        let (log, mode) = (self.log.clone(), self.mode.clone());
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, mode) = (log.clone(), mode.clone());
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        let Message::Text(t) = msg else { continue };
                        let v: Value = serde_json::from_str(&t).expect("receiver got JSON");
                        let m = mode.load(Relaxed);
                        if m == Mode::Slow as u8 {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        let seq = v["seq"].as_u64().filter(|_| v["type"] != "hello");
                        let ack = seq.is_some() && m != Mode::Silent as u8;
                        // Recorded as acked before the ack is written (the checker may read the log
                        // at any moment): an ack that fails to go out only allows a repeat.
                        log.lock().expect("log").push(Got { msg: v, acked: ack });
                        if let (true, Some(seq)) = (ack, seq) {
                            let a = serde_json::json!({"type": "ack", "seq": seq}).to_string();
                            if ws.send(Message::text(a)).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        self.rt = Some(rt);
    }

    /// Stops listening and drops every connection (an outage).
    pub fn down(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }

    pub fn len(&self) -> usize {
        self.log.lock().expect("log").len()
    }

    /// Messages received from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Got> {
        self.log.lock().expect("log")[from..].to_vec()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}
