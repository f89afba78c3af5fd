"""A room's audio ingest: what /ws/audio's sender pushes, held back rather than lost, and
acknowledged so that a sender that reconnects resends exactly what did not arrive.

One sender at a time feeds the room's ``PushSource``; its frames (any length, even mid-sample)
are re-cut into 20 ms blocks. The socket is always read (so pings are answered and the
connection stays alive however long the decoder holds the audio back); what was read waits in a
buffer until the session has room for it: a live sender only when the capture queue is nearly
full, a recording sent faster than real time at the pace the decoder keeps up with, so the live
policy never has to skip its audio. Every ``ACK_EVERY_S`` of audio taken into the session is
acknowledged (``{"type": "ack", "received": SAMPLES}``); a sender keeps at most ``WINDOW_S``
unacknowledged (the flow control), and after a reconnect resends from the ``received`` of the
server's ``ok``. A sender that ignores the window is read only as fast as the audio is taken.
``gap`` messages (audio the sender lost, e.g. its microphone overflowed while the network was
down) are counted, logged and handed to the room. ``end`` lets the session finish its last
utterance; the sender is answered once the room calls ``finish``.

Lives in the server's loop; the session's controls and stats are read through callables, so
a room can attach its session after a sender connected (the sender waits meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from typing import Callable, Protocol

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .captions import SAMPLE_RATE, SessionStats
from .channel import close_ws
from .metrics import RoomMetrics
from .protocol import (BUSY, CLOSE_INTERNAL, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_LATER, ENDED, MAX_ERRORS, NO_REMOTE_INPUT,
                       ProtocolError, dumps, error_message, parse_message)

log = logging.getLogger("subtitler.server")

BLOCK_SAMPLES = SAMPLE_RATE // 50  # ingest re-cut into 20 ms blocks, the unit PushSource counts
BLOCK_BYTES = 2 * BLOCK_SAMPLES
ACK_EVERY_S = 0.25  # audio taken between two acknowledgements
WINDOW_S = 4.0  # unacknowledged audio a sender may have in flight (told in the auth's ok)
OVERRUN_BYTES = int(2 * WINDOW_S * SAMPLE_RATE * 2)  # read beyond this only as the audio is taken
MAX_GAP_S = 24 * 3600.0


class Ingest(Protocol):
    """Where /ws/audio puts samples; ``audio.PushSource`` is one."""

    def push(self, samples: np.ndarray) -> None: ...
    def end(self) -> None: ...


class SenderGone(Exception):
    """The sender disconnected while its handler waited on something else."""


def check_open(ws: ServerConnection) -> None:
    if ws.state is not State.OPEN:
        raise SenderGone


GapListener = Callable[[float, float, str], None]  # (session audio second, seconds lost, why)


class AudioIngest:
    """The room's /ws/audio: one sender, its flow control, gaps, and the end of its stream."""

    def __init__(self, metrics: RoomMetrics, controls: Callable[[], object | None],
                 stats: Callable[[], SessionStats | None], session: Callable[[], str] = lambda: ""):
        self.metrics = metrics
        self._controls, self._stats, self._session = controls, stats, session
        self.source: Ingest | None = None
        self.queue_seconds = 10.0
        self.ended = False
        self.sender: ServerConnection | None = None
        self.realtime = True
        self.gaps = 0  # gaps the senders reported this session, and their length
        self.gap_seconds = 0.0
        self.resumes = 0  # senders that came back and resumed from the acknowledged audio
        self.on_gap: GapListener | None = None  # the room marks a gap in its transcript
        self._done = asyncio.Event()
        self._pushed_samples = 0
        self._pending = bytearray()  # read from the sender, not yet taken into the session
        self._read = asyncio.Event()  # the reader put audio in _pending
        self._taken = asyncio.Event()  # the feeder took what it could
        self._feed: deque[tuple[float, float]] = deque(maxlen=30000)  # (audio s pushed, monotonic)

    def attach(self, source: Ingest, queue_seconds: float) -> None:
        """A new source: a new session, whose audio counts from 0 (after a previous ``end``)."""
        self.source, self.queue_seconds = source, queue_seconds
        self.ended = False
        self._done = asyncio.Event()
        self._pushed_samples = 0
        self.gaps, self.gap_seconds = 0, 0.0
        self._pending.clear()
        self._feed.clear()

    @property
    def pushed_seconds(self) -> float:
        return self._pushed_samples / SAMPLE_RATE

    @property
    def received_samples(self) -> int:
        """Samples of this session's audio taken into the session: what ``ack`` acknowledges."""
        return self._pushed_samples

    def fed_at(self, audio_s: float) -> float | None:
        """Wall time at which pushed audio first reached ``audio_s`` (recent history only);
        None for a room whose audio does not come from a sender."""
        found = None
        for pushed, t in reversed(self._feed):
            if pushed < audio_s:
                break
            found = t
        return found

    @property
    def remote(self) -> bool:
        return bool(self._feed)

    def refusal(self) -> tuple[str, str, int] | None:
        """Why a new sender cannot stream now: (code, message, close code), or None."""
        if self.source is None:
            return (NO_REMOTE_INPUT, "this room captions local audio; start it with `--input remote` "
                                     "to send audio", CLOSE_POLICY)
        if self.ended:
            return ENDED, "this session's audio has ended", CLOSE_POLICY
        if self.sender is not None:
            return BUSY, "another sender is streaming to this room", CLOSE_TRY_LATER
        return None

    async def stream(self, ws: ServerConnection, realtime: bool, resume: bool = False) -> None:
        """Serve an authorized sender until its end, or until it goes. ``resume``: the sender
        says it is coming back after a drop (it resends from our ``received``)."""
        self.sender, self.realtime = ws, realtime
        # What a previous sender sent but the session had not taken was never acknowledged:
        # a sender resends it from ``received``.
        self._pending.clear()
        if resume:
            self.resumes += 1
        log.info("audio sender %s from %s at %.1f s of the session's audio",
                 "resumed" if resume else "connected", ws.remote_address, self.pushed_seconds)
        errors = 0
        feeder: asyncio.Task | None = None
        try:
            await ws.send(dumps({"type": "ok", "command": "auth", "session": self._session(),
                                 "received": self._pushed_samples, "window": WINDOW_S}), text=True)
            feeder = asyncio.ensure_future(self._feeder(ws))
            feeder.add_done_callback(lambda task: self._feeder_done(task, ws))
            async for message in ws:
                if isinstance(message, bytes):
                    if not self.ended:
                        self._pending += message
                        self._read.set()
                        while len(self._pending) > OVERRUN_BYTES and not feeder.done():
                            await self._wait_taken()  # a sender beyond its window: read at the decoder's pace
                    continue
                try:
                    obj = parse_message(message)
                    if obj["type"] == "gap":
                        self._gap(obj)
                        continue
                    if obj["type"] != "end":
                        raise ProtocolError("unknown_type", f"unknown message '{obj['type'][:40]}' on "
                                                            f"/ws/audio; send binary PCM frames, "
                                                            f"{{\"type\": \"gap\"}} and {{\"type\": \"end\"}}")
                except ProtocolError as e:
                    self.metrics.protocol_errors += 1
                    errors += 1
                    await ws.send(dumps(error_message(e.code, e.message)), text=True)
                    if errors >= MAX_ERRORS:
                        await close_ws(ws, CLOSE_POLICY, "too many bad messages")
                        return
                    continue
                while len(self._pending) >= BLOCK_BYTES and not feeder.done():
                    await self._wait_taken()  # every whole block goes in before the end
                if feeder.done():
                    feeder.result()  # the sender went, or a bug: raise it
                feeder.cancel()
                await self._end_of_stream(ws)
                return
        except SenderGone:
            pass
        finally:
            if feeder is not None:
                feeder.cancel()
            if self.sender is ws:
                self.sender = None
                if not self.ended:
                    self._pending.clear()  # not acknowledged: the sender resends it
                log.info("audio sender disconnected at %.1f s of the session's audio", self.pushed_seconds)

    async def _wait_taken(self) -> None:
        self._taken.clear()
        await self._taken.wait()

    async def _feeder(self, ws: ServerConnection) -> None:
        """Takes whole blocks from ``_pending`` into the session as it has room; acknowledges."""
        acked = self._pushed_samples
        every = int(ACK_EVERY_S * SAMPLE_RATE)
        while True:
            self._read.clear()  # before looking: audio read from now on wakes us again
            while len(self._pending) >= BLOCK_BYTES:
                await self._room_for_block(ws)
                if len(self._pending) < BLOCK_BYTES:  # cleared meanwhile (the sender went)
                    break
                block = np.frombuffer(bytes(self._pending[:BLOCK_BYTES]), dtype="<i2").astype(np.int16)
                del self._pending[:BLOCK_BYTES]
                self.source.push(block)
                self._pushed_samples += BLOCK_SAMPLES
                self.metrics.audio_seconds_received += BLOCK_SAMPLES / SAMPLE_RATE
                self._feed.append((self.pushed_seconds, time.monotonic()))
                self._taken.set()
                if self._pushed_samples - acked >= every:
                    acked = self._pushed_samples
                    await ws.send(dumps({"type": "ack", "received": acked}), text=True)
            if self._pushed_samples != acked:
                acked = self._pushed_samples
                await ws.send(dumps({"type": "ack", "received": acked}), text=True)
            self._taken.set()
            await self._read.wait()

    def _feeder_done(self, task: asyncio.Task, ws: ServerConnection) -> None:
        """A feeder that failed for another reason than the sender going is a bug: cost this
        sender its connection (it reconnects and resends), never the session."""
        if task.cancelled() or isinstance(task.exception(), (SenderGone, ConnectionClosed)):
            return
        log.error("taking audio from %s failed", ws.remote_address, exc_info=task.exception())
        self._read.set()
        asyncio.ensure_future(close_ws(ws, CLOSE_INTERNAL, "internal error"))

    def _gap(self, obj: dict) -> None:
        seconds = obj.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                or not 0 < seconds <= MAX_GAP_S:
            raise ProtocolError("bad_message", f'"seconds" of a gap must be a number of seconds > 0 '
                                               f'(at most {MAX_GAP_S:g})')
        reason = obj.get("reason")
        reason = reason[:200] if isinstance(reason, str) and reason else "the sender lost audio"
        # The gap lies after everything the sender sent before it, taken or still waiting.
        at = (self._pushed_samples + len(self._pending) // 2) / SAMPLE_RATE
        self.gaps += 1
        self.gap_seconds += float(seconds)
        log.warning("audio gap: the sender lost %.2f s of audio at %.1f s of the session (%s)", seconds, at, reason)
        if self.on_gap is not None:
            try:
                self.on_gap(at, float(seconds), reason)
            except Exception:
                log.exception("marking an audio gap failed")

    async def _room_for_block(self, ws: ServerConnection) -> None:
        """Hold a sender back (TCP does the rest) rather than lose its audio."""
        while self._controls() is None:  # the model is still loading: hold the sender, lose nothing
            await asyncio.sleep(0.05)
            check_open(ws)
        controls = self._controls()
        limit = 0.8 * self.queue_seconds if self.realtime else 1.0
        fresh = False
        while True:
            st = self._stats() if not fresh else await asyncio.to_thread(controls.stats)
            if st is not None:
                backlog = (self.pushed_seconds - st.audio_seconds
                           - st.dropped_frames * BLOCK_SAMPLES / SAMPLE_RATE)
                waiting = st.utterances - st.finals
                if backlog < limit and (self.realtime or waiting < 1):
                    return
            if fresh:
                await asyncio.sleep(0.02)
                check_open(ws)
            fresh = True

    async def _end_of_stream(self, ws: ServerConnection) -> None:
        if self._pending:  # the tail shorter than a block
            tail = bytes(self._pending[: len(self._pending) // 2 * 2])
            self._pending.clear()
            if tail:
                self.source.push(np.frombuffer(tail, dtype="<i2").astype(np.int16))
                self._pushed_samples += len(tail) // 2
                self.metrics.audio_seconds_received += len(tail) // 2 / SAMPLE_RATE
        self.ended = True
        self.source.end()
        log.info("audio sender ended the stream; finishing the last utterance")
        # finish() is called once the session has flushed the transcripts.
        done = asyncio.ensure_future(self._done.wait())
        closed = asyncio.ensure_future(ws.wait_closed())
        await asyncio.wait({done, closed}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        closed.cancel()
        check_open(ws)
        await ws.send(dumps({"type": "ok", "command": "end", "received": self._pushed_samples}), text=True)
        await close_ws(ws, CLOSE_NORMAL, "end of stream")

    def finish(self) -> None:
        """The session finished the stream and flushed: answer the sender's ``end``."""
        self._done.set()
