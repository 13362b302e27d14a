//! Cross-site and DNS-rebinding guard for `/api/*` and `/ws`: the `Host` must name this appliance
//! (an IP address, `localhost`, its host name, or a host of `api.allowed_origins`) and a browser's
//! `Origin`, when sent, must be the same host or listed in `api.allowed_origins`.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};

use super::ApiState;

/// What a request may name: `allowed` are origins (`scheme://host[:port]`) or `*` (any).
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    pub allowed: Vec<String>,
    /// This machine's host name (lower case), also accepted with `.local`.
    pub hostname: String,
}

/// `host[:port]` without the port, lower case; IPv6 literals keep their brackets.
fn host_part(hostport: &str) -> String {
    let h = if hostport.starts_with('[') {
        hostport
            .split(']')
            .next()
            .map_or(hostport, |h| &hostport[..h.len() + 1])
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    h.to_ascii_lowercase()
}

impl OriginPolicy {
    fn any(&self) -> bool {
        self.allowed.iter().any(|a| a == "*")
    }

    /// The `Host` header names this appliance.
    pub fn host_ok(&self, host: &str) -> bool {
        let h = host_part(host);
        let bare = h.trim_start_matches('[').trim_end_matches(']');
        self.any()
            || bare.parse::<std::net::IpAddr>().is_ok()
            || h == "localhost"
            || (!self.hostname.is_empty()
                && (h == self.hostname || h == format!("{}.local", self.hostname)))
            || self.allowed.iter().any(|a| {
                a.split_once("://")
                    .is_some_and(|(_, hp)| host_part(hp.trim_end_matches('/')) == h)
            })
    }

    /// A browser's `Origin` may read the API: same host and port as `Host`, or listed.
    pub fn origin_ok(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        if self.any()
            || self
                .allowed
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return true;
        }
        origin
            .split_once("://")
            .is_some_and(|(_, hp)| hp.eq_ignore_ascii_case(host))
    }
}

/// Middleware for `/api/*` and `/ws`: 403 for a foreign `Host` or `Origin`.
pub async fn check_origin(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let verdict = match req.app_data::<web::Data<ApiState>>() {
        None => Ok(()),
        Some(s) => {
            let p = &s.origins;
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let origin = req
                .headers()
                .get(header::ORIGIN)
                .map(|v| v.to_str().unwrap_or("null"));
            if !host.is_empty() && !p.host_ok(host) {
                Err("Host not allowed (add it to api.allowed_origins)")
            } else if origin.is_some_and(|o| !p.origin_ok(o, host)) {
                Err("Origin not allowed (add it to api.allowed_origins)")
            } else {
                Ok(())
            }
        }
    };
    match verdict {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(why) => {
            let (allow, suppressed) = crate::status::ORIGIN_LOG.allow();
            if let Some(n) = suppressed {
                tracing::warn!(suppressed = n, "more refused API requests were not logged");
            }
            if allow {
                let h = |n: header::HeaderName| {
                    req.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| crate::status::Clean(v).to_string())
                        .unwrap_or_default()
                };
                tracing::warn!(
                    path = %req.path(),
                    host = %h(header::HOST),
                    origin = %h(header::ORIGIN),
                    peer = ?req.peer_addr(),
                    "API request refused: {why}"
                );
            }
            let resp = HttpResponse::Forbidden().json(serde_json::json!({ "error": why }));
            Ok(req.into_response(resp).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(allowed: &[&str]) -> OriginPolicy {
        OriginPolicy {
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            hostname: "pi".into(),
        }
    }

    #[test]
    fn same_host_and_listed_origins_pass_others_do_not() {
        let d = p(&[]);
        assert!(d.host_ok("127.0.0.1:8080") && d.host_ok("[::1]:80") && d.host_ok("pi.local:8080"));
        assert!(d.host_ok("localhost") && d.host_ok("PI:8080"));
        assert!(!d.host_ok("evil.example:8080"), "DNS rebinding");
        assert!(d.origin_ok("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!d.origin_ok("http://evil.example", "127.0.0.1:8080"));
        assert!(!d.origin_ok("null", "127.0.0.1:8080"));
        let l = p(&["https://grafana.lan:3000"]);
        assert!(l.origin_ok("https://grafana.lan:3000", "10.0.0.2:8080"));
        assert!(l.host_ok("grafana.lan:3000"));
        assert!(p(&["*"]).origin_ok("http://x", "y") && p(&["*"]).host_ok("y"));
    }
}
