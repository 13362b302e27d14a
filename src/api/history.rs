//! `GET /api/series?device=&metric=&from=&to=&resolution=&format=`: the downsampled history of
//! one series from sled (plus the minutes its shard has not handed over yet), as JSON or CSV.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::analysis::actor::QueryPendingHistory;
use crate::model::{now_ms, Millis};
use crate::store::history::{self, Resolution, HOUR, MAX_POINTS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    device: String,
    metric: String,
    /// Unix ms/s or RFC 3339; default: `to` − 1 h.
    from: Option<String>,
    /// Unix ms/s or RFC 3339; default: now.
    to: Option<String>,
    /// `1m`, `15m` or `auto` (the default: 1m while `from` is within `history_1m_max_age`).
    resolution: Option<String>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
}

/// The buckets in columns, like `/api/devices/{id}/series`.
#[derive(Debug, Serialize)]
struct HistoryView {
    device: String,
    metric: String,
    from: Millis,
    to: Millis,
    /// Bucket width in ms (60000 or 900000); `ts` is each bucket's start.
    resolution_ms: i64,
    ts: Vec<Millis>,
    min: Vec<f32>,
    mean: Vec<f32>,
    max: Vec<f32>,
    count: Vec<u32>,
}

fn time(field: &str, v: Option<&str>, default: Millis) -> Result<Millis, ApiError> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(t) => {
            crate::timestamp::parse(t).map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))
        }
    }
}

pub async fn series(
    s: web::Data<ApiState>,
    q: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let Some(store) = s.history.clone() else {
        return Err(ApiError::NotFound(
            "history is off (store.history = false)".into(),
        ));
    };
    let now = now_ms();
    let to = time("to", q.to.as_deref(), now)?;
    let from = time("from", q.from.as_deref(), to - HOUR)?;
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let res = match q.resolution.as_deref().unwrap_or("auto") {
        "1m" => Resolution::Minute,
        "15m" => Resolution::Quarter,
        "auto" | "" if from >= now - s.history_1m_max_age => Resolution::Minute,
        "auto" | "" => Resolution::Quarter,
        other => {
            return Err(ApiError::BadRequest(format!(
                "resolution must be 1m, 15m or auto, not {other:?}"
            )))
        }
    };
    let points = (to - from) / res.ms();
    if points > MAX_POINTS as i64 {
        return Err(ApiError::BadRequest(format!(
            "{points} buckets asked; at most {MAX_POINTS}: narrow from/to or ask resolution=15m"
        )));
    }
    let csv = match q.format.as_deref().unwrap_or("json") {
        "json" | "" => false,
        "csv" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "format must be json or csv, not {other:?}"
            )))
        }
    };
    let (device, metric) = (q.device, q.metric);
    let stored = {
        let (d, m) = (device.clone(), metric.clone());
        web::block(move || store.query(&d, &m, res, from, to))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?
    };
    // Minutes the device's shard has not handed to the store yet (at most one persist_interval).
    let shard = s
        .shards
        .get(crate::sources::route::shard_of(&device, s.shards.len()));
    let mut pending = match shard {
        Some(a) => a
            .send(QueryPendingHistory {
                device: device.clone(),
                metric: metric.clone(),
            })
            .await
            .map_err(super::analysis_down)?,
        None => Vec::new(),
    };
    pending.retain(|(t, _)| *t >= from - from.rem_euclid(res.ms()) && *t < to);
    if res == Resolution::Quarter {
        pending = history::to_quarters(pending);
    }
    let buckets = history::merge_sorted(stored, pending);
    if csv {
        let mut body = String::from("ts,min,mean,max,count\n");
        for (t, b) in &buckets {
            body.push_str(&format!("{t},{},{},{},{}\n", b.min, b.mean, b.max, b.count));
        }
        let name = format!("{device}-{metric}.csv").replace(['"', '/', '\\'], "_");
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"{name}\""),
            ))
            .body(body));
    }
    let mut v = HistoryView {
        device,
        metric,
        from,
        to,
        resolution_ms: res.ms(),
        ts: Vec::with_capacity(buckets.len()),
        min: Vec::with_capacity(buckets.len()),
        mean: Vec::with_capacity(buckets.len()),
        max: Vec::with_capacity(buckets.len()),
        count: Vec::with_capacity(buckets.len()),
    };
    for (t, b) in buckets {
        v.ts.push(t);
        v.min.push(b.min);
        v.mean.push(b.mean);
        v.max.push(b.max);
        v.count.push(b.count);
    }
    Ok(HttpResponse::Ok().json(v))
}
