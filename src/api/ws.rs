//! `/ws`: the live stream of alerts and summaries (actix-ws). Each client reads its own cursor of
//! the hub's broadcast ring; one that falls behind or stops reading is dropped, never waited for.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::frame_limit::FrameLimit;
use super::{ApiError, ApiState};
use crate::model::AlertState;
use crate::protocol::{self, Kind, Wire};

/// A client that cannot take a message within this time is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsQuery {
    /// Only events of this device (summaries are cut down to its entries).
    device: Option<String>,
    /// `alert` or `summary`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `firing` or `resolved`: only alerts in that state (summaries are not affected).
    state: Option<String>,
    /// The API token, for browsers (checked by `auth::require_token_ws` before this runs).
    #[serde(rename = "token")]
    _token: Option<String>,
}

struct Filter {
    device: Option<String>,
    kind: Option<Kind>,
    state: Option<AlertState>,
}

impl Filter {
    /// The text to send for this event, or `None` when the filter excludes it.
    fn apply(&self, node: &str, w: &Wire) -> Option<String> {
        if self.kind.is_some_and(|k| k != w.kind) {
            return None;
        }
        if w.kind == Kind::Alert && self.state.is_some() && self.state != w.state {
            return None;
        }
        let Some(dev) = &self.device else {
            return Some(w.json.clone());
        };
        match (&w.kind, &w.summary) {
            (Kind::Alert, _) => (w.device.as_deref() == Some(dev.as_str())).then(|| w.json.clone()),
            (Kind::Summary, Some(s)) => {
                let mut mine = (**s).clone();
                mine.devices.retain(|e| &e.device == dev);
                mine.vectors.retain(|v| &v.device == dev);
                (!mine.devices.is_empty()).then(|| protocol::summary_json(node, None, &mine))
            }
            (Kind::Summary, None) => None,
        }
    }
}

pub async fn handle(
    req: HttpRequest,
    body: web::Payload,
    s: web::Data<ApiState>,
    q: web::Query<WsQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    let q = q.into_inner();
    let kind = match q.kind.as_deref() {
        None | Some("") => None,
        Some("alert") => Some(Kind::Alert),
        Some("summary") => Some(Kind::Summary),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "type must be alert or summary, not {other:?}"
            ))
            .into())
        }
    };
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some("firing") => Some(AlertState::Firing),
        Some("resolved") => Some(AlertState::Resolved),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "state must be firing or resolved, not {other:?}"
            ))
            .into())
        }
    };
    let filter = Filter {
        device: q.device.filter(|d| !d.is_empty()),
        kind,
        state,
    };
    // Clients send only control frames: a larger declared frame ends the connection at once.
    let (limited, oversize) = FrameLimit::new(body, s.limits.ws_max_frame);
    let boxed: std::pin::Pin<Box<dyn futures_util::Stream<Item = _>>> = Box::pin(limited);
    let body = web::Payload::from_request(&req, &mut actix_web::dev::Payload::from(boxed)).await?;
    let (resp, mut session, mut incoming) = actix_ws::handle(&req, body)?;
    let ping_every = s.limits.ws_ping_interval;
    let max_frame = s.limits.ws_max_frame;
    let mut rx = s.events.subscribe();
    let state = s.into_inner();
    let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    actix_web::rt::spawn(async move {
        let p = &state.status.pipeline;
        p.ws_clients.fetch_add(1, Relaxed);
        tracing::debug!(%peer, "ws client connected");
        let hello = protocol::local_hello_json(&state.node);
        let mut close = None;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut last_heard = tokio::time::Instant::now();
        if session.text(hello).await.is_ok() {
            loop {
                tokio::select! {
                    _ = ping.tick() => {
                        if last_heard.elapsed() >= ping_every * 3 {
                            p.ws_closed_idle.fetch_add(1, Relaxed);
                            tracing::warn!(%peer, "ws client dropped: no pong for three ping intervals");
                            close = Some(CloseReason { code: CloseCode::Policy, description: Some("no pong".into()) });
                            break;
                        }
                        if session.ping(b"").await.is_err() { break; }
                    }
                    ev = rx.recv() => match ev {
                        Ok(w) => {
                            let Some(text) = filter.apply(&state.node, &w) else { continue };
                            match tokio::time::timeout(SEND_TIMEOUT, session.text(text)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => break,
                                Err(_) => {
                                    p.ws_dropped_slow.fetch_add(1, Relaxed);
                                    tracing::warn!(%peer, "ws client dropped: not reading");
                                    break;
                                }
                            }
                        }
                        Err(RecvError::Lagged(n)) => {
                            p.ws_dropped_slow.fetch_add(1, Relaxed);
                            tracing::warn!(%peer, missed = n, "ws client dropped: too slow");
                            close = Some(CloseReason { code: CloseCode::Again, description: Some(format!("too slow: {n} messages missed")) });
                            break;
                        }
                        Err(RecvError::Closed) => {
                            close = Some(CloseReason { code: CloseCode::Away, description: Some("shutting down".into()) });
                            break;
                        }
                    },
                    msg = incoming.next() => {
                        last_heard = tokio::time::Instant::now();
                        match msg {
                            Some(Ok(Message::Ping(b))) => {
                                if session.pong(&b).await.is_err() { break; }
                            }
                            Some(Ok(Message::Close(_))) | None => break,
                            Some(Err(e)) => {
                                if oversize.load(Relaxed) {
                                    p.ws_closed_oversize.fetch_add(1, Relaxed);
                                    tracing::warn!(%peer, limit = max_frame, "ws client closed: frame over api.ws_max_frame declared");
                                    close = Some(CloseReason { code: CloseCode::Size, description: Some(format!("frames over {max_frame} bytes are not accepted")) });
                                } else {
                                    tracing::debug!(%peer, error = %e, "ws client protocol error");
                                    close = Some(CloseReason { code: CloseCode::Protocol, description: None });
                                }
                                break;
                            }
                            Some(Ok(_)) => {}
                        }
                    },
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), session.close(close)).await;
        p.ws_clients.fetch_sub(1, Relaxed);
        tracing::debug!(%peer, "ws client disconnected");
    });
    Ok(resp)
}
