//! HTTP push source: `POST` bodies of frames (NDJSON, CSV, kv or line protocol), on a listener of
//! its own (own token) or on the API's `/api/ingest` (API token). All or nothing per request.
//!
//! 204 only once every sample of the body is queued at its shard; a bad line is 400 naming it
//! (nothing taken), a shard queue full for `accept_wait` 503 and too many requests at once 429,
//! both with `Retry-After`; a body over `max_body` 413.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;

use super::intake::{Decoder, Excerpt};
use super::route::Router;
use super::SourceError;
use crate::auth::ApiToken;
use crate::config::HttpSource;
use crate::decode::TsUnit;
use crate::model::now_ms;
use crate::status::{RateLimitedLog, SourceStats};

/// The API's `/api/ingest`: the http source without a listener of its own, while it runs.
#[derive(Clone, Default)]
pub struct ApiSlot(Arc<RwLock<Option<Arc<Ingest>>>>);

impl std::fmt::Debug for ApiSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiSlot")
    }
}

impl ApiSlot {
    pub fn get(&self) -> Option<Arc<Ingest>> {
        self.0.read().ok().and_then(|g| g.clone())
    }

    fn set(&self, ingest: Arc<Ingest>) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(ingest);
        }
    }

    /// Empties the slot if it still holds `ingest` (a reload may have put a newer one there).
    fn clear(&self, ingest: &Arc<Ingest>) {
        if let Ok(mut g) = self.0.write() {
            if g.as_ref().is_some_and(|i| Arc::ptr_eq(i, ingest)) {
                *g = None;
            }
        }
    }
}

/// One http source: its decoder, limits and counters, shared by the requests.
pub struct Ingest {
    cfg: Arc<HttpSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
    decoder: Decoder,
    inflight: tokio::sync::Semaphore,
    /// Its own listener's token.
    token: Option<ApiToken>,
    log: Mutex<RateLimitedLog>,
}

/// How a request ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted,
    Unauthorized(&'static str),
    TooLarge,
    TooMany,
    BadLine { line: usize, why: String },
    BadQuery(String),
    Blocked,
    Closed,
}

impl Ingest {
    fn new(
        cfg: Arc<HttpSource>,
        idx: u16,
        router: Router,
        stats: Arc<SourceStats>,
    ) -> Result<Self, SourceError> {
        let token = match &cfg.token_file {
            Some(p) => {
                Some(ApiToken::from_file(p).map_err(|e| SourceError::Config(e.to_string()))?)
            }
            None => None,
        };
        Ok(Ingest {
            decoder: Decoder::Format {
                format: cfg.format,
                settings: cfg.settings(),
            },
            inflight: tokio::sync::Semaphore::new(cfg.max_concurrent),
            log: Mutex::new(RateLimitedLog::new(5, Duration::from_secs(10))),
            cfg,
            idx,
            router,
            stats,
            token,
        })
    }

    /// Answers one `POST`.
    pub async fn handle(&self, req: &HttpRequest, body: web::Payload) -> HttpResponse {
        let outcome = self.take(req, body).await;
        if !matches!(outcome, Outcome::Accepted) {
            self.log_refusal(req, &outcome);
        }
        self.respond(outcome)
    }

    async fn take(&self, req: &HttpRequest, body: web::Payload) -> Outcome {
        if let Some(token) = &self.token {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match given {
                None => {
                    return Outcome::Unauthorized(
                        "missing token: send `Authorization: Bearer <token>`",
                    )
                }
                Some(t) if !token.verify(t.trim()) => {
                    return Outcome::Unauthorized("invalid token")
                }
                Some(_) => {}
            }
        }
        let unit = match precision(req.query_string()) {
            Ok(u) => u,
            Err(why) => return Outcome::BadQuery(why),
        };
        // The request's `precision` replaces `ts_unit` (a clone per request, not per line).
        let decoder = match (unit, &self.decoder) {
            (Some(ts_unit), Decoder::Format { format, settings }) => {
                std::borrow::Cow::Owned(Decoder::Format {
                    format: *format,
                    settings: crate::decode::Settings {
                        ts_unit,
                        ..settings.clone()
                    },
                })
            }
            _ => std::borrow::Cow::Borrowed(&self.decoder),
        };
        let Ok(_permit) = self.inflight.try_acquire() else {
            return Outcome::TooMany;
        };
        let body = match read_body(req, body, self.cfg.max_body).await {
            Ok(b) => b,
            Err(o) => return o,
        };
        let mut sink = self.router.sink(self.idx);
        sink.set_default_ts(now_ms());
        let mut frames = 0u64;
        for (i, line) in body[..].split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let r = if line.len() > self.cfg.max_frame {
                Err(format!(
                    "longer than {} bytes (max_frame)",
                    self.cfg.max_frame
                ))
            } else {
                decoder.decode(line, &mut sink).map_err(|e| e.to_string())
            };
            match r {
                Ok(0) => {}
                Ok(_) => frames += 1,
                Err(why) => {
                    sink.discard();
                    self.stats.frames_rejected.fetch_add(1, Relaxed);
                    let why = format!("{why}: {}", Excerpt(line));
                    return Outcome::BadLine { line: i + 1, why };
                }
            }
        }
        match tokio::time::timeout(self.cfg.accept_wait.0, sink.send_all()).await {
            Ok(Ok(())) => {
                self.stats.frames_accepted.fetch_add(frames, Relaxed);
                self.stats.samples.fetch_add(sink.take_pushed(), Relaxed);
                Outcome::Accepted
            }
            Ok(Err(_)) => Outcome::Closed,
            Err(_) => {
                sink.discard();
                Outcome::Blocked
            }
        }
    }

    fn respond(&self, outcome: Outcome) -> HttpResponse {
        let retry = self.cfg.accept_wait.0.as_secs().max(1).to_string();
        let (status, error) = match outcome {
            Outcome::Accepted => return HttpResponse::NoContent().finish(),
            Outcome::Unauthorized(why) => {
                return HttpResponse::Unauthorized()
                    .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"edgewatch\""))
                    .json(serde_json::json!({ "error": why }))
            }
            Outcome::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {} bytes (max_body)", self.cfg.max_body),
            ),
            Outcome::BadLine { line, why } => {
                return HttpResponse::BadRequest().json(serde_json::json!({
                    "error": format!("line {line}: {why}; nothing of this body was taken"),
                    "line": line,
                }))
            }
            Outcome::BadQuery(why) => (StatusCode::BAD_REQUEST, why),
            Outcome::TooMany => {
                return HttpResponse::TooManyRequests()
                    .insert_header((header::RETRY_AFTER, "1"))
                    .json(serde_json::json!({ "error": format!(
                        "more than {} requests at once (max_concurrent); nothing was taken",
                        self.cfg.max_concurrent
                    ) }))
            }
            Outcome::Blocked => {
                return HttpResponse::ServiceUnavailable()
                    .insert_header((header::RETRY_AFTER, retry))
                    .json(serde_json::json!({ "error": format!(
                        "analysis is behind: a shard's queue stayed full for {} (accept_wait); nothing was taken",
                        self.cfg.accept_wait
                    ) }))
            }
            Outcome::Closed => (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_string()),
        };
        HttpResponse::build(status).json(serde_json::json!({ "error": error }))
    }

    #[cold]
    fn log_refusal(&self, req: &HttpRequest, outcome: &Outcome) {
        let Ok(mut log) = self.log.lock() else { return };
        let (allow, suppressed) = log.allow();
        let id = &self.stats.id;
        let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        if let Some(n) = suppressed {
            tracing::warn!(source = %id, suppressed = n, "more refused requests were not logged");
        }
        if allow {
            tracing::warn!(source = %id, %peer, ?outcome, "ingest request refused");
        }
    }
}

/// The `precision` query parameter of an InfluxDB write (`/write?db=x&precision=s`, as Telegraf,
/// the InfluxDB clients and v1/v2 write APIs send it): `ns` (or `n`), `us` (or `u`), `ms`, `s`.
/// Other parameters (`db`, `bucket`, `org`, `rp`) are ignored.
fn precision(query: &str) -> Result<Option<TsUnit>, String> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "precision" {
            continue;
        }
        return match v {
            "ns" | "n" => Ok(Some(TsUnit::Ns)),
            "us" | "u" => Ok(Some(TsUnit::Us)),
            "ms" => Ok(Some(TsUnit::Ms)),
            "s" => Ok(Some(TsUnit::S)),
            _ => Err(format!(
                "precision {:?} is not supported: ns, us (or u), ms or s; nothing was taken",
                v.chars().take(16).collect::<String>()
            )),
        };
    }
    Ok(None)
}

/// The body, at most `limit` bytes (413 beyond; a `Content-Length` over it is refused unread).
async fn read_body(
    req: &HttpRequest,
    mut body: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, Outcome> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Outcome::TooLarge);
    }
    let mut buf = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Outcome::BadLine {
            line: 0,
            why: format!("body could not be read: {e}"),
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(Outcome::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Stops the own listener when the task ends or is aborted (reload, shutdown).
struct StopOnDrop(actix_web::dev::ServerHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // Sends the stop command right away; its completion need not be awaited.
        drop(self.0.stop(false));
    }
}

/// Empties the API slot when the task ends or is aborted.
struct ClearOnDrop(super::http::ApiSlot, Arc<Ingest>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.clear(&self.1);
    }
}

async fn own_listener(
    req: HttpRequest,
    body: web::Payload,
    ingest: web::Data<Ingest>,
) -> HttpResponse {
    ingest.handle(&req, body).await
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound()
        .json(serde_json::json!({ "error": format!("not found: {} {}", req.method(), req.path()) }))
}

/// Binds the own listener and starts it; returns the bound address and the server future.
fn start(
    addr: std::net::SocketAddr,
    data: web::Data<Ingest>,
    path: String,
) -> Result<(std::net::SocketAddr, actix_web::dev::Server), SourceError> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route(&path, web::post().to(own_listener))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)
    .map_err(|source| SourceError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let local = server.addrs().first().copied().unwrap_or(addr);
    Ok((local, server.run()))
}

pub async fn run(
    cfg: Arc<HttpSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let ingest = Arc::new(Ingest::new(
        cfg.clone(),
        idx,
        router.clone(),
        stats.clone(),
    )?);
    let Some(addr) = cfg.listen else {
        let slot = router.api_ingest();
        slot.set(ingest.clone());
        let _clear = ClearOnDrop(slot, ingest);
        tracing::info!(source = %cfg.id, "http source takes POST /api/ingest on the API listener");
        stats.set_healthy(true);
        std::future::pending::<()>().await;
        return Ok(());
    };
    let (local, server) = start(addr, web::Data::from(ingest), cfg.path.clone())?;
    tracing::info!(source = %cfg.id, "http source listening on http://{local}{}", cfg.path);
    stats.set_listen_addr(local);
    stats.set_healthy(true);
    let _stop = StopOnDrop(server.handle());
    server
        .await
        .map_err(|e| SourceError::Config(format!("http listener failed: {e}")))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::sync::mpsc;

    use super::*;
    use crate::config::{parse_str, SourceConfig};
    use crate::sources::route::Ingest as Queued;

    fn config(extra: &str) -> Result<HttpSource, String> {
        let text = format!("node_id = \"n\"\n[[source]]\nid = \"h\"\nkind = \"http\"\n{extra}");
        let r = parse_str(&text, std::path::Path::new("t.toml")).map_err(|e| e.to_string())?;
        match &r.config.sources[0] {
            SourceConfig::Http(h) => Ok(h.clone()),
            _ => Err("not http".into()),
        }
    }

    /// Status, `Retry-After` and body of a POST made with a real HTTP client.
    async fn post(
        url: String,
        token: Option<&'static str>,
        body: Vec<u8>,
    ) -> (u16, Option<String>, String) {
        tokio::task::spawn_blocking(move || {
            let mut req = ureq::post(&url).timeout(Duration::from_secs(10));
            if let Some(t) = token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            match req.send_bytes(&body) {
                Ok(r) => (
                    r.status(),
                    r.header("retry-after").map(str::to_owned),
                    r.into_string().unwrap_or_default(),
                ),
                Err(ureq::Error::Status(code, r)) => (
                    code,
                    r.header("retry-after").map(str::to_owned),
                    r.into_string().unwrap_or_default(),
                ),
                Err(e) => panic!("POST {url}: {e}"),
            }
        })
        .await
        .expect("client thread")
    }

    async fn listening(stats: &SourceStats) -> String {
        for _ in 0..500 {
            if let Some(a) = stats.listen_addr() {
                return format!("http://{a}/ingest");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("http source not listening");
    }

    #[test]
    fn config_mistakes_are_located() {
        let h = config("").expect("defaults");
        assert_eq!((h.listen, h.max_body, h.max_concurrent), (None, 1 << 20, 8));
        let e = config("token_file = \"/x\"\n").expect_err("token on the API listener");
        assert!(
            e.contains("token_file") && e.contains("API token applies"),
            "{e}"
        );
        let e = config("listen = \"127.0.0.1:0\"\nmax_body = 10\n").expect_err("small body");
        assert!(e.contains("max_body") && e.contains("between 1024"), "{e}");
        let e = config("listen = \"127.0.0.1:0\"\npath = \"ingest\"\n").expect_err("path");
        assert!(e.contains("must start with `/`"), "{e}");
        let two = "node_id = \"n\"\n[[source]]\nid = \"a\"\nkind = \"http\"\n[[source]]\nid = \"b\"\nkind = \"http\"\n";
        let e = parse_str(two, std::path::Path::new("t.toml"))
            .expect_err("two on the API")
            .to_string();
        assert!(
            e.contains("only one http source can use the API listener"),
            "{e}"
        );
    }

    #[test]
    fn precision_parameter() {
        assert_eq!(precision(""), Ok(None));
        assert_eq!(precision("db=telegraf&rp=autogen"), Ok(None));
        assert_eq!(precision("db=x&precision=s"), Ok(Some(TsUnit::S)));
        assert_eq!(precision("precision=u"), Ok(Some(TsUnit::Us)));
        assert_eq!(
            precision("bucket=b&precision=ns&org=o"),
            Ok(Some(TsUnit::Ns))
        );
        let e = precision("precision=h").expect_err("hours");
        assert!(e.contains("\"h\" is not supported"), "{e}");
    }

    /// `?precision=` overrides `ts_unit` per request, through a real HTTP client.
    #[actix_rt::test]
    async fn the_query_precision_overrides_ts_unit() {
        let cfg = config("listen = \"127.0.0.1:0\"\nformat = \"influx\"\nts_unit = \"ns\"\n")
            .expect("config");
        let (tx, mut rx) = mpsc::channel::<Queued>(8);
        let stats = Arc::new(SourceStats::new("h", "http"));
        let task = tokio::spawn(run(Arc::new(cfg), 0, Router::new(vec![tx]), stats.clone()));
        let url = listening(&stats).await;
        let now = now_ms();
        for (query, stamp, want) in [
            (
                "?db=telegraf&precision=s",
                (now / 1000).to_string(),
                now / 1000 * 1000,
            ),
            ("?precision=ms", now.to_string(), now),
            ("?precision=u", format!("{now}123"), now),
            ("?bucket=b&org=o&precision=ns", format!("{now}123456"), now),
            // none: the configured ts_unit (ns)
            ("", format!("{now}654321"), now),
        ] {
            let body = format!("env,host=pi t=1 {stamp}\n").into_bytes();
            let (code, _, text) = post(format!("{url}{query}"), None, body).await;
            assert_eq!(code, 204, "{query}: {text}");
            let got = rx.recv().await.expect("batch");
            let ts: Vec<i64> = got.batch.iter().map(|s| s.ts).collect();
            assert_eq!(ts, [want], "{query}");
        }
        let (code, _, text) = post(format!("{url}?precision=h"), None, b"m v=1 1".to_vec()).await;
        assert_eq!(code, 400, "{text}");
        assert!(text.contains("precision"), "{text}");
        assert!(rx.try_recv().is_err(), "a refused body queues nothing");
        task.abort();
    }

    /// A real HTTP client against the source's own listener, with a router whose one shard
    /// queue is a real bounded channel that the test reads (or leaves full: a blocked shard).
    #[actix_rt::test]
    async fn own_listener_answers_per_outcome() {
        let dir = tempfile::tempdir().expect("tmp");
        let token_path = dir.path().join("token");
        std::fs::File::create(&token_path)
            .and_then(|mut f| f.write_all(b"s3cret\n"))
            .expect("token file");
        let cfg = config(&format!(
            "listen = \"127.0.0.1:0\"\ntoken_file = {:?}\nformat = \"influx\"\ndevice_tag = \"host\"\nmax_body = 2048\nmax_concurrent = 1\naccept_wait = \"300ms\"\n",
            token_path.display().to_string()
        ))
        .expect("config");
        let (tx, mut rx) = mpsc::channel::<Queued>(1);
        let stats = Arc::new(SourceStats::new("h", "http"));
        let task = tokio::spawn(run(
            Arc::new(cfg),
            3,
            Router::new(vec![tx.clone()]),
            stats.clone(),
        ));
        let url = listening(&stats).await;
        let tok = Some("s3cret");

        // Accepted: 204, and every sample is already queued when the answer comes.
        let body = b"cpu,host=pi1 usage=12.5,idle=87.5 1465839830100400200\n\n# comment\r\nmem,host=pi1 free=1024i\n".to_vec();
        let (code, _, text) = post(url.clone(), tok, body).await;
        assert_eq!(code, 204, "{text}");
        let got = rx.try_recv().expect("queued before the 204");
        assert_eq!(got.source, 3);
        let names: Vec<_> = got
            .batch
            .iter()
            .map(|s| (s.device.to_string(), s.metric.to_string(), s.value))
            .collect();
        assert_eq!(
            names,
            vec![
                ("pi1".into(), "cpu.usage".into(), 12.5),
                ("pi1".into(), "cpu.idle".into(), 87.5),
                ("pi1".into(), "mem.free".into(), 1024.0)
            ]
        );
        assert_eq!(stats.samples.load(Relaxed), 3);
        assert_eq!(stats.frames_accepted.load(Relaxed), 2);

        // A bad third line: 400 naming it, and nothing of the body is queued.
        let (code, _, text) = post(
            url.clone(),
            tok,
            b"cpu,host=a v=1\ncpu,host=a v=2\ncpu,host=a v=zz\n".to_vec(),
        )
        .await;
        assert_eq!(code, 400, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["line"], 3, "{text}");
        assert!(
            v["error"].as_str().is_some_and(
                |e| e.starts_with("line 3: invalid line protocol") && e.contains("v=zz")
            ),
            "{text}"
        );
        assert!(rx.try_recv().is_err(), "a refused body queues nothing");
        assert_eq!(stats.frames_rejected.load(Relaxed), 1);

        // Token and size limits.
        assert_eq!(post(url.clone(), None, b"m v=1".to_vec()).await.0, 401);
        assert_eq!(
            post(url.clone(), Some("wrong"), b"m v=1".to_vec()).await.0,
            401
        );
        let big = format!("m v=1\n{}", "#".repeat(3000)).into_bytes();
        let (code, _, text) = post(url.clone(), tok, big).await;
        assert_eq!(code, 413, "{text}");
        assert!(text.contains("max_body"), "{text}");
        let other = url.replace("/ingest", "/other");
        assert_eq!(post(other, tok, b"m v=1".to_vec()).await.0, 404);

        // A blocked shard: its queue (capacity 1) is full and not read. The request waits
        // `accept_wait`, then gets 503 with Retry-After; meanwhile a second one gets 429.
        tx.try_send(Queued {
            source: 9,
            batch: Default::default(),
        })
        .expect("fill the queue");
        let slow = tokio::spawn(post(url.clone(), tok, b"m,host=b v=1".to_vec()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (code, retry, text) = post(url.clone(), tok, b"m,host=c v=1".to_vec()).await;
        assert_eq!((code, retry.as_deref()), (429, Some("1")), "{text}");
        let (code, retry, text) = slow.await.expect("slow request");
        assert_eq!((code, retry.as_deref()), (503, Some("1")), "{text}");
        assert!(text.contains("accept_wait"), "{text}");
        // Once the shard catches up, the same body is taken, once.
        assert_eq!(rx.recv().await.expect("filler").source, 9);
        assert_eq!(
            post(url.clone(), tok, b"m,host=b v=1".to_vec()).await.0,
            204
        );
        let got = rx.recv().await.expect("retried body");
        assert_eq!(got.batch.len(), 1);
        assert!(
            rx.try_recv().is_err(),
            "the refused attempt left nothing behind"
        );
        task.abort();
    }
}
