//! `edgewatch replay`: runs the live analysis code (a `ShardCore`, no actors, no network) over CSV
//! files of `timestamp,value` rows, or of a time column and several metric columns (one device,
//! judged by its device-level detectors), and writes each row's anomaly score and firing flag.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::analysis::device::DeviceLevelPolicy;
use crate::analysis::shard::{DetectorOutcome, Policies, ShardCore};
use crate::config::{self, ConfigError, MetricPolicy, Resolved};
use crate::model::{Alert, AlertState, Batch, Millis};
use crate::status::StatusBoard;

/// Device and metric names the replayed series get inside the shard.
const DEVICE: &str = "replay";
const METRIC: &str = "value";

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Input {
        path: PathBuf,
        line: u64,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Csv { path: PathBuf, msg: String },
    #[error("{0}")]
    Usage(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What to replay and where to write it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Config file; without one, the default policy (the default detector set).
    pub config: Option<PathBuf>,
    /// Template of the config to analyse with; default: the unknown-device template.
    pub template: Option<String>,
    pub out: PathBuf,
    /// CSV files, or directories walked for `*.csv`.
    pub inputs: Vec<PathBuf>,
    /// Worker threads (files are replayed in parallel); 0 = one per core.
    pub threads: usize,
    /// Columns of multi-column files that are not metrics (e.g. labels); matched ignoring case.
    pub ignore_columns: Vec<String>,
}

/// Outcome of one replayed file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    /// Path relative to its input (also its path under the output directory).
    pub relative: PathBuf,
    pub rows: u64,
    /// Alerts raised (firing transitions), over all the metric's detectors.
    pub alerts: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub files: Vec<FileReport>,
    pub seconds: f64,
}

impl Report {
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    pub fn alerts(&self) -> u64 {
        self.files.iter().map(|f| f.alerts).sum()
    }
}

/// The policy replayed series are analysed with.
pub fn policy(
    resolved: Option<&Resolved>,
    template: Option<&str>,
) -> Result<Arc<MetricPolicy>, ReplayError> {
    match (resolved, template) {
        (None, None) => Ok(Arc::new(MetricPolicy {
            window: crate::analysis::stats::WindowSpec {
                count: Some(config::DEFAULT_WINDOW),
                span_ms: None,
            },
            ewma_alpha: config::DEFAULT_EWMA_ALPHA,
            detectors: config::default_detectors(),
        })),
        (None, Some(_)) => Err(ReplayError::Usage(
            "--template needs --config (the file that defines it)".into(),
        )),
        (Some(r), Some(t)) => r.templates.get(t).cloned().ok_or_else(|| {
            let names: Vec<&str> = r.templates.keys().map(String::as_str).collect();
            ReplayError::Usage(format!(
                "{}: no template {t:?} (templates: {})",
                r.path.display(),
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ))
        }),
        (Some(r), None) => {
            r.unknown.clone().ok_or_else(|| {
                let names: Vec<&str> = r.templates.keys().map(String::as_str).collect();
                ReplayError::Usage(format!(
                "{}: unknown devices are rejected, so there is no default policy to replay with; \
                 name a template with --template (templates: {})",
                r.path.display(),
                if names.is_empty() { "none".into() } else { names.join(", ") }
            ))
            })
        }
    }
}

/// Finds the CSV files of `inputs`: (file, path relative to its input). Directories are walked
/// recursively for `*.csv`, in name order.
pub fn collect(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, PathBuf)>, ReplayError> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = fs::metadata(input).map_err(io(input))?;
        if meta.is_dir() {
            walk(input, Path::new(""), &mut out)?;
        } else {
            let name = input
                .file_name()
                .map(PathBuf::from)
                .ok_or_else(|| ReplayError::Usage(format!("{}: not a file", input.display())))?;
            out.push((input.clone(), name));
        }
    }
    Ok(out)
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> Result<(), ReplayError> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(io(&dir))?
        .collect::<Result<_, _>>()
        .map_err(io(&dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = rel.join(e.file_name());
        if e.file_type().map_err(io(&path))?.is_dir() {
            walk(root, &rel, out)?;
        } else if path
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("csv"))
        {
            out.push((path, rel));
        }
    }
    Ok(())
}

/// Replays every input and writes the results; stops at the first bad file.
pub fn run(opts: &Options) -> Result<Report, ReplayError> {
    let resolved = match &opts.config {
        Some(p) => Some(config::load_file(p)?),
        None => None,
    };
    let policy = policy(resolved.as_ref(), opts.template.as_deref())?;
    let level = resolved
        .as_ref()
        .and_then(|r| r.unknown_level.clone())
        .unwrap_or_else(config::device::default_device_level);
    let files = collect(&opts.inputs)?;
    if files.is_empty() {
        return Err(ReplayError::Usage(
            "no CSV files found in the inputs".into(),
        ));
    }
    let policies = Arc::new(shard_policies(policy, level)?);
    let start = Instant::now();
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(files.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<FileReport, ReplayError>>>> =
        Mutex::new((0..files.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((path, rel)) = files.get(i) else {
                    break;
                };
                let out_path = opts.out.join(rel);
                let r = replay_file(&policies, path, rel, &out_path, &opts.ignore_columns);
                if r.is_err() {
                    // No half-written result next to complete ones.
                    let _ = fs::remove_file(&out_path);
                }
                let failed = r.is_err();
                if let Ok(mut slots) = results.lock() {
                    slots[i] = Some(r);
                }
                if failed {
                    // Others stop picking up new files.
                    next.store(usize::MAX / 2, Ordering::Relaxed);
                }
            });
        }
    });
    let mut reports = Vec::with_capacity(files.len());
    let slots = results
        .into_inner()
        .map_err(|_| ReplayError::Usage("a replay worker panicked".into()))?;
    for r in slots.into_iter().flatten() {
        reports.push(r?);
    }
    Ok(Report {
        files: reports,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A one-shard setup in which every device is registered with `policy` and device-level `level`.
fn shard_policies(
    policy: Arc<MetricPolicy>,
    level: Arc<DeviceLevelPolicy>,
) -> Result<Policies, ReplayError> {
    let mut resolved = config::parse_str("node_id = \"replay\"\n", Path::new("<replay>"))?;
    resolved.devices.clear();
    resolved.unknown = Some(policy);
    resolved.unknown_level = Some(level);
    Ok(Policies {
        resolved,
        source_ids: vec!["replay".into()],
        shards: 1,
    })
}

/// Replays one file through a fresh shard: each row is a one-sample batch analysed at its own
/// timestamp as the clock, so hold times and everything else are deterministic.
fn replay_file(
    policies: &Arc<Policies>,
    path: &Path,
    rel: &Path,
    out_path: &Path,
    ignore: &[String],
) -> Result<FileReport, ReplayError> {
    let status = Arc::new(StatusBoard::new("replay", Vec::new()));
    let mut core = ShardCore::new(0, policies.clone(), status, 0);
    let text = fs::read(path).map_err(io(path))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(sniff_delimiter(&text))
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_slice());
    if let Some(cols) = device_columns(&mut reader, ignore, path)? {
        return replay_device(&mut core, &mut reader, cols, path, rel, out_path);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(sniff_delimiter(&text))
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_slice());
    let mut columns: Option<(usize, usize)> = None;
    if let Some(dir) = out_path.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let file = fs::File::create(out_path).map_err(io(out_path))?;
    let mut w = BufWriter::new(file);
    let mut batch = Batch::with_capacity(1);
    let mut alerts: Vec<Alert> = Vec::new();
    let mut outcomes: Vec<DetectorOutcome> = Vec::new();
    let mut names: Option<Vec<String>> = None;
    let mut header_written = false;
    let (mut rows, mut raised) = (0u64, 0u64);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                return Err(ReplayError::Input {
                    path: path.to_path_buf(),
                    line: e.position().map_or(0, |p| p.line()),
                    msg: e.to_string(),
                })
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let bad = |msg: String| ReplayError::Input {
            path: path.to_path_buf(),
            line,
            msg,
        };
        let (ti, vi) = match columns {
            Some(c) => c,
            None => {
                let c = header_columns(&record);
                columns = Some(c.unwrap_or((0, 1)));
                if c.is_some() {
                    continue; // a header line
                }
                (0, 1)
            }
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        let (Some(ts_text), Some(value_text)) = (record.get(ti), record.get(vi)) else {
            return Err(bad(format!(
                "expected at least {} columns, found {}",
                ti.max(vi) + 1,
                record.len()
            )));
        };
        let ts = parse_timestamp(ts_text).map_err(|m| {
            let hint = if rows == 0 {
                " (the first line should be a header naming `timestamp` and `value` columns, or a timestamp,value row)"
            } else {
                ""
            };
            bad(format!("timestamp {ts_text:?}: {m}{hint}"))
        })?;
        let value: f64 = value_text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| bad(format!("value {value_text:?} is not a finite number")))?;
        batch.clear();
        batch.push(DEVICE, METRIC, ts, value);
        alerts.clear();
        core.ingest(0, &batch, ts, &mut alerts);
        raised += alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .count() as u64;
        core.detector_outcomes(DEVICE, METRIC, &mut outcomes);
        if !header_written {
            let n = core.detector_names(DEVICE, METRIC).unwrap_or_default();
            write_header(&mut w, &n).map_err(io(out_path))?;
            names = Some(n);
            header_written = true;
        }
        write_row(
            &mut w,
            ts_text,
            value_text,
            &outcomes,
            names.as_ref().map_or(0, Vec::len),
        )
        .map_err(io(out_path))?;
        rows += 1;
    }
    if !header_written {
        let n = core.detector_names(DEVICE, METRIC).unwrap_or_default();
        write_header(&mut w, &n).map_err(io(out_path))?;
    }
    w.flush().map_err(io(out_path))?;
    Ok(FileReport {
        relative: rel.to_path_buf(),
        rows,
        alerts: raised,
    })
}

/// The delimiter of the first line: the most frequent of `,`, `;` and tab (`,` when none).
fn sniff_delimiter(text: &[u8]) -> u8 {
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut best = (0usize, b',');
    let mut in_quotes = false;
    let mut counts = [0usize; 3];
    for &b in first {
        match b {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => counts[0] += 1,
            b';' if !in_quotes => counts[1] += 1,
            b'\t' if !in_quotes => counts[2] += 1,
            _ => {}
        }
    }
    for (n, d) in counts.into_iter().zip([b',', b';', b'\t']) {
        if n > best.0 {
            best = (n, d);
        }
    }
    best.1
}

/// The columns of a multi-column file: its time column and its metric columns.
struct DeviceColumns {
    time: usize,
    time_name: String,
    metrics: Vec<(usize, String)>,
}

/// Reads the header and decides the mode: `Some` for a multi-column file (a header with a time
/// column and metric columns other than a lone `value`), `None` for `timestamp,value` files
/// (the reader is then re-created by the caller).
fn device_columns(
    reader: &mut csv::Reader<&[u8]>,
    ignore: &[String],
    path: &Path,
) -> Result<Option<DeviceColumns>, ReplayError> {
    let mut header = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut header) {
            Ok(true) if header.iter().all(str::is_empty) => continue,
            Ok(true) => break,
            Ok(false) => return Ok(None),
            Err(_) => return Ok(None),
        }
    }
    let clean = |h: &str| h.trim_start_matches('\u{feff}').to_string();
    let time = header.iter().position(|h| {
        ["timestamp", "ts", "time", "datetime", "date"]
            .iter()
            .any(|n| clean(h).eq_ignore_ascii_case(n))
    });
    let Some(time) = time else {
        return Ok(None);
    };
    let metrics: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter(|&(i, h)| i != time && !ignore.iter().any(|x| x.eq_ignore_ascii_case(&clean(h))))
        .map(|(i, h)| (i, clean(h)))
        .collect();
    if metrics.len() == 1 && metrics[0].1.eq_ignore_ascii_case("value") {
        return Ok(None);
    }
    if metrics.is_empty() {
        return Err(ReplayError::Csv {
            path: path.to_path_buf(),
            msg: "the header names a time column but no metric columns (all ignored?)".into(),
        });
    }
    if metrics.len() > crate::config::default_max_metrics_per_device() {
        return Err(ReplayError::Csv {
            path: path.to_path_buf(),
            msg: format!(
                "{} metric columns; a device has at most {}",
                metrics.len(),
                crate::config::default_max_metrics_per_device()
            ),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for (_, m) in &metrics {
        if m.is_empty() || !seen.insert(m.as_str()) {
            return Err(ReplayError::Csv {
                path: path.to_path_buf(),
                msg: format!("metric column name {m:?} is empty or repeated"),
            });
        }
    }
    Ok(Some(DeviceColumns {
        time,
        time_name: clean(&header[time]),
        metrics,
    }))
}

/// Replays a multi-column file as one device: each row is one batch (one sample per metric
/// column; an empty cell is a missing sample), judged by the device-level detectors.
fn replay_device(
    core: &mut ShardCore,
    reader: &mut csv::Reader<&[u8]>,
    cols: DeviceColumns,
    path: &Path,
    rel: &Path,
    out_path: &Path,
) -> Result<FileReport, ReplayError> {
    if let Some(dir) = out_path.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let file = fs::File::create(out_path).map_err(io(out_path))?;
    let mut w = BufWriter::new(file);
    let mut batch = Batch::with_capacity(cols.metrics.len());
    let mut alerts: Vec<Alert> = Vec::new();
    let mut outcomes: Vec<(f64, bool)> = Vec::new();
    let mut names: Option<Vec<String>> = None;
    let (mut rows, mut raised) = (0u64, 0u64);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                return Err(ReplayError::Input {
                    path: path.to_path_buf(),
                    line: e.position().map_or(0, |p| p.line()),
                    msg: e.to_string(),
                })
            }
        }
        if record.iter().all(str::is_empty) {
            continue;
        }
        let line = record.position().map_or(0, |p| p.line());
        let bad = |msg: String| ReplayError::Input {
            path: path.to_path_buf(),
            line,
            msg,
        };
        let ts_text = record.get(cols.time).unwrap_or_default();
        let ts =
            parse_timestamp(ts_text).map_err(|m| bad(format!("timestamp {ts_text:?}: {m}")))?;
        batch.clear();
        for (i, name) in &cols.metrics {
            let text = record.get(*i).unwrap_or_default();
            if text.is_empty() {
                continue;
            }
            let v: f64 = text
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| bad(format!("{name} {text:?} is not a finite number")))?;
            batch.push(DEVICE, name, ts, v);
        }
        alerts.clear();
        core.ingest(0, &batch, ts, &mut alerts);
        raised += alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .count() as u64;
        core.device_outcomes(DEVICE, &mut outcomes);
        if names.is_none() {
            let n = core.device_detector_names(DEVICE).unwrap_or_default();
            write!(w, "{},anomaly_score,firing", csv_field(&cols.time_name))
                .map_err(io(out_path))?;
            if n.len() > 1 {
                for d in &n {
                    write!(w, ",{d}.anomaly_score,{d}.firing").map_err(io(out_path))?;
                }
            }
            writeln!(w).map_err(io(out_path))?;
            names = Some(n);
        }
        let anomaly = outcomes.iter().map(|o| o.0).fold(0.0, f64::max);
        let firing = outcomes.iter().any(|o| o.1);
        write!(w, "{},{anomaly},{}", csv_field(ts_text), u8::from(firing)).map_err(io(out_path))?;
        if outcomes.len() > 1 {
            for o in &outcomes {
                write!(w, ",{},{}", o.0, u8::from(o.1)).map_err(io(out_path))?;
            }
        }
        writeln!(w).map_err(io(out_path))?;
        rows += 1;
    }
    if names.is_none() {
        writeln!(w, "{},anomaly_score,firing", csv_field(&cols.time_name)).map_err(io(out_path))?;
    }
    w.flush().map_err(io(out_path))?;
    Ok(FileReport {
        relative: rel.to_path_buf(),
        rows,
        alerts: raised,
    })
}

/// `Some((timestamp column, value column))` when the record is a header naming both.
fn header_columns(r: &csv::StringRecord) -> Option<(usize, usize)> {
    let find = |names: &[&str]| {
        r.iter().position(|h| {
            names
                .iter()
                .any(|n| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(n))
        })
    };
    let ts = find(&["timestamp", "ts", "time"]);
    let value = find(&["value"]);
    match (ts, value) {
        (Some(t), Some(v)) => Some((t, v)),
        _ => None,
    }
}

fn write_header(w: &mut impl Write, names: &[String]) -> std::io::Result<()> {
    write!(w, "timestamp,value,anomaly_score,firing")?;
    if names.len() > 1 {
        for n in names {
            write!(w, ",{n}.anomaly_score,{n}.firing")?;
        }
    }
    writeln!(w)
}

fn write_row(
    w: &mut impl Write,
    ts: &str,
    value: &str,
    outcomes: &[DetectorOutcome],
    detectors: usize,
) -> std::io::Result<()> {
    let anomaly = outcomes.iter().map(|o| o.anomaly).fold(0.0, f64::max);
    let firing = outcomes.iter().any(|o| o.firing);
    write!(
        w,
        "{},{},{anomaly},{}",
        csv_field(ts),
        csv_field(value),
        u8::from(firing)
    )?;
    if detectors > 1 {
        for o in outcomes {
            write!(w, ",{},{}", o.anomaly, u8::from(o.firing))?;
        }
    }
    writeln!(w)
}

/// Quotes a field that needs it (commas, quotes, newlines), as CSV does.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Parses a row's time: unix seconds or ms, RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fff]` (UTC).
pub fn parse_timestamp(s: &str) -> Result<Millis, String> {
    crate::timestamp::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = 1_396_828_800_000; // 2014-04-07 00:00:00 UTC
        assert_eq!(parse_timestamp("2014-04-07 00:00:00"), Ok(t));
        assert_eq!(parse_timestamp("2014-04-07 00:00:00.250000"), Ok(t + 250));
        assert_eq!(parse_timestamp("2014-04-07T00:00:00Z"), Ok(t));
        assert_eq!(parse_timestamp("2014-04-07T02:00:00+02:00"), Ok(t));
        assert_eq!(parse_timestamp("2014-04-06T23:30:00-00:30"), Ok(t));
        assert_eq!(parse_timestamp("2014-04-07T01:00:00+0100"), Ok(t));
        assert_eq!(parse_timestamp("1396828800"), Ok(t));
        assert_eq!(parse_timestamp("1396828800.5"), Ok(t + 500));
        assert_eq!(parse_timestamp("1396828800000"), Ok(t));
        assert_eq!(parse_timestamp(" 1396828800000 "), Ok(t));
        assert!(parse_timestamp("").is_err());
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("2014-13-07 00:00:00").is_err());
        assert!(parse_timestamp("2014-04-07T00:00:00+25:00").is_err());
        assert!(parse_timestamp("1e300").is_err());
    }

    proptest::proptest! {
        #[test]
        fn timestamps_never_panic(s in "\\PC{0,40}", digits in "[0-9:+T. -]{0,30}") {
            let _ = parse_timestamp(&s);
            let _ = parse_timestamp(&digits);
            let _ = parse_timestamp(&format!("2014-04-07T00:00:00{digits}"));
            let _ = parse_timestamp(&format!("2014-04-07 00:00:00{s}"));
        }
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("a"), "a");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }
}
