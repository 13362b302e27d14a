//! `edgewatch probe` with the real binary: a TCP sender and a sensor on a real pty; samples on
//! stdout, bad frames with their reason in the log, the tally at the end, and nothing stored.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::pty::Pty;
use common::write_config;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");

/// Starts `edgewatch probe` and hands back the child and its log lines as they come.
fn probe(config: &std::path::Path, source: &str, seconds: u64) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["probe", "--source", source, "--seconds"])
        .arg(seconds.to_string())
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn probe");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, log: &mut Vec<String>) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                log.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!("no log line with {needle:?}; log:\n{}", log.join("\n")),
        }
    }
}

/// Waits for the probe to end by itself (its `--seconds`) and returns stdout and the whole log.
fn finish(mut child: Child, rx: mpsc::Receiver<String>, mut log: Vec<String>) -> (String, String) {
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    let status = child.wait().expect("wait probe");
    log.extend(rx.iter());
    let log = log.join("\n");
    assert!(status.success(), "probe failed: {log}");
    (out, log)
}

#[test]
fn probe_prints_what_a_tcp_sender_sends_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "[[source]]\nkind = \"tcp\"\nid = \"in\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n",
    );
    let (child, rx) = probe(&config, "in", 3);
    let mut log = Vec::new();
    let line = wait_line(&rx, "listening on", &mut log);
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("address")
        .to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).expect("connect");
    tcp.write_all(
        b"{\"device\":\"a\",\"metric\":\"t\",\"ts\":1763761234567,\"value\":1.5}\nnot json\n\
          {\"device\":\"b\",\"ts\":1763761234568,\"temp\":2,\"hum\":-3.25}\n",
    )
    .expect("send");
    drop(tcp);
    let (out, log) = finish(child, rx, log);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "1763761234567 a t 1.5",
            "1763761234568 b temp 2",
            "1763761234568 b hum -3.25"
        ],
        "{log}"
    );
    assert!(
        log.contains("bad frame skipped")
            && log.contains("invalid JSON")
            && log.contains("frame=not json"),
        "{log}"
    );
    assert!(
        log.contains("samples=3 frames_accepted=2 frames_rejected=1"),
        "{log}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "probe must not create the data directory"
    );
}

#[test]
fn probe_reads_a_serial_sensor_on_a_pty() {
    let mut pty = Pty::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "[[source]]\nkind = \"serial\"\nid = \"bench\"\npath = \"{}\"\nbaud = 115200\n\
             format = \"columns\"\ncolumns = [\"temp\", \"humidity\"]\ndevice = \"bench-1\"\n",
            pty.path
        ),
    );
    let (child, rx) = probe(&config, "bench", 3);
    let mut log = Vec::new();
    wait_line(&rx, "serial port open", &mut log);
    pty.send(b"21.5,40\r\n22,abc\r\n23.25,41.5\r\n");
    let (out, log) = finish(child, rx, log);
    let samples: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 4, "{l}");
            assert!(f[0].parse::<i64>().is_ok(), "receive time in ms: {l}");
            (format!("{} {}", f[1], f[2]), f[3].to_string())
        })
        .collect();
    let want = [
        ("bench-1 temp", "21.5"),
        ("bench-1 humidity", "40"),
        ("bench-1 temp", "23.25"),
        ("bench-1 humidity", "41.5"),
    ];
    assert_eq!(
        samples,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "{log}"
    );
    assert!(log.contains("bad frame skipped"), "{log}");
    assert!(log.contains("frames_rejected=1"), "{log}");
}

#[test]
fn probe_names_the_sources_when_the_id_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "[[source]]\nkind = \"tcp\"\nid = \"s1\"\nlisten = \"127.0.0.1:0\"\n[[source]]\nkind = \"tcp\"\nid = \"in\"\nlisten = \"127.0.0.1:0\"\n",
    );
    let out = Command::new(BIN)
        .args(["probe", "--source", "nope", "--config"])
        .arg(&config)
        .output()
        .expect("run probe");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: no source \"nope\" in the config (sources: in, s1)"),
        "{stderr}"
    );
}
