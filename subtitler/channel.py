"""A room's channel: its event log and the clients it reaches, with fan-out and back-pressure.

Lives in, and is only touched from, the server's asyncio loop: no locks.

Fan-out: an event is serialised and framed once per distinct language selection, and the
frame is written straight into each client's transport while that client keeps up (nothing
queued, small write buffer): one ``transport.write`` a screen, no task or coroutine on the way.
Only a client that falls behind gets a queue (``Outbox``, pure), where a newer partial of an
utterance replaces the queued one. A client whose queue overflows, whose socket accepts
nothing for ``client_timeout_s``, or that leaves a ping unanswered that long (it stopped
reading) is closed with 1013 and resumes from its last ``seq`` when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Callable, Iterable

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .eventlog import Event, EventLog
from .metrics import RoomMetrics
from .protocol import (CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TRY_LATER, MAX_ERRORS, ProtocolError, dumps,
                       error_message, text_frame)

log = logging.getLogger("subtitler.server")

CLOSE_TIMEOUT = 2.0  # a peer that does not answer our close frame is cut off after this
WRITE_HIGH = 1 << 15  # bytes in a transport's buffer beyond which a client counts as behind
# What a screen shows from a status (web/client.js, live.js): a change goes to every screen at the
# next heartbeat even while captions flow (pause and resume also at once, by broadcast).
SCREEN_FIELDS = ("paused", "offline", "language")
OPEN = State.OPEN  # bound once: an enum member looked up on its class costs ~0.2 µs a time (3.11)


class Overflow(Exception):
    """A client's queue is full: it does not keep up and is closed."""


class Outbox:
    """What one client that fell behind still has to receive, coalesced by key. Pure.

    Keys: ``("p", id)`` a partial (a newer one replaces it), ``("status",)`` (likewise),
    ``("e", seq)`` any other event, ``("r", n)`` a reply. ``put`` raises Overflow once
    ``limit`` messages wait.
    """

    __slots__ = ("limit", "_q")

    def __init__(self, limit: int):
        self.limit = limit
        self._q: OrderedDict[tuple, bytes] = OrderedDict()

    def put(self, key: tuple, data: bytes, drop: tuple | None = None) -> int:
        """Queue ``data``; ``drop``: a key this message makes moot (a final drops its partial).
        Returns how many queued partials it superseded."""
        superseded = 0
        if drop is not None and self._q.pop(drop, None) is not None:
            superseded += 1
        if key[0] in ("p", "status") and self._q.pop(key, None) is not None:
            superseded += key[0] == "p"
        if len(self._q) >= self.limit:
            raise Overflow(f"too slow: {len(self._q)} events waiting")
        self._q[key] = data
        return superseded

    def pop(self) -> bytes:
        return self._q.popitem(last=False)[1]

    def clear(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


class Client:
    """One connection that receives messages: a screen, a console or a venue operator."""

    __slots__ = ("ws", "transport", "role", "langs", "queue", "wake", "busy", "closing", "errors", "n",
                 "heard", "status")

    def __init__(self, ws: ServerConnection, role: str, queue_limit: int, langs: frozenset[str] | None = None):
        self.ws, self.role, self.langs = ws, role, langs
        self.transport = ws.transport
        self.queue = Outbox(queue_limit)
        self.wake = asyncio.Event()
        # The pump has (or is sending) what must go first — welcome and history, or a queue:
        # no direct writes until it is done. Set whenever something is queued.
        self.busy = True
        self.closing = False
        self.errors = 0
        self.n = 0  # counter for reply keys
        self.heard = False  # something was written to it since the last heartbeat
        self.status: tuple | None = None  # the SCREEN_FIELDS of the last heartbeat it was sent


def writable(ws: ServerConnection) -> bool:
    """Frames may go straight to the transport: open, no fragmented send, no extension."""
    return ws.protocol.state is OPEN and ws.send_in_progress is None and not ws.protocol.extensions


def write_now(c: Client, data: bytes, frames: dict[bytes, bytes]) -> None:
    """Write ``data`` into a client's transport, framed once per fan-out (``frames``).

    Server frames are unmasked and carry no extension (compression is off), so every client
    gets the same bytes: building them once instead of per connection (as
    ``websockets.broadcast`` does) halves the cost of a fan-out to 1000 screens. The checks
    are ``broadcast``'s: the connection is open and not mid-way through a fragmented message;
    one that is closing gets nothing more.
    """
    ws = c.ws
    if writable(ws):
        frame = frames.get(data)
        if frame is None:
            frame = frames[data] = text_frame(data)
        c.transport.write(frame)
        c.heard = True
    elif ws.protocol.state is State.OPEN:  # pragma: no cover - extensions negotiated
        broadcast([ws], data, text=True)


async def close_ws(ws: ServerConnection, code: int, reason: str) -> None:
    """Close with a code; a peer that does not read our close frame is cut off after CLOSE_TIMEOUT."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code, reason)
    except Exception:  # a timeout, or already gone
        ws.transport.abort()


class Fanout:
    """Clients in groups (by role), each written directly while it keeps up, else queued."""

    def __init__(self, metrics: RoomMetrics, *, client_queue: int, client_timeout_s: float,
                 roles: Iterable[str]):
        self.metrics = metrics
        self.client_queue, self.client_timeout_s = client_queue, client_timeout_s
        self.groups: dict[str, set[Client]] = {role: set() for role in roles}
        self._tasks: set[asyncio.Task] = set()

    # -- membership -------------------------------------------------------------------------
    def join(self, ws: ServerConnection, role: str, first: list[bytes],
             langs: frozenset[str] | None = None) -> tuple[Client, asyncio.Task]:
        """Register a client and start its pump with ``first`` (welcome, history) to send."""
        c = Client(ws, role, self.client_queue, langs)
        self.groups[role].add(c)
        pump = asyncio.ensure_future(self._pump(c, first))

        def done(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:  # a bug: lose the client, log it
                log.error("sending to %s failed", c.ws.remote_address, exc_info=task.exception())
                self.close(c, CLOSE_INTERNAL, "internal error")
        pump.add_done_callback(done)
        return c, pump

    def leave(self, c: Client, pump: asyncio.Task) -> None:
        self.groups[c.role].discard(c)
        c.closing = True
        pump.cancel()

    def clients(self) -> list[Client]:
        return [c for group in self.groups.values() for c in group]

    # -- sending ----------------------------------------------------------------------------
    def offer(self, c: Client, key: tuple, data: bytes, frames: dict | None = None,
              drop: tuple | None = None) -> None:
        """Write ``data`` to ``c`` now if it keeps up, else queue it (coalescing by ``key``).
        ``frames``: the fan-out's frames, shared by the clients it reaches."""
        if c.closing:
            return
        if not c.busy and c.transport.get_write_buffer_size() < WRITE_HIGH:
            write_now(c, data, {} if frames is None else frames)
            return
        self._queue(c, key, data, drop)

    def _queue(self, c: Client, key: tuple, data: bytes, drop: tuple | None) -> None:
        try:
            self.metrics.superseded += c.queue.put(key, data, drop)
        except Overflow as e:
            self._drop_slow(c, str(e))
            return
        c.busy = True  # the pump sends it, and everything after it, in order
        c.wake.set()

    def reply(self, c: Client, payload: dict) -> None:
        c.n += 1
        self.offer(c, ("r", c.n), dumps(payload))

    def error(self, c: Client, e: ProtocolError) -> None:
        self.metrics.protocol_errors += 1
        c.errors += 1
        self.reply(c, error_message(e.code, e.message))
        if c.errors >= MAX_ERRORS:
            self.close(c, CLOSE_POLICY, "too many bad messages")

    def broadcast(self, payload: dict, roles: Iterable[str], key: tuple = ("status",)) -> None:
        """One message (a status: a newer one replaces a queued one) to every client of ``roles``."""
        data = dumps(payload)
        frames: dict[bytes, bytes] = {}
        for role in roles:
            for c in tuple(self.groups[role]):
                self.offer(c, key, data, frames)

    def heartbeat(self, status: dict, roles: Iterable[str]) -> None:
        """The status of every second. Consoles get each one (their level meter and counters);
        a screen only what it needs: one in each second in which nothing else reached it (it
        takes 5 s of silence for a dead line) and any that changes what it shows
        (``SCREEN_FIELDS``). While captions flow, the status messages a fan-out to thousands
        of screens would cost each second are saved."""
        data = dumps(status)
        shown = tuple(status.get(k) for k in SCREEN_FIELDS)
        frames: dict[bytes, bytes] = {}
        for role in roles:
            every = role != "viewer"
            for c in tuple(self.groups[role]):
                if every or not c.heard or c.status != shown:
                    c.status = shown
                    self.offer(c, ("status",), data, frames)
                c.heard = False

    # -- closing ----------------------------------------------------------------------------
    def _drop_slow(self, c: Client, reason: str) -> None:
        self.metrics.slow_disconnects += 1
        log.info("closing slow %s %s: %s", c.role, c.ws.remote_address, reason)
        self.close(c, CLOSE_TRY_LATER, reason)

    def close(self, c: Client, code: int, reason: str) -> None:
        if c.closing:
            return
        c.closing = True
        c.queue.clear()
        self.groups[c.role].discard(c)
        task = asyncio.ensure_future(close_ws(c.ws, code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def drop_unresponsive(self, now: float) -> None:
        """Close (1013, counted as slow) every client that left a ping unanswered for
        ``client_timeout_s`` (``now``: the loop's clock, the pings' own). A screen that stops
        reading answers no ping, while the little a heartbeat sends fits in its socket's
        buffers for a long time: this finds it well before websockets' keepalive timeout."""
        for c in self.clients():
            pings = getattr(c.ws, "pending_pings", None)
            if pings is None:  # websockets < 15
                pings = getattr(c.ws, "pong_waiters", {})
            if pings and not c.closing:
                oldest = min(sent for _, sent in pings.values())
                if now - oldest > self.client_timeout_s:
                    self._drop_slow(c, f"answered no ping for {self.client_timeout_s:g} s")

    async def drain(self, seconds: float) -> None:
        """Let queued messages reach the clients (up to ``seconds``)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(
                c.queue or c.ws.transport.get_write_buffer_size() for c in self.clients()):
            await asyncio.sleep(0.02)

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
                    await self._send(c, c.queue.pop())
                c.busy = False  # nothing queued: fan-outs write directly again
                c.wake.clear()
                await c.wake.wait()
                c.busy = True
        except TimeoutError:
            self._drop_slow(c, f"read nothing for {self.client_timeout_s:g} s")
        except ConnectionClosed:
            pass

    async def _send(self, c: Client, data: bytes) -> None:
        async with asyncio.timeout(self.client_timeout_s):
            await c.ws.send(data, text=True)
        c.heard = True


class Channel(Fanout):
    """One room's captions: its event log, its screens (``viewers``) and ``consoles``."""

    def __init__(self, metrics: RoomMetrics, *, history: int, client_queue: int, client_timeout_s: float,
                 languages: Iterable[str] = ()):
        super().__init__(metrics, client_queue=client_queue, client_timeout_s=client_timeout_s,
                         roles=("viewer", "console"))
        self._languages = set(languages)
        self.log = EventLog(history, languages=len(self._languages))
        self.viewers, self.consoles = self.groups["viewer"], self.groups["console"]
        # Hears every numbered event after its fan-out (the Redis publisher); must return at once.
        self.listener: Callable[[Event], None] | None = None

    @property
    def languages(self) -> list[str]:
        """Spoken and translated-into so far, with the room's targets."""
        return sorted(self._languages)

    def publish_caption(self, data: dict) -> Event:
        data.pop("seq", None)  # the engine's caption seq; ours numbers every event
        if data.get("lang"):
            self._languages.add(data["lang"])
        self._languages.update(data.get("translations") or ())
        ev, _ = self.log.caption(data)
        final = ev.kind == "final"
        if final:
            self.metrics.finals += 1
        else:
            self.metrics.partials += 1
        # A queued partial of this utterance is stale now: the new partial or final replaces it.
        self._fanout(ev, ("p", ev.id) if not final else ("e", ev.seq), drop=("p", ev.id) if final else None)
        return ev

    def publish_translation(self, caption_id: int, lang: str, text: str) -> None:
        self._languages.add(lang)
        self.metrics.translations += 1
        ev = self.log.translation(caption_id, lang, text)
        self._fanout(ev, ("e", ev.seq))

    def clear(self) -> None:
        ev = self.log.clear()
        self._fanout(ev, ("e", ev.seq))

    def _fanout(self, ev: Event, key: tuple, drop: tuple | None = None) -> int:
        """Send ``ev`` to the screens that see it; how many do.

        The hot path of a room with thousands of screens (an edge's 2500): per screen a flag,
        the transport's buffer size and one write; everything else is done once per event or
        once per language selection."""
        frames: dict[bytes, bytes] = {}
        wires: dict = {}  # language selection → the event as it sees it (None: it does not)
        n = 0
        for c in tuple(self.viewers):  # a slow one may be dropped (removed) on the way
            langs = c.langs
            data = wires.get(langs, False)
            if data is False:
                data = wires[langs] = ev.wire(langs) if ev.visible_to(langs) else None
            if data is None:
                continue
            n += 1
            if not c.busy and c.transport.get_write_buffer_size() < WRITE_HIGH:
                write_now(c, data, frames)
            else:
                self._queue(c, key, data, drop)
        if self.listener is not None:
            self.listener(ev)
        return n

    def replay(self, since: int, session: str | None, session_id: str) -> tuple[bool, list[Event]]:
        """What a screen resuming from ``since`` of ``session`` gets: (reset?, events)."""
        log_ = self.log
        reset = since > 0 and (since < log_.floor or since > log_.seq or
                               (session is not None and session != session_id))
        return reset, log_.after(0 if reset else since)
