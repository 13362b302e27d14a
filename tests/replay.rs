//! `edgewatch replay` end to end with the real binary: the NAB development set scored by NAB's own
//! scorer, false alarms on the demo's clean signals, input formats, located errors, causality.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::BIN;
use edgewatch::config::{self, SourceConfig};
use edgewatch::sources::sim::Signal;
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The NAB development set (`../shared/nab`, or `EDGEWATCH_NAB_DIR`). A fresh clone has no
/// `../shared`: then `None`, and the test says it skips, unless `EDGEWATCH_REQUIRE_SHARED` is set
/// (or `EDGEWATCH_NAB_DIR` names a directory): then a missing set fails.
fn nab_dir() -> Option<PathBuf> {
    let given = std::env::var_os("EDGEWATCH_NAB_DIR").map(PathBuf::from);
    let required = given.is_some() || std::env::var_os("EDGEWATCH_REQUIRE_SHARED").is_some();
    let dir = given.unwrap_or_else(|| repo().join("../shared/nab"));
    let found = dir.join("score.py").is_file() && dir.join("data").is_dir();
    assert!(
        found || !required,
        "NAB development set not found at {} (set EDGEWATCH_NAB_DIR)",
        dir.display()
    );
    if !found {
        eprintln!(
            "SKIP: the NAB development set is not at {} (the project's ../shared data; \
             set EDGEWATCH_NAB_DIR to run this test, EDGEWATCH_REQUIRE_SHARED=1 to fail instead)",
            dir.display()
        );
    }
    found.then_some(dir)
}

fn replay(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("replay")
        .args(args)
        .output()
        .expect("run edgewatch replay")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "replay failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (rows, alerts) from replay's summary line.
fn totals(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("replayed "))
        .expect("summary line");
    let num = |after: &str| -> u64 {
        let rest = &line[line.find(after).expect(after) + after.len()..];
        rest.split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .expect("number")
    };
    (num("files, "), num("s); "))
}

/// Per-file alerts from replay's per-file lines.
fn file_alerts(stdout: &str, file: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(file))
        .unwrap_or_else(|| panic!("no line for {file} in:\n{stdout}"));
    let w: Vec<&str> = line.split_whitespace().collect();
    w[w.len() - 2].parse().expect("alerts")
}

/// The documented default score: the `ensemble` row of the NAB table in docs/DETECTION.md.
fn documented_standard() -> f64 {
    let doc = fs::read_to_string(repo().join("docs/DETECTION.md")).expect("docs/DETECTION.md");
    let row = doc
        .lines()
        .find(|l| l.starts_with("| **ensemble** (default)"))
        .expect("a `| **ensemble** (default) |` row in docs/DETECTION.md");
    row.split('|')
        .nth(2)
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("no standard score in {row:?}"))
}

fn read_scores(path: &Path) -> Vec<(String, f64, bool)> {
    let text = fs::read_to_string(path).expect("result file");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    assert!(
        header.starts_with("timestamp,value,anomaly_score,firing"),
        "{header}"
    );
    lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[0].to_string(), c[2].parse().expect("score"), c[3] == "1")
        })
        .collect()
}

#[test]
fn nab_development_set_scores_at_least_the_documented_value() {
    let Some(nab) = nab_dir() else {
        return;
    };
    let out = tempfile::tempdir().expect("tempdir");
    let stdout = ok(&replay(&[
        "--out",
        out.path().to_str().expect("utf-8"),
        nab.join("data").to_str().expect("utf-8"),
    ]));
    let (rows, alerts) = totals(&stdout);
    assert_eq!(rows, 230_320, "{stdout}");
    // Every data row has a result row with a score in [0, 1], in order.
    let data = nab.join("data/realKnownCause/machine_temperature_system_failure.csv");
    let input: Vec<String> = fs::read_to_string(&data)
        .expect("data")
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap_or_default().to_string())
        .collect();
    let result = read_scores(
        &out.path()
            .join("realKnownCause/machine_temperature_system_failure.csv"),
    );
    assert_eq!(input.len(), result.len());
    assert!(input.iter().zip(&result).all(|(a, b)| *a == b.0));
    assert!(result.iter().all(|r| (0.0..=1.0).contains(&r.1)));

    // NAB's own scorer.
    let score = Command::new("python3")
        .arg(nab.join("score.py"))
        .args(["--results", out.path().to_str().expect("utf-8")])
        .args(["--nab", nab.to_str().expect("utf-8")])
        .output()
        .expect("python3 (tests/run.sh installs it)");
    let text = String::from_utf8_lossy(&score.stdout);
    assert!(
        score.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&score.stderr)
    );
    let last = text.lines().last().expect("score line");
    let standard: f64 = last
        .split_whitespace()
        .find_map(|w| w.strip_prefix("standard="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no standard score in {last:?}"));
    let documented = documented_standard();
    println!("{last}; documented {documented}; {alerts} alerts in {rows} rows");
    assert!(
        standard >= documented - 1.0,
        "NAB standard {standard} fell below the documented {documented} - 1"
    );
    // The clean artificial series raise no alert at the default threshold.
    for f in [
        "art_daily_no_noise.csv",
        "art_daily_perfect_square_wave.csv",
        "art_flatline.csv",
    ] {
        let name = format!("artificialNoAnomaly/{f}");
        assert_eq!(file_alerts(&stdout, &name), 0, "{name}");
    }
}

/// The demo's simulated signals (config/demo.toml) with no anomalies injected, as CSV files of
/// `samples` rows each at the demo's sampling interval.
fn demo_clean_signals(dir: &Path, samples: i64) -> usize {
    let resolved = config::load_file(&repo().join("config/demo.toml")).expect("demo config");
    let mut files = 0;
    for src in &resolved.config.sources {
        let SourceConfig::Sim(sim) = src else {
            continue;
        };
        let interval = sim.interval.as_ms();
        for dev in &sim.devices {
            for (name, m) in &dev.metrics {
                let mut clean = m.clone();
                clean.anomaly_rate = 0.0;
                let t0 = 1_767_225_600_000; // 2026-01-01
                let mut sig = Signal::new(clean, t0, interval);
                let mut rng = SmallRng::seed_from_u64(files as u64 + 1);
                let mut text = String::from("timestamp,value\n");
                for i in 0..samples {
                    let ts = t0 + i * interval;
                    if let Some(v) = sig.next(ts, &mut rng) {
                        text.push_str(&format!("{ts},{v}\n"));
                    }
                }
                fs::write(dir.join(format!("{}-{name}.csv", dev.id)), text).expect("write");
                files += 1;
            }
        }
    }
    files
}

#[test]
fn default_detector_rarely_alerts_on_the_demos_clean_signals() {
    let input = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let files = demo_clean_signals(input.path(), 20_000);
    assert_eq!(files, 7);
    let stdout = ok(&replay(&[
        "--out",
        out.path().to_str().expect("utf-8"),
        input.path().to_str().expect("utf-8"),
    ]));
    let (rows, alerts) = totals(&stdout);
    assert_eq!(rows, 140_000);
    let per_10k = alerts as f64 * 10_000.0 / rows as f64;
    println!("demo clean signals: {alerts} alerts in {rows} samples = {per_10k:.2} per 10,000");
    assert!(
        per_10k <= 2.0,
        "{per_10k} alerts per 10,000 samples:\n{stdout}"
    );
}

#[test]
fn formats_directories_templates_and_causality() {
    let input = tempfile::tempdir().expect("tempdir");
    let nested = input.path().join("a/b");
    fs::create_dir_all(&nested).expect("mkdir");
    let t0 = 1_700_000_000i64;
    let value = |i: i64| {
        if i == 400 {
            500.0
        } else {
            10.0 + (i % 7) as f64 * 0.5
        }
    };
    let mut rfc = String::from("value,timestamp\n"); // columns found by name
    let mut secs = String::new(); // no header: timestamp,value
    let mut ms = String::from("timestamp,value\n");
    for i in 0..600 {
        let t = t0 + i * 60;
        let off = if i % 2 == 0 { "+00:00" } else { "+02:00" };
        let local = t + if i % 2 == 0 { 0 } else { 7200 };
        let d = humantime::format_rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(local as u64),
        )
        .to_string();
        rfc.push_str(&format!("{},{}{off}\n", value(i), &d[..19]));
        secs.push_str(&format!("{t},{}\n", value(i)));
        ms.push_str(&format!("{},{}\n", t * 1000, value(i)));
    }
    fs::write(nested.join("rfc.csv"), &rfc).expect("write");
    fs::write(input.path().join("secs.csv"), &secs).expect("write");
    fs::write(input.path().join("ms.CSV"), &ms).expect("write");
    fs::write(input.path().join("notes.txt"), "not a csv").expect("write");
    let out = tempfile::tempdir().expect("tempdir");
    let o = out.path().to_str().expect("utf-8");
    let stdout = ok(&replay(&[
        "--out",
        o,
        input.path().to_str().expect("utf-8"),
    ]));
    assert_eq!(totals(&stdout).0, 1_800, "{stdout}");
    let a = read_scores(&out.path().join("a/b/rfc.csv"));
    let b = read_scores(&out.path().join("secs.csv"));
    let c = read_scores(&out.path().join("ms.CSV"));
    assert!(!out.path().join("notes.txt").exists());
    // Same instants, same values: same scores whatever the timestamp format.
    let sa: Vec<f64> = a.iter().map(|r| r.1).collect();
    let sb: Vec<f64> = b.iter().map(|r| r.1).collect();
    let sc: Vec<f64> = c.iter().map(|r| r.1).collect();
    assert_eq!(sa, sb);
    assert_eq!(sb, sc);
    // The spike at row 400 is the one event.
    let fired: Vec<usize> = (0..b.len()).filter(|&i| b[i].1 >= 0.5).collect();
    assert_eq!(fired, vec![400], "{:?}", &sb[395..405]);
    assert!(b[400].2, "firing flag");

    // Causal: replaying only the first 450 rows gives the same scores for them.
    let prefix: String = secs.lines().take(450).map(|l| format!("{l}\n")).collect();
    let short = tempfile::tempdir().expect("tempdir");
    fs::write(short.path().join("secs.csv"), prefix).expect("write");
    let out2 = tempfile::tempdir().expect("tempdir");
    ok(&replay(&[
        "--out",
        out2.path().to_str().expect("utf-8"),
        short.path().join("secs.csv").to_str().expect("utf-8"),
    ]));
    let p: Vec<f64> = read_scores(&out2.path().join("secs.csv"))
        .iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(p[..], sb[..450]);

    // A template of a config: per-detector columns when there are several.
    let cfg = input.path().join("c.toml");
    fs::write(
        &cfg,
        "node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"mad\" }, { type = \"threshold\", max = 100.0 }]\n",
    )
    .expect("write");
    let out3 = tempfile::tempdir().expect("tempdir");
    ok(&replay(&[
        "--config",
        cfg.to_str().expect("utf-8"),
        "--template",
        "t",
        "--out",
        out3.path().to_str().expect("utf-8"),
        input.path().join("secs.csv").to_str().expect("utf-8"),
    ]));
    let text = fs::read_to_string(out3.path().join("secs.csv")).expect("result");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("timestamp,value,anomaly_score,firing,mad.anomaly_score,mad.firing,threshold.anomaly_score,threshold.firing")
    );
    let row400 = lines.nth(400).expect("row 400");
    let cols: Vec<&str> = row400.split(',').collect();
    assert_eq!(cols[3], "1");
    assert_eq!(cols[7], "1", "{row400}"); // 500 > max 100
                                          // Unknown template: a clear error naming the ones there are.
    let bad = replay(&[
        "--config",
        cfg.to_str().expect("utf-8"),
        "--template",
        "nope",
        "--out",
        out3.path().to_str().expect("utf-8"),
        input.path().to_str().expect("utf-8"),
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("no template \"nope\" (templates: t)"), "{err}");
}

#[test]
fn bad_rows_are_located_by_file_and_line() {
    let cases = [
        (
            "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,abc\n",
            "bad.csv:3: value \"abc\" is not a finite number",
        ),
        (
            "timestamp,value\n2014-04-01 00:00:00,1\nsoon,2\n",
            "bad.csv:3: timestamp \"soon\"",
        ),
        (
            "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00\n",
            "bad.csv:3:",
        ),
        (
            "timestamp,value\n2014-04-01 00:00:00,NaN\n",
            "bad.csv:2: value \"NaN\" is not a finite number",
        ),
    ];
    for (text, want) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("bad.csv");
        fs::write(&f, text).expect("write");
        let out = replay(&[
            "--out",
            dir.path().join("out").to_str().expect("utf-8"),
            f.to_str().expect("utf-8"),
        ]);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{want}: {err}"
        );
    }
    let missing = replay(&["--out", "/tmp/x", "/nonexistent/dir"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/dir"));
}
