//! Test harness: starts the appliance with a temp config on loopback ports chosen by the OS, either
//! in-process (`InProcess`, addresses from `app::start`) or as the real binary (`Edgewatch`, for
//! crashes, signals and CLI output; addresses read from its log), and talks to it over TCP, HTTP, WS.
#![allow(dead_code)]

pub mod broker;
pub mod prom;
pub mod pty;
pub mod receiver;
pub mod servers;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, stream::MaybeTlsStream, Message};

pub const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// HTTP and WebSocket helpers of anything with an `api` address (the binary or in-process).
macro_rules! api_helpers {
    () => {
        pub fn get(&self, path: &str) -> Value {
            let url = format!("http://{}{path}", self.api);
            match ureq::get(&url).timeout(Duration::from_secs(10)).call() {
                Ok(r) => r.into_json().expect("json body"),
                Err(e) => panic!("GET {url}: {e}"),
            }
        }

        /// Status code and body of a GET, also for errors.
        pub fn get_status(&self, path: &str) -> (u16, String) {
            let url = format!("http://{}{path}", self.api);
            match ureq::get(&url).timeout(Duration::from_secs(10)).call() {
                Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
                Err(e) => panic!("GET {url}: {e}"),
            }
        }

        pub fn ws(&self, query: &str) -> Ws {
            Ws::connect(&format!("ws://{}/ws{query}", self.api))
        }

        /// Polls `path` until `pred` holds, returns the last value.
        pub fn poll(&self, path: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
            let end = Instant::now() + timeout;
            loop {
                let v = self.get(path);
                if pred(&v) {
                    return v;
                }
                assert!(
                    Instant::now() < end,
                    "condition on {path} not met within {timeout:?}; last: {v}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
}

pub struct Edgewatch {
    child: Child,
    pub api: String,
    pub config: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

/// Writes `body` (without node_id/data_dir/[api]) plus those settings into `dir/edgewatch.toml`.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("edgewatch.toml");
    let data = dir.join("data");
    let text = format!(
        "node_id = \"test\"\ndata_dir = {:?}\n{body}\n[api]\nlisten = \"127.0.0.1:0\"\n",
        data.display().to_string()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

impl Edgewatch {
    /// Starts the binary on an existing config file and waits until the API is up.
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Like `start`, with extra environment variables (e.g. NOTIFY_SOCKET).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_limited(config, env, None)
    }

    /// Like `start_with_env`, with the binary's RLIMIT_NOFILE (soft and hard) set to `nofile`.
    pub fn start_limited(config: &Path, env: &[(&str, &str)], nofile: Option<u64>) -> Self {
        let mut cmd = Command::new(BIN);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let mut child = cmd
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgewatch");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("EDGEWATCH_TEST_LOG").is_some() {
                    eprintln!("[edgewatch] {line}");
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut ew = Edgewatch {
            child,
            api: String::new(),
            config: config.to_path_buf(),
            log,
        };
        let line = ew.wait_log("edgewatch running", Duration::from_secs(30));
        ew.api = between(&line, "API at http://", "/").expect("api address in log");
        ew
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size now, in KiB (VmRSS), and its peak so far (VmHWM).
    pub fn rss_kib(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        let field = |k: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .log
                .lock()
                .expect("log")
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "edgewatch exited ({st}) before logging {needle:?}; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < end,
                "no log line {needle:?} within {timeout:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Address the TCP source `id` listens on.
    pub fn tcp_addr(&mut self, id: &str) -> String {
        let tag = format!("source={id}");
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .log
                .lock()
                .expect("log")
                .iter()
                .find(|l| {
                    l.contains("tcp source listening on") && l.split_whitespace().any(|w| w == tag)
                })
                .cloned();
            if let Some(l) = found {
                return between(&l, "listening on ", " ").expect("tcp address in log");
            }
            assert!(
                Instant::now() < end,
                "tcp source {id} not listening; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    api_helpers!();

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                return (st, self.log_text());
            }
            assert!(
                Instant::now() < end,
                "edgewatch did not stop on SIGTERM; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Edgewatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole appliance in this test process (`edgewatch::app::start`), stopped gracefully on drop.
pub struct InProcess {
    app: Option<edgewatch::app::Running>,
    pub api: String,
    pub config: PathBuf,
}

impl InProcess {
    /// Loads `config` and starts the appliance; returns once it is up.
    pub fn start(config: &Path) -> Self {
        if std::env::var_os("EDGEWATCH_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_test_writer()
                .with_max_level(tracing::Level::INFO)
                .try_init();
        }
        let resolved = edgewatch::config::load_file(config)
            .unwrap_or_else(|e| panic!("config {}: {e}", config.display()));
        let app = edgewatch::app::start(resolved).unwrap_or_else(|e| panic!("start: {e:#}"));
        InProcess {
            api: app.api().to_string(),
            app: Some(app),
            config: config.to_path_buf(),
        }
    }

    fn app(&self) -> &edgewatch::app::Running {
        self.app.as_ref().expect("running")
    }

    /// Address the TCP source `id` listens on (`&mut` like `Edgewatch::tcp_addr`).
    pub fn tcp_addr(&mut self, id: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = self.app().tcp_addr(id) {
                return a.to_string();
            }
            assert!(Instant::now() < end, "tcp source {id} not listening");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Re-reads the config file, like SIGHUP.
    pub fn reload(&self) {
        self.app().reload();
    }

    /// Stops gracefully (final snapshot), like SIGTERM.
    pub fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().expect("graceful stop");
        }
    }

    api_helpers!();
}

/// Like killing the binary: no final snapshot, no waiting for the store's backlog.
impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            let _ = app.abandon();
        }
    }
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let i = s.find(start)? + start.len();
    let rest = &s[i..];
    let j = rest.find(end).unwrap_or(rest.len());
    Some(rest[..j].trim().to_string())
}

/// A blocking WebSocket client.
pub struct Ws {
    ws: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub fn connect(url: &str) -> Self {
        Self::connect_offering(url, &[]).0
    }

    /// Connects with extra handshake headers (e.g. `Sec-WebSocket-Extensions`); also returns the
    /// server's handshake response.
    pub fn connect_offering(
        url: &str,
        headers: &[(&'static str, &'static str)],
    ) -> (Self, tungstenite::handshake::client::Response) {
        use tungstenite::client::IntoClientRequest;
        let mut req = url.into_client_request().expect("ws url");
        for (k, v) in headers {
            req.headers_mut()
                .insert(*k, tungstenite::http::HeaderValue::from_static(v));
        }
        let (ws, resp) = tungstenite::connect(req).unwrap_or_else(|e| panic!("connect {url}: {e}"));
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
        }
        (Ws { ws }, resp)
    }

    /// Next JSON message, or None when `timeout` passes without one.
    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).expect("json message"))
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("ws read: {e}"),
            }
        }
        None
    }

    /// Reads until a message satisfies `pred` (returns it) or `timeout` passes (panics).
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + timeout;
        let mut seen = 0;
        while Instant::now() < end {
            if let Some(v) = self.next(end.saturating_duration_since(Instant::now())) {
                seen += 1;
                if pred(&v) {
                    return v;
                }
            }
        }
        panic!("no {what} on /ws within {timeout:?} ({seen} other messages)");
    }
}

/// A TCP sender of newline-delimited frames.
pub struct Sender {
    s: TcpStream,
}

impl Sender {
    pub fn connect(addr: &str) -> Self {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Sender { s }
    }
    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("tcp write");
    }
    pub fn line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }
}

/// GET `url` and parse its JSON body.
pub fn get_json(url: &str) -> Value {
    match ureq::get(url).timeout(Duration::from_secs(10)).call() {
        Ok(r) => r.into_json().expect("json body"),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Deterministic small noise in [-0.5, 0.5).
pub fn noise(i: u64) -> f64 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    (x as f64 / (1u64 << 53) as f64) - 0.5
}

/// Wall-clock time in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Polls `f` every 100 ms until it gives a value, failing the test with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
