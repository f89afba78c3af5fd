"""Several rooms on one server (issue 8's venue), on loopback with real WebSocket clients; no model.

One ``Server`` with rooms added through ``add_room`` as ``subtitler serve`` adds them; captions
enter through each room's sink from the test's thread, controls are test_server's fake, and
/ws/venue's open/close go to a fake ``VenueControls`` that adds and removes rooms on the server
as the host's venue does. Everything binds 127.0.0.1 only, on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import segno
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request

from subtitler.audio import FileSource, PushSource
from subtitler.captions import SessionStats
from subtitler.config import ServerConfig
from subtitler.send import SendError, send_audio
from subtitler.server import Server
from test_server import (HOST, Controls, caption, closed_with, drain_events, http_get, parse_prometheus,
                         recv_event, recv_json, wait_until)

VENUE_TOKEN = "venue-operator-token"
HALL_TOKEN, FORUM_TOKEN = "hall-room-token", "forum-room-token"


@contextlib.contextmanager
def venue(tmp_path: Path | None = None, default: str | None = None):
    """A server with two rooms: hall (targets zh, es) and forum (target fr)."""
    web = None
    if tmp_path is not None:
        web = tmp_path / "web"
        web.mkdir(exist_ok=True)
        for page in ("overlay.html", "console.html", "live.html"):
            (web / page).write_text(f"<!doctype html><title>{page}</title>")
    server = Server(ServerConfig(host=HOST, port=0, token=VENUE_TOKEN), web_dir=web).start()
    server.add_room("hall", title="Main hall", token=HALL_TOKEN, languages=["zh", "es"], default=default == "hall")
    server.add_room("forum", token=FORUM_TOKEN, languages=["fr"])
    try:
        yield server
    finally:
        server.stop(drain=0.5)


def publish(link, *captions) -> None:
    target = link.channel.log.seq + len(captions)
    for c in captions:
        link.sink.on_caption(c)
    wait_until(lambda: link.channel.log.seq >= target, what=f"captions in {link.name}")


def url(server: Server, path: str) -> str:
    return f"ws://{HOST}:{server.port}{path}"


async def screen(server: Server, room: str, langs=("*",)):
    ws = await connect(url(server, f"/rooms/{room}/ws/view"))
    await ws.send(json.dumps({"type": "hello", "langs": list(langs)}))
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def auth(server: Server, path: str, token: str, source: str | None = None, **extra) -> tuple:
    """Connect to ``path`` (from ``source``, a loopback address) and authenticate: (socket, the
    first answer)."""
    ws = await connect(url(server, path), local_addr=(source, 0) if source else None)
    await ws.send(json.dumps({"type": "auth", "token": token, **extra}))
    return ws, await recv_json(ws)


_sources = iter(range(10, 250))


async def refused(server: Server, path: str, token: str) -> None:
    # each from its own address: wrong tokens in a row from one address are slowed down (test_limits)
    ws, answer = await auth(server, path, token, source=f"127.0.0.{next(_sources)}")
    assert answer["type"] == "error" and answer["code"] == "unauthorized", (path, answer)
    assert await closed_with(ws) == 1008


def stats(audio_seconds=1.0, lag=0.0, language="auto", paused=False) -> SessionStats:
    return SessionStats(audio_seconds=audio_seconds, lag=lag, dropped_frames=0, utterances=0, finals=0,
                        in_speech=False, level_db=-30.0, paused=paused, language=language)


# -- isolation ------------------------------------------------------------------------------

def test_a_rooms_screens_see_only_that_rooms_captions_in_their_languages():
    with venue() as server:
        hall, forum = server.rooms["hall"], server.rooms["forum"]

        async def main():
            hall_zh, w = await screen(server, "hall", ["zh"])
            assert w["room"] == "hall" and w["title"] == "Main hall" and w["session"] == hall.session_id
            assert w["languages"] == ["es", "zh"]
            hall_all, _ = await screen(server, "hall")
            forum_all, w = await screen(server, "forum")
            assert w["room"] == "forum" and w["session"] != hall.session_id and w["languages"] == ["fr"]
            publish(hall, caption(1, "final", "Welcome to the hall.", {"zh": "欢迎来到大厅。", "es": "Bienvenidos."}))
            publish(forum, caption(1, "final", "The forum opens.", {"fr": "Le forum ouvre."}),
                    caption(2, "partial", "Questions"))
            hall.sink.on_translation(1, "es", "Bienvenidos al salón.")
            forum.sink.on_translation(1, "zh", "论坛开幕。")
            wait_until(lambda: hall.channel.log.seq == 2 and forum.channel.log.seq == 3)
            got = {name: await drain_events(ws, 0.3) for name, ws in
                   (("hall_zh", hall_zh), ("hall_all", hall_all), ("forum", forum_all))}
            assert [(e["type"], e.get("text")) for e in got["hall_zh"]] == [("caption", "Welcome to the hall.")]
            assert got["hall_zh"][0]["translations"] == {"zh": "欢迎来到大厅。"}  # not es
            assert [(e["type"], e["text"]) for e in got["hall_all"]] == [("caption", "Welcome to the hall."),
                                                                          ("translation", "Bienvenidos al salón.")]
            assert [(e["type"], e["text"]) for e in got["forum"]] == [
                ("caption", "The forum opens."), ("caption", "Questions"), ("translation", "论坛开幕。")]
            # a screen joining later gets its own room's history only
            late, _ = await screen(server, "forum", ["fr"])
            history = await drain_events(late, 0.3)
            assert [e["text"] for e in history] == ["The forum opens.", "Questions"]
            assert history[0]["translations"] == {"fr": "Le forum ouvre."}
            for ws in (hall_zh, hall_all, forum_all, late):
                await ws.close()
        asyncio.run(main())


# -- tokens ---------------------------------------------------------------------------------

def test_a_rooms_token_opens_only_that_room_and_the_venue_token_opens_every_room():
    with venue() as server:
        hall, forum = server.rooms["hall"], server.rooms["forum"]
        hall_controls, forum_controls = Controls(), Controls()
        hall.attach(hall_controls, source_languages=Controls.languages)
        forum.attach(forum_controls, source_languages=Controls.languages)
        hall_source, forum_source = PushSource(queue_seconds=5), PushSource(queue_seconds=5)
        hall.attach_ingest(hall_source, 5.0)
        forum.attach_ingest(forum_source, 5.0)

        async def command(ws, msg: dict) -> dict:
            await ws.send(json.dumps(msg))
            return await recv_event(ws)

        async def main():
            # A room's token: its own console and audio, nothing of another room, not the venue.
            ws, ok = await auth(server, "/rooms/hall/ws/control", HALL_TOKEN)
            assert ok["type"] == "ok" and ok["session"] == hall.session_id
            assert await command(ws, {"type": "pause"}) == {"type": "ok", "command": "pause"}
            await ws.close()
            assert hall_controls.calls == ["pause"] and forum_controls.calls == []
            for path in ("/rooms/forum/ws/control", "/rooms/forum/ws/audio", "/ws/venue"):
                await refused(server, path, HALL_TOKEN)
            await refused(server, "/rooms/hall/ws/control", FORUM_TOKEN)
            await refused(server, "/rooms/hall/ws/control", "")
            ws, ok = await auth(server, "/rooms/hall/ws/audio", HALL_TOKEN)
            assert (ok["type"], ok["command"], ok["received"]) == ("ok", "auth", 0)
            await ws.close()
            # The venue token: every room's console and audio.
            ws, ok = await auth(server, "/rooms/forum/ws/control", VENUE_TOKEN)
            assert ok["type"] == "ok" and ok["session"] == forum.session_id
            assert (await command(ws, {"type": "set_language", "language": "es"}))["language"] == "es"
            await ws.close()
            assert forum_controls.calls == ["set_language:es"] and hall_controls.calls == ["pause"]
            audio = np.arange(-3200, 3200, 10, dtype=np.int16)  # 640 samples: two 20 ms blocks
            ws, ok = await auth(server, "/rooms/forum/ws/audio", VENUE_TOKEN, realtime=False)
            assert (ok["type"], ok["command"], ok["received"]) == ("ok", "auth", 0)
            await ws.send(audio.astype("<i2").tobytes())
            await ws.send(json.dumps({"type": "end"}))
            blocks = await asyncio.to_thread(list, forum_source)
            await asyncio.to_thread(forum.finish_ingest)
            while (answer := await recv_json(ws))["type"] == "ack":
                pass
            assert answer == {"type": "ok", "command": "end", "received": len(audio)}
            assert np.array_equal(np.concatenate(blocks), audio)
            assert hall.ingest.pushed_seconds == 0 and hall.metrics.audio_seconds_received == 0
            # A page from another site is refused before any token, on every room's console and audio.
            for path in ("/rooms/hall/ws/control", "/rooms/forum/ws/audio"):
                with pytest.raises(InvalidStatus) as e:
                    await connect(url(server, path), origin="http://evil.example")
                assert e.value.response.status_code == 403
            # Screens need no token and steer nothing.
            viewer, _ = await screen(server, "forum")
            assert (await command(viewer, {"type": "resume", "token": VENUE_TOKEN}))["code"] == "viewer_read_only"
            await viewer.close()
            assert forum_controls.calls == ["set_language:es"]
        asyncio.run(main())


# -- /api/venue -------------------------------------------------------------------------------

def test_api_venue_lists_every_room_with_its_state_languages_and_pages():
    with venue() as server:
        hall, forum = server.rooms["hall"], server.rooms["forum"]
        lobby = server.add_room("lobby")
        server.add_room("annex", title="Annex", languages=["de"])
        controls = Controls()
        hall.attach(controls)
        controls.pause()  # hall: paused
        hall.update_stats(stats(language="en"))
        forum.update_stats(stats(lag=4.2))  # forum: lagging
        lobby.update_stats(stats(audio_seconds=0.5))
        lobby.update_stats(stats(audio_seconds=0.7))  # lobby: audio is coming in
        # annex: never heard anything

        async def main():
            viewer, _ = await screen(server, "forum")
            wait_until(lambda: lobby.stats is not None and lobby.stats.audio_seconds == 0.7 and
                       forum.stats is not None and hall.stats is not None)
            status, headers, body = http_get(server.port, "/api/venue")
            await viewer.close()
            return status, headers, json.loads(body)
        status, headers, info = asyncio.run(main())
        assert status == 200 and headers["content-type"] == "application/json"
        assert info["protocol"] == 1
        assert info["capacity"] == {"rooms": 4, "max_rooms": None, "overloaded": False}
        rooms = {r["name"]: r for r in info["rooms"]}
        assert {n: r["state"] for n, r in rooms.items()} == {"hall": "paused", "forum": "lagging", "lobby": "live",
                                                             "annex": "idle"}
        assert rooms["hall"]["title"] == "Main hall" and rooms["lobby"]["title"] == "lobby"
        assert rooms["hall"]["languages"] == ["en", "zh", "es"] and rooms["hall"]["source_language"] == "en"
        assert rooms["hall"]["targets"] == ["zh", "es"]
        assert rooms["forum"]["languages"] == ["fr"] and rooms["forum"]["source_language"] == "auto"
        assert rooms["annex"]["languages"] == ["de"] and rooms["lobby"]["languages"] == []
        assert rooms["forum"]["viewers"] == 1 and rooms["forum"]["lag"] == 4.2 and rooms["hall"]["viewers"] == 0
        assert rooms["annex"]["urls"] == {"overlay": "/rooms/annex/overlay.html", "console": "/rooms/annex/console.html",
                                          "live": "/rooms/annex/live.html", "qr": "/rooms/annex/qr.svg"}
        # A room whose audio stopped goes idle after 5 s; one decoding 3 s behind is lagging.
        now = time.monotonic()
        assert lobby.state(now) == "live" and lobby.state(now + 6) == "idle"
        health = json.loads(http_get(server.port, "/healthz")[2])
        assert health["rooms"] == 4 and health["protocol"] == 1 and "session" not in health


# -- the audience page's QR code ------------------------------------------------------------------

def qr_matrix_of_svg(svg: bytes) -> list[list[bool]]:
    """The dark modules of segno's SVG: one path of horizontal runs, in module units after a
    scale() transform, with a quiet zone around them."""
    text = svg.decode()
    size = int(re.search(r'width="(\d+)"', text).group(1))
    scale = float(re.search(r'transform="scale\(([\d.]+)\)"', text).group(1))
    d = re.search(r' d="([^"]+)"', text).group(1)
    dark, x, y = set(), 0.0, 0.0
    for op, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", d):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:  # h: a run of dark modules along the row at y (drawn on its centre line)
            dark.update((int(y - 0.5), int(x) + i) for i in range(int(float(a))))
            x += float(a)
    modules = round(size / scale)
    rows = {r for r, _ in dark}
    border = min(rows)  # the finder pattern's top row is dark: the first dark row ends the quiet zone
    n = modules - 2 * border
    return [[(border + r, border + c) in dark for c in range(n)] for r in range(n)]


def qr_matrix_of(text: str) -> list[list[bool]]:
    return [[bool(v) for v in row] for row in segno.make(text, error="m", micro=False).matrix]


def test_qr_code_encodes_the_rooms_audience_page_in_the_language_asked():
    with venue() as server:
        base = f"http://{HOST}:{server.port}"
        status, headers, svg = http_get(server.port, "/rooms/hall/qr.svg?lang=zh")
        assert status == 200 and headers["content-type"] == "image/svg+xml" and svg.startswith(b"<svg")
        matrix = qr_matrix_of_svg(svg)
        assert matrix == qr_matrix_of(f"{base}/rooms/hall/live.html?lang=zh")
        assert matrix != qr_matrix_of(f"{base}/rooms/hall/live.html?lang=es")
        assert matrix != qr_matrix_of(f"{base}/rooms/forum/live.html?lang=zh")
        _, _, svg = http_get(server.port, "/rooms/forum/qr.svg")
        assert qr_matrix_of_svg(svg) == qr_matrix_of(f"{base}/rooms/forum/live.html")
        # served on one address: the address the phone's page came from
        _, _, svg = http_get(server.port, "/rooms/forum/qr.svg?lang=fr", {"Host": "captions.example:8080"})
        assert qr_matrix_of_svg(svg) == qr_matrix_of("http://captions.example:8080/rooms/forum/live.html?lang=fr")
        status, _, body = http_get(server.port, "/rooms/hall/qr.svg?lang=%3Cscript%3E")
        assert status == 400 and b"not a language code" in body
        assert http_get(server.port, "/rooms/nope/qr.svg")[0] == 404


def test_qr_code_of_a_venue_on_every_interface_names_a_lan_address():
    """On 0.0.0.0 the QR names an address phones can reach, whatever Host the request came to."""
    server = Server(ServerConfig(host="0.0.0.0", port=8765, token=VENUE_TOKEN))
    request = Request("/rooms/hall/qr.svg", Headers([("Host", "127.0.0.1:8765")]))
    assert server._public_base(request) == server.base_urls()[0]
    assert not server._public_base(request).startswith("http://127.")
    local = Server(ServerConfig(host=HOST, port=8765, token=VENUE_TOKEN))
    assert local._public_base(request) == "http://127.0.0.1:8765"
    assert local._public_base(Request("/", Headers([("Host", "evil/x?")]))) == "http://127.0.0.1:8765"


# -- the single-room paths ------------------------------------------------------------------------

def test_single_room_paths_serve_the_default_room(tmp_path):
    from subtitler.transcripts import TranscriptWriter

    writer = TranscriptWriter(tmp_path / "hall", ("srt",))
    writer.on_caption(caption(1, text="Hall words."))
    with venue(tmp_path, default="hall") as server:
        hall, forum = server.rooms["hall"], server.rooms["forum"]
        hall.publish_files(writer.paths)
        publish(hall, caption(1, "final", "Hall words."))
        publish(forum, caption(1, "final", "Forum words."))

        async def main():
            ws = await connect(url(server, "/ws/view"))
            await ws.send(json.dumps({"type": "hello"}))
            welcome = await recv_json(ws)
            assert welcome["room"] == "hall" and welcome["session"] == hall.session_id
            assert [e["text"] for e in await drain_events(ws, 0.3)] == ["Hall words."]
            await ws.close()
            ws, ok = await auth(server, "/ws/control", HALL_TOKEN)
            assert ok["session"] == hall.session_id
            await ws.close()
        asyncio.run(main())
        for page in ("/overlay.html", "/console.html", "/live.html", "/rooms/hall/live.html", "/rooms/forum/live.html"):
            assert http_get(server.port, page)[0] == 200, page
        files = json.loads(http_get(server.port, "/api/session")[2])["files"]
        assert [f["url"] for f in files] == ["/transcripts/captions.srt"]
        files = json.loads(http_get(server.port, "/rooms/hall/api/session")[2])["files"]
        assert [f["url"] for f in files] == ["/rooms/hall/transcripts/captions.srt"]
        assert b"Hall words." in http_get(server.port, "/transcripts/captions.srt")[2]
        assert http_get(server.port, "/rooms/forum/transcripts/captions.srt")[0] == 404
        base = f"http://{HOST}:{server.port}"
        assert server.page_urls("hall") == {"overlay": f"{base}/overlay.html", "live": f"{base}/live.html",
                                            "console": f"{base}/console.html#token={HALL_TOKEN}",
                                            "venue": f"{base}/", "audio": f"ws://{HOST}:{server.port}"}
        assert server.page_urls("forum")["overlay"] == f"{base}/rooms/forum/overlay.html"
        assert server.page_urls("forum")["console"] == f"{base}/rooms/forum/console.html#token={FORUM_TOKEN}"
        assert json.loads(http_get(server.port, "/healthz")[2])["session"] == hall.session_id
    writer.close()


def test_without_a_default_room_single_room_paths_say_where_the_rooms_are(tmp_path):
    with venue(tmp_path) as server:
        for path in ("/ws/view", "/overlay.html", "/api/session", "/transcripts/captions.srt"):
            status, _, body = http_get(server.port, path)
            assert status == 404 and b"/rooms/NAME" in body and b"forum, hall" in body, (path, body)

        async def main():
            with pytest.raises(InvalidStatus) as e:
                await connect(url(server, "/ws/audio"))
            assert e.value.response.status_code == 404
        asyncio.run(main())
        assert http_get(server.port, "/rooms/hall")[1]["location"] == "/rooms/hall/live.html"


def test_unknown_room_is_a_404_that_names_the_rooms(tmp_path):
    with venue(tmp_path) as server:
        for path in ("/rooms/nope/overlay.html", "/rooms/nope/ws/view", "/rooms/Bad%20Name/x"):
            status, _, body = http_get(server.port, path)
            assert status == 404 and b"rooms: forum, hall" in body and b"/api/venue" in body, (path, body)
        wav = tmp_path / "silence.wav"
        import wave
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(b"\0" * 3200)
        address = f"ws://{HOST}:{server.port}"
        with pytest.raises(SendError) as e:
            send_audio(FileSource(wav), address, FORUM_TOKEN, out=io.StringIO(), room="nope")
        assert e.value.exit_code == 2 and "no room 'nope'" in str(e.value) and "rooms: forum, hall" in str(e.value)
        with pytest.raises(SendError) as e:  # no default room: say how to pick one
            send_audio(FileSource(wav), address, FORUM_TOKEN, out=io.StringIO())
        assert e.value.exit_code == 2 and "--room NAME" in str(e.value) and "forum, hall" in str(e.value)
        with pytest.raises(SendError, match="room name 'Hall!' is not allowed"):
            send_audio(FileSource(wav), address, FORUM_TOKEN, out=io.StringIO(), room="Hall!")


def test_send_to_a_room_feeds_that_room(tmp_path):
    import wave

    audio = (np.sin(np.arange(16000) * 0.05) * 8000).astype(np.int16)
    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(audio.tobytes())
    with venue() as server:
        forum = server.rooms["forum"]
        source, controls = PushSource(queue_seconds=30), Controls()
        forum.attach_ingest(source, 30.0)
        forum.attach(controls)
        got: list[np.ndarray] = []

        def consume():
            for block in source:
                got.append(block)
                controls.audio_seconds += len(block) / 16000
            forum.finish_ingest()

        consumer = threading.Thread(target=consume)
        consumer.start()
        out = io.StringIO()
        assert send_audio(FileSource(wav), f"{HOST}:{server.port}", FORUM_TOKEN, out=out, room="forum") == 0
        consumer.join(10)
        assert "/rooms/forum/ws/audio" in out.getvalue()
        assert np.array_equal(np.concatenate(got), audio)
        assert server.rooms["hall"].metrics.audio_seconds_received == 0


# -- rooms come and go ------------------------------------------------------------------------------

def test_removing_a_room_closes_its_clients_and_leaves_the_others_alone():
    with venue() as server:
        hall, forum = server.rooms["hall"], server.rooms["forum"]
        hall.attach_ingest(PushSource(queue_seconds=5), 5.0)

        async def main():
            hall_screen, _ = await screen(server, "hall")
            forum_screen, _ = await screen(server, "forum")
            sender, ok = await auth(server, "/rooms/hall/ws/audio", HALL_TOKEN)
            assert ok["command"] == "auth"
            hall.sink.on_caption(caption(1, "final", "Last words in the hall."))
            await asyncio.to_thread(server.remove_room, "hall")
            events = []
            with contextlib.suppress(ConnectionClosed):  # what was queued arrives, then the close
                async for m in hall_screen:
                    events.append(json.loads(m))
            assert [e["text"] for e in events if e["type"] == "caption"] == ["Last words in the hall."]
            assert hall_screen.close_code == 1001 and hall_screen.close_reason == "room closed"
            assert await closed_with(sender) == 1001
            publish(forum, caption(1, "final", "The forum goes on."))
            assert [e["text"] for e in await drain_events(forum_screen, 0.3)] == ["The forum goes on."]
            with pytest.raises(InvalidStatus) as e:
                await connect(url(server, "/rooms/hall/ws/view"))
            assert e.value.response.status_code == 404
            await forum_screen.close()
        asyncio.run(main())
        assert http_get(server.port, "/rooms/hall/overlay.html")[0] == 404
        assert [r["name"] for r in json.loads(http_get(server.port, "/api/venue")[2])["rooms"]] == ["forum"]
        hall.sink.on_caption(caption(2, "final", "after the room closed"))  # a late caption is dropped quietly
        with pytest.raises(KeyError, match="no room named 'hall'"):
            server.remove_room("hall")


def test_add_room_checks_its_name_and_rooms_may_be_added_before_the_server_starts():
    server = Server(ServerConfig(host=HOST, port=0, token=VENUE_TOKEN))
    early = server.add_room("early", token="early-room-token", default=True)
    controls = Controls()
    early.attach(controls, source_languages=Controls.languages)
    early.sink.on_caption(caption(1, "final", "Said before the server started."))
    for bad, message in (("Hall", "not allowed"), ("", "not allowed"), ("early", "already open"),
                         ("../x", "not allowed")):
        with pytest.raises(ValueError, match=message):
            server.add_room(bad)
    with pytest.raises(ValueError, match="only one room can be the default"):
        server.add_room("second", default=True)
    assert early.token == "early-room-token" and len(server.add_room("random").token) >= 16
    server.start()
    try:
        async def main():
            ws, _ = await screen(server, "early")
            assert [e["text"] for e in await drain_events(ws, 0.3)] == ["Said before the server started."]
            await ws.close()
            ws, ok = await auth(server, "/ws/control", "early-room-token")
            assert ok["source_languages"] == list(Controls.languages)
            await ws.close()
        asyncio.run(main())
    finally:
        server.stop(drain=0.5)


# -- the venue operator ---------------------------------------------------------------------------

class FakeVenue:
    """Stands in for the host's venue: opens and closes rooms on the server, up to ``max_rooms``."""

    def __init__(self, server: Server, max_rooms: int):
        self.server, self.max_rooms = server, max_rooms
        self.calls: list[tuple] = []

    def open_room(self, name: str, options: dict) -> dict:
        self.calls.append(("open_room", name, options))
        if len(self.server.rooms) >= self.max_rooms:
            raise ValueError(f"the host is at capacity: {len(self.server.rooms)} rooms open, at most "
                             f"{self.max_rooms}; close a room first")
        link = self.server.add_room(name, title=options.get("title", ""), token=options.get("token") or None,
                                    languages=options.get("targets", ()))
        return {"name": name, "token": link.token, "title": link.title}

    def close_room(self, name: str) -> None:
        self.calls.append(("close_room", name))
        if name not in self.server.rooms:
            raise ValueError(f"no room named '{name}' is open")
        self.server.remove_room(name)

    def capacity(self) -> dict:
        return {"rooms": len(self.server.rooms), "max_rooms": self.max_rooms, "overloaded": False}


async def venue_reply(ws) -> dict:
    """The next answer to a command (the venue pushes come and go in between)."""
    while True:
        msg = await recv_json(ws)
        if msg["type"] != "venue":
            return msg


async def next_venue(ws, until=lambda v: True) -> dict:
    while True:
        msg = await recv_json(ws)
        if msg["type"] == "venue" and until(msg):
            return msg


def test_venue_operator_opens_and_closes_rooms_within_capacity():
    with venue() as server:
        fake = FakeVenue(server, max_rooms=3)
        server.set_venue(fake)

        async def command(ws, msg: dict) -> dict:
            await ws.send(json.dumps(msg))
            return await venue_reply(ws)

        async def main():
            with pytest.raises(InvalidStatus) as e:  # a page from another site
                await connect(url(server, "/ws/venue"), origin="http://evil.example")
            assert e.value.response.status_code == 403
            await refused(server, "/ws/venue", FORUM_TOKEN)
            ws, ok = await auth(server, "/ws/venue", VENUE_TOKEN)
            assert ok == {"type": "ok", "command": "auth", "protocol": 1, "can_open_rooms": True}
            first = await next_venue(ws)
            assert [r["name"] for r in first["rooms"]] == ["hall", "forum"]
            # open: the room exists at once, with its pages and token
            reply = await command(ws, {"type": "open_room", "name": "lobby", "title": "Lobby", "language": "en",
                                       "targets": ["de"], "token": "lobby-token-1"})
            assert reply["type"] == "ok" and reply["command"] == "open_room", reply
            room = reply["room"]
            assert room["name"] == "lobby" and room["title"] == "Lobby" and room["token"] == "lobby-token-1"
            assert room["targets"] == ["de"] and room["urls"]["live"] == "/rooms/lobby/live.html"
            assert fake.calls[-1] == ("open_room", "lobby", {"title": "Lobby", "language": "en", "targets": ["de"],
                                                             "token": "lobby-token-1"})
            pushed = await next_venue(ws, lambda v: len(v["rooms"]) == 3)
            assert pushed["capacity"]["max_rooms"] == 3
            lobby_screen, _ = await screen(server, "lobby")
            console, ok = await auth(server, "/rooms/lobby/ws/control", "lobby-token-1")
            assert ok["type"] == "ok"
            await console.close()
            # over capacity: the host's message reaches the operator, nothing changes
            reply = await command(ws, {"type": "open_room", "name": "annex"})
            assert reply["type"] == "error" and reply["code"] == "refused", reply
            assert "at capacity" in reply["message"] and "close a room first" in reply["message"]
            assert "annex" not in server.rooms
            reply = await command(ws, {"type": "open_room", "name": "Bad Name"})
            assert reply["code"] == "bad_room_name" and "not allowed" in reply["message"]
            assert (await command(ws, {"type": "reboot"}))["code"] == "unknown_command"
            # close: its screens are told, its pages are gone, the others stay
            reply = await command(ws, {"type": "close_room", "name": "lobby"})
            assert reply == {"type": "ok", "command": "close_room", "room": {"name": "lobby"}}
            assert await closed_with(lobby_screen) == 1001
            assert "lobby" not in server.rooms and set(server.rooms) == {"hall", "forum"}
            reply = await command(ws, {"type": "close_room", "name": "lobby"})
            assert reply["code"] == "refused" and "no room named 'lobby'" in reply["message"]
            # without a command, the venue's state comes every second
            t0 = time.monotonic()
            await next_venue(ws)
            await next_venue(ws)
            assert time.monotonic() - t0 < 3.5
            await ws.close()
        asyncio.run(main())
        assert http_get(server.port, "/rooms/lobby/live.html")[0] == 404
        capacity = json.loads(http_get(server.port, "/api/venue")[2])["capacity"]
        assert capacity == {"rooms": 2, "max_rooms": 3, "overloaded": False}


def test_venue_socket_without_a_venue_says_rooms_are_fixed():
    with venue() as server:
        async def main():
            ws, ok = await auth(server, "/ws/venue", VENUE_TOKEN)
            assert ok["can_open_rooms"] is False
            await ws.send(json.dumps({"type": "open_room", "name": "lobby"}))
            reply = await venue_reply(ws)
            assert reply["code"] == "not_supported" and "subtitler serve" in reply["message"]
            await ws.close()
        asyncio.run(main())


# -- metrics ------------------------------------------------------------------------------------

def test_metrics_label_every_room_and_carry_the_hosts_lines():
    with venue() as server:
        hall, forum = server.rooms["hall"], server.rooms["forum"]
        server.set_host_metrics(lambda: "# HELP subtitler_host_queue Decode jobs waiting.\n"
                                        "# TYPE subtitler_host_queue gauge\nsubtitler_host_queue 3\n")
        publish(hall, caption(1, "partial"), caption(1, "final"))
        publish(forum, caption(1, "final"), caption(2, "final"))
        status, _, body = http_get(server.port, "/metrics")
        text = body.decode()
        m = parse_prometheus(text)
        assert m['subtitler_captions_total{room="hall",kind="final"}'] == 1
        assert m['subtitler_captions_total{room="hall",kind="partial"}'] == 1
        assert m['subtitler_captions_total{room="forum",kind="final"}'] == 2
        assert m['subtitler_final_latency_seconds_count{room="forum"}'] == 2
        assert m["subtitler_rooms"] == 2 and m["subtitler_host_queue"] == 3
        host_level = ("subtitler_rooms", "subtitler_uptime_seconds", "subtitler_host_queue",
                      # the connection edge's own lines (test_limits)
                      "subtitler_connections", "subtitler_auth_", "subtitler_bad_requests_total")
        per_room = [line for line in text.splitlines() if line and not line.startswith("#")
                    and not line.startswith(host_level)]
        assert per_room and all(re.match(r'[a-z_]+\{room="(hall|forum)"', line) for line in per_room), per_room
        for name in {re.match(r"[a-z_]+", line).group(0) for line in per_room}:
            assert f'{name}{{room="hall"' in text and f'{name}{{room="forum"' in text, name
