#!/usr/bin/env python3
"""Captions through Redis to edge servers: delivery delay at thousands of screens, and an edge killed mid-run.

    python bench/edge.py                          # 5000 viewers over 2 edges, then the same with one killed
    python bench/edge.py --viewers 1000 --captions 100

On loopback, all on this machine: a ``redis-server`` (started here, no persistence), the host
(``server.Server`` with ``[server] redis``, fed from a thread as the engine feeds it), two
``subtitler edge`` processes, and viewer processes (raw WebSocket clients on epoll, as in
bench/fanout.py) spread evenly over the edges. Each caption's text starts with the monotonic
time the host's sink got it (CLOCK_MONOTONIC is shared by every process on the machine): the
delay is host publish → screen receipt, through Redis and an edge.

Captions are utterances of 3 partials and a final, ``--rate`` a second. Each viewer checks what
it receives: a ``seq`` seen twice is a duplicate; a final id missing from the run is a gap. In
the second run one edge is killed with SIGKILL halfway: its viewers reconnect to the other
edge with ``since``/``session`` (as the overlay does with ``server=ws://a,ws://b``), and must
still get every final exactly once. CPU per edge is its user+system time over the run.

Figures: JSON on stdout; see README "Beyond one box".
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# -- viewer processes ------------------------------------------------------------------------------

def _masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _open(port: int, since: int = 0, session: str | None = None) -> tuple[socket.socket, bytes]:
    s = socket.create_connection((HOST, port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /rooms/hall/ws/view HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.decode(errors="replace")[:200])
    hello = {"type": "hello", "langs": ["*"], "since": since}
    if session:
        hello["session"] = session
    s.sendall(_masked_text(json.dumps(hello).encode()))
    s.setblocking(False)
    return s, rest


def _frames(buf: bytearray):
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        off = 2
        if n == 126:
            if len(buf) < 4:
                return
            n, off = struct.unpack_from("!H", buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                return
            n, off = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < off + n:
            return
        opcode, payload = buf[0] & 0x0F, bytes(buf[off:off + n])
        del buf[:off + n]
        yield opcode, payload


CAPTION = b'{"type":"caption","seq":'


class View:
    __slots__ = ("sock", "buf", "port", "seq", "session", "seqs", "finals", "dups")

    def __init__(self, port: int):
        self.port = port
        self.seq, self.session = 0, None
        self.finals: set[int] = set()
        self.dups = 0
        self.sock, rest = _open(port)
        self.buf = bytearray(rest)


def viewer_process(ports: list[int], count: int, pipe) -> None:
    """``count`` viewers over ``ports`` (round robin); on a lost connection a viewer moves to the
    next port and resumes with since/session."""
    views: dict[int, View] = {}
    for i in range(count):
        v = View(ports[i % len(ports)])
        views[v.sock.fileno()] = v
    pipe.send("ready")
    ep = select.epoll()
    for fd in views:
        ep.register(fd, select.EPOLLIN)
    ep.register(pipe.fileno(), select.EPOLLIN)
    delays: list[float] = []
    reconnects = failed = 0
    marker = b'"text":"'
    running = True
    while running:
        for fd, _ in ep.poll(1.0):
            if fd == pipe.fileno():
                running = False
                break
            v = views.get(fd)
            if v is None:
                continue
            try:
                chunk = v.sock.recv(1 << 18)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            now = time.monotonic()
            lost = not chunk
            if chunk:
                v.buf += chunk
                for opcode, payload in _frames(v.buf):
                    if opcode == 0x1:
                        if payload.startswith(b'{"type":"welcome"'):
                            v.session = json.loads(payload)["session"]
                            continue
                        if not payload.startswith(CAPTION):  # bytes, not JSON: a viewer must be cheap
                            continue
                        seq = int(payload[len(CAPTION):payload.index(b",", len(CAPTION))])
                        if seq <= v.seq:
                            v.dups += 1
                            continue
                        v.seq = seq
                        if b'"kind":"final"' in payload:
                            j = payload.index(b'"id":') + 5
                            v.finals.add(int(payload[j:payload.index(b",", j)]))
                        if not payload.endswith(b'"history":true}'):
                            i = payload.index(marker) + len(marker)
                            delays.append(now - float(payload[i:payload.index(b" ", i)]))
                    elif opcode == 0x9:
                        try:
                            v.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                        except OSError:
                            lost = True
                    elif opcode == 0x8:
                        lost = True
            if lost:  # the edge went: the next one, resuming where this viewer was
                ep.unregister(fd)
                views.pop(fd)
                v.sock.close()
                port = ports[(ports.index(v.port) + 1) % len(ports)]
                for _ in range(50):
                    try:
                        v.sock, rest = _open(port, v.seq, v.session)
                        break
                    except (OSError, ValueError):
                        port = ports[(ports.index(port) + 1) % len(ports)]
                        time.sleep(0.1)
                else:
                    failed += 1
                    continue
                v.port, v.buf = port, bytearray(rest)
                views[v.sock.fileno()] = v
                ep.register(v.sock.fileno(), select.EPOLLIN)
                reconnects += 1
    pipe.recv()
    pipe.send({"delays": delays, "finals": [sorted(v.finals) for v in views.values()],
               "dups": sum(v.dups for v in views.values()), "reconnects": reconnects, "failed": failed})
    for v in views.values():
        v.sock.close()


# -- processes ------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_edge(redis_url: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "subtitler", "edge", "--redis", redis_url, "--host", HOST,
                             "--port", str(port), "--set", "server.max_viewers=20000"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:  # up, and the host's room reached it from Redis
            with urllib.request.urlopen(f"http://{HOST}:{port}/api/venue", timeout=1) as r:
                if json.loads(r.read())["rooms"]:
                    return proc, port
            time.sleep(0.1)
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the edge did not start")
            time.sleep(0.1)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run(server, redis_url: str, viewers: int, captions: int, rate: float, procs: int, kill: bool, first_id: int) -> dict:
    link = server.rooms["hall"]
    edges = [start_edge(redis_url) for _ in range(2)]
    try:
        return _measure(link, edges, viewers, captions, rate, procs, kill, first_id)
    finally:
        for p, _ in edges:  # also when a run fails: no edge left behind
            if p.poll() is None:
                p.kill()
                p.wait(5)


def _measure(link, edges, viewers: int, captions: int, rate: float, procs: int, kill: bool, first_id: int) -> dict:
    from subtitler.captions import Caption

    ports = [port for _, port in edges]
    ctx = mp.get_context("spawn")
    shares = [viewers // procs + (1 if i < viewers % procs else 0) for i in range(procs)]
    workers = []
    t0 = time.monotonic()
    for k, share in enumerate(filter(None, shares)):
        parent, child = ctx.Pipe()
        order = ports[k % 2:] + ports[:k % 2]  # half the processes start on each edge
        p = ctx.Process(target=viewer_process, args=(order, share, child), daemon=True)
        p.start()
        workers.append((p, parent))
    for _, pipe in workers:
        assert pipe.recv() == "ready"
    connect_s = time.monotonic() - t0
    time.sleep(2.0)  # welcomes and histories out
    cpu0 = [cpu_seconds(p.pid) for p, _ in edges]
    filler = "the budget for next year has been approved by the committee after a long debate"
    start = time.monotonic()
    killed_at = None
    uid = first_id
    for k in range(captions):
        due = start + k / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if kill and killed_at is None and k >= captions // 2:
            edges[0][0].send_signal(signal.SIGKILL)
            killed_at = k
        uid, step = first_id + k // 4, k % 4
        kind = "final" if step == 3 else "partial"
        text = f"{time.monotonic():.6f} {filler[: 20 + 20 * step]}"
        link.sink.on_caption(Caption(id=uid, seq=0, kind=kind, start=uid * 3.0, end=uid * 3.0 + 2.5,
                                     emitted=uid * 3.0 + 3.0, lang="en", text=text,
                                     committed=text if kind == "final" else "", tentative=""))
    time.sleep(3.0)
    cpu = [round(cpu_seconds(p.pid) - c, 2) if p.poll() is None else None for (p, _), c in zip(edges, cpu0)]
    results = []
    for p, pipe in workers:
        pipe.send("stop")
        if not pipe.poll(60):
            raise RuntimeError(f"a viewer process did not answer (exit code {p.exitcode})")
        results.append(pipe.recv())
        p.join(10)
    for p, _ in edges:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    expected_finals = list(range(first_id, first_id + captions // 4))
    gaps = sum(len(set(expected_finals) - set(f)) for r in results for f in r["finals"])
    delays = [d for r in results for d in r["delays"]]
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    duration = captions / rate
    return {"viewers": viewers, "captions": captions, "rate_per_s": rate, "edge_killed": kill,
            "received": len(delays), "delay_ms": {"p50": ms(percentile(delays, 0.5)),
                                                  "p90": ms(percentile(delays, 0.9)),
                                                  "p99": ms(percentile(delays, 0.99)),
                                                  "max": ms(max(delays) if delays else None)},
            "gaps": gaps, "duplicates": sum(r["dups"] for r in results),
            "reconnects": sum(r["reconnects"] for r in results), "reconnect_failures": sum(r["failed"] for r in results),
            "edge_cpu_percent": [None if c is None else round(100 * c / (duration + 3.0), 1) for c in cpu],
            "connect_s": round(connect_s, 1), "viewer_processes": len(workers)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--viewers", type=int, default=5000)
    ap.add_argument("--captions", type=int, default=200)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--procs", type=int, default=4, help="viewer processes")
    ap.add_argument("--no-kill", action="store_true", help="skip the run with an edge killed")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    from subtitler.config import ServerConfig
    from subtitler.server import Server

    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        print("redis-server is not installed: apt-get install redis-server", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="subtitler-bench-edge-")
    redis_port = free_port()
    redis = subprocess.Popen([redis_bin, "--bind", HOST, "--port", str(redis_port), "--save", "", "--appendonly",
                              "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    url = f"redis://{HOST}:{redis_port}/0"
    server = None
    try:
        time.sleep(0.5)
        server = Server(ServerConfig(host=HOST, port=0, redis=url, max_viewers=20000)).start()
        server.add_room("hall")
        out = {"machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", "runs": []}
        out["runs"].append(run(server, url, args.viewers, args.captions, args.rate, args.procs, False, 1))
        print(json.dumps(out["runs"][-1]), file=sys.stderr, flush=True)
        if not args.no_kill:
            out["runs"].append(run(server, url, args.viewers, args.captions, args.rate, args.procs, True, 10000))
        print(json.dumps(out, indent=1))
    finally:
        if server is not None:
            server.stop(drain=0.5)
        redis.terminate()
        redis.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
