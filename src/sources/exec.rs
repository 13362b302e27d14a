//! Exec source: a command's stdout through a decoder. Every `interval` a run under a timeout
//! (killed with its process group when it overruns), or one long-running process read line by
//! line and restarted with backoff. Its stderr goes to the log, rate-limited.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

use super::backoff::Retry;
use super::intake::{Decoder, Framed, Intake, Origin};
use super::route::{Closed, Router};
use super::SourceError;
use crate::config::ExecSource;
use crate::decode::framing::Delimiter;
use crate::status::{RateLimitedLog, SourceStats};

/// Most stdout taken from one interval run.
const MAX_OUTPUT: u64 = 1 << 20;

/// Kills the child's whole process group when dropped (run over, task aborted, shutdown).
struct Group(Option<Pid>);

impl Group {
    fn kill(&mut self) {
        if let Some(pg) = self.0.take() {
            let _ = killpg(pg, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(cfg: &ExecSource) -> std::io::Result<(Child, Group)> {
    let mut cmd = Command::new(&cfg.command[0]);
    cmd.args(&cfg.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn()?;
    let group = Group(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );
    Ok((child, group))
}

/// The stderr log limit of one source, shared by all its runs (a command run every second that
/// writes to stderr each time must not log more than a long-running one).
type StderrLog = Arc<std::sync::Mutex<RateLimitedLog>>;

fn stderr_log() -> StderrLog {
    Arc::new(std::sync::Mutex::new(RateLimitedLog::new(
        5,
        Duration::from_secs(10),
    )))
}

/// Logs the child's stderr lines, at most 5 per 10 s for the whole source.
fn log_stderr(id: String, err: Option<ChildStderr>, log: StderrLog) {
    let Some(err) = err else { return };
    tokio::spawn(async move {
        let mut lines = BufReader::new(err).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok((allow, suppressed)) = log.lock().map(|mut l| l.allow()) else {
                return;
            };
            if let Some(n) = suppressed {
                tracing::warn!(source = %id, suppressed = n, "more stderr lines were not logged");
            }
            if allow {
                tracing::warn!(source = %id, stderr = %line.chars().take(200).collect::<String>(), "command wrote to stderr");
            }
        }
    });
}

pub async fn run(
    cfg: Arc<ExecSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let mut framed = Framed::new(
        Intake::new(&router, idx, stats.clone(), Origin::Port),
        cfg.max_frame,
        Delimiter::Newline,
        Decoder::Format {
            format: cfg.format,
            settings: cfg.settings(),
        },
    );
    framed.intake.set_from(cfg.command.join(" "));
    let log = stderr_log();
    match cfg.interval {
        Some(every) => periodic(&cfg, every.0, &mut framed, &stats, log).await,
        None => long_running(&cfg, &mut framed, &stats, log).await,
    }
    .map_err(SourceError::Closed)
}

async fn periodic(
    cfg: &ExecSource,
    every: Duration,
    framed: &mut Framed,
    stats: &SourceStats,
    log: StderrLog,
) -> Result<(), Closed> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (mut child, mut group) = match spawn(cfg) {
            Ok(x) => x,
            Err(e) => {
                stats.set_healthy(false);
                stats.set_error(format!("cannot run {:?}: {e}", cfg.command[0]));
                continue;
            }
        };
        log_stderr(cfg.id.clone(), child.stderr.take(), log.clone());
        let mut out = Vec::new();
        let mut stdout = child.stdout.take().map(|s| s.take(MAX_OUTPUT));
        let run = async {
            if let Some(s) = stdout.as_mut() {
                s.read_to_end(&mut out).await?;
            }
            child.wait().await
        };
        match tokio::time::timeout(cfg.timeout.0, run).await {
            Ok(Ok(status)) => {
                framed.feed(&out);
                framed.end_frame();
                if status.success() {
                    stats.set_healthy(true);
                } else {
                    stats.set_healthy(false);
                    stats.set_error(format!("command exited with {status}"));
                }
            }
            Ok(Err(e)) => {
                stats.set_healthy(false);
                stats.set_error(format!("command failed: {e}"));
            }
            Err(_) => {
                group.kill();
                framed.intake.reject(
                    None,
                    &format!("killed after {} (timeout)", cfg.timeout),
                    None,
                );
                stats.set_healthy(false);
                stats.set_error(format!("killed after {} (timeout)", cfg.timeout));
            }
        }
        drop(group);
        framed.flush().await?;
    }
}

async fn long_running(
    cfg: &ExecSource,
    framed: &mut Framed,
    stats: &SourceStats,
    log: StderrLog,
) -> Result<(), Closed> {
    let mut retry = Retry::new(cfg.backoff_min.0, cfg.backoff_max.0);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match spawn(cfg) {
            Ok((mut child, group)) => {
                retry.up();
                stats.set_healthy(true);
                stats
                    .connects_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log_stderr(cfg.id.clone(), child.stderr.take(), log.clone());
                if let Some(mut out) = child.stdout.take() {
                    loop {
                        match out.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                framed.feed(&buf[..n]);
                                framed.flush().await?;
                            }
                        }
                    }
                }
                framed.disconnected();
                let status = child.wait().await;
                drop(group);
                if framed.take_received() {
                    retry.healthy();
                }
                stats.set_healthy(false);
                let why = match status {
                    Ok(s) => format!("command exited with {s}"),
                    Err(e) => format!("command failed: {e}"),
                };
                tracing::warn!(source = %cfg.id, reason = %why, "command ended; restarting after backoff");
                stats.set_error(why);
            }
            Err(e) => {
                stats.set_healthy(false);
                stats.set_error(format!("cannot run {:?}: {e}", cfg.command[0]));
            }
        }
        tokio::time::sleep(retry.failed()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use tokio::sync::mpsc;

    use super::*;
    use crate::config::{parse_str, SourceConfig};
    use crate::sources::route::Ingest;

    fn config(extra: &str) -> ExecSource {
        let text = format!("node_id = \"n\"\n[[source]]\nid = \"x\"\nkind = \"exec\"\n{extra}");
        let r = parse_str(&text, std::path::Path::new("t.toml")).expect("config");
        match &r.config.sources[0] {
            SourceConfig::Exec(x) => x.clone(),
            _ => panic!("not exec"),
        }
    }

    fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p.display().to_string()
    }

    fn start(
        cfg: ExecSource,
    ) -> (
        tokio::task::JoinHandle<Result<(), SourceError>>,
        Arc<SourceStats>,
        mpsc::Receiver<Ingest>,
    ) {
        let (tx, rx) = mpsc::channel(64);
        let stats = Arc::new(SourceStats::new("x", "exec"));
        let task = tokio::spawn(run(Arc::new(cfg), 0, Router::new(vec![tx]), stats.clone()));
        (task, stats, rx)
    }

    async fn values(rx: &mut mpsc::Receiver<Ingest>, n: usize) -> Vec<f64> {
        let mut got = Vec::new();
        while got.len() < n {
            let b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("samples in time")
                .expect("batch");
            got.extend(b.batch.iter().map(|s| s.value));
        }
        got
    }

    #[tokio::test]
    async fn a_periodic_command_feeds_the_decoder() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = script(
            dir.path(),
            "read.sh",
            "echo 't=21.5'\necho 'h=40'\necho oops >&2\n",
        );
        let (task, stats, mut rx) = start(config(&format!(
            "command = [{s:?}]\ninterval = \"100ms\"\nformat = \"kv\"\ndevice = \"pi\"\n"
        )));
        let v = values(&mut rx, 4).await;
        assert_eq!(&v[..2], &[21.5, 40.0]);
        assert!(stats.healthy.load(Relaxed));
        task.abort();
    }

    /// A writer into a shared buffer, to read back what was logged.
    #[derive(Clone, Default)]
    struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for LogBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// stderr lines reach the log with the source id, at most 5 per 10 s for the source however
    /// many runs write them (the test runtime is single-threaded, so the spawned reader tasks log
    /// through this test's subscriber).
    #[tokio::test]
    async fn stderr_reaches_the_log_rate_limited_across_runs() {
        let buf = LogBuf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(sub);
        let dir = tempfile::tempdir().expect("tmp");
        let s = script(
            dir.path(),
            "noisy.sh",
            "for i in 1 2 3 4 5 6 7 8; do echo \"warning $i\" >&2; done\necho 'v=1'\n",
        );
        let (task, stats, mut rx) = start(config(&format!(
            "command = [{s:?}]\ninterval = \"100ms\"\nformat = \"kv\"\ndevice = \"pi\"\n"
        )));
        // Three runs: 24 stderr lines written.
        let v = values(&mut rx, 3).await;
        assert_eq!(v, [1.0, 1.0, 1.0]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        task.abort();
        let text = String::from_utf8_lossy(&buf.0.lock().expect("log").clone()).into_owned();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("command wrote to stderr"))
            .collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[0].contains("source=x") && lines[0].contains("stderr=warning 1"),
            "{text}"
        );
        assert!(stats.healthy.load(Relaxed));
    }

    #[tokio::test]
    async fn an_overrunning_command_is_killed_with_its_process_group() {
        let dir = tempfile::tempdir().expect("tmp");
        let pidfile = dir.path().join("grandchild.pid");
        // The script starts a grandchild that would outlive a kill of the script alone.
        let s = script(
            dir.path(),
            "hang.sh",
            &format!(
                "sleep 30 &\necho $! > {}\necho 'd v=1'\nwait\n",
                pidfile.display()
            ),
        );
        let (task, stats, _rx) = start(config(&format!(
            "command = [{s:?}]\ninterval = \"10s\"\ntimeout = \"300ms\"\nformat = \"kv\"\n"
        )));
        let mut pid = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            pid = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok());
            if pid.is_some() {
                break;
            }
        }
        let pid = Pid::from_raw(pid.expect("grandchild started"));
        let mut killed = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if stats.frames_rejected.load(Relaxed) == 1 {
                // Give the kernel a moment to deliver SIGKILL, then the grandchild must be gone
                // (a zombie at most: its parent died with it, so init reaps it).
                tokio::time::sleep(Duration::from_millis(100)).await;
                let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| !s.contains(") Z "))
                    .unwrap_or(false);
                killed = !alive;
                break;
            }
        }
        assert!(killed, "the grandchild {pid} outlived the timeout");
        assert!(!stats.healthy.load(Relaxed));
        task.abort();
    }

    #[tokio::test]
    async fn a_long_running_command_that_crashes_is_restarted() {
        let dir = tempfile::tempdir().expect("tmp");
        let count = dir.path().join("runs");
        let s = script(
            dir.path(),
            "stream.sh",
            &format!(
                "echo x >> {c}\nn=$(wc -l < {c})\necho \"{{\\\"device\\\":\\\"s\\\",\\\"run\\\":$n}}\"\nexit 3\n",
                c = count.display()
            ),
        );
        let (task, stats, mut rx) = start(config(&format!(
            "command = [{s:?}]\nbackoff_min = \"50ms\"\nbackoff_max = \"100ms\"\n"
        )));
        let v = values(&mut rx, 3).await;
        assert_eq!(v, vec![1.0, 2.0, 3.0], "each restart is a new run");
        assert!(stats.connects_total.load(Relaxed) >= 3);
        task.abort();
    }
}
