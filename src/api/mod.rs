//! Local HTTP API (actix-web): health, status, devices, alert log, the `/ws` live stream and the
//! dashboard. Handlers only read shared counters or ask actors; none of them can stall analysis.

mod auth;
mod dashboard;
mod frame_limit;
mod history;
pub mod metrics;
pub(crate) mod origin;
mod per_peer;
mod shed;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Addr;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::analysis::actor::{QueryCorrelation, QueryDevices, QueryModes, QuerySeries, ShardActor};
use crate::analysis::shard::{DeviceView, SeriesError};
use crate::auth::ApiToken;
use crate::model::AlertState;
use crate::protocol::Wire;
use crate::status::StatusBoard;
use crate::store::{AlertFilter, QueryAlerts, StoreActor};

/// What every handler can reach.
pub struct ApiState {
    pub node: String,
    pub status: Arc<StatusBoard>,
    pub shards: Vec<Addr<ShardActor>>,
    pub store: Addr<StoreActor>,
    pub events: broadcast::Sender<Arc<Wire>>,
    /// When set, `/api/*` and `/ws` require it (`api.token_file`).
    pub token: Option<ApiToken>,
    /// The downsampled history in sled (`None` with `store.history = false`).
    pub history: Option<crate::store::history::History>,
    /// `store.history_1m_max_age` in ms: how far back 1-minute buckets reach.
    pub history_1m_max_age: i64,
    /// The http source without a listener of its own (`POST /api/ingest`).
    pub ingest: crate::sources::http::ApiSlot,
    /// `[api.metrics]`: what `/metrics` exposes.
    pub metrics: crate::config::MetricsConfig,
    /// The analysis shards' queues, for their depth on `/metrics` (weak: the API never keeps
    /// a queue open at shutdown).
    pub queues: Vec<tokio::sync::mpsc::WeakSender<crate::sources::route::Ingest>>,
    /// The store's directory, for its size on `/metrics`.
    pub data_dir: Option<std::path::PathBuf>,
    /// Which `Host`/`Origin` may use `/api/*` and `/ws` (`api.allowed_origins`).
    pub origins: origin::OriginPolicy,
    /// Connection, timeout and descriptor limits (`[api]`).
    pub limits: ApiLimits,
}

/// The `[api]` limits the server and its handlers apply.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Connections served at once, already lowered to fit the descriptors (`connection_cap`).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub request_timeout: std::time::Duration,
    pub keep_alive: std::time::Duration,
    pub ws_max_frame: usize,
    pub ws_ping_interval: std::time::Duration,
    pub fd_reserve: usize,
}

impl ApiLimits {
    /// From the config; `reserved` is what sources may hold (TCP clients) beyond `fd_reserve`.
    /// The cap leaves the descriptors already open, the reserve and `reserved` alone, but never
    /// goes below 4 (a 503 needs a connection to be said on).
    pub fn new(c: &crate::config::ApiConfig, reserved: usize) -> Self {
        let free = crate::fds::limit().saturating_sub(crate::fds::open());
        let fit = free.saturating_sub(c.fd_reserve + reserved);
        ApiLimits {
            max_connections: c.max_connections.min(fit).max(4),
            max_connections_per_ip: c.max_connections_per_ip,
            request_timeout: c.request_timeout.0,
            keep_alive: c.keep_alive.0,
            ws_max_frame: c.ws_max_frame,
            ws_ping_interval: c.ws_ping_interval.0,
            fd_reserve: c.fd_reserve,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode;
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({ "error": self.to_string() }))
    }
}

/// Binds the API on `listen` (port 0 picks a free port) and returns the bound address and the
/// server future, which the caller spawns.
pub fn start(
    listen: SocketAddr,
    state: ApiState,
) -> std::io::Result<(SocketAddr, actix_web::dev::Server)> {
    let limits = state.limits.clone();
    let p = &state.status.pipeline;
    p.api_max_connections.store(
        limits.max_connections as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    p.fd_reserve.store(
        limits.fd_reserve as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let per_peer = per_peer::PerPeer::new(limits.max_connections_per_ip);
    let board = state.status.clone();
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        use actix_web::middleware::{from_fn, Compress};
        App::new()
            .wrap(from_fn(shed::low_fds))
            .app_data(state.clone())
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::BadRequest(format!("bad query: {e}")).into()),
            )
            .route("/healthz", web::get().to(healthz))
            .service(
                web::resource("/metrics")
                    .wrap(from_fn(auth::require_token))
                    .wrap(Compress::default())
                    .route(web::get().to(metrics::handle)),
            )
            .service(
                web::scope("/api")
                    .wrap(from_fn(auth::require_token))
                    .wrap(from_fn(origin::check_origin))
                    .wrap(Compress::default())
                    .route("/status", web::get().to(status))
                    .route("/devices", web::get().to(devices))
                    .route("/devices/{id}", web::get().to(device))
                    .route("/devices/{id}/series", web::get().to(series))
                    .route("/devices/{id}/correlation", web::get().to(correlation))
                    .route("/devices/{id}/modes", web::get().to(modes))
                    .route("/alerts", web::get().to(alerts))
                    .route("/series", web::get().to(history::series))
                    .route("/ingest", web::post().to(ingest))
                    .default_service(web::to(api_not_found)),
            )
            .service(
                web::resource("/ws")
                    .wrap(from_fn(auth::require_token_ws))
                    .wrap(from_fn(origin::check_origin))
                    .route(web::get().to(ws::handle)),
            )
            .service(
                web::scope("")
                    .wrap(Compress::default())
                    .configure(dashboard::routes),
            )
    })
    .on_connect(move |io, ext| per_peer.on_connect(io, ext, &board.pipeline))
    .workers(1)
    // one worker: the per-worker cap is the whole cap
    .max_connections(limits.max_connections)
    .client_request_timeout(limits.request_timeout)
    .keep_alive(limits.keep_alive)
    // no lingering: a connection whose request body is left unread (a `/ws` client closed for
    // an oversized frame) is shut at once instead of read and discarded for another second
    .client_disconnect_timeout(std::time::Duration::ZERO)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(listen)?;
    let addr = server.addrs().first().copied().unwrap_or(listen);
    Ok((addr, server.run()))
}

async fn api_not_found(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::NotFound()
        .json(serde_json::json!({ "error": format!("not found: {}", req.path()) }))
}

async fn ingest(
    req: actix_web::HttpRequest,
    body: web::Payload,
    s: web::Data<ApiState>,
) -> HttpResponse {
    match s.ingest.get() {
        Some(i) => i.handle(&req, body).await,
        None => HttpResponse::NotFound().json(serde_json::json!({
            "error": "no http source without `listen` is configured, so nothing takes /api/ingest"
        })),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn status(s: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(s.status.view())
}

async fn collect_devices(
    s: &ApiState,
    device: Option<String>,
) -> Result<Vec<DeviceView>, ApiError> {
    let mut all = Vec::new();
    for shard in &s.shards {
        let v = shard
            .send(QueryDevices(device.clone()))
            .await
            .map_err(analysis_down)?;
        all.extend(v);
    }
    all.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(all)
}

/// Devices a page of `/api/devices` holds by default and at most.
const DEVICES_PAGE: usize = 1_000;
const DEVICES_PAGE_MAX: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// A page of devices sorted by id (`?offset=&limit=`); `X-Total-Count` says how many there are.
async fn devices(
    s: web::Data<ApiState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let all = collect_devices(&s, None).await?;
    let total = all.len();
    let offset = q.offset.unwrap_or(0).min(total);
    let limit = q.limit.unwrap_or(DEVICES_PAGE).clamp(1, DEVICES_PAGE_MAX);
    let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
    Ok(HttpResponse::Ok()
        .insert_header(("X-Total-Count", total.to_string()))
        .json(page))
}

async fn device(s: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut v = collect_devices(&s, Some(id.clone())).await?;
    match v.pop() {
        Some(d) => Ok(HttpResponse::Ok().json(d)),
        None => Err(ApiError::NotFound(format!("device {id:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertQuery {
    state: Option<String>,
    device: Option<String>,
    limit: Option<usize>,
}

async fn alerts(
    s: web::Data<ApiState>,
    q: web::Query<AlertQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let state = match q.state.as_deref() {
        None | Some("") | Some("all") => None,
        Some("firing") => Some(AlertState::Firing),
        Some("resolved") => Some(AlertState::Resolved),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "state must be firing, resolved or all, not {other:?}"
            )))
        }
    };
    let filter = AlertFilter {
        state,
        device: q.device.filter(|d| !d.is_empty()),
        limit: q.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let list = s
        .store
        .send(QueryAlerts(filter))
        .await
        .map_err(|e| ApiError::Internal(format!("store unavailable: {e}")))?
        .map_err(ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(list))
}

/// The shard that owns `device`'s analysis.
fn shard_of<'a>(s: &'a ApiState, device: &str) -> Result<&'a Addr<ShardActor>, ApiError> {
    s.shards
        .get(crate::sources::route::shard_of(device, s.shards.len()))
        .ok_or_else(|| ApiError::Internal("no analysis shards".into()))
}

/// A shard that did not answer (stopping, or its mailbox closed).
pub(super) fn analysis_down(e: actix::MailboxError) -> ApiError {
    ApiError::Internal(format!("analysis unavailable: {e}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesQuery {
    metric: Option<String>,
    since: Option<i64>,
}

async fn series(
    s: web::Data<ApiState>,
    id: web::Path<String>,
    q: web::Query<SeriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let device = id.into_inner();
    let q = q.into_inner();
    let shard = shard_of(&s, &device)?;
    let view = shard
        .send(QuerySeries {
            device,
            metric: q.metric.filter(|m| !m.is_empty()),
            since: q.since,
        })
        .await
        .map_err(analysis_down)?
        .map_err(|e| match e {
            SeriesError::UnknownDevice(_)
            | SeriesError::UnknownMetric { .. }
            | SeriesError::NoVector(_)
            | SeriesError::NoModes(_) => ApiError::NotFound(e.to_string()),
        })?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /api/devices/{id}/correlation`: the rolling covariance and correlation of its vector.
async fn correlation(
    s: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let device = id.into_inner();
    let shard = shard_of(&s, &device)?;
    let view = shard
        .send(QueryCorrelation(device))
        .await
        .map_err(analysis_down)?
        .map_err(|e| ApiError::NotFound(e.to_string()))?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /api/devices/{id}/modes`: the operating modes its `mode` detector learnt.
async fn modes(s: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let device = id.into_inner();
    let shard = shard_of(&s, &device)?;
    let view = shard
        .send(QueryModes(device))
        .await
        .map_err(analysis_down)?
        .map_err(|e| ApiError::NotFound(e.to_string()))?;
    Ok(HttpResponse::Ok().json(view))
}
