"""`subtitler send`: stream a recording or this machine's microphone to a room's /ws/audio
(``/rooms/NAME/ws/audio`` with ``room``; the server's default room without).

The audio source (``audio.FileSource`` / ``audio.MicrophoneSource``, already 16 kHz mono int16)
is read on its own thread into a bounded buffer; the asyncio side sends each block as one binary
frame. A file sent without ``--realtime`` goes as fast as the server reads it (the server reads
only as fast as it decodes). If the connection drops mid-stream the sender reconnects and goes
on; the microphone keeps capturing into the buffer meanwhile. Ctrl-C or the end of the file sends
``{"type": "end"}`` and waits for the server's ``ok``. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
import urllib.parse
from typing import TextIO

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .audio import AudioSource
from .captions import SAMPLE_RATE
from .protocol import (AUDIO, BAD_FORMAT, BUSY, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_UNSUPPORTED, ENDED,
                       NO_REMOTE_INPUT, UNAUTHORIZED, audio_auth, check_room_name, room_path)

BUFFER_BLOCKS = 500  # ~10 s of 20 ms blocks kept while the connection is down
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


def send_audio(source: AudioSource, url: str, token: str, out: TextIO = sys.stderr, room: str | None = None) -> int:
    """Stream ``source`` to the server at ``url`` (to room ``room``, else its default room) until
    it ends (or Ctrl-C); 0 once the server confirmed the end. SendError says what went wrong."""
    return asyncio.run(_Sender(source, server_url(url, room), token, out, room).run())


class _Sender:
    def __init__(self, source: AudioSource, url: str, token: str, out: TextIO, room: str | None = None):
        self.source, self.url, self.token, self.out, self.room = source, url, token, out, room
        self.sent_samples = 0
        self.stopping = False
        self.pending = None  # a block (or _END) taken from the buffer and not yet known to be sent
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
            raise SendError("interrupted before the server confirmed the end of the stream", 130) from None
        finally:
            self.source.stop()
        if self.source_error is not None:
            raise SendError(f"reading the audio failed: {self.source_error}", 1)
        dropped = self.source.dropped_blocks
        self.say(f"Sent {self.sent_samples / SAMPLE_RATE:.1f} s of audio in {time.monotonic() - t0:.1f} s"
                 + (f" ({dropped} blocks dropped while the connection could not keep up)" if dropped else "")
                 + "; the server finished the last caption.")
        return 0

    def _produce(self, loop: asyncio.AbstractEventLoop) -> None:
        """Source thread: blocks → the buffer. A full buffer blocks here: a file waits, a
        microphone's own capture queue overflows and counts what it drops."""
        def put(item) -> bool:
            coro = self.queue.put(item)
            try:
                asyncio.run_coroutine_threadsafe(coro, loop).result()
                return True
            except BaseException:  # the loop ended (an error, or the stream is over): stop reading
                coro.close()
                return False

        try:
            for block in self.source:
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
                async with connect(self.url, open_timeout=REPLY_TIMEOUT, compression=None,
                                   max_size=1 << 20, close_timeout=2) as ws:
                    await self._auth(ws)
                    if connected_once:
                        self.say("reconnected; sending on")
                    connected_once, down_since, delay = True, None, 0.5
                    await self._pump(ws)
                    return
            except _Refused as e:
                if e.code == BUSY and connected_once:  # our own old connection may linger a moment
                    problem = str(e)
                else:
                    raise SendError(f"the server refused the stream: {e}", FATAL.get(e.code, 1)) from None
            except InvalidStatus as e:
                raise SendError(self._refused_at_handshake(e.response), 2) from None
            except InvalidURI as e:
                raise SendError(f"bad server address {self.url}: {e}", 2) from None
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                if code == CLOSE_GOING_AWAY:
                    what = "room was closed" if e.rcvd.reason == "room closed" else "server ended the session"
                    raise SendError(f"the {what} before the end of the stream", 1) from None
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
                raise SendError("stopped while disconnected: the server did not get the end of the stream", 1)
            if now - down_since > RECONNECT_FOR:
                raise SendError(f"{problem}; gave up after {RECONNECT_FOR:.0f} s", 1)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _refused_at_handshake(self, response) -> str:
        """Why the server would not open the WebSocket: a 404 names the rooms it has."""
        status = response.status_code
        body = bytes(response.body or b"").decode("utf-8", "replace").strip()[:300]
        if status == 404 and body:
            hint = "" if self.room else "; choose one with --room NAME"
            return f"{self.url}: {body}{hint}"
        return (f"{self.url} is not a subtitler audio endpoint (HTTP {status}); give the address "
                f"`subtitler run` or `subtitler serve` printed, e.g. ws://HOST:8765 (and --room NAME)")

    async def _auth(self, ws) -> None:
        await ws.send(json.dumps(audio_auth(self.token, self.source.realtime)))
        async with asyncio.timeout(REPLY_TIMEOUT):
            reply = _parse(await ws.recv())
        if reply.get("type") == "error":
            raise _Refused(str(reply.get("code")), str(reply.get("message")))
        if reply.get("type") != "ok":
            raise SendError(f"unexpected answer from the server: {str(reply)[:200]}", 1)

    async def _pump(self, ws) -> None:
        """Send the buffer's blocks, then ``end``; returns once the server confirmed it.
        ``self.pending`` keeps the block in flight, so a reconnect resends it."""
        ended = asyncio.Event()

        async def read() -> None:  # server → us: the ok for "end", or an error to show
            async for message in ws:
                reply = _parse(message)
                if reply.get("type") == "ok" and reply.get("command") == "end":
                    ended.set()
                elif reply.get("type") == "error":
                    self.say(f"server: {reply.get('message')}")

        reader = asyncio.ensure_future(read())
        reader.add_done_callback(lambda t: t.cancelled() or t.exception())  # a closed socket is seen by send()
        try:
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
                        raise SendError("the connection closed before the server confirmed the end of "
                                        "the stream", 1)
                    return
                await ws.send(np.asarray(self.pending, dtype="<i2").tobytes())
                self.sent_samples += len(self.pending)
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
