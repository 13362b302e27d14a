//! Real Prometheus and VictoriaMetrics servers started by a test (temp data directory, free port on
//! 127.0.0.1, killed on drop) and their query APIs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::broker::free_port;

/// A Prometheus server (the Debian package's `prometheus`).
pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus with `config` (prometheus.yml text) and the remote-write receiver on.
    pub fn start(dir: &Path, config: &str) -> Self {
        let port = free_port();
        let conf = dir.join("prometheus.yml");
        std::fs::write(&conf, config).expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn prometheus (apt-get install prometheus)");
        let p = Prometheus {
            child: Some(child),
            port,
            log,
        };
        p.wait_ready("/-/ready");
        p
    }

    fn wait_ready(&self, path: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        while ureq::get(&url)
            .timeout(Duration::from_secs(2))
            .call()
            .is_err()
        {
            assert!(
                Instant::now() < end,
                "prometheus not ready: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The remote-write endpoint.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// `GET /api/v1/query?query=...`: the `data` object, or the error text of a rejected query.
    pub fn query(&self, q: &str) -> Result<Value, String> {
        query(&self.url(), q)
    }

    /// Polls `q` until the result vector satisfies `pred`; returns it.
    pub fn wait(&self, q: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        wait(&self.url(), q, timeout, pred)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A VictoriaMetrics single-node server (`victoria-metrics`), remote write at `/api/v1/write`.
pub struct Victoria {
    child: Option<Child>,
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl Victoria {
    pub fn start(dir: &Path) -> Self {
        let mut v = Victoria {
            child: None,
            port: free_port(),
            data: dir.join("vm-data"),
            log: dir.join("victoria.log"),
        };
        v.start_again();
        v
    }

    /// Starts it (again) on the same port and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", self.data.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg("-search.latencyOffset=0s")
            // Points repeated by at-least-once delivery (same series and timestamp) count once.
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-loggerLevel=ERROR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).expect("log file"))
            .spawn()
            .expect("spawn victoria-metrics (apt-get install victoria-metrics)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/health", self.url());
        while ureq::get(&url)
            .timeout(Duration::from_secs(2))
            .call()
            .is_err()
        {
            assert!(
                Instant::now() < end,
                "victoria-metrics not ready: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it gracefully (SIGTERM: it flushes its in-memory rows; SIGKILL would lose them).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    pub fn wait(&self, q: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        // Newly written rows become searchable after VictoriaMetrics' in-memory buffer is flushed
        // (about a second); `wait` polls.
        wait(&self.url(), q, timeout, pred)
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn query(base: &str, q: &str) -> Result<Value, String> {
    let url = format!("{base}/api/v1/query");
    match ureq::get(&url)
        .query("query", q)
        .timeout(Duration::from_secs(10))
        .call()
    {
        Ok(r) => {
            let v: Value = r.into_json().map_err(|e| e.to_string())?;
            Ok(v["data"].clone())
        }
        Err(ureq::Error::Status(code, r)) => {
            Err(format!("{code}: {}", r.into_string().unwrap_or_default()))
        }
        Err(e) => Err(e.to_string()),
    }
}

pub fn wait(base: &str, q: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let end = Instant::now() + timeout;
    loop {
        let data = query(base, q).unwrap_or_else(|e| panic!("query {q}: {e}"));
        let result = data["result"].as_array().cloned().unwrap_or_default();
        if pred(&result) {
            return result;
        }
        assert!(
            Instant::now() < end,
            "query {q} not satisfied within {timeout:?}; last: {result:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The value of one instant-vector element.
pub fn value(v: &Value) -> f64 {
    v["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}
