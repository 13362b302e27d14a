//! Load shedding: when fewer than `api.fd_reserve` descriptors are free, every request gets 503
//! and its connection is closed, so sources and the store keep the descriptors they need.

use std::sync::atomic::Ordering::Relaxed;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};

use super::ApiState;
use crate::model::now_ms;

pub async fn low_fds<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let short = req.app_data::<web::Data<ApiState>>().and_then(|s| {
        let free = crate::fds::free_cached(now_ms());
        (free < s.limits.fd_reserve).then(|| (s.clone(), free))
    });
    let Some((s, free)) = short else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let n = s.status.pipeline.api_shed.fetch_add(1, Relaxed);
    if (n + 1).is_power_of_two() {
        tracing::warn!(
            free,
            reserve = s.limits.fd_reserve,
            shed = n + 1,
            "API shedding load: file descriptors kept for sources are running out"
        );
    }
    let resp = HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, "5"))
        .force_close()
        .json(serde_json::json!({
            "error": "out of file descriptors: the API is shedding load so sources keep working"
        }));
    Ok(req.into_response(resp).map_into_right_body())
}
