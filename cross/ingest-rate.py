#!/usr/bin/env python3
"""End-to-end TCP ingest of an edgewatch binary, natively or under qemu-user: starts it on
config/bench-tcp.toml (own data dir, free ports), sends N NDJSON samples of 100 devices over one
connection as fast as it takes them, waits until /api/status counts all of them analysed, and
prints samples/s (send start to all analysed) and the process's CPU time per sample.
usage: cross/ingest-rate.py N BINARY [under: qemu-aarch64 -L /usr/aarch64-linux-gnu]
  e.g. cross/ingest-rate.py 1000000 qemu-aarch64 -L /usr/aarch64-linux-gnu dist/edgewatch-arm64
(the command line after N is run with `run --config ...` appended)."""
import json, os, random, socket, subprocess, sys, tempfile, time, urllib.request

n = int(sys.argv[1]) // 10000 * 10000
cmd = sys.argv[2:]
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tmp = tempfile.mkdtemp()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


api, tcp = free_port(), free_port()
cfg = open(os.path.join(repo, "config/bench-tcp.toml")).read()
cfg = (cfg.replace('"/tmp/edgewatch-bench-tcp"', json.dumps(tmp + "/data"))
       .replace("127.0.0.1:8080", f"127.0.0.1:{api}").replace("127.0.0.1:9000", f"127.0.0.1:{tcp}"))
open(tmp + "/c.toml", "w").write(cfg)
log = open(tmp + "/log", "w")
p = subprocess.Popen(cmd + ["run", "--config", tmp + "/c.toml"], stdout=log, stderr=log,
                     env=dict(os.environ, RUST_LOG="warn"))


def analysed():
    with urllib.request.urlopen(f"http://127.0.0.1:{api}/api/status", timeout=5) as r:
        return json.load(r)["analysis"]["samples"]


def cpu_s():
    f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


try:
    rng = random.Random(1)
    lines = [json.dumps({"device": f"dev{i % 100:04d}", "metric": "temp", "ts": 1763761234567 + i,
                         "value": round(rng.gauss(20, 1), 4)}, separators=(",", ":"))
             for i in range(10000)]
    chunk = ("\n".join(lines) + "\n").encode()
    deadline = time.time() + 60
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", tcp))
            analysed()
            break
        except OSError:
            if time.time() > deadline or p.poll() is not None:
                sys.exit("edgewatch did not start:\n" + open(tmp + "/log").read())
            time.sleep(0.3)
    time.sleep(1)
    c0, t0 = cpu_s(), time.time()
    for _ in range(n // 10000):
        conn.sendall(chunk)
    while analysed() < n:
        if time.time() - t0 > 600:
            sys.exit("not all samples analysed within 600 s")
        time.sleep(0.05)
    t1, c1 = time.time(), cpu_s()
    print(f"{n} samples: {n / (t1 - t0):,.0f} samples/s, {(c1 - c0) / n * 1e6:.2f} CPU us/sample "
          f"({c1 - c0:.2f} s CPU in {t1 - t0:.2f} s)")
finally:
    p.terminate()
    p.wait(30)
    subprocess.run(["rm", "-rf", tmp])
