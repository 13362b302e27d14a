//! Modbus sources end to end against a real Modbus slave (tokio-modbus server) on a pty pair
//! (RTU) and on loopback TCP: typed and scaled values, batched reads, an exception answer, and
//! one dead slave among live ones that must not hold up the others and recovers when revived.

mod common;

use std::collections::{HashMap, HashSet};
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{write_config, Edgewatch};
use serde_json::Value;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// Poll interval and request timeout of the tests' bus.
const INTERVAL_MS: u64 = 100;
const TIMEOUT_MS: u64 = 150;

/// One request the slaves saw: when, unit, and (function, address, count).
type Seen = (Instant, u8, &'static str, u16, u16);

/// The slaves behind one bus: register maps per unit, a dead set, and a log of requests.
#[derive(Default)]
struct Slaves {
    holding: HashMap<(u8, u16), u16>,
    input: HashMap<(u8, u16), u16>,
    coils: HashMap<(u8, u16), bool>,
    dead: HashSet<u8>,
    seen: Vec<Seen>,
}

#[derive(Clone, Default)]
struct Bus(Arc<Mutex<Slaves>>);

impl Bus {
    fn new() -> Self {
        let mut s = Slaves::default();
        // Unit 1, a meter: u16 scaled, i16, f32 (high word first), u32 (low word first), a coil.
        let f = 21.5f32.to_bits();
        s.holding.insert((1, 0), 1234);
        s.holding.insert((1, 1), (-5i16) as u16);
        s.holding.insert((1, 2), (f >> 16) as u16);
        s.holding.insert((1, 3), f as u16);
        s.input.insert((1, 10), (70_000u32 & 0xFFFF) as u16);
        s.input.insert((1, 11), (70_000u32 >> 16) as u16);
        s.coils.insert((1, 0), true);
        // Unit 2: a counter at holding 0 (advances every read); holding 100 does not exist.
        s.holding.insert((2, 0), 0);
        // Unit 3: dead until revived.
        s.holding.insert((3, 0), 7);
        s.dead.insert(3);
        Bus(Arc::new(Mutex::new(s)))
    }

    fn revive(&self, unit: u8) {
        self.0.lock().expect("bus").dead.remove(&unit);
    }

    fn seen(&self) -> Vec<Seen> {
        self.0.lock().expect("bus").seen.clone()
    }
}

impl Service for Bus {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: SlaveRequest<'static>) -> Self::Future {
        let mut s = self.0.lock().expect("bus");
        let unit = req.slave;
        let (what, addr, n) = match &req.request {
            Request::ReadHoldingRegisters(a, n) => ("holding", *a, *n),
            Request::ReadInputRegisters(a, n) => ("input", *a, *n),
            Request::ReadCoils(a, n) => ("coil", *a, *n),
            Request::ReadDiscreteInputs(a, n) => ("discrete", *a, *n),
            _ => ("other", 0, 0),
        };
        s.seen.push((Instant::now(), unit, what, addr, n));
        if s.dead.contains(&unit) {
            return ready(Ok(None));
        }
        let range = addr..addr.saturating_add(n);
        let words = |map: &HashMap<(u8, u16), u16>| -> Option<Vec<u16>> {
            range
                .clone()
                .map(|a| map.get(&(unit, a)).copied())
                .collect()
        };
        let answer = match what {
            "holding" => {
                let w = words(&s.holding);
                if w.is_some() && unit == 2 {
                    *s.holding.entry((2, 0)).or_default() += 1;
                }
                w.map(Response::ReadHoldingRegisters)
            }
            "input" => words(&s.input).map(Response::ReadInputRegisters),
            "coil" => range
                .clone()
                .map(|a| s.coils.get(&(unit, a)).copied())
                .collect::<Option<Vec<bool>>>()
                .map(Response::ReadCoils),
            _ => None,
        };
        ready(answer.map(Some).ok_or(ExceptionCode::IllegalDataAddress))
    }
}

fn devices_toml() -> String {
    r#"
[[source.device]]
id = "meter-1"
unit = 1
points = [
  { metric = "voltage", register = "holding", address = 0, scale = 0.1 },
  { metric = "delta", register = "holding", address = 1, type = "i16" },
  { metric = "temp", register = "holding", address = 2, type = "f32" },
  { metric = "energy", register = "input", address = 10, type = "u32", word_order = "little" },
  { metric = "relay", register = "coil", address = 0 },
]

[[source.device]]
id = "counter-2"
unit = 2
points = [
  { metric = "count", register = "holding", address = 0 },
  { metric = "missing", register = "holding", address = 100 },
]

[[source.device]]
id = "dead-3"
unit = 3
points = [{ metric = "x", register = "holding", address = 0 }]

[unknown_devices]
policy = "register"
"#
    .to_string()
}

fn source_toml(transport: &str) -> String {
    format!(
        r#"
[[source]]
id = "bus"
kind = "modbus"
{transport}
interval = "{INTERVAL_MS}ms"
timeout = "{TIMEOUT_MS}ms"
backoff_min = "1s"
backoff_max = "2s"
{}"#,
        devices_toml()
    )
}

fn metric<'a>(devices: &'a Value, device: &str, metric: &str) -> Option<&'a Value> {
    devices.as_array()?.iter().find(|d| d["device"] == device)?["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["metric"] == metric)
}

fn unit<'a>(status: &'a Value, device: &str) -> &'a Value {
    status["sources"][0]["devices"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["device"] == device))
        .unwrap_or_else(|| panic!("no device {device} in {status}"))
}

/// Everything both transports must do, against a running edgewatch polling `bus`.
fn exercise(ew: &Edgewatch, bus: &Bus, transport: &str) {
    let d = ew.poll("/api/devices", Duration::from_secs(15), |d| {
        metric(d, "meter-1", "relay").is_some()
            && metric(d, "counter-2", "count").is_some_and(|m| m["total"].as_u64() >= Some(10))
    });
    let value = |dev: &str, m: &str| metric(&d, dev, m).expect(m)["last_value"].clone();
    let volts = value("meter-1", "voltage").as_f64().expect("voltage");
    assert!((volts - 123.4).abs() < 1e-9, "{volts}");
    assert_eq!(value("meter-1", "delta"), -5.0);
    assert_eq!(value("meter-1", "temp"), 21.5);
    assert_eq!(value("meter-1", "energy"), 70_000.0);
    assert_eq!(value("meter-1", "relay"), 1.0);
    assert!(metric(&d, "counter-2", "missing").is_none());
    assert!(metric(&d, "dead-3", "x").is_none());

    let st = ew.get("/api/status");
    let src = &st["sources"][0];
    assert_eq!(src["kind"], "modbus");
    assert_eq!(src["healthy"], false, "a slave is failing: {st}");
    let dead = unit(&st, "dead-3");
    assert_eq!(dead["healthy"], false, "{st}");
    assert_eq!(dead["unit"], 3);
    assert!(dead["timeouts"].as_u64() >= Some(1), "{st}");
    assert!(dead["retry_at"].is_i64(), "{st}");
    assert!(
        dead["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("did not answer holding 0..=0 within 150ms"),
        "{st}"
    );
    let counter = unit(&st, "counter-2");
    assert_eq!(counter["healthy"], true, "an exception is an answer: {st}");
    assert!(counter["exceptions"].as_u64() >= Some(1), "{st}");
    assert!(
        counter["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("exception"),
        "{st}"
    );
    assert_eq!(unit(&st, "meter-1")["healthy"], true, "{st}");
    assert_eq!(unit(&st, "meter-1")["timeouts"], 0, "{st}");

    // Watch the bus for a while: the dead slave costs one timeout per backoff, the others keep
    // their interval, and adjacent registers travel in one request.
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let window: Vec<Seen> = bus.seen().into_iter().filter(|s| s.0 >= t0).collect();
    let count = |u: u8, what: &str, addr: u16| {
        window
            .iter()
            .filter(|s| s.1 == u && s.2 == what && s.3 == addr)
            .count()
    };
    let meter: Vec<Instant> = window
        .iter()
        .filter(|s| s.1 == 1 && s.2 == "holding")
        .map(|s| s.0)
        .collect();
    let max_gap = meter
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let dead_tries = count(3, "holding", 0);
    let missing_tries = count(2, "holding", 100);
    eprintln!(
        "{transport}: in 3 s: meter-1 polled {} times (max gap {} ms), counter-2 {} times, \
         its bad read {missing_tries} times, dead-3 tried {dead_tries} times",
        meter.len(),
        max_gap.as_millis(),
        count(2, "holding", 0),
    );
    for s in window.iter().filter(|s| s.1 == 1) {
        let expect = match s.2 {
            "holding" => (0, 4),
            "input" => (10, 2),
            "coil" => (0, 1),
            other => panic!("unexpected request {other}"),
        };
        assert_eq!((s.3, s.4), expect, "unit 1 reads are batched: {s:?}");
    }
    assert!(
        meter.len() >= 15,
        "meter-1 polled {} times in 3 s",
        meter.len()
    );
    assert!(count(2, "holding", 0) >= 15);
    // Backoff 1 s to 2 s, jittered down to half: at most one try per 0.5 s.
    assert!(
        (1..=7).contains(&dead_tries),
        "dead-3 tried {dead_tries} times"
    );
    assert!(
        missing_tries <= 7,
        "the failing read backs off: {missing_tries}"
    );
    let bound = Duration::from_millis(INTERVAL_MS + TIMEOUT_MS + 500);
    assert!(
        max_gap < bound,
        "the dead slave delayed meter-1 by {max_gap:?} (bound {bound:?})"
    );

    // Revived: found again within its backoff, and the source is healthy again.
    bus.revive(3);
    let d = ew.poll("/api/devices", Duration::from_secs(10), |d| {
        metric(d, "dead-3", "x").is_some()
    });
    assert_eq!(metric(&d, "dead-3", "x").expect("x")["last_value"], 7.0);
    let st = ew.poll("/api/status", Duration::from_secs(5), |s| {
        s["sources"][0]["healthy"] == true
    });
    assert_eq!(unit(&st, "dead-3")["healthy"], true, "{st}");
    assert!(unit(&st, "dead-3")["retry_at"].is_null(), "{st}");
    assert_eq!(st["sources"][0]["restarts"], 0, "{st}");
}

#[test]
fn modbus_rtu_over_a_pty_polls_live_slaves_around_a_dead_one() {
    let bus = Bus::new();
    let server_bus = bus.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (master, slave) = tokio_serial::SerialStream::pair().expect("pty pair");
            for fd in [
                std::os::fd::AsRawFd::as_raw_fd(&master),
                std::os::fd::AsRawFd::as_raw_fd(&slave),
            ] {
                // Not leaked into edgewatch children (see common::pty).
                // SAFETY: the fd belongs to a stream that outlives this borrow.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )
                .expect("cloexec");
            }
            let path = tokio_serial::SerialPort::name(&slave).expect("pty name");
            tx.send(path).expect("send path");
            // `slave` stays open (unread) so reopening the port on edgewatch's side never
            // hangs up the master.
            let server = tokio_modbus::server::rtu::Server::new(master);
            let r = server.serve_forever(server_bus).await;
            drop(slave);
            r
        })
    });
    let path = rx.recv_timeout(Duration::from_secs(10)).expect("pty path");
    let dir = tempfile::tempdir().expect("tempdir");
    let body = source_toml(&format!(
        "path = \"{path}\"\nbaud = 19200\nparity = \"even\""
    ));
    let cfg = write_config(dir.path(), &body);
    let mut ew = Edgewatch::start(&cfg);
    ew.wait_log("modbus bus connected", Duration::from_secs(10));
    exercise(&ew, &bus, "rtu");
    let log = ew.log_text();
    assert!(log.contains("modbus device failing; backing off"), "{log}");
    assert!(log.contains("modbus device answers again"), "{log}");
}

#[test]
fn modbus_tcp_polls_live_slaves_around_a_dead_one() {
    let bus = Bus::new();
    let server_bus = bus.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let on_connected = |stream, addr| {
                let bus = server_bus.clone();
                async move {
                    tokio_modbus::server::tcp::accept_tcp_connection(stream, addr, |_| {
                        Ok(Some(bus.clone()))
                    })
                }
            };
            server.serve(&on_connected, |_| {}).await
        })
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &source_toml(&format!("connect = \"{addr}\"")));
    let mut ew = Edgewatch::start(&cfg);
    ew.wait_log("modbus bus connected", Duration::from_secs(10));
    exercise(&ew, &bus, "tcp");
    let st = ew.get("/api/status");
    assert!(
        st["sources"][0]["connects_total"].as_u64() >= Some(2),
        "the connection is reset after a timeout: {st}"
    );
}

#[test]
fn modbus_tcp_bus_down_then_up_reconnects_with_backoff() {
    // Reserve a port, then free it: nothing listens there at first.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let body = format!(
        r#"
[[source]]
id = "bus"
kind = "modbus"
connect = "{addr}"
interval = "100ms"
timeout = "150ms"
backoff_min = "100ms"
backoff_max = "300ms"
[[source.device]]
id = "meter-1"
unit = 1
points = [{{ metric = "voltage", register = "holding", address = 0, scale = 0.1 }}]
[unknown_devices]
policy = "register"
"#
    );
    let cfg = write_config(dir.path(), &body);
    let mut ew = Edgewatch::start(&cfg);
    ew.wait_log(
        "modbus bus down; retrying with backoff",
        Duration::from_secs(10),
    );
    let st = ew.get("/api/status");
    assert_eq!(st["sources"][0]["healthy"], false, "{st}");
    assert!(
        st["sources"][0]["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("connect to"),
        "{st}"
    );
    let bus = Bus::new();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let on_connected = |stream, a| {
                let bus = bus.clone();
                async move {
                    tokio_modbus::server::tcp::accept_tcp_connection(stream, a, |_| {
                        Ok(Some(bus.clone()))
                    })
                }
            };
            server.serve(&on_connected, |_| {}).await
        })
    });
    let d = ew.poll("/api/devices", Duration::from_secs(10), |d| {
        metric(d, "meter-1", "voltage").is_some()
    });
    let v = metric(&d, "meter-1", "voltage").expect("v")["last_value"]
        .as_f64()
        .expect("f64");
    assert!((v - 123.4).abs() < 1e-9);
    ew.poll("/api/status", Duration::from_secs(5), |s| {
        s["sources"][0]["healthy"] == true && s["sources"][0]["connections"] == 1
    });
}
