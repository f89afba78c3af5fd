"""A room's audio ingest: what /ws/audio's sender pushes, held back rather than lost.

One sender at a time feeds the room's ``PushSource``; its frames (any length, even mid-sample)
are re-cut into 20 ms blocks. A live sender is only held back when the capture queue is nearly
full; a recording sent faster than real time is fed at the pace the decoder keeps up with (TCP
pushes back on the sender), so the live policy never has to skip its audio. ``end`` lets the
session finish its last utterance; the sender is answered once the room calls ``finish``.

Lives in the server's loop; the session's controls and stats are read through callables, so
a room can attach its session after a sender connected (the sender waits meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable, Protocol

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from .captions import SAMPLE_RATE, SessionStats
from .channel import close_ws
from .metrics import RoomMetrics
from .protocol import (BUSY, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_LATER, ENDED, MAX_ERRORS, NO_REMOTE_INPUT,
                       ProtocolError, dumps, error_message, parse_message)

log = logging.getLogger("subtitler.server")

BLOCK_SAMPLES = SAMPLE_RATE // 50  # ingest re-cut into 20 ms blocks, the unit PushSource counts


class Ingest(Protocol):
    """Where /ws/audio puts samples; ``audio.PushSource`` is one."""

    def push(self, samples: np.ndarray) -> None: ...
    def end(self) -> None: ...


class SenderGone(Exception):
    """The sender disconnected while its handler waited on something else."""


def check_open(ws: ServerConnection) -> None:
    if ws.state is not State.OPEN:
        raise SenderGone


class AudioIngest:
    """The room's /ws/audio: one sender, its back-pressure, and the end of its stream."""

    def __init__(self, metrics: RoomMetrics, controls: Callable[[], object | None],
                 stats: Callable[[], SessionStats | None]):
        self.metrics = metrics
        self._controls, self._stats = controls, stats
        self.source: Ingest | None = None
        self.queue_seconds = 10.0
        self.ended = False
        self.sender: ServerConnection | None = None
        self.realtime = True
        self._done = asyncio.Event()
        self._pushed_samples = 0
        self._pending = bytearray()
        self._feed: deque[tuple[float, float]] = deque(maxlen=30000)  # (audio s pushed, monotonic)

    def attach(self, source: Ingest, queue_seconds: float) -> None:
        """A new source: a new session, whose audio counts from 0 (after a previous ``end``)."""
        self.source, self.queue_seconds = source, queue_seconds
        self.ended = False
        self._done = asyncio.Event()
        self._pushed_samples = 0
        self._pending.clear()
        self._feed.clear()

    @property
    def pushed_seconds(self) -> float:
        return self._pushed_samples / SAMPLE_RATE

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

    async def stream(self, ws: ServerConnection, realtime: bool) -> None:
        """Serve an authorized sender until its end, or until it goes."""
        self.sender, self.realtime = ws, realtime
        if len(self._pending) % 2:  # a previous sender vanished mid-sample: keep whole samples only
            del self._pending[-1]
        log.info("audio sender connected from %s", ws.remote_address)
        errors = 0
        try:
            await ws.send(dumps({"type": "ok", "command": "auth"}), text=True)
            async for message in ws:
                if isinstance(message, bytes):
                    if not self.ended:
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
                    await ws.send(dumps(error_message(e.code, e.message)), text=True)
                    if errors >= MAX_ERRORS:
                        await close_ws(ws, CLOSE_POLICY, "too many bad messages")
                        return
                    continue
                await self._end_of_stream(ws)
                return
        except SenderGone:
            pass
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
            self.source.push(block)
            self._pushed_samples += BLOCK_SAMPLES
            self.metrics.audio_seconds_received += BLOCK_SAMPLES / SAMPLE_RATE
        self._feed.append((self.pushed_seconds, time.monotonic()))

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
        await ws.send(dumps({"type": "ok", "command": "end"}), text=True)
        await close_ws(ws, CLOSE_NORMAL, "end of stream")

    def finish(self) -> None:
        """The session finished the stream and flushed: answer the sender's ``end``."""
        self._done.set()
