//! The dashboard in a real browser: the real binary runs the demo config (free ports, temp data
//! dir, an API token), and tests/browser/dashboard.mjs drives Debian's headless Chromium through it.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Edgewatch;

const TOKEN: &str = "demo-browser-token-5f2c";

/// config/demo.toml with the ports, data dir and token of this test. Fails if the demo's lines it
/// rewrites have changed, so the test never silently runs something else than the demo.
fn demo_config(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("config/demo.toml")).expect("demo config");
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token file");
    let data = dir.join("data");
    for (from, to) in [
        (
            "data_dir = \"./data/demo\"",
            format!("data_dir = {:?}", data.display().to_string()),
        ),
        (
            "listen = \"127.0.0.1:8080\"",
            format!(
                "listen = \"127.0.0.1:0\"\ntoken_file = {:?}",
                token.display().to_string()
            ),
        ),
        (
            "listen = \"127.0.0.1:9000\"",
            "listen = \"127.0.0.1:0\"".to_string(),
        ),
    ] {
        assert!(
            text.contains(from),
            "config/demo.toml no longer has {from:?}"
        );
        text = text.replacen(from, &to, 1);
    }
    // A device of three metrics sent over TCP by the browser test (b follows a, c mirrors it),
    // with device-level analysis: its page draws the correlation heatmap.
    text.push_str(
        "\n[[device]]\nid = \"vec-probe\"\ntemplate = \"climate\"\n\
         device_detectors = [{ type = \"mode\", warmup = 20 }]\n\
         [device.vector]\nmetrics = [\"a\", \"b\", \"c\"]\nsummary_correlation = true\n",
    );
    let path = dir.join("demo.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "{what} is missing: run tests/run.sh, which installs Debian's chromium and the node packages of tests/browser"
    );
}

#[test]
fn dashboard_in_headless_chromium_shows_devices_live_alerts_and_charts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    require(Path::new(&chromium).exists(), &chromium);
    require(
        root.join("tests/browser/node_modules/playwright-core/package.json")
            .exists(),
        "tests/browser/node_modules/playwright-core",
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = demo_config(dir.path());
    let mut ew = Edgewatch::start(&cfg);
    let tcp = ew.tcp_addr("tcp-in");
    let out = root.join("target/artifacts");

    let mut child = Command::new("node")
        .arg(root.join("tests/browser/dashboard.mjs"))
        .args([&ew.api, &tcp, TOKEN])
        .arg(&out)
        .env("CHROMIUM", &chromium)
        .current_dir(root.join("tests/browser"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (install Node.js; tests/run.sh does)");
    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait node") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the browser test did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    eprintln!("{stderr}");
    assert!(
        status.success(),
        "browser test failed ({status}):\n{stderr}\nedgewatch log:\n{}",
        ew.log_text()
    );
    let result: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("no result line ({e}): {stdout}"));
    println!("dashboard measurements: {result}");
    let weight = result["page_transfer_bytes"].as_u64().expect("weight");
    assert!(
        weight > 10_000 && weight < 150 * 1024,
        "page weight {weight} B"
    );
    for shot in ["dashboard.png", "device.png", "dashboard-phone.png"] {
        let bytes = std::fs::read(out.join(shot)).unwrap_or_else(|e| panic!("{shot}: {e}"));
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
            "{shot} is not a real screenshot ({} bytes)",
            bytes.len()
        );
    }
    // The alert the browser saw fire and resolve live is the one in the appliance's alert log.
    let id = result["alert_id"].as_str().expect("alert id");
    let url = format!("http://{}/api/alerts?device=browser-probe&limit=10", ew.api);
    let log: serde_json::Value = ureq::get(&url)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .expect("alert log")
        .into_json()
        .expect("json");
    assert!(
        log.as_array()
            .expect("list")
            .iter()
            .any(|a| a["id"] == id && a["detector"] == "zscore" && a["resolved_at"].is_i64()),
        "alert {id} not resolved in the log: {log}"
    );
}
