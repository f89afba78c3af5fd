"""Captions fanned out through a real redis-server to edge servers (issue 12); no model.

Every test starts Debian's ``redis-server`` on a free loopback port (``--save '' --appendonly
no``: nothing on disk, so a restart loses the streams as a crashed Redis would), a host
``Server`` with ``[server] redis`` whose rooms get captions through their sinks as the engine
gives them, and edges: in this process (``EdgeServer``) or as ``subtitler edge`` processes
when a test kills one with SIGKILL. Screens are real WebSocket clients speaking the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from subtitler.config import ServerConfig
import subtitler.edge as edge_module
from subtitler.edge import PURGE_SCRIPT, EdgeServer
from subtitler.server import Server, ServerError
from test_server import HOST, caption, http_get, parse_prometheus, recv_json, wait_until
from test_tls import make_certificate

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class RedisProcess:
    """A real redis-server on loopback; ``stop``/``start`` again on the same port."""

    def __init__(self, tmp: Path, password: str | None = None, tls: dict | None = None):
        self.port = free_port()
        self.password, self.tls, self.tmp = password, tls, tmp
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}{HOST}:{self.port}/0?ssl_ca_certs={self.tls['ca']}"
        return f"redis://{auth}{HOST}:{self.port}/0"

    def start(self) -> None:
        args = [REDIS, "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(self.tmp)]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls["cert"],
                     "--tls-key-file", self.tls["key"], "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def cli(self, *args: str) -> str:
        cmd = ["redis-cli", "-h", HOST, "-p", str(self.port), "--no-auth-warning"]
        if self.password:
            cmd += ["-a", self.password]
        if self.tls:
            cmd += ["--tls", "--cacert", self.tls["ca"]]
        return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10).stdout


@pytest.fixture
def redis_server(tmp_path):
    r = RedisProcess(tmp_path)
    yield r
    r.stop()


@contextlib.contextmanager
def host(redis_url: str, rooms=(("hall", ("es",)),), history: int = 50):
    server = Server(ServerConfig(host=HOST, port=0, token="venue-token", redis=redis_url, history=history)).start()
    for name, langs in rooms:
        server.add_room(name, title=name.title(), languages=list(langs))
    try:
        yield server
    finally:
        server.stop(drain=0.5)


@contextlib.contextmanager
def edge(redis_url: str, **config):
    server = EdgeServer(ServerConfig(host=HOST, port=0, **config), redis_url).start()
    try:
        yield server
    finally:
        server.stop(drain=0.5)


@contextlib.contextmanager
def edge_process(redis_url: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "subtitler", "edge", "--redis", redis_url, "--host", HOST,
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _healthy(port) or proc.poll() is not None, 30, "the edge process")
        assert proc.poll() is None, proc.stderr.read().decode()
        # the host's rooms reach it from Redis within a moment of its start
        wait_until(lambda: json.loads(http_get(port, "/api/venue")[2])["rooms"], 10, "the rooms on the edge")
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _healthy(port: int) -> bool:
    try:
        return http_get(port, "/healthz")[0] == 200
    except OSError:
        return False


def publish(link, *captions) -> None:
    target = link.channel.log.seq + len(captions)
    for c in captions:
        link.sink.on_caption(c)
    wait_until(lambda: link.channel.log.seq >= target, what=f"captions in {link.name}")


def edge_has(edge_server: EdgeServer, room: str, seq: int) -> bool:
    r = edge_server.rooms.get(room)
    return r is not None and r.channel.log.seq >= seq


async def view(port: int, room: str = "hall", since: int = 0, session: str | None = None, langs=("*",)):
    ws = await connect(f"ws://{HOST}:{port}/rooms/{room}/ws/view")
    hello = {"type": "hello", "langs": list(langs), "since": since}
    if session:
        hello["session"] = session
    await ws.send(json.dumps(hello))
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def events(ws, quiet: float = 0.4) -> list[dict]:
    """Every event but the status heartbeat, until none came for ``quiet`` seconds."""
    out = []
    last = time.monotonic()
    while True:
        left = last + quiet - time.monotonic()
        try:
            msg = await recv_json(ws, max(0.01, left))
        except TimeoutError:
            return out
        if msg["type"] != "status":
            out.append(msg)
            last = time.monotonic()
        elif left <= 0:
            return out


def talk(n: int, start: int = 1) -> list:
    """Utterances as the engine gives them: a partial, then its final with its translation."""
    out = []
    for i in range(start, start + n):
        out += [caption(i, "partial", f"utterance {i}"), caption(i, "final", f"Utterance {i}.",
                                                                 translations={"es": f"Frase {i}."})]
    return out


# -- the same captions on host and edge -----------------------------------------------------------------

def test_host_and_edge_screens_see_the_same_events(redis_server):
    with host(redis_server.url) as h, edge(redis_server.url) as e:
        link = h.rooms["hall"]
        wait_until(lambda: "hall" in e.rooms, what="the edge to see the room")

        async def main():
            hs, hw = await view(h.port)
            es, ew = await view(e.port)
            for key in ("session", "room", "title", "seq", "reset", "protocol"):
                assert hw[key] == ew[key], key
            publish(link, *talk(5))
            link.sink.on_translation(3, "fr", "Phrase 3.")
            link.clear()
            publish(link, *talk(2, start=6))
            got_h, got_e = await events(hs), await events(es)
            assert got_h == got_e  # same events, same seq, same payloads, same order
            assert len(got_h) == 5 * 2 + 1 + 1 + 2 * 2
            assert [m["seq"] for m in got_h] == sorted({m["seq"] for m in got_h})
            # a screen that asked for one language gets the same filtered view from both
            hs2, _ = await view(h.port, langs=["es"])
            es2, _ = await view(e.port, langs=["es"])
            assert await events(hs2) == await events(es2)
            for ws in (hs, es, hs2, es2):
                await ws.close()
        asyncio.run(main())


def test_an_edge_started_late_serves_the_history_and_exact_resume(redis_server):
    with host(redis_server.url, history=5) as h:
        link = h.rooms["hall"]
        publish(link, *talk(12))

        async def host_view(**kw):
            ws, w = await view(h.port, **kw)
            got = await events(ws)
            await ws.close()
            return w, got

        host_welcome, host_history = asyncio.run(host_view())
        with edge(redis_server.url) as e:
            wait_until(lambda: edge_has(e, "hall", link.channel.log.seq), what="the edge to catch up")

            async def main():
                ws, w = await view(e.port)
                assert w["session"] == host_welcome["session"] and w["seq"] == host_welcome["seq"]
                assert await events(ws) == host_history  # the last 5 finals, as the host replays them
                await ws.close()
                # resume from the middle, as a screen coming from the host (or another edge) does
                middle = host_history[3]["seq"]
                _, expected = await host_view(since=middle, session=w["session"])
                ws, w2 = await view(e.port, since=middle, session=w["session"])
                assert not w2["reset"]
                assert await events(ws) == expected and expected
                await ws.close()
                # too old for what is retained, or another session: reset, as on the host
                ws, w3 = await view(e.port, since=1, session=w["session"])
                assert w3["reset"]
                await ws.close()
                ws, w4 = await view(e.port, since=middle, session="another-session")
                assert w4["reset"]
                await ws.close()
            asyncio.run(main())


# -- an edge killed with SIGKILL -------------------------------------------------------------------------

class Talker:
    """Publishes utterances into the host's room at ``rate`` per second from a thread."""

    def __init__(self, link, rate: float = 20.0):
        self.link, self.rate = link, rate
        self.stop_ = threading.Event()
        self.n = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop_.is_set():
            self.n += 1
            self.link.sink.on_caption(caption(self.n, "partial", f"utterance {self.n}"))
            self.link.sink.on_caption(caption(self.n, "final", f"Utterance {self.n}."))
            time.sleep(1 / self.rate)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_.set()
        self.thread.join()


def finals_of(msgs: list[dict]) -> list[int]:
    return [m["id"] for m in msgs if m.get("type") == "caption" and m.get("kind") == "final"]


def test_a_screen_moves_to_another_edge_after_kill_9_without_gap_or_duplicate(redis_server):
    with host(redis_server.url) as h, edge_process(redis_server.url) as (a, port_a), \
            edge_process(redis_server.url) as (b, port_b):
        link = h.rooms["hall"]

        async def main():
            received: list[dict] = []
            ws, w = await view(port_a)
            session = w["session"]
            with Talker(link):
                async with asyncio.timeout(10):
                    while len(finals_of(received)) < 10:
                        m = await recv_json(ws)
                        if m["type"] != "status":
                            received.append(m)
                os.kill(a.pid, signal.SIGKILL)
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(10):
                        while True:
                            m = await recv_json(ws)
                            if m["type"] != "status":
                                received.append(m)
                await asyncio.sleep(0.5)  # captions go on meanwhile: the screen must get them from b
                ws, w = await view(port_b, since=received[-1]["seq"], session=session)
                assert not w["reset"] and w["session"] == session
                async with asyncio.timeout(10):
                    while len(finals_of(received)) < 40:
                        m = await recv_json(ws)
                        if m["type"] != "status":
                            received.append(m)
            received += await events(ws, 1.0)
            await ws.close()
            seqs = [m["seq"] for m in received]
            assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs), "a duplicate or a reordering"
            finals = finals_of(received)
            assert finals == list(range(1, len(finals) + 1)), "a caption lost in the move"
        asyncio.run(main())
        assert a.wait(5) == -signal.SIGKILL


# -- a host killed with SIGKILL --------------------------------------------------------------------------

HOST_SCRIPT = """
import sys, time
from subtitler.config import ServerConfig
from subtitler.server import Server
from test_server import caption
server = Server(ServerConfig(host="127.0.0.1", port=0, token="venue-token", redis=sys.argv[1])).start()
link = server.add_room("hall", title="Hall")
link.sink.on_caption(caption(1, "final", sys.argv[2]))
print(server.port, flush=True)
time.sleep(3600)
"""


@contextlib.contextmanager
def host_process(redis_url: str, text: str):
    """A host in a process of its own (a test kills it as a power cut would): its port once up."""
    proc = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, redis_url, text], cwd=ROOT / "tests",
                            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read()
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def test_a_room_whose_host_died_shows_offline_then_closes_and_comes_back_with_a_new_host(redis_server, caplog):
    with edge(redis_server.url) as e:
        e.follower.stale_s, e.follower.expiry_s = 1.5, 4.0

        def state() -> str | None:
            rooms = {r["name"]: r for r in json.loads(http_get(e.port, "/api/venue")[2])["rooms"]}
            return rooms["hall"]["state"] if "hall" in rooms else None

        async def main():
            with host_process(redis_server.url, "Before the power cut.") as h:
                wait_until(lambda: edge_has(e, "hall", 1), what="the host's caption on the edge")
                ws, _ = await view(e.port)
                assert [m["text"] for m in await events(ws)] == ["Before the power cut."]
                assert state() != "offline"
                h.kill()  # no "closed" entry: the registry keeps the dead host's last word
                h.wait(10)
            async with asyncio.timeout(6):  # offline: the screen stays and is told; the venue page says so
                while not (m := await recv_json(ws)).get("offline"):
                    assert m["type"] == "status", m
            assert m["in_speech"] is False
            assert state() == "offline"
            health = json.loads(http_get(e.port, "/healthz")[2])
            assert health["status"] == "degraded"
            assert any("room hall: its host has not published" in p for p in health["problems"]), health
            with pytest.raises(ConnectionClosed) as closed:  # expired: closed like a room the host closed
                async with asyncio.timeout(8):
                    while True:
                        await recv_json(ws)
            assert closed.value.rcvd.code == 1001
            assert state() is None and http_get(e.port, "/rooms/hall/live.html")[0] == 404
            time.sleep(1.5)  # the dead entry is still in Redis: it must not bring the room back
            assert "hall" not in e.rooms
            with host_process(redis_server.url, "After the restart."):  # the host comes back
                wait_until(lambda: edge_has(e, "hall", 1) and state() not in (None, "offline"), 10,
                           "the room back on the edge")
                ws, welcome = await view(e.port)
                assert [m["text"] for m in await events(ws)] == ["After the restart."]
                await ws.close()
        asyncio.run(main())
    assert any("closed here, its host silent" in r.message for r in caplog.records)


def test_a_new_edge_does_not_bring_back_the_rooms_of_a_host_that_died_long_ago(redis_server):
    # What a host killed an hour ago left in the registry (its clock in "t")
    dead = {"title": "Old", "session": "s-old", "targets": [], "t": time.time() - 3600}
    redis_server.cli("HSET", "subtitler:rooms", "old", json.dumps(dead))
    with host(redis_server.url), edge(redis_server.url) as e:
        wait_until(lambda: "hall" in e.rooms, what="the live host's room")
        time.sleep(1.5)  # another registry read
        assert "old" not in e.rooms
        assert [r["name"] for r in json.loads(http_get(e.port, "/api/venue")[2])["rooms"]] == ["hall"]
        assert http_get(e.port, "/rooms/old/live.html")[0] == 404
        dead["t"] = time.time()  # a host writes the room again: it opens
        redis_server.cli("HSET", "subtitler:rooms", "old", json.dumps(dead))
        wait_until(lambda: "old" in e.rooms, what="the room written anew")


def test_an_edge_removes_what_a_dead_host_left_in_redis_and_nothing_a_live_host_wrote(redis_server, monkeypatch):
    """A venue whose hosts crash now and then would otherwise keep their rooms in Redis forever:
    an edge removes an entry (and its stream) that it has judged dead for ``purge_s``."""
    monkeypatch.setattr(edge_module, "REGISTRY_PURGE_S", 3.0)
    dead = json.dumps({"title": "Old", "session": "s-old", "targets": [], "t": time.time() - 3600})
    redis_server.cli("HSET", "subtitler:rooms", "old", dead)
    redis_server.cli("XADD", "subtitler:room:old", "*", "seq", "1")
    with host(redis_server.url), edge(redis_server.url) as e:
        wait_until(lambda: "old" in e.follower.expired, what="the entry judged dead")
        judged = e.follower.expired["old"][1]
        wait_until(lambda: redis_server.cli("HEXISTS", "subtitler:rooms", "old").strip() == "0", 15,
                   "the dead entry to be removed")
        assert time.monotonic() - judged >= 3.0  # not before it had been dead that long
        assert redis_server.cli("EXISTS", "subtitler:room:old").strip() == "0"
        wait_until(lambda: "hall" in e.rooms, what="the live host's room")
        assert redis_server.cli("HEXISTS", "subtitler:rooms", "hall").strip() == "1"  # the live one stays
        assert parse_prometheus(http_get(e.port, "/metrics")[2].decode())["subtitler_edge_rooms_purged_total"] == 1
        assert "hall" in e.rooms and "old" not in e.rooms
    # Only the entry judged dead goes: one a host wrote anew since stays, with its stream.
    redis_server.cli("HSET", "subtitler:rooms", "back", "new")
    redis_server.cli("XADD", "subtitler:room:back", "*", "seq", "1")
    assert redis_server.cli("EVAL", PURGE_SCRIPT, "2", "subtitler:rooms", "subtitler:room:back", "back",
                            "old").strip() == "0"
    assert redis_server.cli("HGET", "subtitler:rooms", "back").strip() == "new"
    assert redis_server.cli("EXISTS", "subtitler:room:back").strip() == "1"


def test_an_edge_that_may_not_run_scripts_leaves_dead_rooms_in_redis_and_goes_on(redis_server, caplog):
    redis_server.cli("ACL", "SETUSER", "edge", "on", ">edge-pass", "~*", "&*", "+@all", "-eval")
    dead = json.dumps({"title": "Old", "session": "s-old", "targets": [], "t": time.time() - 3600})
    redis_server.cli("HSET", "subtitler:rooms", "old", dead)
    url = f"redis://edge:edge-pass@{HOST}:{redis_server.port}/0"
    with host(redis_server.url), edge(url) as e:
        e.follower.purge_s = 0.5
        wait_until(lambda: not e.follower.purging, 10, "the refused script")
        time.sleep(1.5)
        assert e.follower.connected and e.follower.outages == 0  # a refusal is not an outage
        assert "hall" in e.rooms
        assert redis_server.cli("HEXISTS", "subtitler:rooms", "old").strip() == "1"
    warnings = [r.getMessage() for r in caplog.records if "cannot remove dead rooms" in r.getMessage()]
    assert len(warnings) == 1 and "they stay in subtitler:rooms" in warnings[0], warnings


# -- Redis down, restarted, slow ----------------------------------------------------------------------

def test_redis_stopped_and_restarted_the_host_goes_on_and_edges_fill_the_gap(redis_server, caplog):
    with host(redis_server.url) as h, edge(redis_server.url) as e:
        link = h.rooms["hall"]
        wait_until(lambda: "hall" in e.rooms, what="the edge to see the room")

        async def main():
            hs, _ = await view(h.port)
            es, ew = await view(e.port)
            publish(link, *talk(3))
            wait_until(lambda: edge_has(e, "hall", link.channel.log.seq), what="the edge")
            redis_server.stop()
            wait_until(lambda: not h.publisher.connected or h.publisher.error, what="the host to notice")
            t0 = time.monotonic()
            publish(link, *talk(4, start=4))  # the host captions on: its own screens see it at once
            assert time.monotonic() - t0 < 1.0
            got_h = await events(hs)
            assert finals_of(got_h) == [1, 2, 3, 4, 5, 6, 7]
            wait_until(lambda: h.publisher.error is not None, what="the outage to be noticed")
            status, _, body = http_get(h.port, "/healthz")
            health = json.loads(body)
            assert health["status"] == "degraded" and health["redis"]["connected"] is False
            assert any("redis" in p for p in health["problems"])
            metrics = parse_prometheus(http_get(h.port, "/metrics")[2].decode())
            assert metrics["subtitler_redis_connected"] == 0
            warnings = [r for r in caplog.records if r.name == "subtitler.broker" and "unreachable" in r.getMessage()]
            assert len(warnings) == 1, "said once, not per caption"
            redis_server.start()  # empty: no persistence
            wait_until(lambda: h.publisher.connected, 15, "publishing to resume")
            publish(link, *talk(1, start=8))
            got_e = await events(es, 3.0)
            # the edge's screen got everything it missed, once each, in order
            assert finals_of(got_e) == [1, 2, 3, 4, 5, 6, 7, 8]
            seqs = [m["seq"] for m in got_e]
            assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
            assert json.loads(http_get(h.port, "/healthz")[2])["status"] == "ok"
            # a screen arriving on the edge now gets the host's history
            es2, _ = await view(e.port)
            hs2, _ = await view(h.port)
            assert await events(es2) == await events(hs2)
            for ws in (hs, es, es2, hs2):
                await ws.close()
        asyncio.run(main())


def test_a_redis_outage_longer_than_the_room_expiry_closes_no_room(redis_server):
    with host(redis_server.url) as h, edge(redis_server.url) as e:
        e.follower.stale_s, e.follower.expiry_s = 1.0, 2.0
        wait_until(lambda: "hall" in e.rooms, what="the edge to see the room")

        async def main():
            ws, _ = await view(e.port)
            redis_server.stop()
            await asyncio.sleep(3.5)  # the hosts cannot be heard, and that is not their silence
            redis_server.start()
            wait_until(lambda: h.publisher.connected and e.follower.connected, 15, "both back on Redis")
            publish(h.rooms["hall"], *talk(1))
            got = await events(ws, 2.0)  # the screen stayed connected (a closed one raises here)
            assert finals_of(got) == [1]
            assert not e.rooms["hall"].offline
            await ws.close()
        asyncio.run(main())


def test_a_stalled_redis_or_a_stuck_screen_never_delays_the_host(redis_server):
    with host(redis_server.url) as h, edge(redis_server.url, client_queue=16, client_timeout_s=2.0) as e:
        link = h.rooms["hall"]
        wait_until(lambda: "hall" in e.rooms, what="the edge to see the room")

        async def main():
            hs, _ = await view(h.port)
            good, _ = await view(e.port)
            # a screen on the edge that never reads (its socket buffers fill up)
            stuck = socket.create_connection((HOST, e.port))
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.sendall(b"GET /rooms/hall/ws/view HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            stuck.sendall(bytes([0x81, 0x80 | 17, 1, 2, 3, 4]) + bytes(b ^ k for b, k in zip(
                b'{"type":"hello"}\n', b"\x01\x02\x03\x04" * 5)))
            # Redis itself stalls (SIGSTOP): the host's publisher waits on it, never the host
            os.kill(redis_server.proc.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                big = "x" * 2000
                publish(link, *[caption(i, "final", f"{big} {i}") for i in range(1, 41)])
                assert time.monotonic() - t0 < 2.0
                got_h = await events(hs, 0.5)
                assert finals_of(got_h) == list(range(1, 41))
            finally:
                os.kill(redis_server.proc.pid, signal.SIGCONT)
            wait_until(lambda: edge_has(e, "hall", link.channel.log.seq), 20, "the edge to catch up")
            got = await events(good, 1.0)
            assert finals_of(got) == list(range(1, 41))  # within the host's history: nothing lost
            stuck.close()
            await hs.close()
            await good.close()
        asyncio.run(main())


def test_a_stopped_edge_delays_neither_the_host_nor_another_edge(redis_server):
    with host(redis_server.url) as h, edge_process(redis_server.url) as (a, port_a), \
            edge_process(redis_server.url) as (b, port_b):
        link = h.rooms["hall"]

        async def main():
            slow, _ = await view(port_a)
            fast, _ = await view(port_b)
            hs, _ = await view(h.port)
            os.kill(a.pid, signal.SIGSTOP)  # edge A stops dead (a swapped-out or overloaded machine)
            try:
                t0 = time.monotonic()
                publish(link, *talk(20))
                assert time.monotonic() - t0 < 1.0
                got_b = []
                async with asyncio.timeout(5):  # edge B and the host on time, in spite of A
                    while finals_of(got_b) != list(range(1, 21)):
                        m = await recv_json(fast)
                        if m["type"] != "status":
                            got_b.append(m)
                assert finals_of(await events(hs)) == list(range(1, 21))
            finally:
                os.kill(a.pid, signal.SIGCONT)
            got_a = await events(slow, 2.0)  # A, once running again, catches up from the stream
            assert finals_of(got_a) == list(range(1, 21))
            assert [m["seq"] for m in got_a] == [m["seq"] for m in got_b]
            for ws in (slow, fast, hs):
                await ws.close()
        asyncio.run(main())


# -- a password, TLS, bad URLs -----------------------------------------------------------------------------

def test_redis_with_a_password(tmp_path):
    r = RedisProcess(tmp_path, password="s3cret pass")
    try:
        r.password = "s3cret%20pass"  # a URL carries it percent-encoded
        url = r.url
        with host(url) as h, edge(url) as e:
            wait_until(lambda: "hall" in e.rooms, what="the edge to see the room")
            publish(h.rooms["hall"], *talk(2))
            wait_until(lambda: edge_has(e, "hall", 4), what="captions through a password-protected Redis")
            assert json.loads(http_get(e.port, "/healthz")[2])["redis"]["url"].endswith(f":{r.port}/0")
            assert "s3cret" not in http_get(e.port, "/healthz")[2].decode()
        wrong = f"redis://:wrong@{HOST}:{r.port}/0"
        with edge(wrong) as e:
            wait_until(lambda: e.follower.error is not None, what="the refusal")
            health = json.loads(http_get(e.port, "/healthz")[2])
            assert health["status"] == "degraded" and "wrong" not in json.dumps(health)
            assert any("password" in p.lower() or "auth" in p.lower() for p in health["problems"]), health
    finally:
        r.stop()


def _self_signed(tmp: Path) -> dict:
    """redis-server's TLS files: a self-signed certificate for 127.0.0.1 that is its own CA."""
    cert, key = make_certificate(tmp)
    return {"cert": str(cert), "key": str(key), "ca": str(cert)}


def test_redis_over_tls(tmp_path):
    r = RedisProcess(tmp_path, tls=_self_signed(tmp_path))
    try:
        assert r.url.startswith("rediss://")
        with host(r.url) as h, edge(r.url) as e:
            wait_until(lambda: "hall" in e.rooms, what="the edge to see the room over TLS")
            publish(h.rooms["hall"], *talk(2))
            wait_until(lambda: edge_has(e, "hall", 4), what="captions over rediss://")
            assert "hall" in r.cli("HKEYS", "subtitler:rooms")
        # a client that does not trust the certificate is refused, and says why
        untrusted = r.url.partition("?")[0]
        with edge(untrusted) as e:
            wait_until(lambda: e.follower.error is not None, what="the refusal")
            assert "certificate" in e.follower.error.lower(), e.follower.error
    finally:
        r.stop()


def test_bad_redis_urls_are_refused_with_a_clear_error():
    with pytest.raises(ServerError, match="not a Redis URL"):
        Server(ServerConfig(host=HOST, port=0, redis="http://127.0.0.1:6379"))
    with pytest.raises(ServerError, match="needs the host's Redis"):
        EdgeServer(ServerConfig(host=HOST, port=0), "")
    out = subprocess.run([sys.executable, "-m", "subtitler", "edge", "--redis", "127.0.0.1:6379"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "redis://HOST:PORT/0" in out.stderr


# -- what an edge serves and refuses; its metrics ------------------------------------------------------------

def test_an_edge_serves_pages_and_screens_only(redis_server):
    with host(redis_server.url, rooms=(("hall", ("es",)), ("forum", ()))) as h, edge(redis_server.url) as e:
        wait_until(lambda: set(e.rooms) == {"hall", "forum"}, what="both rooms on the edge")
        for path in ("/", "/rooms/hall/overlay.html", "/rooms/hall/live.html", "/rooms/forum/client.js",
                     "/rooms/hall/qr.svg"):
            assert http_get(e.port, path)[0] == 200, path
        venue = json.loads(http_get(e.port, "/api/venue")[2])
        assert sorted(r["name"] for r in venue["rooms"]) == ["forum", "hall"]
        assert all("console" not in r["urls"] for r in venue["rooms"])
        for path in ("/rooms/hall/console.html", "/rooms/hall/api/session", "/rooms/hall/transcripts/x.srt"):
            status, _, body = http_get(e.port, path)
            assert status == 403 and b"on the host" in body, path

        async def main():
            for path in ("/rooms/hall/ws/control", "/rooms/hall/ws/audio", "/ws/venue"):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(f"ws://{HOST}:{e.port}{path}")
                assert refused.value.response.status_code == 403
                assert b"subtitler serve" in refused.value.response.body
            ws, _ = await view(e.port, room="forum")
            publish(h.rooms["forum"], *talk(3))
            await events(ws)
            metrics = parse_prometheus(http_get(e.port, "/metrics")[2].decode())
            assert metrics['subtitler_edge_screens{room="forum"}'] == 1
            assert metrics['subtitler_edge_messages_sent_total{room="forum"}'] == 6
            assert metrics['subtitler_edge_events_relayed_total{room="forum"}'] == 6
            assert metrics["subtitler_edge_delay_seconds_count"] >= 6
            assert 0 <= metrics['subtitler_edge_delay_seconds{quantile="0.99"}'] < 1.0
            assert metrics["subtitler_redis_connected"] == 1
            await ws.close()
            # a room closed on the host closes on the edge
            h.remove_room("forum", drain=0.1)
            wait_until(lambda: "forum" not in e.rooms, what="the room to close on the edge")
            assert http_get(e.port, "/rooms/forum/live.html")[0] == 404
        asyncio.run(main())
