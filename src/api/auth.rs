//! Bearer-token check for `/api/*` and `/ws` when `api.token_file` is set: `Authorization: Bearer
//! <token>` (and, for `/ws` from browsers, `?token=`), else 401 with a JSON error.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};
use serde::Deserialize;

use super::ApiState;

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Middleware for `/api/*`: the token must come in the `Authorization` header.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    check(req, next, false).await
}

/// Middleware for `/ws`: the header, or `?token=` (a browser's WebSocket cannot set headers).
pub async fn require_token_ws(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    check(req, next, true).await
}

async fn check<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
    query_allowed: bool,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let verdict = match req
        .app_data::<web::Data<ApiState>>()
        .and_then(|s| s.token.as_ref())
    {
        None => Ok(()),
        Some(token) => {
            let from_header = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    // The scheme is case-insensitive (RFC 9110 §11.1).
                    let (scheme, t) = v.trim_start().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then_some(t)
                })
                .map(str::trim);
            let from_query = || {
                web::Query::<TokenQuery>::from_query(req.query_string())
                    .ok()
                    .and_then(|q| q.into_inner().token)
            };
            match (from_header, query_allowed) {
                (Some(t), _) => token.verify(t).then_some(()).ok_or("invalid token"),
                (None, true) => match from_query() {
                    Some(t) => token.verify(&t).then_some(()).ok_or("invalid token"),
                    None => Err("missing token: send `Authorization: Bearer <token>` or ?token="),
                },
                (None, false) => Err("missing token: send `Authorization: Bearer <token>`"),
            }
        }
    };
    match verdict {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(why) => {
            let resp = HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"edgewatch\""))
                .json(serde_json::json!({ "error": why }));
            Ok(req.into_response(resp).map_into_right_body())
        }
    }
}
