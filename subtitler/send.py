"""`subtitler send`: stream a recording or this machine's microphone to a room's /ws/audio
(``/rooms/NAME/ws/audio`` with ``room``; the server's default room without).

The audio source (``audio.FileSource`` / ``audio.MicrophoneSource``, already 16 kHz mono int16)
is read on its own thread into a bounded buffer; the asyncio side sends each block as one binary
frame and always reads the server's messages (so the connection's pings are answered however
long the server holds the audio back). The server acknowledges the audio it has taken
(``ack``, in samples); at most ``window`` seconds go unacknowledged, which paces a file sent
without ``--realtime`` to the decoder's speed. If the connection drops, the sender reconnects
and resends exactly what the server had not taken (the ``received`` of its ``ok``): nothing is
lost or doubled. Audio lost before it could be sent (a microphone's queue overflowing during a
long outage) is reported to the server as a ``gap``. Ctrl-C or the end of the file sends
``{"type": "end"}`` and waits for the server's ``ok``; the summary says what the server
confirmed. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from collections import deque
from pathlib import Path
from typing import TextIO

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .audio import AudioSource
from .captions import SAMPLE_RATE
from .protocol import (AUDIO, BAD_FORMAT, BUSY, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_UNSUPPORTED, ENDED,
                       NO_REMOTE_INPUT, UNAUTHORIZED, audio_auth, check_room_name, guard_abort, room_path)

BUFFER_BLOCKS = 3000  # 60 s of 20 ms blocks kept while the connection is down (as long as we retry)
RECONNECT_FOR = 60.0  # give up after this long without a connection
REPLY_TIMEOUT = 10.0  # for the answer to auth
END_TIMEOUT = 300.0  # the server decodes what is left before it confirms the end
FATAL = {UNAUTHORIZED: 2, BAD_FORMAT: 2, NO_REMOTE_INPUT: 2, ENDED: 1}  # error code → exit status


class SendError(Exception):
    """The stream cannot go on; the message says why, ``exit_code`` is the process's status."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class _Refused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def server_url(text: str, room: str | None = None) -> str:
    """``ws://HOST:PORT`` (or ``HOST:PORT``, ``http://…``) → the audio address: the room's
    ``/rooms/ROOM/ws/audio`` with ``room``, else the default room's /ws/audio."""
    raw = text.strip()
    if "://" not in raw:
        raw = "ws://" + raw
    parts = urllib.parse.urlsplit(raw)
    scheme = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}.get(parts.scheme.lower())
    try:
        port = parts.port
    except ValueError:
        port, scheme = None, None
    if scheme is None or not parts.hostname:
        raise SendError(f"--server {text!r}: write it as ws://HOST:PORT, e.g. ws://192.168.1.20:8765", 2)
    path = parts.path if parts.path not in ("", "/") else AUDIO
    if room is not None:
        try:
            check_room_name(room)
        except ValueError as e:
            raise SendError(f"--room: {e}", 2) from None
        if path not in (AUDIO, room_path(room, AUDIO)):
            raise SendError(f"--server {text!r} names a path and --room names a room: give the server as "
                            f"ws://HOST:PORT and the room with --room", 2)
        path = room_path(room, AUDIO)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return urllib.parse.urlunsplit((scheme, f"{host}:{port}" if port else host, path, parts.query, ""))


def send_audio(source: AudioSource, url: str, token: str, out: TextIO = sys.stderr, room: str | None = None,
               cafile: str | Path | None = None) -> int:
    """Stream ``source`` to the server at ``url`` (to room ``room``, else its default room) until
    it ends (or Ctrl-C); 0 once the server confirmed the end of everything sent. ``cafile``:
    a certificate to trust for ``wss://`` (e.g. the server's own self-signed one). SendError
    says what went wrong."""
    return asyncio.run(_Sender(source, server_url(url, room), token, out, room, cafile).run())


def tls_context(url: str, cafile: str | Path | None) -> ssl.SSLContext | None:
    """For wss:// the system's trusted certificates, plus ``cafile``; None for ws://."""
    if not url.startswith("wss://"):
        if cafile:
            raise SendError("--tls-ca is for a wss:// server; give the server as wss://HOST:PORT", 2)
        return None
    context = ssl.create_default_context()
    if cafile:
        try:
            context.load_verify_locations(cafile=str(cafile))
        except (OSError, ssl.SSLError) as e:
            raise SendError(f"--tls-ca {cafile}: not a readable PEM certificate ({e})", 2) from None
    return context


class _Connection(ClientConnection):
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        guard_abort(self)


class _Gap:
    """Audio the source lost before it could be sent (its own queue overflowed)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float):
        self.seconds = seconds


class _Sender:
    def __init__(self, source: AudioSource, url: str, token: str, out: TextIO, room: str | None = None,
                 cafile: str | Path | None = None):
        self.source, self.url, self.token, self.out, self.room = source, url, token, out, room
        self.ssl = tls_context(url, cafile)
        self.sent = 0  # samples of our stream written to a connection
        self.acked = 0  # samples of our stream the server took (its acks)
        self.unacked: deque[tuple[int, np.ndarray]] = deque()  # (start sample, block) sent, not yet taken
        self.base: int | None = None  # the server's sample count where our stream began
        self.session: str | None = None
        self.window: int | None = None  # samples we may have unacknowledged; None: a server without acks
        self.acks = asyncio.Event()
        self.confirmed: int | None = None  # what the server's ok for "end" said it received
        self.gaps, self.gap_seconds, self.resent = 0, 0.0, 0
        self.stopping = False
        self.pending = None  # an item taken from the buffer and not yet sent: block, _Gap or _END
        self.source_error: BaseException | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=BUFFER_BLOCKS)
        main = asyncio.current_task()

        def interrupt() -> None:
            if self.stopping:  # a second Ctrl-C: give up at once
                main.cancel()
                return
            self.stopping = True
            self.say("\nstopping: sending the end of the stream…")
            self.source.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, interrupt)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread: no signals
                pass
        producer = threading.Thread(target=self._produce, args=(loop,), name="subtitler-send-source",
                                    daemon=True)
        how = "" if self.source.realtime else ", as fast as the server decodes"
        self.say(f"Sending {self.source.description or 'audio'} to {self.url}{how}. Ctrl-C stops.")
        producer.start()
        t0 = time.monotonic()
        try:
            await self._stream()
        except asyncio.CancelledError:
            raise SendError("interrupted before the server confirmed the end of the stream; "
                            + self._received_text(), 130) from None
        finally:
            self.source.stop()
        if self.source_error is not None:
            raise SendError(f"reading the audio failed: {self.source_error}", 1)
        took = time.monotonic() - t0
        lost = (f"; {self.gap_seconds:.1f} s of audio were lost before they could be sent ({self.gaps} "
                f"gap{'s' * (self.gaps != 1)}: the capture queue overflowed while the connection was down), "
                f"reported to the server" if self.gaps else "")
        if self.confirmed is None:  # a server that does not acknowledge audio (protocol 1 without acks)
            self.say(f"Sent {self.sent / SAMPLE_RATE:.1f} s of audio in {took:.1f} s{lost}; the server "
                     f"finished the last caption (it does not say how much audio it received).")
            return 0
        if self.confirmed != self.sent:
            raise SendError(f"the server confirmed the end of the stream but received "
                            f"{self.confirmed / SAMPLE_RATE:.1f} s of the {self.sent / SAMPLE_RATE:.1f} s sent", 1)
        resent = f" ({self.resent / SAMPLE_RATE:.1f} s resent after reconnecting)" if self.resent else ""
        self.say(f"Sent {self.sent / SAMPLE_RATE:.1f} s of audio in {took:.1f} s{resent}, all of it received by "
                 f"the server{lost}; the server finished the last caption.")
        return 0

    def _received_text(self) -> str:
        if self.window is None:
            return f"{self.sent / SAMPLE_RATE:.1f} s sent"
        return f"the server had received {self.acked / SAMPLE_RATE:.1f} s of the {self.sent / SAMPLE_RATE:.1f} s sent"

    def _produce(self, loop: asyncio.AbstractEventLoop) -> None:
        """Source thread: blocks → the buffer. A full buffer blocks here: a file waits, a
        microphone's own capture queue overflows and counts what it drops (sent on as a gap)."""
        def put(item) -> bool:
            coro = self.queue.put(item)
            try:
                asyncio.run_coroutine_threadsafe(coro, loop).result()
                return True
            except BaseException:  # the loop ended (an error, or the stream is over): stop reading
                coro.close()
                return False

        block_s = getattr(self.source, "block", SAMPLE_RATE // 50) / getattr(self.source, "rate", SAMPLE_RATE)
        seen = self.source.dropped_blocks
        try:
            for block in self.source:
                dropped = self.source.dropped_blocks
                if dropped > seen and not put(_Gap((dropped - seen) * block_s)):
                    return
                seen = dropped
                if not put(block):
                    return
        except Exception as e:  # the file could not be decoded after all
            self.source_error = e
        put(None)

    async def _stream(self) -> None:
        connected_once = False
        down_since: float | None = None
        delay = 0.5
        while True:
            try:
                async with connect(self.url, open_timeout=REPLY_TIMEOUT, compression=None, ssl=self.ssl,
                                   max_size=1 << 20, close_timeout=2, create_connection=_Connection) as ws:
                    reply = await self._auth(ws, resume=connected_once)
                    self._resume(reply, connected_once)
                    connected_once, down_since, delay = True, None, 0.5
                    await self._pump(ws)
                    return
            except _Refused as e:
                if e.code == BUSY and connected_once:  # our own old connection may linger a moment
                    problem = str(e)
                else:
                    raise SendError(f"the server refused the stream: {e}", FATAL.get(e.code, 1)) from None
            except InvalidStatus as e:
                if e.response.status_code == 503 and connected_once:  # full for a moment: try again
                    problem = self._refused_at_handshake(e.response)
                else:
                    raise SendError(self._refused_at_handshake(e.response), 2) from None
            except InvalidURI as e:
                raise SendError(f"bad server address {self.url}: {e}", 2) from None
            except ssl.SSLCertVerificationError as e:
                raise SendError(f"{self.url}: the server's certificate is not trusted ({e.verify_message}); "
                                f"give it with --tls-ca CERT.pem", 2) from None
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                if code == CLOSE_GOING_AWAY:
                    what = "room was closed" if e.rcvd.reason == "room closed" else "server ended the session"
                    raise SendError(f"the {what} before the end of the stream; {self._received_text()}", 1) from None
                if code in (CLOSE_UNSUPPORTED, CLOSE_POLICY):
                    raise SendError(f"the server closed the stream: {e.rcvd.reason}", 2) from None
                problem = f"connection lost ({e})"
            except (OSError, InvalidHandshake, TimeoutError) as e:
                if not connected_once:
                    raise SendError(f"cannot reach {self.url}: {e or type(e).__name__}; is "
                                    f"`subtitler run --input remote` or `subtitler serve` running there?",
                                    1) from None
                problem = f"cannot reach the server ({e or type(e).__name__})"
            # Connection down: retry with back-off while the source keeps filling the buffer.
            now = time.monotonic()
            if down_since is None:
                down_since = now
                self.say(f"{problem}; reconnecting…")
            if self.stopping:
                raise SendError("stopped while disconnected: the server did not get the end of the stream; "
                                + self._received_text(), 1)
            if now - down_since > RECONNECT_FOR:
                raise SendError(f"{problem}; gave up after {RECONNECT_FOR:.0f} s; {self._received_text()}", 1)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _refused_at_handshake(self, response) -> str:
        """Why the server would not open the WebSocket: a 404 names the rooms it has."""
        status = response.status_code
        body = bytes(response.body or b"").decode("utf-8", "replace").strip()[:300]
        if status == 404 and body:
            hint = "" if self.room else "; choose one with --room NAME"
            return f"{self.url}: {body}{hint}"
        if status in (403, 429, 503) and body:
            return f"{self.url} refused the connection (HTTP {status}): {body}"
        return (f"{self.url} is not a subtitler audio endpoint (HTTP {status}); give the address "
                f"`subtitler run` or `subtitler serve` printed, e.g. ws://HOST:8765 (and --room NAME)")

    async def _auth(self, ws, resume: bool) -> dict:
        await ws.send(json.dumps(audio_auth(self.token, self.source.realtime, resume=resume)))
        async with asyncio.timeout(REPLY_TIMEOUT):
            reply = _parse(await ws.recv())
        if reply.get("type") == "error":
            raise _Refused(str(reply.get("code")), str(reply.get("message")))
        if reply.get("type") != "ok":
            raise SendError(f"unexpected answer from the server: {str(reply)[:200]}", 1)
        return reply

    def _resume(self, reply: dict, again: bool) -> None:
        """Line our stream up with what the server has: after a drop, resend from there."""
        received, session = reply.get("received"), reply.get("session")
        if not isinstance(received, int) or isinstance(received, bool) or received < 0:
            self.window = None  # an older server: no acknowledgements, no resending
            self.unacked.clear()
            return
        window = reply.get("window")
        self.window = int(SAMPLE_RATE * (window if isinstance(window, (int, float)) and window > 0 else 4.0))
        if self.base is None or session != self.session:
            if self.base is not None:
                self.say(f"the server started a new session: sending on from "
                         f"{self.acked / SAMPLE_RATE:.1f} s of this stream")
            self.base, self.session = received - self.acked, session
        has = received - self.base
        if has > self.sent and isinstance(self.pending, np.ndarray):  # the block in flight did arrive
            skip = min(has - self.sent, len(self.pending))
            self.pending = self.pending[skip:] if skip < len(self.pending) else None
            self.sent += skip
        self._ack(has)
        if again:
            self.resent += self.sent - self.acked
            self.say(f"reconnected; the server has {self.acked / SAMPLE_RATE:.1f} s of this stream, "
                     f"resending {(self.sent - self.acked) / SAMPLE_RATE:.1f} s and sending on")

    def _ack(self, has: int) -> None:
        """The server took our stream up to sample ``has``: forget what it has."""
        self.acked = max(self.acked, min(has, self.sent))
        while self.unacked and self.unacked[0][0] + len(self.unacked[0][1]) <= self.acked:
            self.unacked.popleft()
        self.acks.set()

    async def _pump(self, ws) -> None:
        """Resend what the server did not take, then send the buffer's blocks within the window,
        then ``end``; returns once the server confirmed it. ``self.pending`` keeps the item in
        flight, so a reconnect sends it again."""
        ended = asyncio.Event()

        async def read() -> None:  # server → us: acks, the ok for "end", errors to show
            try:
                async for message in ws:
                    reply = _parse(message)
                    kind = reply.get("type")
                    if kind == "ack" and isinstance(reply.get("received"), int) and self.base is not None:
                        self._ack(reply["received"] - self.base)
                    elif kind == "ok" and reply.get("command") == "end":
                        if isinstance(reply.get("received"), int) and self.base is not None:
                            self.confirmed = reply["received"] - self.base
                        ended.set()
                    elif kind == "error":
                        self.say(f"server: {reply.get('message')}")
            except ConnectionClosed:
                pass

        def lost() -> ConnectionClosed:
            return ConnectionClosed(ws.protocol.close_rcvd, ws.protocol.close_sent)

        reader = asyncio.ensure_future(read())
        try:
            for start, block in list(self.unacked):  # what the server did not take before the drop
                cut = max(0, self.acked - start)
                if cut < len(block):
                    await ws.send(np.asarray(block[cut:], dtype="<i2").tobytes())
            while True:
                if self.pending is None:
                    block = await self.queue.get()
                    self.pending = _END if block is None else block
                if self.pending is _END:
                    await ws.send(json.dumps({"type": "end"}))
                    waiter = asyncio.ensure_future(ended.wait())
                    await asyncio.wait({waiter, reader}, timeout=END_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if not ended.is_set():
                        raise SendError("the connection closed before the server confirmed the end of the "
                                        "stream; " + self._received_text(), 1)
                    return
                if isinstance(self.pending, _Gap):
                    gap = self.pending
                    await ws.send(json.dumps({"type": "gap", "seconds": round(gap.seconds, 3),
                                              "reason": "the sender's capture queue overflowed"}))
                    self.gaps += 1
                    self.gap_seconds += gap.seconds
                    self.pending = None
                    continue
                while self.window is not None and self.sent - self.acked >= self.window:
                    self.acks.clear()  # held back: wait for the server to take some (pings still answered)
                    waiter = asyncio.ensure_future(self.acks.wait())
                    await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if reader.done():
                        raise lost()
                block = self.pending
                await ws.send(np.asarray(block, dtype="<i2").tobytes())
                if self.window is not None:
                    self.unacked.append((self.sent, block))
                self.sent += len(block)
                self.pending = None
        finally:
            reader.cancel()


_END = object()  # the end of the source, to be sent as {"type": "end"}


def _parse(message) -> dict:
    try:
        obj = json.loads(message) if isinstance(message, str) else {}
    except ValueError:
        obj = {}
    return obj if isinstance(obj, dict) else {}
