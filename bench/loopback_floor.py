#!/usr/bin/env python3
"""The floor under ``bench/edge.py``: the same fan-out with bare sockets, no WebSocket, no event loop.

    python bench/loopback_floor.py                  # 5000 connections over 2 senders, 200 events at 10/s
    python bench/loopback_floor.py --connections 1000

Two sender processes stand for the two edges, two reader processes for the viewer processes,
laid out as ``bench/edge.py`` lays them out (each reader holds half its connections on each
sender). At ``--rate`` events a second each sender writes one ``--size``-byte message,
stamped with the event's due time on CLOCK_MONOTONIC (shared by every process on the
machine), to each of its connections with a plain ``socket.send`` loop; each reader waits in
``epoll`` and ``recv``s whatever is ready. No framing, no JSON, no asyncio, no Redis: what is
left is the kernel's per-message cost on loopback and one Python call per message on each
side, so no server written in Python (or any language on the same sockets) delivers the
same messages on this machine with less CPU or a shorter burst. The delay is due time → read.

Figures: JSON on stdout (README "Beyond one box").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import select
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import percentile  # noqa: E402
from machine import cpu_times_s, own_cpu_s  # noqa: E402

HOST = "127.0.0.1"
STAMP = struct.Struct("<d")


def sender(listener: socket.socket, count: int, pipe, events: int, rate: float, size: int) -> None:
    conns = []
    while len(conns) < count:
        s, _ = listener.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as websockets sets it
        conns.append(s)
    pipe.send("ready")
    start = pipe.recv()  # the shared start time
    cpu0 = own_cpu_s()
    pad = b"x" * (size - STAMP.size)
    sends = [s.send for s in conns]
    for k in range(events):
        due = start + k / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        message = STAMP.pack(due) + pad
        for send in sends:
            send(message)
    pipe.send(own_cpu_s() - cpu0)
    pipe.recv()


def reader(ports: list[int], count: int, pipe, events: int, size: int) -> None:
    socks = []
    for i in range(count):
        s = socket.create_connection((HOST, ports[i % len(ports)]))
        s.setblocking(False)
        socks.append(s)
    by_fd = {s.fileno(): s for s in socks}
    pending = {fd: b"" for fd in by_fd}
    ep = select.epoll()
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    pipe.send("ready")
    pipe.recv()
    cpu0 = own_cpu_s()
    delays: list[float] = []
    expected = events * count
    got = 0
    deadline = None
    while got < expected:
        ready = ep.poll(1.0)
        now = time.monotonic()
        if not ready:
            deadline = deadline or now + 10
            if now > deadline:
                break
            continue
        for fd, _ in ready:
            data = pending[fd] + by_fd[fd].recv(65536)
            whole = len(data) - len(data) % size
            for at in range(0, whole, size):
                delays.append(now - STAMP.unpack_from(data, at)[0])
                got += 1
            pending[fd] = data[whole:]
    pipe.send({"delays": delays, "cpu_s": own_cpu_s() - cpu0})
    pipe.recv()


def run(connections: int, events: int, rate: float, size: int) -> dict:
    ctx = mp.get_context("fork")
    listeners = []
    for _ in range(2):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((HOST, 0))
        ls.listen(4096)
        listeners.append(ls)
    ports = [ls.getsockname()[1] for ls in listeners]
    per_sender = [connections // 2 + (1 if i < connections % 2 else 0) for i in range(2)]
    per_reader = per_sender[:]  # each reader: half its connections on each sender
    procs, pipes = [], []
    for i, ls in enumerate(listeners):
        a, b = ctx.Pipe()
        p = ctx.Process(target=sender, args=(ls, per_sender[i], b, events, rate, size), daemon=True)
        p.start()
        procs.append(p)
        pipes.append(a)
    readers = []
    for i in range(2):
        a, b = ctx.Pipe()
        order = ports[i:] + ports[:i]
        p = ctx.Process(target=reader, args=(order, per_reader[i], b, events, size), daemon=True)
        p.start()
        procs.append(p)
        readers.append(a)
    for pipe in pipes + readers:
        if pipe.recv() != "ready":
            raise RuntimeError("a process did not start")
    busy0, stolen0 = cpu_times_s()
    t0 = time.monotonic()
    start = t0 + 0.5
    for pipe in readers + pipes:
        pipe.send(start)
    sender_cpu = [pipe.recv() for pipe in pipes]
    results = [pipe.recv() for pipe in readers]
    window = time.monotonic() - t0
    busy, stolen = cpu_times_s()
    busy, stolen = busy - busy0, stolen - stolen0
    for pipe in pipes + readers:
        pipe.send("stop")
    for p in procs:
        p.join(10)
    delays = [d for r in results for d in r["delays"]]
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    percent = lambda c: round(100 * c / window, 1)  # noqa: E731
    return {"connections": connections, "events": events, "rate_per_s": rate, "message_bytes": size,
            "received": len(delays), "expected": connections * events,
            "delay_ms": {"p50": ms(percentile(delays, 0.5)), "p90": ms(percentile(delays, 0.9)),
                         "p99": ms(percentile(delays, 0.99)), "max": ms(max(delays) if delays else None)},
            "cpu_percent": {"senders": [percent(c) for c in sender_cpu],
                            "readers": [percent(r["cpu_s"]) for r in results],
                            "machine": percent(busy), "stolen": percent(stolen)},
            "cpu_us_per_message": round(1e6 * (sum(sender_cpu) + sum(r["cpu_s"] for r in results))
                                        / max(1, len(delays)), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=300, help="bytes a message (a caption frame is 250–400)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.connections + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    out = {"machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start",
           "run": run(args.connections, args.events, args.rate, args.size)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
