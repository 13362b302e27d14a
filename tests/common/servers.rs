//! Real Alertmanager, InfluxDB 1.x and VictoriaMetrics started by a test on free loopback ports with
//! temp data directories (stoppable and restartable), and a tiny recording HTTP receiver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::broker::free_port;

/// Whether `cmd` is on PATH; if not, the test skips with a reason unless CI requires it.
pub fn have(cmd: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("EDGEWATCH_REQUIRE_SHARED").is_none()
                && std::env::var_os("CI").is_none(),
            "{cmd} is required here (tests/run.sh installs it)"
        );
        eprintln!("skipping: {cmd} is not installed (tests/run.sh installs it)");
    }
    found
}

/// A server process restarted with the same arguments; killed on drop.
pub struct Server {
    child: Option<Child>,
    cmd: PathBuf,
    args: Vec<String>,
    pub port: u16,
    log: PathBuf,
    ready: String,
}

impl Server {
    fn start(cmd: &str, args: Vec<String>, port: u16, log: PathBuf, ready: &str) -> Self {
        let mut s = Server {
            child: None,
            cmd: cmd.into(),
            args,
            port,
            log,
            ready: ready.into(),
        };
        s.start_again();
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.cmd)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.cmd.display()));
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        let url = format!("{}{}", self.url(), self.ready);
        loop {
            if let Ok(r) = ureq::get(&url).timeout(Duration::from_secs(2)).call() {
                if r.status() < 300 {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "{} not ready on {url}: {}",
                self.cmd.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn alertmanager(dir: &Path) -> Server {
    alertmanager_conf(
        dir,
        "route:\n  receiver: none\n  group_wait: 1s\nreceivers:\n  - name: none\n",
    )
}

/// Alertmanager notifying `url` (webhook receiver, resolved notifications on) within a second.
pub fn alertmanager_with_webhook(dir: &Path, url: &str) -> Server {
    alertmanager_conf(
        dir,
        &format!(
            "route:\n  receiver: hook\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: {url}\n        send_resolved: true\n"
        ),
    )
}

fn alertmanager_conf(dir: &Path, yml: &str) -> Server {
    let port = free_port();
    let conf = dir.join("alertmanager.yml");
    std::fs::write(&conf, yml).expect("write alertmanager.yml");
    let data = dir.join("am-data");
    std::fs::create_dir_all(&data).expect("mkdir");
    Server::start(
        "prometheus-alertmanager",
        vec![
            format!("--config.file={}", conf.display()),
            format!("--storage.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ],
        port,
        dir.join("alertmanager.log"),
        "/-/ready",
    )
}

/// Alertmanager's alerts (`/api/v2/alerts`, also inactive/resolved ones it still holds).
pub fn am_alerts(am: &Server) -> Vec<Value> {
    let v = super::get_json(&format!("{}/api/v2/alerts", am.url()));
    v.as_array().cloned().unwrap_or_default()
}

pub fn influxdb(dir: &Path) -> Server {
    let port = free_port();
    let rpc = free_port();
    let conf = dir.join("influxdb.conf");
    let d = dir.join("influx");
    std::fs::write(
        &conf,
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{0}/meta\"\n[data]\n  dir = \"{0}/data\"\n  wal-dir = \"{0}/wal\"\n  \
             query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n",
            d.display()
        ),
    )
    .expect("write influxdb.conf");
    Server::start(
        "influxd",
        vec!["-config".into(), conf.display().to_string()],
        port,
        dir.join("influxd.log"),
        "/ping",
    )
}

/// Runs an InfluxQL statement through `/query` and returns the JSON answer.
pub fn influx_query(s: &Server, db: &str, q: &str) -> Value {
    let r = ureq::post(&format!("{}/query", s.url()))
        .timeout(Duration::from_secs(10))
        .send_form(&[("db", db), ("q", q)])
        .unwrap_or_else(|e| panic!("influx query {q}: {e}"));
    r.into_json().expect("json")
}

/// `SELECT count(<field>) FROM <measurement>` (0 when there is none).
pub fn influx_count(s: &Server, db: &str, measurement: &str, field: &str) -> u64 {
    let v = influx_query(
        s,
        db,
        &format!("SELECT count(\"{field}\") FROM \"{measurement}\""),
    );
    v["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

pub fn victoria(dir: &Path) -> Server {
    let port = free_port();
    let data = dir.join("vm-data");
    Server::start(
        "victoria-metrics",
        vec![
            format!("-storageDataPath={}", data.display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-search.latencyOffset=0s".into(),
        ],
        port,
        dir.join("victoria.log"),
        "/health",
    )
}

/// The `[[sink]]` of an `influxdb` output writing to `vm` over the v2 API (a token file in `dir`),
/// with `extra` lines appended to the table.
pub fn victoria_v2_sink(dir: &Path, vm: &Server, extra: &str) -> String {
    let token = dir.join("token");
    std::fs::write(&token, "t0ken").expect("write token");
    format!(
        "\n[[sink]]\nkind = \"influxdb\"\nid = \"vm\"\napi = \"v2\"\nurl = \"{}\"\norg = \"o\"\n\
         bucket = \"b\"\ntoken_file = \"{}\"\nbackoff_min = \"50ms\"\n{extra}\n",
        vm.url(),
        token.display()
    )
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A real HTTP/1.1 server on a free port that records every POST and answers with the status
/// the test sets (`set_status`).
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Request>>>,
    status: Arc<Mutex<u16>>,
}

impl Receiver {
    pub fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(200u16));
        let (g, st) = (got.clone(), status.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().map_while(Result::ok) {
                let (g, st) = (g.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut w = conn.try_clone().expect("clone");
                    let mut r = BufReader::new(conn);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let mut headers = Vec::new();
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                                if k == "content-length" {
                                    len = v.parse().unwrap_or(0);
                                }
                                headers.push((k, v));
                            }
                        }
                        let mut body = vec![0; len];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        let code = *st.lock().expect("lock");
                        g.lock().expect("lock").push(Request {
                            path,
                            headers,
                            body,
                        });
                        let reply = format!(
                            "HTTP/1.1 {code} X\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
                        );
                        if w.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { port, got, status }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn set_status(&self, code: u16) {
        *self.status.lock().expect("lock") = code;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived.
    pub fn wait(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let end = Instant::now() + timeout;
        loop {
            let r = self.requests();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < end,
                "{} of {n} requests within {timeout:?}",
                r.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
