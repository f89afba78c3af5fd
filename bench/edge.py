#!/usr/bin/env python3
"""Captions through Redis to edge servers: delivery delay at thousands of screens, and an edge killed mid-run.

    python bench/edge.py                          # 5000 viewers over 2 edges, then the same with one killed
    python bench/edge.py --viewers 1000 --captions 100

On loopback, all on this machine: a ``redis-server`` (started here, no persistence), the host
(``server.Server`` with ``[server] redis``, fed from a thread as the engine feeds it), two
``subtitler edge`` processes, and viewer processes (``bench/screens.py``: thousands of cheap
screen clients a process, on uvloop when installed) spread evenly over the edges. Each caption's text starts with the monotonic
time the host's sink got it (CLOCK_MONOTONIC is shared by every process on the machine): the
delay is host publish → screen receipt, through Redis and an edge.

Captions are utterances of 3 partials and a final, ``--rate`` a second. Each viewer checks what
it receives: a ``seq`` seen twice is a duplicate; a final id missing from the run is a gap. In
the second run one edge is killed with SIGKILL halfway: its viewers reconnect to the other
edge with ``since``/``session`` (as the overlay does with ``server=ws://a,ws://b``), and must
still get every final exactly once. CPU (user+system time over the run) is given per part:
each edge, Redis, the host (this process) and each viewer process.

Figures: JSON on stdout; see README "Beyond one box".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import percentile  # noqa: E402
from machine import cpu_times_s, own_cpu_s, process_cpu_s  # noqa: E402
from screens import delays_of, screens_process  # noqa: E402

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# -- processes ------------------------------------------------------------------------------------

# Room for every viewer on one edge, and within this process's open-file limit (typically 20000)
# with the server's reserve: beyond it the server cuts its listen backlog to 64, and 2500
# screens moving to the other edge at once then wait for SYN retries (1 s, 3 s, 7 s …).
MAX_VIEWERS = 10000
SETTLE_S = 30.0  # after the last caption: how long screens still catching up are waited for


def start_edge(redis_url: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "subtitler", "edge", "--redis", redis_url, "--host", HOST,
                             "--port", str(port), "--set", f"server.max_viewers={MAX_VIEWERS}"], cwd=ROOT,
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
                proc.kill()
                proc.wait(5)
                raise RuntimeError("the edge did not start") from None
            time.sleep(0.1)


def run(server, redis: subprocess.Popen, redis_url: str, viewers: int, captions: int, rate: float, procs: int,
        kill: bool, first_id: int, parse_now: bool = False) -> dict:
    link = server.rooms["hall"]
    edges = []
    try:
        for _ in range(2):
            edges.append(start_edge(redis_url))
        return _measure(link, redis, edges, viewers, captions, rate, procs, kill, first_id, parse_now)
    finally:
        for p, _ in edges:  # also when a run fails: no edge left behind
            if p.poll() is None:
                p.kill()
                p.wait(5)


def _measure(link, redis: subprocess.Popen, edges, viewers: int, captions: int, rate: float, procs: int, kill: bool,
             first_id: int, parse_now: bool) -> dict:
    from subtitler.captions import Caption

    ports = [port for _, port in edges]
    ctx = mp.get_context("spawn")
    shares = [viewers // procs + (1 if i < viewers % procs else 0) for i in range(procs)]
    workers = []
    t0 = time.monotonic()
    for k, share in enumerate(filter(None, shares)):
        parent, child = ctx.Pipe()
        order = ports[k % 2:] + ports[:k % 2]  # half the processes start on each edge
        p = ctx.Process(target=screens_process, args=(order, share, "/rooms/hall/ws/view", child, parse_now),
                       daemon=True)
        p.start()
        workers.append((p, parent))
    for p, pipe in workers:
        if not pipe.poll(180) or pipe.recv() != "ready":
            raise RuntimeError(f"a viewer process did not connect its screens (exit code {p.exitcode})")
    connect_s = time.monotonic() - t0
    time.sleep(2.0)  # welcomes and histories out
    # CPU over the run, per part: the edges, Redis, this process (the host: its loop, its Redis
    # publisher and the caption feed) and the viewer processes (their own figure, from "ready").
    cpu0 = [process_cpu_s(p.pid) for p, _ in edges] + [process_cpu_s(redis.pid), own_cpu_s(), *cpu_times_s()]
    t_cpu = time.monotonic()
    filler = "the budget for next year has been approved by the committee after a long debate"
    start = time.monotonic()
    killed_at = None
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
    # Until every screen has the last final (screens get events in seq order: the earlier ones
    # too, or a gap counted below), or SETTLE_S: the screens that moved catch up in this time.
    last_sent = time.monotonic()
    last_final = first_id + captions // 4 - 1
    complete_s = None
    while time.monotonic() - last_sent < SETTLE_S:
        have = 0
        for _, pipe in workers:
            pipe.send(("has", last_final))
            if not pipe.poll(60):  # an answer left unread would be taken for the figures later
                raise RuntimeError("a viewer process did not answer")
            have += pipe.recv()
        if have >= viewers:
            complete_s = time.monotonic() - last_sent
            break
        time.sleep(0.1)
    time.sleep(0.5)
    window = time.monotonic() - t_cpu
    cpu = [process_cpu_s(p.pid) - c if p.poll() is None else None for (p, _), c in zip(edges, cpu0)]
    cpu += [process_cpu_s(redis.pid) - cpu0[2], own_cpu_s() - cpu0[3]]
    cpu += [now - then for now, then in zip(cpu_times_s(), cpu0[4:])]
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
    expected_finals = set(range(first_id, first_id + captions // 4))
    gaps = sum(len(expected_finals - set(f)) for r in results for f in r["finals"])
    delays = [d for r in results for d in delays_of(r)]
    outages = [d for r in results for d in r["outages"]]
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    percent = lambda c: None if c is None else round(100 * c / window, 1)  # noqa: E731
    return {"viewers": viewers, "captions": captions, "rate_per_s": rate, "edge_killed": kill,
            "received": len(delays), "delay_ms": {"p50": ms(percentile(delays, 0.5)),
                                                  "p90": ms(percentile(delays, 0.9)),
                                                  "p99": ms(percentile(delays, 0.99)),
                                                  "max": ms(max(delays) if delays else None)},
            "gaps": gaps, "duplicates": sum(r["dups"] for r in results),
            "all_screens_complete_after_last_caption_s": None if complete_s is None else round(complete_s, 2),
            "reconnects": sum(r["reconnects"] for r in results), "reconnect_failures": sum(r["failed"] for r in results),
            "resumed_after_ms": {"p50": ms(percentile(outages, 0.5)), "max": ms(max(outages) if outages else None)},
            "protocol_errors": sum(r["error_count"] for r in results),
            "cpu_percent": {"edges": [percent(c) for c in cpu[:2]], "redis": percent(cpu[2]),
                            "host": percent(cpu[3]), "viewers": [percent(r["cpu_s"]) for r in results],
                            # CPU seconds each viewer process spent after the run checking what it kept
                            "viewers_check_after_s": [round(r["read_after_s"], 2) for r in results],
                            # all of it (of 100 × cores): the above, the kernel's own work, and other jobs
                            "machine": percent(cpu[4]),
                            # the hypervisor's other guests on these cores (bench/machine.py)
                            "stolen": percent(cpu[5])},
            "connect_s": round(connect_s, 1), "viewer_processes": len(workers), "viewer_loop": results[0]["loop"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--viewers", type=int, default=5000)
    ap.add_argument("--captions", type=int, default=200)
    ap.add_argument("--rate", type=float, default=10.0)
    # One per core: fewer processes wake less often and read more sockets a wake-up (at 5000
    # viewers 2 processes took 76 % of a core where 4 took 92 %).
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 2, help="viewer processes")
    ap.add_argument("--no-kill", action="store_true", help="skip the run with an edge killed")
    ap.add_argument("--kill-only", action="store_true", help="only the run with an edge killed")
    ap.add_argument("--parse-now", action="store_true",
                    help="viewers check each frame as it comes, not after the run (bench/screens.py)")
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
        server = Server(ServerConfig(host=HOST, port=0, redis=url, max_viewers=MAX_VIEWERS)).start()
        server.add_room("hall")
        out = {"machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", "runs": []}
        if not args.kill_only:
            out["runs"].append(run(server, redis, url, args.viewers, args.captions, args.rate, args.procs, False, 1,
                                   args.parse_now))
            print(json.dumps(out["runs"][-1]), file=sys.stderr, flush=True)
        if not args.no_kill:
            out["runs"].append(run(server, redis, url, args.viewers, args.captions, args.rate, args.procs, True, 10000,
                                   args.parse_now))
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
