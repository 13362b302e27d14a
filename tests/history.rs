//! The downsampled history in sled, end to end: samples over TCP (with their own timestamps, from
//! three days ago and from now), read back at 1-minute and 15-minute resolution before and after a
//! graceful restart (which also compacts old days), as JSON and CSV.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{now_ms, write_config, InProcess};
use serde_json::Value;

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

fn send(addr: &str, lines: &str) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(lines.as_bytes()).expect("send");
}

fn columns(v: &Value, name: &str) -> Vec<f64> {
    v[name]
        .as_array()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect()
}

#[test]
fn history_survives_a_restart_at_both_resolutions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "[[source]]\nkind = \"tcp\"\nid = \"in\"\nlisten = \"127.0.0.1:0\"\n\
         [unknown_devices]\npolicy = \"register\"\n",
    );
    // Two minutes three days ago (past the 48 h of 1-minute buckets) and two ending now, three
    // samples each: 1,2,3 and 10,20,30 (one 15-minute bucket: mean 11), 4,5,6 and 7,8,9.
    let now = now_ms();
    let old = now - 3 * DAY;
    let old0 = old - old.rem_euclid(15 * MIN);
    let recent0 = now - now.rem_euclid(MIN) - 2 * MIN;
    let mut lines = String::new();
    for (base, values) in [
        (old0, [1.0, 2.0, 3.0]),
        (old0 + MIN, [10.0, 20.0, 30.0]),
        (recent0, [4.0, 5.0, 6.0]),
        (recent0 + MIN, [7.0, 8.0, 9.0]),
    ] {
        for (i, v) in values.iter().enumerate() {
            lines.push_str(&format!(
                "{{\"device\":\"tank\",\"metric\":\"level\",\"ts\":{},\"value\":{v}}}\n",
                base + i as i64 * 1000
            ));
        }
    }
    let mut app = InProcess::start(&config);
    let addr = app.tcp_addr("in");
    send(&addr, &lines);
    let q = |from: i64, to: i64, res: &str| {
        format!("/api/series?device=tank&metric=level&from={from}&to={to}&resolution={res}")
    };
    // Before any snapshot: the minutes come from the shard (not in sled yet).
    let recent = app.poll(&q(recent0, now + MIN, "1m"), Duration::from_secs(10), |v| {
        v["count"].as_array().is_some_and(|c| c.len() == 2)
    });
    assert_eq!(columns(&recent, "mean"), [5.0, 8.0]);
    assert_eq!(columns(&recent, "min"), [4.0, 7.0]);
    assert_eq!(columns(&recent, "max"), [6.0, 9.0]);
    assert_eq!(recent["resolution_ms"], 60_000);
    app.stop();

    // Restart: everything comes from sled now, and the old day was compacted at start.
    let app = InProcess::start(&config);
    let recent = app.get(&q(recent0, now + MIN, "auto"));
    assert_eq!(columns(&recent, "mean"), [5.0, 8.0], "{recent}");
    assert_eq!(columns(&recent, "count"), [3.0, 3.0]);
    let old_minutes = app.get(&q(old0, old0 + 15 * MIN, "1m"));
    assert_eq!(
        columns(&old_minutes, "count").len(),
        0,
        "minutes older than 48 h are compacted: {old_minutes}"
    );
    let quarters = app.get(&q(old0, old0 + 15 * MIN, "auto"));
    assert_eq!(quarters["resolution_ms"], 900_000, "{quarters}");
    assert_eq!(columns(&quarters, "ts"), [old0 as f64]);
    assert_eq!(columns(&quarters, "mean"), [11.0]);
    assert_eq!(columns(&quarters, "min"), [1.0]);
    assert_eq!(columns(&quarters, "max"), [30.0]);
    assert_eq!(columns(&quarters, "count"), [6.0]);

    let (code, csv) = app.get_status(&format!("{}&format=csv", q(recent0, now + MIN, "1m")));
    assert_eq!(code, 200, "{csv}");
    assert_eq!(
        csv,
        format!(
            "ts,min,mean,max,count\n{},4,5,6,3\n{},7,8,9,3\n",
            recent0,
            recent0 + MIN
        )
    );
    // Bad requests say what is wrong.
    let (code, body) = app.get_status(&q(now, now - MIN, "1m"));
    assert_eq!(
        (code, body.contains("from must be before to")),
        (400, true),
        "{body}"
    );
    let (code, body) = app.get_status(&q(now - 60 * DAY, now, "1m"));
    assert_eq!(
        (code, body.contains("resolution=15m")),
        (400, true),
        "{body}"
    );
    let (code, _) = app.get_status("/api/series?device=tank");
    assert_eq!(code, 400);
    app.stop();
}
