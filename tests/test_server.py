"""One room on the server, on loopback with real WebSocket clients (no model; the ingest path with
the real model is in test_ingest.py; several rooms on one server are in test_venue_server.py).

A real ``Server`` runs in its background thread exactly as ``subtitler run`` starts it: a venue
of one default room, whose single-room paths (/ws/view, /overlay.html …) these tests use.
Captions enter through the room's sink from the test's thread as the engine would publish
them; the clients are the ``websockets`` library's own client, raw sockets for malformed frames
and ``http.client`` for the pages. Everything binds 127.0.0.1 only, on a free port.

Measured on the 2-core dev box, for the bounds below:
  * slow client: its queue overflows and it is closed (1013) ~0.4 s after it stopped reading;
    the fast client's caption delay meanwhile p50 ~1 ms, p90 ~3 ms, max ~30 ms (bounds: p90
    0.25 s, max 1 s).
  * 500 viewers connect in ~1.7 s, get a burst of 10 partials + 10 finals in ~1.6 s and are
    gone in ~0.1 s (bound 60 s for all of it).
  * fuzzing: 3 × 60 message sequences + 60 raw frames in ~8 s; nothing logged at ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from subtitler.audio import FileSource, PushSource
from subtitler.captions import Caption, SessionStats
from subtitler.config import ServerConfig
from subtitler.send import send_audio
from subtitler.server import PROTOCOL_VERSION, Server, ServerError

HOST = "127.0.0.1"
TOKEN = "s3cret-t0ken"


# -- helpers --------------------------------------------------------------------------------

class Controls:
    """Stands in for engine.Session's control surface (pause/resume/set_language/stats)."""

    languages = ("en", "es", "zh")

    def __init__(self):
        self.paused = False
        self.language = None
        self.calls: list[str] = []
        self.audio_seconds = 0.0

    def pause(self):
        self.calls.append("pause")
        self.paused = True

    def resume(self):
        self.calls.append("resume")
        self.paused = False

    def set_language(self, language):
        if language is not None and language not in self.languages:
            raise ValueError(f"'{language}' is not a language of this model; allowed: auto, en, es, zh")
        self.calls.append(f"set_language:{language}")
        self.language = language

    def stats(self) -> SessionStats:
        return SessionStats(audio_seconds=self.audio_seconds, lag=0.0, dropped_frames=0, utterances=0,
                            finals=0, in_speech=False, level_db=-40.0, paused=self.paused,
                            language=self.language or "auto")


def caption(cid: int, kind: str = "final", text: str | None = None, translations: dict | None = None,
            lang: str = "en") -> Caption:
    text = f"caption {cid} {kind}" if text is None else text
    return Caption(id=cid, seq=0, kind=kind, start=float(cid), end=cid + 0.8, emitted=cid + 1.5, lang=lang,
                   text=text, committed=text if kind == "final" else "", tentative="" if kind == "final" else text,
                   translations=dict(translations or {}))


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def publish(server: Server, *captions: Caption) -> None:
    """Publish as the engine does (from another thread) and wait until the hub has logged them."""
    target = room(server).channel.log.seq + len(captions)
    for c in captions:
        room(server).sink.on_caption(c)
    wait_until(lambda: room(server).channel.log.seq >= target, what="captions to be logged")


def translate(server: Server, cid: int, lang: str, text: str) -> None:
    target = room(server).channel.log.seq + 1
    room(server).sink.on_translation(cid, lang, text)
    wait_until(lambda: room(server).channel.log.seq >= target, what="the translation to be logged")


@contextlib.contextmanager
def running(tmp_path: Path | None = None, languages=(), **settings_) -> Server:
    """A server with one default room, as `subtitler run` makes it (room token = venue token)."""
    options = dict(host=HOST, port=0, token=TOKEN)
    options.update(settings_)
    web = None
    if tmp_path is not None:
        web = tmp_path / "web"
        web.mkdir(exist_ok=True)
    server = Server(ServerConfig(**options), web_dir=web).start()
    server.add_room("main", token=TOKEN, languages=languages, default=True)
    try:
        yield server
    finally:
        server.stop(drain=0.5)


def room(server: Server):
    """The default room's RoomLink."""
    return server.default_room


def ws_url(server: Server, path: str) -> str:
    return f"ws://{HOST}:{server.port}{path}"


async def recv_json(ws, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def recv_reply(ws, timeout: float = 5.0) -> dict:
    """The next message on /ws/audio that is not an ``ack``."""
    while True:
        msg = await recv_json(ws, timeout)
        if msg["type"] != "ack":
            return msg


async def recv_event(ws, timeout: float = 5.0) -> dict:
    """The next message that is not a status heartbeat."""
    while True:
        msg = await recv_json(ws, timeout)
        if msg["type"] != "status":
            return msg


async def join(server: Server, langs=("*",), since: int = 0, session: str | None = None, **kw):
    ws = await connect(ws_url(server, "/ws/view"), **kw)
    hello = {"type": "hello", "langs": list(langs), "since": since}
    if session is not None:
        hello["session"] = session
    await ws.send(json.dumps(hello))
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def drain_events(ws, quiet: float = 0.3) -> list[dict]:
    """Every non-status event until nothing arrives for ``quiet`` seconds."""
    out = []
    while True:
        try:
            msg = await recv_json(ws, quiet)
        except TimeoutError:
            return out
        if msg["type"] != "status":
            out.append(msg)


async def closed_with(ws, timeout: float = 5.0) -> int | None:
    """Read until the server closes; the close code it sent."""
    try:
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    except ConnectionClosed:
        pass
    return ws.close_code


def screen(events: list[dict], state: dict | None = None) -> dict:
    """What a screen shows after ``events``: utterance id → (text, translations)."""
    state = {} if state is None else state
    for e in events:
        if e["type"] == "clear":
            state.clear()
        elif e["type"] == "caption":
            if e["kind"] == "final" and not e["text"]:
                state.pop(e["id"], None)
            else:
                state[e["id"]] = (e["text"], dict(e["translations"]))
        elif e["type"] == "translation" and e["id"] in state:
            state[e["id"]][1][e["lang"]] = e["text"]
    return state


# -- viewers --------------------------------------------------------------------------------

def test_history_on_join_then_live():
    with running(history=3) as server:
        for i in range(1, 6):
            publish(server, caption(i, "partial"), caption(i, "final"))
        publish(server, caption(6, "partial", "six in progress"))

        async def main():
            ws, welcome = await join(server)
            assert welcome["protocol"] == PROTOCOL_VERSION and welcome["session"] == room(server).session_id
            assert welcome["seq"] == room(server).channel.log.seq and welcome["reset"] is False
            assert welcome["paused"] is False and welcome["languages"] == ["en"]
            history = [await recv_event(ws) for _ in range(4)]
            # The last 3 finals and the partial in progress, in order, marked as history.
            assert [(e["id"], e["kind"]) for e in history] == [(3, "final"), (4, "final"), (5, "final"),
                                                               (6, "partial")]
            assert all(e["history"] is True for e in history)
            assert [e["seq"] for e in history] == sorted(e["seq"] for e in history)
            assert history[-1]["text"] == "six in progress" and history[0]["text"] == "caption 3 final"
            publish(server, caption(6, "final", "six done."))
            live = await recv_event(ws)
            assert live["type"] == "caption" and live["kind"] == "final" and live["text"] == "six done."
            assert "history" not in live and live["seq"] == room(server).channel.log.seq
            assert set(live) >= {"id", "seq", "kind", "start", "end", "emitted", "lang", "text", "committed",
                                 "tentative", "translations"}
            await ws.close()
        asyncio.run(main())


def test_resume_after_reconnect_has_no_gaps_or_duplicates():
    """A screen that drops and comes back with ``since`` ends up showing exactly what a screen
    connected all along shows, and never receives an event twice."""
    with running(history=50) as server:
        rng = np.random.default_rng(7)

        async def main():
            steady, _ = await join(server)
            seen_steady: list[dict] = []
            flaky, welcome = await join(server)
            session, last, seen_flaky = welcome["session"], welcome["seq"], []
            cid = 0
            for round_ in range(6):
                # Publish a stretch: partials (most superseded), finals, a late translation, a retraction.
                for _ in range(4):
                    cid += 1
                    for k in range(int(rng.integers(1, 4))):
                        publish(server, caption(cid, "partial", f"u{cid} p{k}"))
                    retract = rng.random() < 0.2
                    publish(server, caption(cid, "final", "" if retract else f"u{cid} final",
                                            translations={} if retract else {"es": f"es {cid}"}))
                    if not retract:
                        translate(server, cid, "zh", f"zh {cid}")
                if round_ == 3:
                    room(server).clear()
                cid += 1
                publish(server, caption(cid, "partial", f"u{cid} in progress"))
                seen_steady += await drain_events(steady, 0.2)
                if round_ % 2 == 0:  # the flaky screen reads, then drops before the next stretch
                    got = await drain_events(flaky, 0.2)
                    seen_flaky += got
                    if got:
                        last = got[-1]["seq"]
                    await flaky.close()
                else:  # ...and comes back after it, resuming from the last seq it processed
                    flaky, welcome = await join(server, since=last, session=session)
                    assert welcome["reset"] is False
                    got = await drain_events(flaky, 0.2)
                    assert all(e["seq"] > last for e in got), "replayed something already seen"
                    seen_flaky += got
                    if got:
                        last = got[-1]["seq"]
            seqs = [e["seq"] for e in seen_flaky]
            assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
            assert screen(seen_flaky) == screen(seen_steady) and screen(seen_steady)
            await steady.close()
            await flaky.close()
        asyncio.run(main())


def test_resume_resets_when_history_is_gone_or_session_differs():
    with running(history=2) as server:
        publish(server, *(caption(i) for i in range(1, 3)))

        async def main():
            _, w = await join(server)
            old = w["seq"]
            publish(server, *(caption(i) for i in range(3, 8)))  # evicts what `old` knew about
            ws, w = await join(server, since=old, session=room(server).session_id)
            assert w["reset"] is True
            events = await drain_events(ws)
            assert [e["id"] for e in events] == [6, 7] and all(e["history"] for e in events)
            await ws.close()
            # A seq from another session (the server restarted): reset, full history.
            ws, w = await join(server, since=1, session="2020-01-01_00-00-00-dead")
            assert w["reset"] is True and [e["id"] for e in await drain_events(ws)] == [6, 7]
            await ws.close()
            # A seq newer than anything sent: also from another life of the server.
            ws, w = await join(server, since=10_000)
            assert w["reset"] is True
            await ws.close()
        asyncio.run(main())


def test_clear_reaches_screens_and_hides_earlier_history():
    with running() as server:
        publish(server, caption(1), caption(2))

        async def main():
            ws, _ = await join(server)
            await drain_events(ws, 0.2)
            room(server).clear()
            assert (await recv_event(ws))["type"] == "clear"
            publish(server, caption(3))
            assert (await recv_event(ws))["id"] == 3
            late, _ = await join(server)  # joins after the clear: sees nothing from before it
            events = await drain_events(late, 0.2)
            assert [e["type"] for e in events] == ["clear", "caption"] and events[1]["id"] == 3
            assert screen(events) == {3: ("caption 3 final", {})}
            await ws.close()
            await late.close()
        asyncio.run(main())


def test_languages_are_filtered_per_screen():
    with running() as server:
        async def main():
            zh, _ = await join(server, langs=["zh"])
            es_src, _ = await join(server, langs=["es", "source"])
            everything, _ = await join(server, langs=["*"])
            publish(server, caption(1, "final", "Good morning.", {"zh": "早上好。", "es": "Buenos días.",
                                                                  "de": "Guten Morgen."}))
            room(server).sink.on_translation(1, "zh", "早安。")
            room(server).sink.on_translation(1, "fr", "Bonjour.")
            wait_until(lambda: room(server).channel.log.seq == 3)
            got = {name: await drain_events(ws, 0.3) for name, ws in
                   (("zh", zh), ("es", es_src), ("all", everything))}
            for name, events in got.items():  # every screen gets the caption itself
                assert events[0]["type"] == "caption" and events[0]["text"] == "Good morning.", events
            assert got["zh"][0]["translations"] == {"zh": "早上好。"}
            assert got["es"][0]["translations"] == {"es": "Buenos días."}
            assert got["all"][0]["translations"] == {"zh": "早上好。", "es": "Buenos días.", "de": "Guten Morgen."}
            assert [(e["lang"], e["text"]) for e in got["zh"][1:]] == [("zh", "早安。")]
            assert got["es"][1:] == []
            assert [e["lang"] for e in got["all"][1:]] == ["zh", "fr"]
            # A late joiner gets the same filtering in its history.
            late, w = await join(server, langs=["es"])
            assert w["languages"] == ["de", "en", "es", "fr", "zh"]
            history = await drain_events(late, 0.3)
            assert [e["type"] for e in history] == ["caption"] and history[0]["translations"] == {"es": "Buenos días."}
            for ws in (zh, es_src, everything, late):
                await ws.close()
        asyncio.run(main())


@pytest.mark.parametrize("hello, code", [
    ({"type": "hello", "langs": "zh"}, "bad_langs"),
    ({"type": "hello", "langs": []}, "bad_langs"),
    ({"type": "hello", "langs": ["zh", "<script>"]}, "bad_langs"),
    ({"type": "hello", "since": -1}, "bad_message"),
    ({"type": "hello", "since": "12"}, "bad_message"),
    ({"type": "pause"}, "hello_required"),
    ([1, 2], "bad_message"),
])
def test_bad_hello_is_refused_with_one_error(hello, code):
    with running() as server:
        async def main():
            async with connect(ws_url(server, "/ws/view")) as ws:
                await ws.send(json.dumps(hello))
                err = await recv_json(ws)
                assert err["type"] == "error" and err["code"] == code and err["message"], err
                assert await closed_with(ws) == 1008
        asyncio.run(main())


# -- control --------------------------------------------------------------------------------

def test_control_requires_the_token_and_viewers_cannot_steer():
    with running() as server:
        controls = Controls()
        room(server).attach(controls, source_languages=Controls.languages)

        async def main():
            viewer, _ = await join(server)
            # A viewer's commands are refused, and nothing happens.
            await viewer.send(json.dumps({"type": "pause"}))
            err = await recv_event(viewer)
            assert err["code"] == "viewer_read_only"
            # No auth first, a wrong token, a token of the wrong type: refused and closed with 1008.
            # (Each from its own address: wrong tokens in a row from one are slowed down, test_limits.)
            for i, first in enumerate(({"type": "pause"}, {"type": "auth", "token": "wrong"},
                                       {"type": "auth", "token": 1}, {"type": "auth"},
                                       {"type": "auth", "token": TOKEN + "x"})):
                async with connect(ws_url(server, "/ws/control"), local_addr=(f"127.0.0.{10 + i}", 0)) as ws:
                    await ws.send(json.dumps(first))
                    err = await recv_json(ws)
                    assert err["type"] == "error" and err["code"] in ("unauthorized", "auth_required"), err
                    assert await closed_with(ws) == 1008
            assert controls.calls == []
            # A browser page from another site is refused at the handshake, before any token.
            with pytest.raises(InvalidStatus) as e:
                await connect(ws_url(server, "/ws/control"), origin="http://evil.example")
            assert e.value.response.status_code == 403
            # The console, from the server's own origin, with the token.
            async with connect(ws_url(server, "/ws/control"), origin=f"http://{HOST}:{server.port}") as ws:
                await ws.send(json.dumps({"type": "auth", "token": TOKEN}))
                ok = await recv_json(ws)
                assert ok == {"type": "ok", "command": "auth", "session": room(server).session_id,
                              "protocol": PROTOCOL_VERSION, "source_languages": list(Controls.languages)}
                assert (await recv_json(ws))["type"] == "status"

                async def command(msg: dict) -> dict:
                    await ws.send(json.dumps(msg))
                    return await recv_event(ws)

                assert await command({"type": "pause"}) == {"type": "ok", "command": "pause"}
                assert controls.paused
                status = await recv_json(viewer)  # screens hear about it at once
                while status["type"] != "status":
                    status = await recv_json(viewer)
                assert status["paused"] is True
                assert await command({"type": "resume"}) == {"type": "ok", "command": "resume"}
                assert (await command({"type": "set_language", "language": "es"}))["language"] == "es"
                assert controls.language == "es"
                assert (await command({"type": "set_language", "language": "auto"}))["command"] == "set_language"
                assert controls.language is None
                err = await command({"type": "set_language", "language": "xx"})
                assert err["code"] == "bad_language" and "allowed: auto, en, es, zh" in err["message"]
                assert (await command({"type": "set_language"}))["code"] == "bad_message"
                assert (await command({"type": "reboot"}))["code"] == "unknown_command"
                assert await command({"type": "clear"}) == {"type": "ok", "command": "clear"}
                assert (await recv_event(viewer))["type"] == "clear"
            assert controls.calls == ["pause", "resume", "set_language:es", "set_language:None"]
            await viewer.close()
        asyncio.run(main())


def test_screens_get_the_status_heartbeat_only_when_nothing_else_reached_them():
    """While captions flow, a screen's line is alive without the status of every second, so an
    edge with thousands of screens saves those messages; a change a screen shows still reaches
    it, consoles (level meter, counters) still get every second's, and when the captions stop
    the heartbeat resumes so that no screen takes its line for dead."""
    with running() as server:
        controls = Controls()
        room(server).attach(controls, source_languages=Controls.languages)
        flowing = threading.Event()
        stop = threading.Event()

        def feed():  # captions at 5 a second, as the engine publishes them, until told to stop
            k = 0
            flowing.set()
            while not stop.is_set():
                room(server).sink.on_caption(caption(k // 4, "final" if k % 4 == 3 else "partial"))
                controls.audio_seconds += 0.2  # the status changes every second, as it does live
                room(server).update_stats(controls.stats())
                k += 1
                time.sleep(0.2)

        async def statuses_during(ws, seconds: float) -> list[dict]:
            out, deadline = [], time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await recv_json(ws, left)
                except TimeoutError:
                    break
                if msg["type"] == "status":
                    out.append(msg)
            return out

        async def main():
            viewer, _ = await join(server)
            async with connect(ws_url(server, "/ws/control"), origin=f"http://{HOST}:{server.port}") as console:
                await console.send(json.dumps({"type": "auth", "token": TOKEN}))
                assert (await recv_json(console))["type"] == "ok"
                # Idle: the heartbeat reaches the screen every second.
                assert len(await statuses_during(viewer, 2.6)) >= 2
                feeder = threading.Thread(target=feed, daemon=True)
                feeder.start()
                flowing.wait(5)
                await asyncio.sleep(0.3)
                both = await asyncio.gather(statuses_during(viewer, 3.5), statuses_during(console, 3.5))
                assert both[0] == [], both[0]  # captions kept the screen's line alive
                assert len(both[1]) >= 3  # the console's counters move every second
                # A change the screen shows (the spoken language set elsewhere) reaches it at the
                # next heartbeat, captions or not.
                controls.language = "es"
                seen = await statuses_during(viewer, 2.2)
                assert [m["language"] for m in seen] == ["es"]
                stop.set()
                feeder.join(5)
                # Captions over: the heartbeat is back within a second or so.
                await drain_events(viewer, quiet=0.05)
                assert len(await statuses_during(viewer, 2.6)) >= 2
            await viewer.close()
        try:
            asyncio.run(main())
        finally:
            stop.set()


def test_control_before_the_session_is_attached_says_not_ready():
    with running() as server:
        async def main():
            async with connect(ws_url(server, "/ws/control")) as ws:
                await ws.send(json.dumps({"type": "auth", "token": TOKEN}))
                assert (await recv_json(ws))["source_languages"] == []
                await ws.send(json.dumps({"type": "pause"}))
                err = await recv_event(ws)
                assert err["code"] == "not_ready" and "loading the model" in err["message"]
        asyncio.run(main())


# -- slow and many clients ------------------------------------------------------------------

def test_slow_client_is_disconnected_while_a_fast_one_keeps_up():
    timeout_s = 1.0
    with running(client_queue=16, client_timeout_s=timeout_s) as server:
        n, pad = 400, "x" * 30_000  # 12 MB in all: more than the kernel buffers a stuck reader

        async def main():
            # The stuck screen: tiny receive buffer, reads nothing.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((HOST, server.port))
            sock.setblocking(False)
            slow, _ = await join(server, sock=sock, max_queue=1)
            fast, _ = await join(server, max_size=None)
            delays: list[float] = []
            done = asyncio.Event()

            async def read_fast():
                while len(delays) < n:
                    msg = json.loads(await fast.recv())
                    if msg["type"] == "caption":
                        delays.append(time.monotonic() - float(msg["text"].split()[0]))
                done.set()

            def produce():
                for i in range(n):
                    room(server).sink.on_caption(caption(i, "final", f"{time.monotonic():.6f} {pad}"))
                    time.sleep(0.005)

            reader = asyncio.ensure_future(read_fast())
            t0 = time.monotonic()
            producer = threading.Thread(target=produce)
            producer.start()
            while room(server).metrics.slow_disconnects == 0 and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.02)
            dropped_after = time.monotonic() - t0
            assert room(server).metrics.slow_disconnects == 1, "the stuck screen was never disconnected"
            assert len(room(server).channel.viewers) == 1  # the fast one stays
            # The stuck screen, reading again, finds the close code that tells it to come back later.
            assert await closed_with(slow, 10) == 1013
            await asyncio.wait_for(done.wait(), 30)
            await asyncio.to_thread(producer.join)
            await reader
            delays.sort()
            p90, worst = delays[int(0.9 * len(delays))], delays[-1]
            print(f"slow screen dropped after {dropped_after:.2f} s; fast screen delay p50 "
                  f"{delays[len(delays) // 2] * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, max {worst * 1000:.1f} ms")
            assert len(delays) == n
            assert p90 < 0.25 and worst < 1.0, (p90, worst)
            await fast.close()
        asyncio.run(main())


def test_superseded_partials_are_dropped_not_queued():
    with running(client_queue=8, client_timeout_s=5.0) as server:
        async def main():
            ws, _ = await join(server)
            ws.transport.pause_reading()  # stop reading until the server has to queue
            big = "y" * 20_000
            for k in range(400):  # fills the socket; the queue then holds one partial, not hundreds
                room(server).sink.on_caption(caption(1, "partial", f"p{k} {big}"))
            publish(server, caption(1, "final", "the end"))
            wait_until(lambda: room(server).metrics.superseded > 0, what="a partial to be superseded")
            ws.transport.resume_reading()
            events = await drain_events(ws, 0.5)
            assert events[-1]["kind"] == "final" and events[-1]["text"] == "the end"
            assert room(server).metrics.slow_disconnects == 0  # partials never overflow the queue
            assert len(events) < 400
            await ws.close()
        asyncio.run(main())


def test_a_slow_clients_queue_keeps_the_newest_partial_and_overflows_at_its_limit():
    """channel.Outbox, pure: what the server keeps for a client that fell behind."""
    from subtitler.channel import Outbox, Overflow

    q = Outbox(limit=3)
    assert q.put(("p", 1), b"p1 a") == 0
    assert q.put(("status",), b"s1") == 0
    assert q.put(("p", 1), b"p1 b") == 1  # the newer partial replaces the queued one
    assert q.put(("status",), b"s2") == 0  # so does a newer status (not counted: nothing lost)
    assert q.put(("e", 7), b"final 1", drop=("p", 1)) == 1  # the final makes its partial moot
    assert len(q) == 2
    q.put(("r", 1), b"reply")
    with pytest.raises(Overflow, match="3 events waiting"):
        q.put(("e", 8), b"one too many")
    assert [q.pop() for _ in range(len(q))] == [b"s2", b"final 1", b"reply"]  # in order


def test_500_viewers_connect_receive_a_burst_and_leave():
    with running() as server:
        viewers, finals = 500, 10

        async def one(i: int, ready: asyncio.Event, started: list) -> list[str]:
            async with connect(ws_url(server, "/ws/view"), open_timeout=30) as ws:
                await ws.send(json.dumps({"type": "hello", "langs": ["*"]}))
                assert (await recv_json(ws, 30))["type"] == "welcome"
                started.append(i)
                if len(started) == viewers:
                    ready.set()
                texts = []
                while len(texts) < finals:
                    msg = await recv_json(ws, 30)
                    if msg["type"] == "caption" and msg["kind"] == "final":
                        texts.append(msg["text"])
                return texts

        async def main():
            t0 = time.monotonic()
            ready, started = asyncio.Event(), []
            tasks = [asyncio.ensure_future(one(i, ready, started)) for i in range(viewers)]
            await asyncio.wait_for(ready.wait(), 60)
            assert len(room(server).channel.viewers) == viewers
            t1 = time.monotonic()
            for i in range(finals):  # a burst: partials and finals as fast as the engine could
                room(server).sink.on_caption(caption(i, "partial"))
                room(server).sink.on_caption(caption(i, "final"))
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            t2 = time.monotonic()
            assert all(r == [f"caption {i} final" for i in range(finals)] for r in results)
            await asyncio.to_thread(wait_until, lambda: not room(server).channel.viewers, 30, "viewers to leave")
            t3 = time.monotonic()
            print(f"500 viewers: connected in {t1 - t0:.2f} s, burst delivered in {t2 - t1:.2f} s, "
                  f"gone in {t3 - t2:.2f} s")
            assert t3 - t0 < 60
        asyncio.run(main())


# -- hardening ------------------------------------------------------------------------------

def test_malformed_messages_get_one_error_each_and_the_server_goes_on():
    with running(max_message_bytes=4096) as server:
        async def main():
            ws, _ = await join(server)
            for bad, code in (("{not json", "bad_json"), ("[" * 50_00, "bad_json"), ('"just a string"', "bad_message"),
                              ('{"type": 5}', "bad_message"), (b"\x00\x01", "bad_message"),
                              ('{"type": "hello"}', "already_joined"), ('{"type": "caption"}', "viewer_read_only")):
                if isinstance(bad, str) and len(bad) > 4096:
                    bad = bad[:4000]
                await ws.send(bad)
                err = await recv_event(ws)
                assert err["type"] == "error" and err["code"] == code, (bad[:20], err)
            # Nested past the parser's recursion limit, within the size limit.
            await ws.send("[" * 4000)
            assert (await recv_event(ws))["code"] == "bad_json"
            # Too big: closed with 1009 by the WebSocket layer.
            await ws.send("x" * 5000)
            assert await closed_with(ws) == 1009
            # A flood of bad messages: closed with 1008 after 20.
            ws, _ = await join(server)
            for _ in range(25):
                with contextlib.suppress(ConnectionClosed):
                    await ws.send("nope")
            assert await closed_with(ws) == 1008
            ws, _ = await join(server)  # and the server still serves
            await ws.close()
        asyncio.run(main())


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
KEYS = st.sampled_from(["langs", "since", "session", "token", "language", "sample_rate", "channels", "format",
                        "realtime"]) | st.text(max_size=6)
TYPED = st.builds(lambda t, rest: json.dumps({**rest, "type": t}),
                  st.sampled_from(["hello", "auth", "pause", "resume", "clear", "set_language", "end", "status", "",
                                   "caption"]) | st.text(max_size=8),
                  st.dictionaries(KEYS, JSON | st.just(TOKEN) | st.lists(st.sampled_from(["zh", "*", "en"])),
                                  max_size=5))
MESSAGE = st.one_of(TYPED, st.text(max_size=300), st.binary(max_size=300),
                    st.builds(json.dumps, JSON))


class Errors(logging.Handler):
    """Collects what the server (and the asyncio loop it runs) log at ERROR: a handler that
    crashed, a failed callback. Fuzzing must leave this empty."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def fuzz_server():
    with running(max_message_bytes=2048) as server:
        controls = Controls()
        room(server).attach(controls, source_languages=Controls.languages)
        room(server).attach_ingest(PushSource(queue_seconds=5))
        yield server


@pytest.fixture
def errors():
    """What the server (and the asyncio loop it runs) logs at ERROR during one test."""
    handler = Errors()
    loggers = [logging.getLogger(n) for n in ("subtitler", "asyncio", "websockets")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


def assert_no_crash(server: Server, errors: Errors) -> None:
    """The server still answers HTTP and nothing was logged at ERROR (a handler that crashed)."""
    status, _, body = http_get(server.port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    fmt = logging.Formatter()
    crashes = [fmt.format(r) for r in errors.records]
    assert not crashes, "\n".join(crashes)


def assert_still_serving(server: Server, errors: Errors) -> None:
    """No crash, and a new screen is welcomed."""
    async def viewer():
        ws, w = await join(server)
        assert w["protocol"] == PROTOCOL_VERSION
        await ws.close()
    asyncio.run(viewer())
    assert_no_crash(server, errors)


@pytest.mark.parametrize("path", ["/ws/view", "/ws/control", "/ws/audio"])
def test_fuzz_websocket_messages(fuzz_server, errors, path):
    @settings(max_examples=60, deadline=None)
    @given(messages=st.lists(MESSAGE, min_size=1, max_size=6))
    def example(messages):
        async def main():
            async with connect(ws_url(fuzz_server, path), close_timeout=1) as ws:
                with contextlib.suppress(ConnectionClosed):
                    for m in messages:
                        await ws.send(m)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.05):
                            async for _ in ws:
                                pass
        asyncio.run(main())
        assert_no_crash(fuzz_server, errors)

    example()
    assert_still_serving(fuzz_server, errors)


def raw_upgrade(port: int, path: str) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=5)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def test_fuzz_malformed_frames(fuzz_server, errors):
    """Raw bytes after a valid handshake: broken frame headers, unmasked frames, bad opcodes, bad UTF-8."""
    @settings(max_examples=60, deadline=None)
    @given(path=st.sampled_from(["/ws/view", "/ws/control", "/ws/audio"]), junk=st.binary(min_size=1, max_size=400),
           masked_header=st.booleans())
    def example(path, junk, masked_header):
        s = raw_upgrade(fuzz_server.port, path)
        try:
            prefix = bytes([0x81, 0x80 | min(len(junk), 125)]) + os.urandom(4) if masked_header else b""
            s.sendall(prefix + junk)
            s.settimeout(0.05)
            with contextlib.suppress(OSError):
                s.recv(65536)
        finally:
            s.close()
        assert_no_crash(fuzz_server, errors)

    example()
    assert_still_serving(fuzz_server, errors)


def test_garbage_that_is_not_a_websocket_leaves_the_server_serving(fuzz_server, errors):
    # Garbage that is not even HTTP, and HTTP that is not a WebSocket request.
    for junk in (b"\x16\x03\x01\x02\x00", b"GET /\r\n\r\n", b"POST /ws/view HTTP/1.1\r\n\r\n",
                 b"GET /ws/view HTTP/1.1\r\nHost: x\r\n\r\n", b"GET " + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
                 b"GET /rooms/main/ws/control HTTP/1.1\r\nHost: x\r\nOrigin: http://y\r\n\r\n"):
        with socket.create_connection((HOST, fuzz_server.port), timeout=5) as s:
            s.sendall(junk)
            s.settimeout(1)
            with contextlib.suppress(OSError):
                s.recv(4096)
    assert_still_serving(fuzz_server, errors)


def test_a_crashing_handler_costs_one_connection_and_is_logged(errors, monkeypatch):
    """The crash check above can fail: a handler that raises is logged at ERROR (and closed 1011)."""
    import subtitler.endpoints as endpoints

    async def broken(link, ws):
        raise RuntimeError("boom")
    monkeypatch.setattr(endpoints, "serve_viewer", broken)
    with running() as server:
        async def main():
            async with connect(ws_url(server, "/ws/view")) as ws:
                assert await closed_with(ws) == 1011
        asyncio.run(main())
        with pytest.raises(AssertionError, match="boom"):
            assert_no_crash(server, errors)


# -- HTTP: pages, health, metrics -----------------------------------------------------------

def http_get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def test_static_pages_never_escape_web(tmp_path):
    (tmp_path / "secret.txt").write_text("top secret")
    with running(tmp_path) as server:
        web = tmp_path / "web"
        (web / "overlay.html").write_text("<!doctype html><title>overlay</title>")
        (web / "overlay.js").write_text("console.log('hi')")
        (web / "style.css").write_text("body{}")
        (web / ".env").write_text("hidden")
        (web / "sub").mkdir()
        (web / "sub" / "a.json").write_text("{}")
        (web / "escape.txt").symlink_to(tmp_path / "secret.txt")
        status, headers, body = http_get(server.port, "/overlay.html")
        assert status == 200 and body.startswith(b"<!doctype html>")
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert http_get(server.port, "/overlay.js")[1]["content-type"].startswith("text/javascript")
        assert http_get(server.port, "/style.css")[1]["content-type"].startswith("text/css")
        assert http_get(server.port, "/sub/a.json?v=2")[0] == 200
        status, _, body = http_get(server.port, "/")  # no index.html: a generated index
        assert status == 200 and b"overlay.html" in body and b"console.html" in body
        for evil in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/sub/../../secret.txt",
                     "/%2e%2e%2fsecret.txt", "//etc/passwd", "/escape.txt", "/.env", "/sub/%2e%2e/%2e%2e/secret.txt",
                     "/overlay.html%00.js", "/..\\secret.txt", "/nothing-here.html", "/sub"):
            status, _, body = http_get(server.port, evil)
            assert status == 404 and b"secret" not in body, (evil, status, body)
        assert http_get(server.port, "/ws/nothing")[0] == 404
        assert http_get(server.port, "/ws/view")[0] == 426  # a page asking for the WebSocket path


def test_console_lists_and_serves_only_this_sessions_transcripts(tmp_path):
    from subtitler.transcripts import TranscriptWriter

    writer = TranscriptWriter(tmp_path / "session", ("srt", "jsonl"))
    writer.on_caption(caption(1, text="Good morning, everyone."))
    (tmp_path / "session" / "notes.txt").write_text("not a transcript")
    with running(tmp_path) as server:
        room(server).publish_files(writer.paths)
        status, headers, body = http_get(server.port, "/api/session")
        info = json.loads(body)
        assert status == 200 and info["session"] == room(server).session_id
        assert {f["name"]: f["format"] for f in info["files"]} == {"captions.srt": "srt", "captions.jsonl": "jsonl"}
        status, headers, body = http_get(server.port, "/transcripts/captions.srt")
        assert status == 200 and b"Good morning, everyone." in body
        for other in ("/transcripts/notes.txt", "/transcripts/../session/notes.txt", "/transcripts/"):
            assert http_get(server.port, other)[0] == 404, other
    writer.close()


def parse_prometheus(text: str) -> dict[str, float]:
    """Strict enough for the text format: HELP/TYPE lines, then `name{labels} value` samples."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge", "histogram", "summary"), line
            typed.add(name)
        elif line.startswith("# HELP ") or not line:
            continue
        else:
            m = re.fullmatch(r'([a-z_]+)(\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? (\S+)', line)
            assert m, line
            assert m.group(1) in typed or re.sub(r"_(bucket|sum|count)$", "", m.group(1)) in typed, line
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_healthz_and_metrics():
    with running() as server:
        room(server).attach(Controls(), source_languages=Controls.languages)
        status, headers, body = http_get(server.port, "/healthz")
        health = json.loads(body)
        assert status == 200 and headers["content-type"] == "application/json"
        assert health["status"] == "ok" and health["session"] == room(server).session_id and health["protocol"] == 1

        async def main():
            ws, _ = await join(server)
            publish(server, caption(1, "partial"), caption(1, "final"), caption(2, "partial"), caption(2, "final"))
            await drain_events(ws, 0.2)
            status, headers, body = http_get(server.port, "/metrics")
            assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
            m = parse_prometheus(body.decode())
            assert m['subtitler_captions_total{room="main",kind="final"}'] == 2
            assert m['subtitler_captions_total{room="main",kind="partial"}'] == 2
            assert m['subtitler_viewers{room="main"}'] == 1
            assert m['subtitler_final_latency_seconds_count{room="main"}'] == 2
            assert m['subtitler_final_latency_seconds_bucket{room="main",le="+Inf"}'] == 2
            buckets = [v for k, v in m.items() if k.startswith("subtitler_final_latency_seconds_bucket")]
            assert buckets == sorted(buckets)  # cumulative
            assert abs(m['subtitler_final_latency_seconds_sum{room="main"}'] - 2 * 0.7) < 1e-6  # emitted - end
            for name in ('subtitler_lag_seconds{room="main"}', 'subtitler_audio_dropped_blocks_total{room="main"}',
                         'subtitler_messages_dropped_total{room="main",reason="superseded"}',
                         'subtitler_clients_disconnected_total{room="main",reason="slow"}',
                         'subtitler_paused{room="main"}', "subtitler_rooms", "subtitler_uptime_seconds"):
                assert name in m, name
            await ws.close()
        asyncio.run(main())


def test_port_in_use_is_one_clear_error():
    with running() as server:
        with pytest.raises(ServerError, match=r"port is in use.*--port"):
            Server(ServerConfig(host=HOST, port=server.port, token="x")).start()


def test_stop_delivers_the_last_captions_then_closes_with_1001():
    with running() as server:
        async def main():
            ws, _ = await join(server)
            room(server).sink.on_caption(caption(1, "final", "last words"))
            await asyncio.to_thread(server.stop)
            events = []
            with contextlib.suppress(ConnectionClosed):
                async for m in ws:
                    events.append(json.loads(m))
            assert [e["text"] for e in events if e["type"] == "caption"] == ["last words"]
            assert ws.close_code == 1001
        asyncio.run(main())


# -- audio ingest (no model: a PushSource drained by the test) -------------------------------

def test_audio_ingest_protocol():
    with running() as server:
        source = PushSource(queue_seconds=5)
        controls = Controls()

        async def main():
            # Before the session runs, a sender is refused only if the input is not remote.
            async with connect(ws_url(server, "/ws/audio")) as ws:
                await ws.send(json.dumps({"type": "auth", "token": TOKEN}))
                err = await recv_json(ws)
                assert err["code"] == "no_remote_input" and await closed_with(ws) == 1008
            room(server).attach_ingest(source, 5.0)
            room(server).attach(controls)
            for auth, code, close in (({"type": "auth", "token": "nope"}, "unauthorized", 1008),
                                      ({"type": "auth", "token": TOKEN, "sample_rate": 44100}, "bad_format", 1003),
                                      ({"type": "auth", "token": TOKEN, "format": "f32le"}, "bad_format", 1003),
                                      ({"type": "end"}, "auth_required", 1008)):
                async with connect(ws_url(server, "/ws/audio")) as ws:
                    await ws.send(json.dumps(auth))
                    err = await recv_json(ws)
                    assert err["code"] == code and await closed_with(ws) == close, err
            rng = np.random.default_rng(1)
            audio = rng.integers(-3000, 3000, 16000 * 2, dtype=np.int16)
            async with connect(ws_url(server, "/ws/audio")) as ws:
                await ws.send(json.dumps({"type": "auth", "token": TOKEN, "sample_rate": 16000, "channels": 1,
                                          "format": "s16le", "realtime": True}))
                assert await recv_json(ws) == {"type": "ok", "command": "auth", "session": room(server).session_id,
                                               "received": 0, "window": 4.0}
                async with connect(ws_url(server, "/ws/audio")) as second:  # one sender at a time
                    await second.send(json.dumps({"type": "auth", "token": TOKEN}))
                    assert (await recv_json(second))["code"] == "busy" and await closed_with(second) == 1013
                data = audio.astype("<i2").tobytes()
                cuts = sorted(set(rng.integers(1, len(data), 40).tolist()))  # odd lengths, mid-sample cuts
                for a, b in zip([0] + cuts, cuts + [len(data)]):
                    await ws.send(data[a:b])
                await ws.send(json.dumps({"type": "status"}))
                assert (await recv_reply(ws))["code"] == "unknown_type"  # and the stream goes on
                await ws.send(json.dumps({"type": "end"}))
                got = []
                # The session would now drain the source and flush; we do it by hand.
                for block in await asyncio.to_thread(list, source):
                    got.append(block)
                await asyncio.to_thread(room(server).finish_ingest)
                assert await recv_reply(ws) == {"type": "ok", "command": "end", "received": len(audio)}
                assert await closed_with(ws) == 1000
            received = np.concatenate(got)
            assert np.array_equal(received, audio)  # every sample, in order, re-cut into 20 ms blocks
            assert all(len(b) == 320 for b in got[:-1])
            # After the end, the stream is over for good.
            async with connect(ws_url(server, "/ws/audio")) as ws:
                await ws.send(json.dumps({"type": "auth", "token": TOKEN}))
                assert (await recv_json(ws))["code"] == "ended"
        asyncio.run(main())


def test_sender_reconnects_after_the_connection_drops(tmp_path):
    """`subtitler send`'s client: the connection is cut mid-stream (no close frame, as when a
    network goes away); it reconnects, goes on, ends the stream and gets the server's ok."""
    import io
    import wave

    rng = np.random.default_rng(3)
    audio = (np.sin(np.arange(16000 * 2) * 0.05) * 8000 + rng.normal(0, 500, 32000)).astype(np.int16)
    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(audio.tobytes())
    with running() as server:
        source, controls = PushSource(queue_seconds=30), Controls()
        room(server).attach_ingest(source, 30.0)
        room(server).attach(controls)
        got: list[np.ndarray] = []

        def consume():  # the session's place: drain the source, report what it heard
            for block in source:
                got.append(block)
                controls.audio_seconds += len(block) / 16000

        consumer = threading.Thread(target=consume)
        consumer.start()
        out, result = io.StringIO(), {}

        def send():
            result["rc"] = send_audio(FileSource(wav, realtime=True), ws_url(server, "/ws/audio"), TOKEN, out=out)

        sender = threading.Thread(target=send)
        sender.start()
        wait_until(lambda: room(server).ingest.pushed_seconds > 0.5, what="audio to arrive")
        server.call(lambda: room(server).ingest.sender.transport.abort())  # the network goes away
        wait_until(lambda: room(server).ingest.ended, timeout=30, what="the end of the stream")
        consumer.join(10)
        room(server).finish_ingest()
        sender.join(30)
        text = out.getvalue()
        assert result.get("rc") == 0, text
        assert "connection lost" in text and "reconnected; the server has" in text, text
        assert "all of it received by the server; the server finished the last caption" in text
        received = np.concatenate(got)
        # What was in flight when the connection died was not acknowledged: it is sent again.
        assert np.array_equal(received, audio)


# -- translation captions from the engine -----------------------------------------------------------

def test_translation_captions_become_translation_events_per_language():
    """The engine hands the sink a kind="translation" caption (same id, all its languages): each
    screen gets the languages it asked for as `translation` events; the spoken language itself
    is not sent again, and translation_errors stay off the wire."""
    import dataclasses

    with running(languages=["es", "zh", "en"]) as server:
        assert room(server).sink.accepts_translations

        async def main():
            es, welcome = await join(server, langs=["es"])
            assert welcome["languages"] == ["en", "es", "zh"]  # the targets, before any caption
            everything, _ = await join(server, langs=["*"])
            final = caption(1, "final", "Good morning.")
            final = dataclasses.replace(final, translation_errors={"de": "boom"})
            publish(server, final)
            update = dataclasses.replace(final, kind="translation", seq=2,
                                         translations={"es": "Buenos días.", "zh": "早上好。", "en": "Good morning."},
                                         translation_errors={"ru": "apertium: no pair"})
            target = room(server).channel.log.seq + 2  # es and zh; en is the caption's own language
            room(server).sink.on_caption(update)
            wait_until(lambda: room(server).channel.log.seq >= target, what="the translations to be logged")
            got_es, got_all = await drain_events(es), await drain_events(everything)
            assert [e["type"] for e in got_es] == ["caption", "translation"]
            assert "translation_errors" not in got_es[0] and got_es[0]["translations"] == {}
            assert {k: got_es[1][k] for k in ("id", "lang", "text")} == {"id": 1, "lang": "es", "text": "Buenos días."}
            assert [(e["lang"], e["text"]) for e in got_all[1:]] == [("es", "Buenos días."), ("zh", "早上好。")]
            assert room(server).metrics.translations == 2 and room(server).metrics.finals == 1
            for ws in (es, everything):
                await ws.close()
        asyncio.run(main())


def test_console_lists_the_translations_files_with_their_language(tmp_path):
    from subtitler.transcripts import TranscriptWriter

    writer = TranscriptWriter(tmp_path / "session", ("srt", "txt"), languages=["es"])
    with running(tmp_path) as server:
        room(server).publish_files(writer.all_paths)
        info = json.loads(http_get(server.port, "/api/session")[2])
        assert {(f["name"], f["format"], f.get("lang")) for f in info["files"]} == {
            ("captions.srt", "srt", None), ("captions.txt", "txt", None),
            ("captions.es.srt", "srt", "es"), ("captions.es.txt", "txt", "es")}
        assert http_get(server.port, "/transcripts/captions.es.srt")[0] == 200
    writer.close()
