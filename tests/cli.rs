//! The command line of the real binary: the default config of `check`, `--log-format json` with a
//! `${VAR}` from the environment, and `gen` (the man pages and completions the package installs).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

#[test]
fn check_without_config_uses_the_system_file_or_the_built_in_demo() {
    let cwd = tempfile::tempdir().expect("tempdir");
    // No config/ here: the demo must come from inside the binary.
    let out = Command::new(BIN)
        .arg("check")
        .current_dir(cwd.path())
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if std::path::Path::new("/etc/edgewatch/edgewatch.toml").exists() {
        assert!(
            stderr.contains("checking /etc/edgewatch/edgewatch.toml"),
            "{stderr}"
        );
    } else {
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("checking config/demo.toml (built in)"),
            "{stderr}"
        );
        assert!(
            stdout.starts_with("config/demo.toml (built in): ok"),
            "{stdout}"
        );
        assert!(stdout.contains("node demo"), "{stdout}");
    }
}

#[test]
fn check_lists_every_error_of_the_file_in_one_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "node_id = \"n\"\n[api]\nlisten = \"127.0.0.1:0\"\nws_bufer = 4\n\
         [[source]]\nkind = \"sim\"\nid = \"s\"\ninterval = \"soon\"\n\
         [[device]]\nid = \"d\"\nsource = \"gone\"\n",
    )
    .expect("write config");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines[0].contains("bad.toml:4:1: unknown field `ws_bufer`"),
        "{stderr}"
    );
    assert!(lines[1].contains("bad.toml:8:"), "{stderr}");
    assert!(
        lines[2].contains("bad.toml:11:1: device \"d\" names source \"gone\""),
        "{stderr}"
    );
    assert_eq!(lines[3], "3 errors", "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_line_and_config_variables_come_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("edgewatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"${{EW_TEST_NODE}}\"\ndata_dir = {:?}\n\n[api]\nlisten = \"${{EW_TEST_LISTEN:-127.0.0.1:0}}\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("write config");
    let mut child = Command::new(BIN)
        .args(["run", "--log-format", "json", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .env("EW_TEST_NODE", "pi-from-env")
        .env_remove("EW_TEST_LISTEN")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    let running = loop {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("no `edgewatch running` line within 30 s: {lines:#?}");
        };
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                panic!("not a JSON log line ({e}): {line}");
            }
        };
        lines.push(line);
        let msg = v["fields"]["message"].as_str().unwrap_or_default();
        if msg.starts_with("edgewatch running") {
            break v;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(running["level"], "INFO", "{running}");
    assert_eq!(running["fields"]["node"], "pi-from-env", "{running}");
    assert!(running["timestamp"].is_string(), "{running}");
}

#[test]
fn edgewatch_gen_writes_man_pages_and_completions_and_edgewatch_has_no_gen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = Command::new(env!("CARGO_BIN_EXE_edgewatch-gen"))
        .arg("--out")
        .arg(dir.path())
        .status()
        .expect("run edgewatch-gen");
    assert!(st.success());
    // The generators live in the packaging helper only (cross/README.md, "Binary size").
    let gen = Command::new(BIN)
        .args(["gen", "--out"])
        .arg(dir.path())
        .output()
        .expect("run edgewatch gen");
    assert!(!gen.status.success());
    assert!(
        String::from_utf8_lossy(&gen.stderr).contains("unrecognized subcommand"),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let man = std::fs::read_to_string(dir.path().join("man/edgewatch.1")).expect("edgewatch.1");
    assert!(man.contains(".TH edgewatch 1"), "{man}");
    assert!(man.contains("log\\-format"), "{man}");
    let run = std::fs::read_to_string(dir.path().join("man/edgewatch-run.1")).expect("run page");
    assert!(run.contains("/etc/edgewatch/edgewatch.toml"), "{run}");
    assert!(
        !dir.path().join("man/edgewatch-gen.1").exists(),
        "the packaging helper is not an edgewatch command"
    );
    for (file, needle) in [
        ("edgewatch.bash", "complete -F _edgewatch"),
        ("_edgewatch", "#compdef edgewatch"),
        ("edgewatch.fish", "complete -c edgewatch"),
    ] {
        let text = std::fs::read_to_string(dir.path().join("completions").join(file)).expect(file);
        assert!(text.contains(needle), "{file}: {text}");
        assert!(text.contains("check"), "{file} names the subcommands");
    }
}
