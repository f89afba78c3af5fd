"""The room's protocol core: the event log, the clients' queues, fan-out, and the three endpoints.

The protocol is docs/protocol.md (version ``PROTOCOL_VERSION``). This module opens no socket,
starts no thread and speaks no HTTP: ``server.Server`` runs a ``Hub`` in its asyncio loop and
hands it each WebSocket connection. Kept apart so the protocol can be read, and tested, without
the process edge.

All protocol state (the event log, every client's queue) lives in that one loop thread and
needs no locks; other threads reach the hub only through ``Server.call``.

Fan-out: an event is serialised once per distinct language selection and written straight
into each client's transport while that client keeps up (empty queue, small write buffer);
only a client that falls behind gets a queue, where a newer partial of an utterance replaces
the queued one. A client whose queue overflows, or whose socket accepts nothing for
``client_timeout_s``, is closed with 1013 and resumes from its last ``seq`` when it returns.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Iterable, NoReturn, Protocol

import numpy as np
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .captions import SAMPLE_RATE, SessionStats
from .config import ServerConfig
from .eventlog import (Event, EventLog, ProtocolError, _int_field, dumps, normalize_langs, parse_message,
                       text_frame)

# The server's logger name, so log lines and handlers stay as they were before the split.
log = logging.getLogger("subtitler.server")

PROTOCOL_VERSION = 1
VIEW, CONTROL, AUDIO = "/ws/view", "/ws/control", "/ws/audio"
FIRST_MESSAGE_TIMEOUT = 10.0  # hello / auth must come this soon after connecting
MAX_ERRORS = 20  # bad messages one connection may send before it is closed
CLOSE_TIMEOUT = 2.0  # a peer that does not answer our close frame is cut off after this
WRITE_HIGH = 1 << 15  # bytes in a transport's buffer beyond which a client counts as behind
BLOCK_SAMPLES = SAMPLE_RATE // 50  # ingest re-cut into 20 ms blocks, the unit PushSource counts
LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

# Close codes (RFC 6455 §7.4.1)
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_UNSUPPORTED = 1000, 1001, 1003
CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1008, 1011, 1013


class _Refused(Exception):
    """A connection was answered with an error and closed; its handler ends quietly."""


class Controls(Protocol):
    """What the console steers; ``engine.Session`` is one."""

    @property
    def paused(self) -> bool: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def set_language(self, language: str | None) -> None: ...
    def stats(self) -> SessionStats: ...


class Ingest(Protocol):
    """Where /ws/audio puts samples; ``audio.PushSource`` is one."""

    def push(self, samples: np.ndarray) -> None: ...
    def end(self) -> None: ...


def writable(ws: ServerConnection) -> bool:
    """Frames may go straight to the transport: open, no fragmented send, no extension."""
    return ws.protocol.state is State.OPEN and ws.send_in_progress is None and not ws.protocol.extensions


# -- clients -----------------------------------------------------------------------------------

class Client:
    """One connection that receives events: a viewer (captions + status) or a console (status)."""

    __slots__ = ("ws", "role", "langs", "queue", "wake", "busy", "closing", "errors", "n")

    def __init__(self, ws: ServerConnection, role: str, langs: frozenset[str] | None = None):
        self.ws, self.role, self.langs = ws, role, langs
        self.queue: OrderedDict[tuple, bytes] = OrderedDict()
        self.wake = asyncio.Event()
        self.busy = True  # the pump is sending (welcome/history first): no direct writes
        self.closing = False
        self.errors = 0
        self.n = 0  # counter for reply keys


@dataclass
class Metrics:
    partials: int = 0
    finals: int = 0
    translations: int = 0
    superseded: int = 0  # queued partials replaced by a newer one (or by the final)
    slow_disconnects: int = 0
    protocol_errors: int = 0
    audio_seconds_received: float = 0.0
    latency_sum: float = 0.0
    latency_count: int = 0

    def __post_init__(self):
        self.latency_buckets = [0] * len(LATENCY_BUCKETS)


# -- the hub -----------------------------------------------------------------------------------

class Hub:
    """Protocol state and endpoints; lives in, and is only touched from, the server's loop."""

    def __init__(self, config: ServerConfig, token: str, session_id: str, *, live: bool = True,
                 languages: Iterable[str] = ()):
        self.config, self.token, self.session_id, self.live = config, token, session_id, live
        self.log = EventLog(config.history, languages=len(set(languages)))
        self.viewers: set[Client] = set()
        self.consoles: set[Client] = set()
        self.metrics = Metrics()
        self.started = time.monotonic()
        self.stats: SessionStats | None = None
        self.controls: Controls | None = None
        self.source_languages: list[str] = []
        self.ingest: Ingest | None = None
        self.ingest_ended = False
        self.sender: ServerConnection | None = None
        self.sender_realtime = True
        self.queue_seconds = 10.0
        self._ingest_done = asyncio.Event()
        self._pushed_samples = 0
        self._pending = bytearray()
        self._feed: deque[tuple[float, float]] = deque(maxlen=30000)  # (audio s pushed, monotonic)
        self._latencies: deque[float] = deque(maxlen=200)
        self._languages = set(languages)
        self._tasks: set[asyncio.Task] = set()

    # -- publishing (called in the loop via call_soon_threadsafe) -----------------------------
    def publish_caption(self, data: dict, arrived: float) -> None:
        data.pop("seq", None)  # the engine's caption seq; ours numbers every event
        if data.get("lang"):
            self._languages.add(data["lang"])
        self._languages.update(data.get("translations") or ())
        ev, _ = self.log.caption(data)
        final = ev.kind == "final"
        if final:
            self.metrics.finals += 1
            if data.get("text"):
                self._record_latency(data, arrived)
        else:
            self.metrics.partials += 1
        # A queued partial of this utterance is stale now: the new partial or final replaces it.
        self._fanout(ev, ("p", ev.id) if not final else ("e", ev.seq), drop=("p", ev.id) if final else None)

    def publish_translation(self, caption_id: int, lang: str, text: str) -> None:
        self._languages.add(lang)
        self.metrics.translations += 1
        ev = self.log.translation(caption_id, lang, text)
        self._fanout(ev, ("e", ev.seq))

    def clear(self) -> None:
        ev = self.log.clear()
        self._fanout(ev, ("e", ev.seq))

    def set_stats(self, stats: SessionStats) -> None:
        self.stats = stats

    def _record_latency(self, data: dict, arrived: float) -> None:
        if not self.live:
            return
        if self._feed:  # remote audio: from when the utterance's last sample reached us
            t = self._fed_at(data["end"])
            if t is None:
                return
            latency = arrived - t
        else:  # local capture: both clocks started with the session
            latency = data["emitted"] - data["end"]
        latency = max(0.0, latency)
        self._latencies.append(latency)
        m = self.metrics
        m.latency_sum += latency
        m.latency_count += 1
        for i, le in enumerate(LATENCY_BUCKETS):
            if latency <= le:
                m.latency_buckets[i] += 1

    def _fed_at(self, audio_s: float) -> float | None:
        """Wall time at which pushed audio first reached ``audio_s`` (recent history only)."""
        found = None
        for pushed, t in reversed(self._feed):
            if pushed < audio_s:
                break
            found = t
        return found

    # -- fan-out ----------------------------------------------------------------------------
    def _fanout(self, ev: Event, key: tuple, drop: tuple | None = None) -> None:
        direct: dict[bytes, list[ServerConnection]] = {}
        for c in tuple(self.viewers):  # a slow one may be dropped (removed) on the way
            if ev.visible_to(c.langs):
                self._offer(c, key, ev.wire(c.langs), direct, drop)
        self._flush(direct)

    @staticmethod
    def _flush(direct: dict[bytes, list[ServerConnection]]) -> None:
        """Write each message to the clients that keep up, framed once for all of them.

        Server frames are unmasked and carry no extension (compression is off), so every
        client gets the same bytes: building them once instead of per connection (as
        ``websockets.broadcast`` does) halves the cost of a fan-out to 1000 screens. The
        checks are ``broadcast``'s: the connection is open and not mid-way through a
        fragmented message (we never send those).
        """
        for data, conns in direct.items():
            frame = text_frame(data)
            for ws in conns:
                if writable(ws):
                    ws.transport.write(frame)
                elif ws.protocol.state is State.OPEN:  # pragma: no cover - extensions negotiated
                    broadcast([ws], data, text=True)

    def _offer(self, c: Client, key: tuple, data: bytes, direct: dict | None = None,
               drop: tuple | None = None) -> None:
        """Write ``data`` to ``c`` now if it keeps up, else queue it (coalescing by ``key``)."""
        if c.closing:
            return
        q = c.queue
        if not q and not c.busy and c.ws.transport.get_write_buffer_size() < WRITE_HIGH:
            if direct is None:
                self._flush({data: [c.ws]})
            else:
                direct.setdefault(data, []).append(c.ws)
            return
        if drop is not None and q.pop(drop, None) is not None:  # the final makes its partial moot
            self.metrics.superseded += 1
        if key[0] in ("p", "status") and q.pop(key, None) is not None:  # the newer one replaces it
            self.metrics.superseded += key[0] == "p"
        if len(q) >= self.config.client_queue:
            self._drop_slow(c, f"too slow: {len(q)} events waiting")
            return
        q[key] = data
        c.wake.set()

    def _reply(self, c: Client, payload: dict) -> None:
        c.n += 1
        self._offer(c, ("r", c.n), dumps(payload))

    def _error(self, c: Client, e: ProtocolError) -> None:
        self.metrics.protocol_errors += 1
        c.errors += 1
        self._reply(c, {"type": "error", "code": e.code, "message": e.message})
        if c.errors >= MAX_ERRORS:
            self._close(c, CLOSE_POLICY, "too many bad messages")

    def _drop_slow(self, c: Client, reason: str) -> None:
        self.metrics.slow_disconnects += 1
        log.info("closing slow %s %s: %s", c.role, c.ws.remote_address, reason)
        self._close(c, CLOSE_TRY_LATER, reason)

    def _close(self, c: Client, code: int, reason: str) -> None:
        if c.closing:
            return
        c.closing = True
        c.queue.clear()
        self.viewers.discard(c)
        self.consoles.discard(c)
        self._spawn(close_ws(c.ws, code, reason))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_pump(self, c: Client, first: list[bytes]) -> asyncio.Task:
        pump = asyncio.ensure_future(self._pump(c, first))

        def done(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:  # a bug: lose the client, log it
                log.error("sending to %s failed", c.ws.remote_address, exc_info=task.exception())
                self._close(c, CLOSE_INTERNAL, "internal error")
        pump.add_done_callback(done)
        return pump

    async def _pump(self, c: Client, first: list[bytes]) -> None:
        """Sends what could not be written directly; closes the client if its socket stalls."""
        try:
            if first:  # welcome + history in one write: a room of screens joining at once stays cheap
                if len(first) > 1 and writable(c.ws):
                    c.ws.transport.write(b"".join(text_frame(d) for d in first[:-1]))
                    first = first[-1:]
                for data in first:  # send() waits for the buffer to drain, under the stall timeout
                    await self._send(c, data)
            while True:
                while c.queue:
                    _, data = c.queue.popitem(last=False)
                    await self._send(c, data)
                c.busy = False
                c.wake.clear()
                await c.wake.wait()
                c.busy = True
        except TimeoutError:
            self._drop_slow(c, f"read nothing for {self.config.client_timeout_s:g} s")
        except ConnectionClosed:
            pass

    async def _send(self, c: Client, data: bytes) -> None:
        async with asyncio.timeout(self.config.client_timeout_s):
            await c.ws.send(data, text=True)

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        st = self.stats
        lat = sorted(self._latencies)
        return {
            "type": "status",
            "paused": self.paused,
            "lag": round(st.lag, 2) if st else 0.0,
            "level_db": round(st.level_db, 1) if st and st.level_db > -200 else None,
            "in_speech": bool(st and st.in_speech),
            "language": st.language if st else "auto",
            "viewers": len(self.viewers),
            "dropped_audio": st.dropped_frames if st else 0,
            "final_latency_p50": round(lat[len(lat) // 2], 2) if lat else None,
            "audio_seconds": round(st.audio_seconds, 1) if st else 0.0,
            "sender": (self.sender is not None) if self.ingest is not None else None,
        }

    @property
    def paused(self) -> bool:
        if self.controls is not None:
            return bool(self.controls.paused)
        return bool(self.stats and self.stats.paused)

    def broadcast_status(self) -> None:
        data = dumps(self.status())
        direct: dict[bytes, list] = {}
        for c in (*self.viewers, *self.consoles):
            self._offer(c, ("status",), data, direct)
        self._flush(direct)

    @property
    def languages(self) -> list[str]:
        return sorted(self._languages)

    # -- endpoints --------------------------------------------------------------------------
    async def handle(self, ws: ServerConnection) -> None:
        path = ws.request.path.partition("?")[0]
        try:
            if path == VIEW:
                await self._viewer(ws)
            elif path == CONTROL:
                await self._control(ws)
            elif path == AUDIO:
                await self._audio(ws)
        except (ConnectionClosed, _Refused):
            pass
        except Exception:  # a bug must cost one connection, never the server
            log.exception("handler for %s failed", path)
            await close_ws(ws, CLOSE_INTERNAL, "internal error")

    async def _first(self, ws: ServerConnection, expected: str) -> dict:
        """The first message of a connection; anything else is refused (error + close 1008)."""
        try:
            async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT):
                message = await ws.recv()
        except TimeoutError:
            await self._refuse(ws, f"{expected}_required", f"no {expected} message within "
                                                           f"{FIRST_MESSAGE_TIMEOUT:g} s", CLOSE_POLICY)
        try:
            obj = parse_message(message)
        except ProtocolError as e:
            await self._refuse(ws, e.code, e.message, CLOSE_POLICY)
        if obj["type"] != expected:
            await self._refuse(ws, f"{expected}_required",
                               f'the first message must be {{"type": "{expected}", …}}', CLOSE_POLICY)
        return obj

    async def _refuse(self, ws: ServerConnection, code: str, message: str, close_code: int) -> NoReturn:
        """Answer one error, close, and end the handler (raises _Refused)."""
        self.metrics.protocol_errors += 1
        await refuse(ws, code, message, close_code)
        raise _Refused

    async def _viewer(self, ws: ServerConnection) -> None:
        hello = await self._first(ws, "hello")
        try:
            langs = normalize_langs(hello.get("langs"))
            since = _int_field(hello, "since", 0)
            session = hello.get("session")
            if session is not None and not isinstance(session, str):
                raise ProtocolError("bad_message", '"session" must be a string')
        except ProtocolError as e:
            await self._refuse(ws, e.code, e.message, CLOSE_POLICY)
        # Welcome, replay and registration happen in one step of the loop: nothing published
        # in between can be missed or sent twice.
        log_ = self.log
        reset = since > 0 and (since < log_.floor or since > log_.seq or
                               (session is not None and session != self.session_id))
        replay = log_.after(0 if reset else since)
        welcome = {"type": "welcome", "protocol": PROTOCOL_VERSION, "session": self.session_id,
                   "languages": self.languages, "source_language": self.status()["language"],
                   "seq": log_.seq, "reset": reset, "paused": self.paused}
        c = Client(ws, "viewer", langs)
        first = [dumps(welcome)] + [ev.wire(langs, history=True) for ev in replay if ev.visible_to(langs)]
        self.viewers.add(c)
        pump = self._start_pump(c, first)
        try:
            async for message in ws:
                try:
                    obj = parse_message(message)
                    if obj["type"] == "hello":
                        raise ProtocolError("already_joined", "hello is only accepted once; reconnect "
                                                              "to change languages")
                    raise ProtocolError("viewer_read_only", "viewers cannot send commands; use /ws/control")
                except ProtocolError as e:
                    self._error(c, e)
        finally:
            self.viewers.discard(c)
            c.closing = True
            pump.cancel()

    def _authorized(self, obj: dict) -> bool:
        token = obj.get("token")
        if not isinstance(token, str):
            return False
        return hmac.compare_digest(token.encode(), self.token.encode())  # constant time

    async def _control(self, ws: ServerConnection) -> None:
        auth = await self._first(ws, "auth")
        if not self._authorized(auth):
            await self._refuse(ws, "unauthorized", "wrong or missing token (printed by `subtitler run`, "
                                                   "or [server] token)", CLOSE_POLICY)
        c = Client(ws, "console")
        self.consoles.add(c)
        ok = {"type": "ok", "command": "auth", "session": self.session_id, "protocol": PROTOCOL_VERSION,
              "source_languages": self.source_languages}
        pump = self._start_pump(c, [dumps(ok), dumps(self.status())])
        try:
            async for message in ws:
                try:
                    reply = await self._command(parse_message(message))
                    self._reply(c, reply)
                    self.broadcast_status()  # every screen sees the new state at once
                except ProtocolError as e:
                    self._error(c, e)
        finally:
            self.consoles.discard(c)
            c.closing = True
            pump.cancel()

    async def _command(self, obj: dict) -> dict:
        kind = obj["type"]
        if kind == "auth":
            return {"type": "ok", "command": "auth"}
        if kind == "clear":
            self.clear()
            return {"type": "ok", "command": "clear"}
        if kind not in ("pause", "resume", "set_language"):
            raise ProtocolError("unknown_command", f"unknown command '{kind[:40]}'; allowed: pause, resume, "
                                                   f"clear, set_language")
        controls = self.controls
        if controls is None:
            raise ProtocolError("not_ready", "the session is still starting (loading the model); "
                                             "try again in a moment")
        if kind == "set_language":
            lang = obj.get("language")
            if not isinstance(lang, str) or not lang:
                raise ProtocolError("bad_message", '"language" must be a language code or "auto"')
            try:  # the engine takes its lock: never in the loop thread
                await asyncio.to_thread(controls.set_language, None if lang == "auto" else lang)
            except ValueError as e:
                raise ProtocolError("bad_language", str(e)) from None
            return {"type": "ok", "command": "set_language", "language": lang}
        await asyncio.to_thread(controls.pause if kind == "pause" else controls.resume)
        return {"type": "ok", "command": kind}

    async def _audio(self, ws: ServerConnection) -> None:
        auth = await self._first(ws, "auth")
        if not self._authorized(auth):
            await self._refuse(ws, "unauthorized", "wrong or missing token (printed by `subtitler run`, "
                                                   "or [server] token)", CLOSE_POLICY)
        fmt = (auth.get("sample_rate", SAMPLE_RATE), auth.get("channels", 1), auth.get("format", "s16le"))
        if fmt != (SAMPLE_RATE, 1, "s16le") or not isinstance(auth.get("realtime", True), bool):
            await self._refuse(ws, "bad_format", f"audio must be {SAMPLE_RATE} Hz, 1 channel, s16le "
                                                 f"(\"realtime\": true or false); got {fmt!r}"[:300],
                               CLOSE_UNSUPPORTED)
        if self.ingest is None:
            await self._refuse(ws, "no_remote_input", "this session captions local audio; start it with "
                                                      "`subtitler run --input remote` to send audio",
                               CLOSE_POLICY)
        if self.ingest_ended:
            await self._refuse(ws, "ended", "this session's audio has ended", CLOSE_POLICY)
        if self.sender is not None:
            await self._refuse(ws, "busy", "another sender is streaming to this session", CLOSE_TRY_LATER)
        self.sender, self.sender_realtime = ws, auth.get("realtime", True)
        if len(self._pending) % 2:  # a previous sender vanished mid-sample: keep whole samples only
            del self._pending[-1]
        log.info("audio sender connected from %s", ws.remote_address)
        errors = 0
        try:
            await ws.send(dumps({"type": "ok", "command": "auth"}), text=True)
            async for message in ws:
                if isinstance(message, bytes):
                    if not self.ingest_ended:
                        await self._push(ws, message)
                    continue
                try:
                    obj = parse_message(message)
                    if obj["type"] != "end":
                        raise ProtocolError("unknown_type", f"unknown message '{obj['type'][:40]}' on "
                                                            f"/ws/audio; send binary PCM frames and "
                                                            f"{{\"type\": \"end\"}}")
                except ProtocolError as e:
                    self.metrics.protocol_errors += 1
                    errors += 1
                    await ws.send(dumps({"type": "error", "code": e.code, "message": e.message}), text=True)
                    if errors >= MAX_ERRORS:
                        await close_ws(ws, CLOSE_POLICY, "too many bad messages")
                        return
                    continue
                await self._end_of_stream(ws)
                return
        finally:
            if self.sender is ws:
                self.sender = None
                log.info("audio sender disconnected")

    async def _push(self, ws: ServerConnection, frame: bytes) -> None:
        self._pending += frame
        n = len(self._pending) // (2 * BLOCK_SAMPLES)
        if not n:
            return
        cut = n * 2 * BLOCK_SAMPLES
        samples = np.frombuffer(bytes(self._pending[:cut]), dtype="<i2").astype(np.int16)
        del self._pending[:cut]
        for block in samples.reshape(n, BLOCK_SAMPLES):
            await self._room_for_block(ws)
            self.ingest.push(block)
            self._pushed_samples += BLOCK_SAMPLES
        pushed = self._pushed_samples / SAMPLE_RATE
        self.metrics.audio_seconds_received = pushed
        self._feed.append((pushed, time.monotonic()))

    async def _room_for_block(self, ws: ServerConnection) -> None:
        """Hold a sender back (TCP does the rest) rather than lose its audio.

        A live sender is only held when the capture queue is nearly full; a file sent
        faster than real time is fed at the pace the decoder keeps up with, so the live
        policy never has to skip its audio.
        """
        while self.controls is None:  # the model is still loading: hold the sender, lose nothing
            await asyncio.sleep(0.05)
            _check_open(ws)
        controls = self.controls
        limit = 0.8 * self.queue_seconds if self.sender_realtime else 1.0
        fresh = False
        while True:
            st = self.stats if not fresh else await asyncio.to_thread(controls.stats)
            if st is not None:
                backlog = (self._pushed_samples / SAMPLE_RATE - st.audio_seconds
                           - st.dropped_frames * BLOCK_SAMPLES / SAMPLE_RATE)
                waiting = st.utterances - st.finals
                if backlog < limit and (self.sender_realtime or waiting < 1):
                    return
            if fresh:
                await asyncio.sleep(0.02)
                _check_open(ws)
            fresh = True

    async def _end_of_stream(self, ws: ServerConnection) -> None:
        if self._pending:  # the tail shorter than a block
            tail = bytes(self._pending[: len(self._pending) // 2 * 2])
            self._pending.clear()
            if tail:
                self.ingest.push(np.frombuffer(tail, dtype="<i2").astype(np.int16))
                self._pushed_samples += len(tail) // 2
        self.ingest_ended = True
        self.ingest.end()
        log.info("audio sender ended the stream; finishing the last utterance")
        # Server.finish_ingest sets this once the session has flushed the transcripts.
        done = asyncio.ensure_future(self._ingest_done.wait())
        closed = asyncio.ensure_future(ws.wait_closed())
        await asyncio.wait({done, closed}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        closed.cancel()
        _check_open(ws)
        await ws.send(dumps({"type": "ok", "command": "end"}), text=True)
        await close_ws(ws, CLOSE_NORMAL, "end of stream")

    def finish_ingest(self) -> None:
        self._ingest_done.set()

    async def shutdown(self, drain: float) -> None:
        """Let queued events reach the screens (up to ``drain`` s), then close everyone with 1001."""
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and any(
                c.queue or c.ws.transport.get_write_buffer_size() for c in self.viewers | self.consoles):
            await asyncio.sleep(0.02)

    # -- what /healthz and /metrics report (server.Server serves them) --------------------
    def healthz(self) -> dict:
        return {"status": "ok", "session": self.session_id, "protocol": PROTOCOL_VERSION,
                "uptime": round(time.monotonic() - self.started, 1), "viewers": len(self.viewers)}

    def metrics_text(self) -> str:
        m, st = self.metrics, self.stats
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {value:.10g}" if isinstance(value, float) else f"{name}{labels} {value}")

        metric("subtitler_captions_total", "counter", "Captions published to the room, by kind.",
               [('{kind="final"}', m.finals), ('{kind="partial"}', m.partials)])
        metric("subtitler_translations_total", "counter", "Translations published after their caption.",
               [("", m.translations)])
        cumulative = []
        for le, n in zip(LATENCY_BUCKETS, m.latency_buckets):
            cumulative.append((f'{{le="{le:g}"}}', n))
        lines.append("# HELP subtitler_final_latency_seconds From the end of speech to its final caption.")
        lines.append("# TYPE subtitler_final_latency_seconds histogram")
        for labels, n in cumulative:
            lines.append(f"subtitler_final_latency_seconds_bucket{labels} {n}")
        lines.append(f'subtitler_final_latency_seconds_bucket{{le="+Inf"}} {m.latency_count}')
        lines.append(f"subtitler_final_latency_seconds_sum {m.latency_sum:.10g}")
        lines.append(f"subtitler_final_latency_seconds_count {m.latency_count}")
        metric("subtitler_lag_seconds", "gauge", "Audio received but not yet decoded.",
               [("", float(round(st.lag, 3)) if st else 0.0)])
        metric("subtitler_audio_seconds", "gauge", "Audio the session has heard.",
               [("", float(round(st.audio_seconds, 3)) if st else 0.0)])
        metric("subtitler_viewers", "gauge", "Connected screens.", [("", len(self.viewers))])
        metric("subtitler_consoles", "gauge", "Connected, authenticated consoles.", [("", len(self.consoles))])
        metric("subtitler_audio_dropped_blocks_total", "counter",
               "Audio blocks lost because the capture queue was full.", [("", st.dropped_frames if st else 0)])
        metric("subtitler_audio_received_seconds_total", "counter", "Audio received on /ws/audio.",
               [("", float(round(m.audio_seconds_received, 3)))])
        metric("subtitler_messages_dropped_total", "counter",
               "Messages not sent: queued partials replaced by a newer one.",
               [('{reason="superseded"}', m.superseded)])
        metric("subtitler_clients_disconnected_total", "counter",
               "Clients closed with 1013 because they did not keep up.", [('{reason="slow"}', m.slow_disconnects)])
        metric("subtitler_protocol_errors_total", "counter", "Malformed, unknown or refused client messages.",
               [("", m.protocol_errors)])
        metric("subtitler_paused", "gauge", "1 while captioning is paused.", [("", int(self.paused))])
        metric("subtitler_uptime_seconds", "gauge", "Seconds since the server started.",
               [("", float(round(time.monotonic() - self.started, 3)))])
        return "\n".join(lines) + "\n"


def _check_open(ws: ServerConnection) -> None:
    """A handler waiting on something else notices its peer has gone (and ends quietly)."""
    if ws.state is not State.OPEN:
        raise _Refused


async def close_ws(ws: ServerConnection, code: int, reason: str) -> None:
    """Close with a code; a peer that does not read our close frame is cut off after CLOSE_TIMEOUT."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code, reason)
    except TimeoutError:
        ws.transport.abort()
    except Exception:  # already gone
        ws.transport.abort()


async def refuse(ws: ServerConnection, code: str, message: str, close_code: int) -> None:
    """One error event, then the close (used before a connection is registered)."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.send(dumps({"type": "error", "code": code, "message": message}), text=True)
    except (TimeoutError, ConnectionClosed):
        pass
    await close_ws(ws, close_code, code)
