//! The dashboard's static files, embedded in the binary at build time (no network needed on the
//! device): served with an ETag (304 when unchanged), gzip when the browser accepts it.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// Version of the vendored uPlot (`vendor/`, from the npm package `uplot`), part of its URL so
/// that browsers may cache it forever. Update it together with the files and `index.html`.
macro_rules! uplot_version {
    () => {
        "1.6.32"
    };
}
#[cfg_attr(not(test), allow(dead_code))]
pub const UPLOT_VERSION: &str = uplot_version!();

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Immutable: the URL changes whenever the content does.
    immutable: bool,
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    Asset {
        path: "app.js",
        content_type: JS,
        body: include_bytes!("app.js"),
        immutable: false,
    },
    Asset {
        path: "charts.js",
        content_type: JS,
        body: include_bytes!("charts.js"),
        immutable: false,
    },
    Asset {
        path: "style.css",
        content_type: CSS,
        body: include_bytes!("style.css"),
        immutable: false,
    },
    Asset {
        path: concat!("uPlot-", uplot_version!(), ".iife.min.js"),
        content_type: JS,
        body: include_bytes!("vendor/uPlot.iife.min.js"),
        immutable: true,
    },
    Asset {
        path: concat!("uPlot-", uplot_version!(), ".min.css"),
        content_type: CSS,
        body: include_bytes!("vendor/uPlot.min.css"),
        immutable: true,
    },
    Asset {
        path: "vector.js",
        content_type: JS,
        body: include_bytes!("vector.js"),
        immutable: false,
    },
];

static INDEX: Asset = Asset {
    path: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("index.html"),
    immutable: false,
};

/// Content-Security-Policy of the page: everything from the appliance itself, nothing else.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Registers `/` and `/assets/{name}`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/assets/{name}", web::get().to(asset));
}

async fn index(req: HttpRequest) -> HttpResponse {
    let mut r = serve(&req, &INDEX);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    r
}

async fn asset(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|a| a.path == name.as_str()) {
        Some(a) => serve(&req, a),
        None => HttpResponse::NotFound()
            .json(serde_json::json!({ "error": format!("not found: asset {:?}", name.as_str()) })),
    }
}

fn serve(req: &HttpRequest, a: &Asset) -> HttpResponse {
    let etag = format!("\"{:016x}\"", fnv1a(a.body));
    let cache = if a.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut r = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    r.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if unchanged {
        return r.finish();
    }
    r.content_type(a.content_type).body(a.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_refers_to_every_asset_and_only_to_embedded_ones() {
        let html = std::str::from_utf8(INDEX.body).expect("utf-8");
        for a in ASSETS {
            let used = html.contains(&format!("/assets/{}", a.path))
                || ASSETS.iter().any(|b| {
                    std::str::from_utf8(b.body).is_ok_and(|t| t.contains(&format!("./{}", a.path)))
                });
            assert!(used, "{} is embedded but not used", a.path);
        }
        for part in html.split("/assets/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                ASSETS.iter().any(|a| a.path == name),
                "index.html refers to {name}, which is not embedded"
            );
        }
        let vendored = std::str::from_utf8(ASSETS[3].body).expect("utf-8");
        assert!(
            vendored.starts_with(&format!(
                "/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION})"
            )),
            "vendored uPlot is not version {UPLOT_VERSION}"
        );
    }
}
