//! Local HTTP API (actix-web): health, status, devices, alert log, the `/ws` live stream and the
//! dashboard. Handlers only read shared counters or ask actors; none of them can stall analysis.

mod auth;
mod dashboard;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Addr;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::analysis::actor::{QueryCorrelation, QueryDevices, QuerySeries, ShardActor};
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
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        use actix_web::middleware::{from_fn, Compress};
        App::new()
            .app_data(state.clone())
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::BadRequest(format!("bad query: {e}")).into()),
            )
            .route("/healthz", web::get().to(healthz))
            .service(
                web::scope("/api")
                    .wrap(from_fn(auth::require_token))
                    .wrap(Compress::default())
                    .route("/status", web::get().to(status))
                    .route("/devices", web::get().to(devices))
                    .route("/devices/{id}", web::get().to(device))
                    .route("/devices/{id}/series", web::get().to(series))
                    .route("/devices/{id}/correlation", web::get().to(correlation))
                    .route("/alerts", web::get().to(alerts))
                    .default_service(web::to(api_not_found)),
            )
            .service(
                web::resource("/ws")
                    .wrap(from_fn(auth::require_token_ws))
                    .route(web::get().to(ws::handle)),
            )
            .service(
                web::scope("")
                    .wrap(Compress::default())
                    .configure(dashboard::routes),
            )
    })
    .workers(1)
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
            .map_err(|e| ApiError::Internal(format!("analysis unavailable: {e}")))?;
        all.extend(v);
    }
    all.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(all)
}

async fn devices(s: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(collect_devices(&s, None).await?))
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
    let Some(shard) = s
        .shards
        .get(crate::sources::route::shard_of(&device, s.shards.len()))
    else {
        return Err(ApiError::Internal("no analysis shards".into()));
    };
    let view = shard
        .send(QuerySeries {
            device,
            metric: q.metric.filter(|m| !m.is_empty()),
            since: q.since,
        })
        .await
        .map_err(|e| ApiError::Internal(format!("analysis unavailable: {e}")))?
        .map_err(|e| match e {
            SeriesError::UnknownDevice(_)
            | SeriesError::UnknownMetric { .. }
            | SeriesError::NoVector(_) => ApiError::NotFound(e.to_string()),
        })?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /api/devices/{id}/correlation`: the rolling covariance and correlation of its vector.
async fn correlation(
    s: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let device = id.into_inner();
    let Some(shard) = s
        .shards
        .get(crate::sources::route::shard_of(&device, s.shards.len()))
    else {
        return Err(ApiError::Internal("no analysis shards".into()));
    };
    let view = shard
        .send(QueryCorrelation(device))
        .await
        .map_err(|e| ApiError::Internal(format!("analysis unavailable: {e}")))?
        .map_err(|e| ApiError::NotFound(e.to_string()))?;
    Ok(HttpResponse::Ok().json(view))
}
