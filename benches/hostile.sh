#!/usr/bin/env bash
# Hostile-load benchmark (issue 12): replays each attack against the release binary with default
# limits, on loopback, while 1,000 legitimate devices send over their own TCP source and /healthz
# is polled. Prints per attack: peak RSS (VmHWM), /healthz answers, legitimate samples sent/counted,
# and what /api/status and the log show. About 3 minutes.
#   benches/hostile.sh                  ATTACKS="ws_frame tcp_idle" benches/hostile.sh
# EDGEWATCH_BIN=path runs another build (figures from a debug build are not the targets' figures);
# NOFILE sets the binary's descriptor limit (default 1024, a shell's; the unit sets 8192).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${EDGEWATCH_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --locked -q --bin edgewatch
    bin=$PWD/target/release/edgewatch
fi
exec python3 - "$bin" <<'PY'
import json, os, re, resource, socket, subprocess, sys, tempfile, threading, time, urllib.request

BIN = sys.argv[1]
SECS = float(os.environ.get("SECS", "8"))
LEGIT_DEVICES = 1000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

class Node:
    """One edgewatch with default limits: sources `legit` and `lan` (TCP), devices registered."""
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        cfg = os.path.join(self.dir.name, "e.toml")
        with open(cfg, "w") as f:
            f.write(f'node_id = "hostile"\ndata_dir = "{self.dir.name}/data"\n'
                    '[unknown_devices]\npolicy = "register"\n'
                    '[[source]]\nid = "legit"\nkind = "tcp"\nlisten = "127.0.0.1:0"\n'
                    '[[source]]\nid = "lan"\nkind = "tcp"\nlisten = "127.0.0.1:0"\n'
                    '[api]\nlisten = "127.0.0.1:0"\n')
        self.log = open(os.path.join(self.dir.name, "log"), "w+")
        # the service's LimitNOFILE is 8192; a shell's default is 1024
        nofile = int(os.environ.get("NOFILE", "1024"))
        self.p = subprocess.Popen([BIN, "run", "--config", cfg], stderr=self.log, stdout=subprocess.DEVNULL,
                                  env={**os.environ, "RUST_LOG": "info"},
                                  preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        for _ in range(300):
            t = self.text()
            if "edgewatch running" in t and t.count("tcp source listening") >= 2:
                break
            time.sleep(0.05)
        t = self.text()
        self.api = re.search(r"API at http://([0-9.:]+)/", t).group(1)
        self.tcp = dict(re.findall(r"tcp source listening on ([0-9.:]+) source=(\w+)", t)[i][::-1] for i in range(2))

    def text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def status(self, timeout=5):
        with urllib.request.urlopen(f"http://{self.api}/api/status", timeout=timeout) as r:
            return json.load(r)

    def hwm_mib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024

    def source(self, st, sid):
        return next(s for s in st["sources"] if s["id"] == sid)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.dir.cleanup()

def addr(a):
    h, p = a.rsplit(":", 1)
    return (h, int(p))

class Legit(threading.Thread):
    """1,000 devices, one metric each, a round every 0.5 s on one connection."""
    def __init__(self, node):
        super().__init__(daemon=True)
        self.node, self.sent, self.stop_ev, self.err = node, 0, threading.Event(), None
    def run(self):
        try:
            s = socket.create_connection(addr(self.node.tcp["legit"]))
            k = 0
            while not self.stop_ev.is_set():
                ts = int(time.time() * 1000)
                s.sendall("".join('{"device":"legit-%04d","metric":"temp","ts":%d,"value":%.2f}\n'
                                  % (d, ts, 20 + (k + d) % 7 / 7) for d in range(LEGIT_DEVICES)).encode())
                self.sent += LEGIT_DEVICES
                k += 1
                time.sleep(0.5)
            s.close()
        except OSError as e:
            self.err = e

class Health(threading.Thread):
    def __init__(self, node):
        super().__init__(daemon=True)
        self.node, self.ok, self.total, self.stop_ev = node, 0, 0, threading.Event()
    def run(self):
        while not self.stop_ev.is_set():
            self.total += 1
            try:
                with urllib.request.urlopen(f"http://{self.node.api}/healthz", timeout=2) as r:
                    self.ok += r.status == 200
            except Exception:
                pass
            time.sleep(0.5)

# ---- attacks: each returns a function that reports what to read from /api/status ----

def series(node):
    """2,000 devices × 20 metric names over TCP."""
    s = socket.create_connection(addr(node.tcp["lan"]))
    for rnd in range(3):
        ts = int(time.time() * 1000)
        s.sendall("".join('{"device":"atk-%04d","ts":%d,%s}\n' % (d, ts, ",".join('"m%02d":%d' % (m, rnd) for m in range(20)))
                          for d in range(2000)).encode())
    time.sleep(SECS)
    s.close()
    return lambda st: {"devices": st["analysis"]["devices"], "rejected_limit": st["analysis"]["rejected_limit"]}, "limit"

def future_ts(node):
    """One frame with ts = 9e18."""
    s = socket.create_connection(addr(node.tcp["lan"]))
    s.sendall(b'{"device":"legit-0001","metric":"temp","ts":9000000000000000000,"value":1}\n')
    time.sleep(SECS)
    s.close()
    return lambda st: {"lan.rejected_ts": node.source(st, "lan").get("rejected_ts")}, "future"

def ws_frame(node):
    """A /ws client declaring a 1 TiB frame and streaming up to 300 MiB."""
    c = socket.create_connection(addr(node.api))
    c.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    c.recv(4096)
    c.sendall(bytes([0x82, 0xFF]) + (1 << 40).to_bytes(8, "big") + b"\x01\x02\x03\x04")
    c.settimeout(2)
    chunk, sent, end = b"U" * (1 << 20), 0, time.time() + SECS
    try:
        while sent < 300 << 20 and time.time() < end:
            sent += c.send(chunk)
    except OSError:
        pass
    time.sleep(max(0, end - time.time()))
    c.close()
    return lambda st: {"streamed_MiB": sent >> 20, "ws.closed_oversize": st["ws"]["closed_oversize"]}, "ws_max_frame"

def http_idle(node):
    """1,100 idle HTTP connections from one address (127.0.0.3; /healthz is polled from 127.0.0.1)."""
    conns = []
    for _ in range(1100):
        try:
            s = socket.socket()
            s.settimeout(2)
            s.bind(("127.0.0.3", 0))
            s.connect(addr(node.api))
            conns.append(s)
        except OSError:
            break
    time.sleep(SECS)
    # the API is at its cap now (that is the point): count descriptors from outside
    fds = len(os.listdir(f"/proc/{node.p.pid}/fd"))
    for c in conns:
        c.close()
    return lambda st: {"opened": len(conns), "fds_during": fds, "api.max_connections": st["api"]["max_connections"],
                       "fd_limit": st["api"]["fd_limit"], "shed_503": st["api"]["shed_503"],
                       "refused_per_ip": st["api"]["refused_per_ip"]}, "max_connections_per_ip"

def tcp_idle(node):
    """256 idle TCP clients from one address, then a real sensor from another."""
    conns = [socket.create_connection(addr(node.tcp["lan"])) for _ in range(256)]
    time.sleep(0.5)
    ok = sensor(node, "127.0.0.2")
    time.sleep(SECS)
    for c in conns:
        c.close()
    return lambda st: {"sensor_ok": ok, "refused": node.source(st, "lan")["connections_refused"]}, "max_clients_per_ip"

def tcp_idle_spread(node):
    """256 idle TCP clients spread over 8 addresses (32 each) take every slot; a real sensor
    arrives after evict_after (30 s) and is let in by closing the longest-silent one."""
    conns = []
    for i in range(8):
        for _ in range(32):
            s = socket.socket()
            s.bind((f"127.0.1.{i + 1}", 0))
            s.connect(addr(node.tcp["lan"]))
            conns.append(s)
    time.sleep(31)
    ok = sensor(node, "127.0.0.2")
    time.sleep(SECS)
    for c in conns:
        c.close()
    return lambda st: {"sensor_ok": ok, "refused": node.source(st, "lan")["connections_refused"]}, "silent for longest"

def sensor(node, src):
    """A sensor connects from `src`, sends 5 samples and reports whether all were counted."""
    before = node.source(node.status(), "lan")["samples"]
    s = socket.socket()
    s.bind((src, 0))
    s.connect(addr(node.tcp["lan"]))
    try:
        s.sendall(b"".join(b'{"device":"sensor","metric":"t","value":%d}\n' % i for i in range(5)))
    except OSError:
        return False
    time.sleep(1)
    s.close()
    return node.source(node.status(), "lan")["samples"] == before + 5

def log_flood(node):
    """200 short connections, each sending a malformed frame."""
    for _ in range(200):
        s = socket.create_connection(addr(node.tcp["lan"]))
        s.sendall(b"garbage\n")
        s.close()
    time.sleep(SECS)
    lines = sum(1 for l in node.text().splitlines() if "garbage" in l or "rejected" in l)
    return lambda st: {"lan.frames_rejected": node.source(st, "lan")["frames_rejected"], "log_lines": lines}, "suppressed"

ATTACKS = {f.__name__: f for f in [series, future_ts, ws_frame, http_idle, tcp_idle, tcp_idle_spread, log_flood]}
chosen = os.environ.get("ATTACKS", " ".join(ATTACKS)).split()
print(f"{'attack':16} {'peak RSS':>9} {'healthz':>8} {'legit sent/counted':>19}  counters; log")
failed = []
for name in chosen:
    node = Node()
    legit, health = Legit(node), Health(node)
    legit.start(); health.start()
    time.sleep(1)
    try:
        report, needle = ATTACKS[name](node)
    finally:
        time.sleep(1)
        legit.stop_ev.set(); health.stop_ev.set()
        legit.join(); health.join()
    counted = 0
    for _ in range(100):
        try:
            st = node.status()
            counted = node.source(st, "legit")["samples"]
            if counted >= legit.sent:
                break
        except Exception:
            pass
        time.sleep(0.2)
    try:
        st = node.status(timeout=30)
    except Exception as e:
        print(f"{name:16} /api/status unreachable after the attack: {e}", flush=True)
        failed.append(name); node.stop(); continue
    hwm = node.hwm_mib()
    logged = any(needle in l for l in node.text().splitlines() if " WARN " in l or " INFO " in l)
    print(f"{name:16} {hwm:8.1f}M {health.ok:>3}/{health.total:<4} {legit.sent:>9}/{counted:<9}  "
          f"{json.dumps(report(st))}; log {'has' if logged else 'LACKS'} {needle!r}", flush=True)
    if hwm >= 64 or counted < legit.sent or health.ok < health.total or not logged:
        failed.append(name)
    node.stop()
print("targets (<64 MiB, every /healthz answered, no legitimate sample lost, logged) missed by:",
      " ".join(failed) or "none")
PY
