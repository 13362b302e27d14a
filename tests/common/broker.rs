//! A real mosquitto started by the test on a free loopback port (temp config and persistence
//! directory), which a test can stop and start again; plus small rumqttc publish/subscribe helpers.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
}

impl Broker {
    /// Starts mosquitto with a plain listener on a free port; `extra` is appended to the config.
    pub fn start(dir: &Path, extra: &str) -> Self {
        let port = free_port();
        let data = dir.join("mosquitto-data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence true\npersistence_location {}/\nlog_dest stderr\n\
                 listener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n",
                data.display()
            ),
        )
        .expect("write mosquitto.conf");
        let mut b = Broker {
            child: None,
            port,
            conf,
            log: dir.join("mosquitto.log"),
        };
        b.start_again();
        b
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) with the same config and persistence.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto (apt-get install mosquitto)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "mosquitto did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (mosquitto saves its persistence file) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Publishes every message and returns once the broker has all of them (PubAck for QoS 1).
pub fn publish_all(port: u16, qos: QoS, msgs: &[(String, Vec<u8>)]) {
    let id = format!("pub-{}", rand_id());
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(o, msgs.len() + 8);
    for (t, p) in msgs {
        client
            .publish(t.clone(), qos, false, p.clone())
            .expect("publish");
    }
    let (mut out, mut acked) = (0, 0);
    let end = Instant::now() + Duration::from_secs(20);
    for ev in conn.iter() {
        match ev {
            Ok(Event::Outgoing(Outgoing::Publish(_))) => out += 1,
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publisher: {e}"),
        }
        let done = match qos {
            QoS::AtMostOnce => out == msgs.len(),
            _ => acked == msgs.len(),
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < end,
            "publisher timed out ({out} sent, {acked} acked)"
        );
    }
    let _ = client.disconnect();
    // Let the DISCONNECT go out (QoS 0 messages are written before it).
    for ev in conn.iter() {
        if ev.is_err() || Instant::now() > end {
            break;
        }
    }
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One received message: topic, payload, retain flag.
pub type Received = (String, Vec<u8>, bool);

/// A subscriber with a persistent session (QoS 1) that reconnects by itself; collects
/// (topic, payload, retained) in arrival order.
pub struct Watcher {
    pub got: Arc<Mutex<Vec<Received>>>,
    subscribed: Arc<Mutex<bool>>,
}

impl Watcher {
    pub fn start(port: u16, id: &str, filter: &str) -> Self {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = Client::new(o, 16);
        let got = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(Mutex::new(false));
        let (g, s, filter) = (got.clone(), subscribed.clone(), filter.to_owned());
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(a))) if !a.session_present => {
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => *s.lock().expect("lock") = true,
                    Ok(Event::Incoming(Packet::Publish(p))) => g.lock().expect("lock").push((
                        p.topic.clone(),
                        p.payload.to_vec(),
                        p.retain,
                    )),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let w = Watcher { got, subscribed };
        let end = Instant::now() + Duration::from_secs(10);
        while !*w.subscribed.lock().expect("lock") {
            assert!(Instant::now() < end, "watcher not subscribed");
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    pub fn messages(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until `pred` holds for the messages so far.
    pub fn wait(&self, timeout: Duration, what: &str, pred: impl Fn(&[Received]) -> bool) {
        let end = Instant::now() + timeout;
        loop {
            if pred(&self.messages()) {
                return;
            }
            assert!(
                Instant::now() < end,
                "watcher: no {what} within {timeout:?}; got {} messages",
                self.messages().len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
