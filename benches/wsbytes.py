#!/usr/bin/env python3
"""Bytes on the wire of the upstream WebSocket, with and without permessage-deflate (RFC 7692).

Runs the release binary with D simulated devices (two metrics each, one sample a second) and 1 s
upstream summaries against a receiver (Python `websockets`, acks every seq, accepts
permessage-deflate when offered), through a TCP proxy that counts every byte in each direction,
handshakes included. edgewatch's client (tungstenite) offers no extension, so its connection is
uncompressed. Then the messages the receiver got are sent again, in order, by a `websockets`
client through the same kind of proxy: once without compression (a control: should match
edgewatch's own figure) and once negotiating permessage-deflate (with `websockets`' defaults:
context takeover, 12-bit windows). Prints bytes and bytes per hour for each.

    python3 benches/wsbytes.py [--devices 100] [--seconds 120] [--binary target/release/edgewatch]

Needs `pip install websockets` (the receiver of docs/PROTOCOL.md).
"""
import argparse
import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import websockets


class Counter:
    def __init__(self):
        self.up = 0  # client -> server
        self.down = 0  # server -> client


async def proxy(listen_port, target_port, counter):
    async def pipe(reader, writer, add):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                add(len(data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(cr, cw):
        sr, sw = await asyncio.open_connection("127.0.0.1", target_port)

        def up(n):
            counter.up += n

        def down(n):
            counter.down += n

        await asyncio.gather(pipe(cr, sw, up), pipe(sr, cw, down))

    return await asyncio.start_server(handle, "127.0.0.1", listen_port)


class Receiver:
    def __init__(self):
        self.messages = []  # texts from the appliance, in order
        self.extensions = []  # what each connection negotiated

    async def handle(self, ws):
        ext = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
        self.extensions.append(ext)
        try:
            async for text in ws:
                m = json.loads(text)
                self.messages.append(text)
                if "seq" in m:
                    await ws.send(json.dumps({"type": "ack", "seq": m["seq"]}))
        except websockets.ConnectionClosed:
            pass  # the appliance stopped


def config(d, data_dir, api_port, up_port):
    lines = [
        'node_id = "wsbytes"',
        f'data_dir = "{data_dir}"',
        'summary_interval = "1s"',
        'persist_interval = "60s"',
        "[api]",
        f'listen = "127.0.0.1:{api_port}"',
        "[unknown_devices]",
        'policy = "register"',
        "[upstream]",
        f'url = "ws://127.0.0.1:{up_port}/"',
        'summary_interval = "1s"',
        "[[source]]",
        'id = "sim"',
        'kind = "sim"',
        'interval = "1s"',
        "seed = 3",
    ]
    for i in range(d):
        lines += [
            "[[source.device]]",
            f'id = "pump-{i:03}"',
            f"metrics.temp = {{ mean = {20 + i % 10}.0, noise = 0.3, anomaly_rate = 0.001 }}",
            "metrics.pressure = { mean = 3.2, noise = 0.05, anomaly_rate = 0.001 }",
        ]
    return "\n".join(lines) + "\n"


async def replay(port, messages, compression):
    """Sends `messages` to ws://127.0.0.1:port and waits for their acks."""
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/", compression=compression, max_size=None
    ) as ws:
        negotiated = ws.response.headers.get("Sec-WebSocket-Extensions")
        want = 0
        for text in messages:
            await ws.send(text)
            if '"seq"' in text:
                want += 1
        got = 0
        while got < want:
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if m.get("type") == "ack":
                got += 1
        return negotiated


def per_hour(n, seconds):
    return n * 3600 / seconds


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--binary", default="target/release/edgewatch")
    a = ap.parse_args()
    base = 19400 + os.getpid() % 500
    rx_port, px_port, api_port, px2_port = base, base + 1, base + 2, base + 3
    rx = Receiver()
    server = await websockets.serve(rx.handle, "127.0.0.1", rx_port, max_size=None)
    live = Counter()
    px = await proxy(px_port, rx_port, live)
    tmp = tempfile.mkdtemp(prefix="wsbytes-")
    cfg = pathlib.Path(tmp, "wsbytes.toml")
    cfg.write_text(config(a.devices, f"{tmp}/data", api_port, px_port))
    log = open(pathlib.Path(tmp, "edgewatch.log"), "w")
    proc = subprocess.Popen(
        [a.binary, "run", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT
    )
    # Count from the first message on (the connection is up), for `seconds`.
    t_end = time.monotonic() + 30
    while not rx.messages and time.monotonic() < t_end:
        await asyncio.sleep(0.1)
    if not rx.messages:
        proc.send_signal(signal.SIGTERM)
        sys.exit(f"no upstream message within 30 s; see {log.name}")
    start = time.monotonic()
    up0, down0, n0 = live.up, live.down, len(rx.messages)
    await asyncio.sleep(a.seconds)
    elapsed = time.monotonic() - start
    up, down = live.up - up0, live.down - down0
    msgs = rx.messages[n0:]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    px.close()
    kinds = {}
    for t in msgs:
        k = json.loads(t).get("type")
        kinds[k] = kinds.get(k, 0) + 1
    raw = sum(len(t.encode()) for t in msgs)
    print(f"edgewatch upstream, {a.devices} devices x 2 metrics at 1 Hz, 1 s summaries, "
          f"{elapsed:.0f} s: {len(msgs)} messages {kinds}, {raw} bytes of JSON text")
    print(f"extension negotiated by edgewatch's connection: {rx.extensions[0]!r}")
    rows = [("edgewatch (tungstenite, no extension)", up, down, rx.extensions[0])]
    for name, comp in (("replay, no compression", None), ("replay, permessage-deflate", "deflate")):
        c = Counter()
        p = await proxy(px2_port, rx_port, c)
        neg = await replay(px2_port, msgs, comp)
        await asyncio.sleep(0.2)
        p.close()
        await p.wait_closed()
        rows.append((name, c.up, c.down, neg))
    server.close()
    print()
    print("| connection | negotiated | bytes up | bytes down | up per hour | down per hour |")
    print("|---|---|---|---|---|---|")
    for name, u, d, neg in rows:
        print(f"| {name} | {neg or '-'} | {u:,} | {d:,} | {per_hour(u, elapsed) / 1e6:.1f} MB "
              f"| {per_hour(d, elapsed) / 1e6:.2f} MB |")


asyncio.run(main())
