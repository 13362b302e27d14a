//! Power cuts: edgewatch's data directory on a FUSE filesystem that loses everything not fsync'ed
//! (tests/powercut/fs.rs), the real binary cut at random moments, invariants checked every cycle.
//! Over 600 lines because the cycle test's checker (the ledger) and its process and load helpers
//! belong together; the filesystem and the receiver are in their own files under tests/powercut/.

#[path = "powercut/fs.rs"]
mod fs;

use std::io::Write;
use std::os::unix::fs::FileExt;

use fs::PowerCutFs;

/// Mounts a fresh filesystem, or says why this machine cannot (the test then passes).
fn mount() -> Option<(tempfile::TempDir, PowerCutFs)> {
    if let Err(why) = fs::can_mount() {
        eprintln!("powercut: skipped, FUSE cannot be mounted: {why}");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = PowerCutFs::mount(dir.path()).expect("mount");
    Some((dir, fs))
}

#[test]
fn the_model_keeps_only_what_was_fsynced() {
    let Some((_dir, mut fs)) = mount() else {
        return;
    };
    let root = fs.path().to_path_buf();
    let sub = root.join("d");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::File::open(&root)
        .and_then(|d| d.sync_all())
        .expect("fsync root");
    // a: written, never synced (its name is, with d); b: synced, but its name is not; c: synced, name synced.
    std::fs::write(sub.join("a"), b"lost").expect("a");
    let mut b = std::fs::File::create(sub.join("b")).expect("b");
    b.write_all(b"data of b").expect("b");
    b.sync_all().expect("sync b");
    let mut c = std::fs::File::create(sub.join("c")).expect("c");
    c.write_all(b"data of c").expect("c");
    c.sync_all().expect("sync c");
    std::fs::File::open(&sub)
        .and_then(|d| d.sync_all())
        .expect("fsync d");
    // After the directory sync: more data for c (unsynced), and a rename (unsynced).
    c.write_all_at(b"XXXX", 0).expect("overwrite c");
    std::fs::rename(sub.join("c"), sub.join("c2")).expect("rename");
    drop((b, c));
    let r = fs.cut(None).expect("cut");
    assert!(r.unsynced_files.iter().any(|f| f == "c2"), "{r:?}");
    let names: Vec<String> = std::fs::read_dir(&sub)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "the rename of c was not synced");
    assert_eq!(
        std::fs::read(sub.join("a")).expect("a"),
        b"",
        "a's name was synced (with d), its data never"
    );
    assert_eq!(std::fs::read(sub.join("b")).expect("b"), b"data of b");
    assert_eq!(std::fs::read(sub.join("c")).expect("c"), b"data of c");
    // A torn write keeps a prefix of the last unsynced write.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(sub.join("b"))
        .expect("open b");
    f.write_all_at(&[7u8; 1000], 9).expect("append");
    drop(f);
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(1);
    let r = fs.cut(Some(&mut rng)).expect("cut");
    let (_, kept, of) = r.torn.clone().expect("a torn write");
    assert_eq!(of, 1000);
    let b = std::fs::read(sub.join("b")).expect("b");
    assert_eq!(b.len(), 9 + kept, "{r:?}");
    assert!(b[9..].iter().all(|x| *x == 7));
}

// ---------------------------------------------------------------------------------------------
// The cycle test: the real binary under load, cut at random moments, invariants every cycle.

#[path = "powercut/receiver.rs"]
mod receiver;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use receiver::{Mode, Receiver};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
const DEVICES: usize = 5;
/// The cycle's alert log keeps this many alerts, pruned every 300 ms: retention runs during
/// most cycles (the log grows by ~10 alerts/s).
const ALERT_LOG_MAX: usize = 40;
/// sled log segment size in the cycle test (`[store] segment_size`).
const SEGMENT: usize = 64 << 10;
/// The phase of a cut while sled starts reusing a segment it cleaned.
const SEGMENT_CLEANUP: &str = "sled segment cleanup: freed segment reused";
/// What edgewatch logs after an alert-log retention pass removed something.
const RETENTION_LINE: &str = "alert log retention applied";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One run of the appliance; its stderr kept for diagnostics.
struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn start(config: &std::path::Path) -> Proc {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgewatch");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, sink) = (child.stderr.take().expect("stderr"), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        Proc { child, log }
    }

    fn log_len(&self) -> usize {
        self.log.lock().expect("log").len()
    }

    /// Whether a line containing `needle` was logged at or after line `from` (moved past it).
    fn saw_since(&self, from: &mut usize, needle: &str) -> bool {
        let l = self.log.lock().expect("log");
        let seen = l[(*from).min(l.len())..].iter().any(|x| x.contains(needle));
        *from = l.len();
        seen
    }

    fn tail(&self) -> String {
        let l = self.log.lock().expect("log");
        l[l.len().saturating_sub(30)..].join("\n")
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and wait until the kernel has closed its files.
    fn kill(self) {
        drop(self);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failed assertion must not leave the appliance running (or holding the mount).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(api: &str, path: &str) -> Option<Value> {
    ureq::get(&format!("http://{api}{path}"))
        .timeout(Duration::from_secs(5))
        .call()
        .ok()?
        .into_json()
        .ok()
}

/// Samples that flip a threshold detector on every device: an alert or a resolution per sample.
fn load(tcp: String, stop: Arc<AtomicBool>) {
    let mut i = 0u64;
    while !stop.load(Relaxed) {
        let Ok(mut s) = std::net::TcpStream::connect(&tcp) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        loop {
            if stop.load(Relaxed) {
                return;
            }
            i += 1;
            let mut buf = String::new();
            for d in 0..DEVICES {
                let v = if (i + d as u64) % 2 == 0 { 100 } else { 0 };
                buf.push_str(&format!("dev{d},x,{v}\n"));
            }
            if s.write_all(buf.as_bytes()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// What the checker knows across cycles.
#[derive(Default)]
struct Ledger {
    /// Every seq ever received and its content.
    content: HashMap<u64, Value>,
    /// Received, never acknowledged, not yet received again: must be re-sent.
    owed: BTreeSet<u64>,
    /// Latest state of every alert id seen upstream: true = resolved.
    alerts: HashMap<String, (String, bool)>,
    /// `raised_at` of every alert seen upstream (retention removes the oldest first).
    raised: HashMap<String, i64>,
    /// The alert log as read before the cut, known durable (a flush of the log followed the
    /// read): id → (resolved, raised_at). All of it must be there after the restart.
    synced_log: HashMap<String, (bool, i64)>,
    /// Alert-log records checked against `synced_log` after restarts.
    log_checked: u64,
    /// The last cut (phase, torn write), for violation reports.
    last_cut: String,
    /// Seqs covered by gap notices.
    gaps: Vec<(u64, u64)>,
    checked: u64,
    /// Seqs seen again with another content (only the first few are listed as violations).
    reissued: u64,
    violations: Vec<String>,
    /// How far the receiver log has been read.
    read: usize,
}

impl Ledger {
    fn violation(&mut self, cycle: u64, what: String) {
        eprintln!("powercut: VIOLATION in cycle {cycle}: {what}");
        self.violations.push(format!("cycle {cycle}: {what}"));
    }

    /// Takes in what the receiver got since the last call.
    fn absorb(&mut self, cycle: u64, rx: &Receiver) {
        let got = rx.since(self.read);
        self.read += got.len();
        for g in got {
            let m = &g.msg;
            if m["type"] == "hello" {
                continue;
            }
            let Some(seq) = m["seq"].as_u64() else {
                self.violation(cycle, format!("message without seq: {m}"));
                continue;
            };
            self.checked += 1;
            let first = match self.content.get(&seq) {
                Some(old) if old != m => {
                    self.reissued += 1;
                    if self.reissued <= 3 {
                        let what = format!("seq {seq} re-issued with another content:\n  before {old}\n  now    {m}");
                        self.violation(cycle, what);
                    }
                    false
                }
                Some(_) => false,
                None => {
                    self.content.insert(seq, m.clone());
                    true
                }
            };
            self.owed.remove(&seq);
            if !g.acked {
                self.owed.insert(seq);
            }
            if m["type"] == "gap" {
                if let (Some(f), Some(t)) = (m["from"].as_u64(), m["to"].as_u64()) {
                    self.gaps.push((f, t));
                }
            }
            // A re-sent message repeats history; only new seqs move an alert along.
            if first && m["type"] == "alert" {
                let id = m["id"].as_str().unwrap_or_default().to_string();
                let resolved = m["state"] == "resolved";
                let device = m["device"].as_str().unwrap_or_default().to_string();
                match self.alerts.get(&id) {
                    None if resolved => {
                        let what = format!("alert {id} resolved upstream, never seen firing (half-restored state?)");
                        self.violation(cycle, what);
                    }
                    Some((_, true)) if !resolved => {
                        self.violation(
                            cycle,
                            format!("alert {id} firing again after its resolution"),
                        );
                    }
                    _ => {}
                }
                let r = resolved || self.alerts.get(&id).is_some_and(|a| a.1);
                if let Some(t) = m["raised_at"].as_i64() {
                    self.raised.insert(id.clone(), t);
                }
                self.alerts.insert(id, (device, r));
            }
        }
        let gaps = self.gaps.clone();
        self.owed
            .retain(|s| !gaps.iter().any(|(f, t)| (*f..=*t).contains(s)));
    }

    /// Every alert seen upstream is in the alert log, at least as far along as upstream saw it.
    fn check_alert_log(&mut self, cycle: u64, api: &str) {
        // A power cut loses only what was never synced: nothing synced may come back damaged.
        match get(api, "/api/status") {
            Some(st)
                if st["store"]["damaged_records"] == 0 && st["store"]["moved_aside"].is_null() => {}
            other => self.violation(
                cycle,
                format!(
                    "store damage after a power cut: {:?}",
                    other.map(|s| s["store"].clone())
                ),
            ),
        }
        let Some(log) = read_alert_log(api) else {
            self.violation(cycle, "GET /api/alerts failed".into());
            return;
        };
        // Retention removes the oldest alerts beyond ALERT_LOG_MAX: a removed one had that many
        // newer ones, which were durable before its removal was, and stay (or are removed for
        // still newer ones). So an alert is missing legitimately only behind that many newer.
        let mut times: Vec<i64> = log.values().map(|v| v.1).collect();
        times.sort_unstable();
        let pruned = |t: i64| times.len() - times.partition_point(|x| *x < t) >= ALERT_LOG_MAX;
        let mut missing = Vec::new();
        for (id, (_, resolved)) in &self.alerts {
            let t = self.raised.get(id).copied().unwrap_or(i64::MAX);
            match log.get(id) {
                None if pruned(t) => {}
                None => missing.push(format!("{id} missing")),
                Some((false, _)) if *resolved => {
                    missing.push(format!("{id} firing, upstream saw it resolved"))
                }
                _ => {}
            }
        }
        // Alerts in the log before the last sync are still there, in that state (whether or
        // not they ever went upstream): records sled loses in recovery are caught here.
        for (id, (resolved, t)) in std::mem::take(&mut self.synced_log) {
            self.log_checked += 1;
            match log.get(&id) {
                None if pruned(t) => {}
                None => missing.push(format!(
                    "{id} (raised {t}, in the log before the last sync) missing, {} newer",
                    times.len() - times.partition_point(|x| *x < t)
                )),
                Some((false, _)) if resolved => missing.push(format!(
                    "{id} firing, the log had it resolved before the last sync"
                )),
                _ => {}
            }
        }
        if !missing.is_empty() {
            missing.sort();
            let what = format!(
                "{} alerts seen upstream or synced are not (so) in the alert log: {:?}; {} alerts in the log now; last cut: {}",
                missing.len(),
                &missing[..missing.len().min(5)],
                log.len(),
                self.last_cut
            );
            self.violation(cycle, what);
        }
    }
}

/// The whole alert log: id → (resolved, raised_at).
fn read_alert_log(api: &str) -> Option<HashMap<String, (bool, i64)>> {
    let mut log = HashMap::new();
    for d in 0..DEVICES {
        let Some(Value::Array(list)) = get(api, &format!("/api/alerts?device=dev{d}&limit=10000"))
        else {
            return None;
        };
        for a in list {
            log.insert(
                a["id"].as_str().unwrap_or_default().to_string(),
                (
                    a["state"] == "resolved",
                    a["raised_at"].as_i64().unwrap_or(i64::MIN),
                ),
            );
        }
    }
    Some(log)
}

/// The store's count of completed flushes (each counted after its fsyncs).
fn store_flushes(api: &str) -> Option<u64> {
    get(api, "/api/status")?["store"]["writes"]["flushes"].as_u64()
}

/// The alert log as it is now, returned once it is durable: the store completed a flush after
/// the read. The store actor answers the read and runs its flushes one at a time, so a flush
/// counted after the answer arrived began after the read. (An fsync of sled's log file is no
/// such witness: sled fsyncs it itself when it truncates the log, without writing what it holds
/// in memory.) None if that took over 5 s.
fn durable_alert_log(api: &str) -> Option<HashMap<String, (bool, i64)>> {
    let log = read_alert_log(api)?;
    let after = store_flushes(api)?;
    let end = Instant::now() + Duration::from_secs(5);
    while store_flushes(api)? <= after {
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(log)
}

fn signal(p: &Proc, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status();
}

fn freeze(p: &Proc) {
    signal(p, "-STOP");
}

/// What is unsynced in the filesystem now.
fn phase_of(fs: &PowerCutFs) -> &'static str {
    let (files, dirs) = fs.pending();
    // The cycle's sled segments are 64 KiB: segment cleanup relocates live pages (appends),
    // frees the segment, then truncates the log or reuses the segment from its start (header
    // first), overwriting its old bytes; a recovery continues the log over what a cut left
    // after the last good entry, which also overwrites synced bytes.
    let rewritten = fs.overwritten().into_iter().find(|(f, _)| f == "db");
    if let Some((_, at)) = rewritten {
        match at {
            None => "sled segment cleanup: log truncated",
            Some(at) if at % SEGMENT < 64 => SEGMENT_CLEANUP,
            Some(_) => "sled writing over synced log bytes (a reused segment or a recovered tail)",
        }
    } else if files.iter().any(|f| f.starts_with("snap.")) {
        "sled snapshot file"
    } else if files.iter().any(|f| f == "db") {
        "unsynced log writes"
    } else if !dirs.is_empty() {
        "unsynced directory"
    } else if !files.is_empty() {
        "other unsynced file"
    } else {
        "everything synced"
    }
}

/// Freezes the process at a moment of phase `target` (tries for up to 2 s, else any moment).
fn cut_moment(
    p: &Proc,
    fs: &PowerCutFs,
    target: Option<&'static str>,
    rng: &mut impl Rng,
) -> &'static str {
    let end = Instant::now() + Duration::from_secs(2);
    if target == Some("retention") {
        // Frozen as soon as a pass that removed records is logged: its removals are in sled's
        // memory, written at the next flush (sled writes nothing between flushes but a full
        // 512 KiB buffer), so a cut now is a cut in the middle of retention as the disk sees it.
        // Then, for up to 700 ms, it is frozen repeatedly until the flush that follows has
        // written them and not yet synced them.
        let mut from = p.log_len();
        while Instant::now() < end {
            if p.saw_since(&mut from, RETENTION_LINE) {
                let until = Instant::now() + Duration::from_millis(700);
                loop {
                    freeze(p);
                    fs.hold(true);
                    if fs.pending().0.iter().any(|f| f == "db") {
                        return "retention (removals written, unsynced)";
                    }
                    if Instant::now() > until {
                        return "retention (removals in memory only)";
                    }
                    fs.hold(false);
                    signal(p, "-CONT");
                    std::thread::sleep(Duration::from_micros(rng.gen_range(100..1000)));
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        freeze(p);
        fs.hold(true);
        return phase_of(fs);
    }
    loop {
        freeze(p);
        fs.hold(true);
        let phase = phase_of(fs);
        if target.is_none_or(|t| t == phase) || Instant::now() > end {
            return phase;
        }
        fs.hold(false);
        signal(p, "-CONT");
        std::thread::sleep(Duration::from_micros(rng.gen_range(200..3000)));
    }
}

#[derive(Default, Debug)]
struct Phases(BTreeMap<&'static str, u64>);

impl Phases {
    fn add(&mut self, p: &'static str) {
        *self.0.entry(p).or_default() += 1;
    }
}

/// The appliance's config: data on the mount, TCP samples, upstream, frequent snapshots.
fn write_config(
    dir: &std::path::Path,
    fs: &PowerCutFs,
    tcp_port: u16,
    api_port: u16,
    up_port: u16,
) -> std::path::PathBuf {
    let config = dir.join("edgewatch.toml");
    let data = fs.path().join("data");
    std::fs::write(
        &config,
        format!(
            r#"node_id = "cut"
data_dir = {data:?}
summary_interval = "500ms"
persist_interval = "1s"

[store]
alert_log_max = {ALERT_LOG_MAX}
retention_interval = "300ms"
segment_size = {SEGMENT}

[unknown_devices]
policy = "register"
template = "flip"

[template.flip]
detectors = [{{ type = "threshold", max = 10.0, hold = "0s" }}]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:{tcp_port}"
format = "csv"

[upstream]
url = "ws://127.0.0.1:{up_port}"
summary_interval = "500ms"
ping_interval = "1s"
pong_timeout = "3s"
backoff_min = "50ms"
backoff_max = "300ms"

[api]
listen = "127.0.0.1:{api_port}"
"#
        ),
    )
    .expect("config");
    config
}

#[test]
fn power_cuts_never_lose_reissue_or_half_restore() {
    let Some((_mnt, mut fs)) = mount() else {
        return;
    };
    let cycles = env_u64("POWERCUT_CYCLES", 20);
    // Without a flush latency, sled's log is unsynced only for the instant between its write
    // and the store's fsync (sled's own flusher is off), and few cuts land there.
    fs.set_fsync_delay(Duration::from_millis(5));
    let seed = env_u64(
        "POWERCUT_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
    );
    eprintln!(
        "powercut: seed {seed} (POWERCUT_SEED={seed} reproduces the schedule), {cycles} cycles"
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let (tcp_port, api_port, up_port) = (free_port(), free_port(), free_port());
    let config = write_config(cfg_dir.path(), &fs, tcp_port, api_port, up_port);
    let api = format!("127.0.0.1:{api_port}");
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (tcp, stop) = (format!("127.0.0.1:{tcp_port}"), stop.clone());
        std::thread::spawn(move || load(tcp, stop))
    };
    let mut rx = Receiver::new(up_port);
    let mut ledger = Ledger::default();
    let mut phases = Phases::default();
    let mut modes = Phases::default();
    let mut torn = 0u64;
    let started = Instant::now();
    for cycle in 1..=cycles {
        let mode = match rng.gen_range(0..100) {
            0..50 => Some(Mode::Ack),
            50..70 => Some(Mode::Slow),
            70..85 => Some(Mode::Silent),
            _ => None,
        };
        modes.add(match mode {
            Some(Mode::Ack) => "receiver acking",
            Some(Mode::Slow) => "receiver slow",
            Some(Mode::Silent) => "receiver silent",
            None => "receiver down",
        });
        match mode {
            Some(m) => {
                rx.set_mode(m);
                rx.up();
            }
            None => rx.down(),
        }
        let mut p = Proc::start(&config);
        // Sometimes the cut comes while edgewatch is still opening and recovering its store.
        let early = rng.gen_bool(0.15);
        if early {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        } else {
            // It starts (never a crash loop) and answers.
            let end = Instant::now() + Duration::from_secs(20);
            while get(&api, "/api/status").is_none() {
                if !p.alive() || Instant::now() > end {
                    let what = format!("edgewatch did not come up after a cut; log:\n{}", p.tail());
                    ledger.violation(cycle, what);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            ledger.absorb(cycle, &rx);
            ledger.check_alert_log(cycle, &api);
            // What was sent and never acknowledged is sent again once the receiver acks.
            if matches!(mode, Some(Mode::Ack | Mode::Slow)) && !ledger.owed.is_empty() {
                let end = Instant::now() + Duration::from_secs(15);
                while !ledger.owed.is_empty() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(100));
                    ledger.absorb(cycle, &rx);
                }
                if !ledger.owed.is_empty() {
                    let owed: Vec<String> = ledger
                        .owed
                        .iter()
                        .take(5)
                        .map(|s| format!("{s}: {}", ledger.content[s]))
                        .collect();
                    let st = get(&api, "/api/status").map(|s| s["upstream"].clone());
                    let what = format!(
                        "{} messages sent, never acked, not sent again: {owed:?}; upstream status {st:?}; log:\n{}",
                        ledger.owed.len(),
                        p.tail()
                    );
                    ledger.violation(cycle, what);
                    ledger.owed.clear();
                }
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(200..2500)));
        }
        // The cut, aimed at a moment when something is in flight for most cycles: the process is
        // frozen (SIGSTOP), the filesystem asked what is unsynced, and either cut or let go on.
        let target = match rng.gen_range(0..100) {
            0..35 => Some("unsynced log writes"),
            35..47 => Some("unsynced directory"),
            47..55 => Some("sled snapshot file"),
            55..67 => Some("retention"),
            67..77 => Some(SEGMENT_CLEANUP),
            _ => None,
        };
        // The log as it was before the last sync: it must all be there after the cut.
        if !early {
            match durable_alert_log(&api) {
                Some(log) => ledger.synced_log = log,
                None => ledger.violation(cycle, "no flush of the store within 5 s".into()),
            }
        }
        let phase = if early {
            freeze(&p);
            fs.hold(true);
            "starting"
        } else {
            cut_moment(&p, &fs, target, &mut rng)
        };
        phases.add(phase);
        // Power off before the kill: an fsync held while the program was inspected would
        // otherwise keep the killed process waiting on the filesystem forever.
        fs.power_off();
        p.kill();
        let tear = rng.gen_bool(0.5);
        let r = fs
            .cut(if tear { Some(&mut rng) } else { None })
            .expect("power cut");
        torn += u64::from(r.torn.is_some());
        ledger.last_cut = format!("{phase}, torn {:?}, lost {} bytes", r.torn, r.lost_bytes);
        ledger.absorb(cycle, &rx);
        if !ledger.violations.is_empty() && std::env::var_os("POWERCUT_KEEP_GOING").is_none() {
            break;
        }
    }
    if !ledger.violations.is_empty() {
        panic!(
            "seed {seed}: {} violations ({} seqs re-issued):\n{}",
            ledger.violations.len(),
            ledger.reissued,
            ledger.violations.join("\n")
        );
    }
    // Finally: a receiver that acks gets everything still owed, and the appliance stops cleanly.
    rx.set_mode(Mode::Ack);
    rx.up();
    let mut p = Proc::start(&config);
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        ledger.absorb(cycles + 1, &rx);
        if ledger.owed.is_empty() && get(&api, "/api/status").is_some() {
            break;
        }
        if Instant::now() > end || !p.alive() {
            let what = format!(
                "{} messages never re-sent; log:\n{}",
                ledger.owed.len(),
                p.tail()
            );
            ledger.violation(cycles + 1, what);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ledger.check_alert_log(cycles + 1, &api);
    stop.store(true, Relaxed);
    let _ = loader.join();
    p.kill();
    let ops = fs.ops();
    eprintln!(
        "powercut: {cycles} cycles in {:.0?}, seed {seed}\n  cuts by phase: {:?}\n  cycles by receiver: {:?}\n  torn writes: {torn}\n  messages checked: {} (distinct seqs {}), alerts tracked: {}, alert-log records checked after restarts: {}\n  fs ops in total: {ops:?}\n  violations: {}",
        started.elapsed(),
        phases.0,
        modes.0,
        ledger.checked,
        ledger.content.len(),
        ledger.alerts.len(),
        ledger.log_checked,
        ledger.violations.len()
    );
    assert!(
        ledger.violations.is_empty(),
        "seed {seed}: {} violations:\n{}",
        ledger.violations.len(),
        ledger.violations.join("\n")
    );
    assert!(
        ledger.checked > 0,
        "the receiver got nothing: the test tested nothing"
    );
}

/// Regression: sled's `flush` only calls `sync_file_range` and never fsyncs its directory, so what
/// the store reported durable (and the upstream client sent) was lost in a power cut: after a
/// first start, the whole database; later, the last flushes. Seqs were then issued again with
/// other alerts. `Store::flush` now fsyncs the log file and the data directory itself.
#[test]
fn what_was_sent_upstream_survives_a_cut_right_after_the_first_start() {
    let Some((_mnt, mut fs)) = mount() else {
        return;
    };
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let (tcp_port, api_port, up_port) = (free_port(), free_port(), free_port());
    let config = write_config(cfg_dir.path(), &fs, tcp_port, api_port, up_port);
    let api = format!("127.0.0.1:{api_port}");
    let mut rx = Receiver::new(up_port);
    rx.set_mode(Mode::Silent);
    rx.up();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (tcp, stop) = (format!("127.0.0.1:{tcp_port}"), stop.clone());
        std::thread::spawn(move || load(tcp, stop))
    };
    let mut ledger = Ledger::default();
    let p = Proc::start(&config);
    let end = Instant::now() + Duration::from_secs(20);
    while ledger.alerts.len() < 10 {
        assert!(
            Instant::now() < end,
            "no alerts upstream; log:\n{}",
            p.tail()
        );
        std::thread::sleep(Duration::from_millis(50));
        ledger.absorb(1, &rx);
    }
    stop.store(true, Relaxed);
    let _ = loader.join();
    p.kill();
    fs.cut(None).expect("cut");
    let sent = ledger.content.len();
    rx.set_mode(Mode::Ack);
    let mut p = Proc::start(&config);
    let end = Instant::now() + Duration::from_secs(20);
    while get(&api, "/api/status").is_none() {
        assert!(
            p.alive() && Instant::now() < end,
            "no restart; log:\n{}",
            p.tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ledger.check_alert_log(2, &api);
    while !ledger.owed.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        ledger.absorb(2, &rx);
    }
    p.kill();
    assert!(
        ledger.owed.is_empty(),
        "{} of {sent} sent messages never came again",
        ledger.owed.len()
    );
    assert!(
        ledger.violations.is_empty(),
        "{} violations:\n{}",
        ledger.violations.len(),
        ledger.violations.join("\n")
    );
}

/// 4 KiB of garbage in the middle of sled's `db` after a clean stop: whatever is lost, edgewatch
/// starts, and either every device comes back or the loss is counted, logged and alerted.
#[test]
fn garbage_in_the_database_is_never_silent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (tcp_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("edgewatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"node_id = "dmg"
data_dir = {data:?}
persist_interval = "10m"

[unknown_devices]
policy = "register"
template = "t"

[template.t]
detectors = [{{ type = "threshold", max = 1000.0 }}]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:{tcp_port}"
format = "csv"

[api]
listen = "127.0.0.1:{api_port}"
"#
        ),
    )
    .expect("config");
    let api = format!("127.0.0.1:{api_port}");
    let wait_up = |p: &mut Proc| {
        let end = Instant::now() + Duration::from_secs(20);
        while get(&api, "/api/status").is_none() {
            assert!(
                p.alive() && Instant::now() < end,
                "edgewatch did not start; log:\n{}",
                p.tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut p = Proc::start(&config);
    wait_up(&mut p);
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{tcp_port}")).expect("tcp");
    let mut buf = String::new();
    for i in 0..20 {
        for d in 0..50 {
            buf.push_str(&format!("dev{d:02},x,{}\n", i % 7));
        }
    }
    s.write_all(buf.as_bytes()).expect("samples");
    let end = Instant::now() + Duration::from_secs(10);
    while get(&api, "/api/status").is_none_or(|v| v["analysis"]["devices"] != 50) {
        assert!(Instant::now() < end, "50 devices not registered");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);
    // A clean stop: the final snapshot is written.
    let _ = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status();
    let _ = p.child.wait();
    let db = data.join("db");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("db");
    let len = f.metadata().expect("len").len();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(16);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.gen()).collect();
    f.write_all_at(&garbage, len / 2).expect("garbage");
    drop(f);
    let mut p = Proc::start(&config);
    wait_up(&mut p);
    let st = get(&api, "/api/status").expect("status");
    let log = p.log.lock().expect("log").join("\n");
    let restored: u64 = log
        .lines()
        .filter(|l| l.contains("state restored"))
        .filter_map(|l| {
            l.split("devices=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let store = &st["store"];
    eprintln!(
        "after 4 KiB of garbage at {} of {len}: restored {restored} devices; store {store}",
        len / 2
    );
    let damaged =
        store["damaged_records"].as_u64().unwrap_or(0) > 0 || !store["moved_aside"].is_null();
    assert!(
        restored == 50 || damaged,
        "{restored} of 50 devices restored and nothing reported: {store}; log:\n{log}"
    );
    if damaged {
        let alerts = get(&api, "/api/alerts?device=dmg").expect("alerts");
        assert!(
            alerts
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["detector"] == "store_integrity")),
            "damage raised as an internal alert: {alerts}"
        );
        assert!(
            log.contains("damaged") || log.contains("moved aside"),
            "damage logged:\n{log}"
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status();
    let _ = p.child.wait();
}
