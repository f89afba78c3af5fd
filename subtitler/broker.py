"""Captions fanned out through Redis: the host's publisher and what an edge reads (issue 12).

Layout in Redis (one database, ``redis://HOST:PORT/DB``):

* ``subtitler:room:NAME`` — a capped Stream (``XADD … MAXLEN ~ STREAM_LEN``), one entry per
  numbered event of the room (caption, translation, clear), in ``seq`` order. Fields: ``s`` the
  session, ``q`` its ``seq``, ``f`` the host log's floor then, ``t`` the host's wall clock when
  the event was published (for the edges' delay figures), ``e`` the event as screens see it.
* ``subtitler:rooms`` — a hash, room name → JSON: title, session, default, targets, the room's
  venue summary and its last ``status``; rewritten every second (the edges' heartbeat source).
  A host that dies leaves its entry; edges close its rooms, and remove the entry and its stream
  an hour later (``edge.REGISTRY_PURGE_S``).

Why the stream for live delivery too (``XREAD BLOCK``) rather than pub/sub: a follower holds
the ID of the last entry it read, so after any disconnect (its own, Redis's restart) it asks
for exactly what came after; pub/sub drops whatever is published while a subscriber is away,
and stitching a subscription onto a stream read would need the same seq de-duplication anyway.
Edges drop entries whose ``seq`` they have (a re-publication after an outage overlaps).

The publisher never makes the host wait: the server's loop only appends to a bounded queue
(``notify``); one task sends. When Redis is unreachable it says so once (a warning on the
console), /healthz and /metrics show it, and it retries with back-off. On every (re)connect it
reads each stream's last entry and re-publishes what the room's own event log holds after it —
so a Redis restart (an empty stream) or a queue overflow while Redis was slow is filled from
the log, and edges fill their gap from the stream. Events the log no longer holds (an outage
longer than ``[server] history`` finals) cannot come back: the ``f`` field tells edges, which
reset their screens as the host would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Callable

from .metrics import family
from .protocol import dumps

if TYPE_CHECKING:
    from .eventlog import Event
    from .roomlink import RoomLink

log = logging.getLogger("subtitler.broker")

REGISTRY = "subtitler:rooms"
STREAM_PREFIX = "subtitler:room:"
STREAM_LEN = 10000  # entries kept per room (~): well above a host log's retained events
QUEUE_LIMIT = 20000  # events waiting for Redis; beyond it the queue is dropped and refilled from the logs
BATCH = 500  # XADDs per round trip
TICK = 1.0  # the registry (rooms, status) is rewritten this often
CLOSED_STREAM_TTL = 3600  # a closed room's stream stays this long for late readers
BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0


def stream_key(room: str) -> str:
    return STREAM_PREFIX + room


def redacted(url: str) -> str:
    """The URL without its password (for logs, /healthz)."""
    try:
        u = urllib.parse.urlsplit(url)
        if u.password:
            host = u.hostname or ""
            netloc = f"{u.username or ''}:***@{host}" + (f":{u.port}" if u.port else "")
            return urllib.parse.urlunsplit((u.scheme, netloc, u.path, "", ""))
        return urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, "", ""))
    except ValueError:
        return "(unparseable URL)"


def connect(url: str):
    """A ``redis.asyncio`` client for ``url`` (redis://, rediss://, unix://), without the
    client's own retries (the callers retry with back-off and say so). ValueError says what is
    wrong with the URL."""
    try:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError:  # pragma: no cover - a dependency
        raise ValueError("the Redis client is not installed: pip install redis (scripts/install.sh does)") from None
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"server.redis {redacted(str(url))!r} is not a Redis URL: use redis://HOST:PORT/0, "
                         f"redis://:PASSWORD@HOST:PORT/0 or rediss://HOST:PORT/0 (TLS)")
    try:
        return aioredis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0, retry=Retry(NoBackoff(), 0),
                                 health_check_interval=0, decode_responses=False)
    except (ValueError, TypeError) as e:
        raise ValueError(f"server.redis {redacted(url)!r}: {e}") from None


def describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text[:200]


def entry_fields(session: str, ev: "Event", floor: int, at: float) -> dict:
    return {"s": session, "q": ev.seq, "f": floor, "t": f"{at:.6f}", "e": ev.wire(None)}


class Publisher:
    """Publishes every room of a server to Redis (see the module doc). Lives in the server's
    loop: ``notify`` from there; ``run`` is the server's service task."""

    def __init__(self, url: str, rooms: Callable[[], dict[str, "RoomLink"]], *, queue_limit: int = QUEUE_LIMIT):
        self.url = url
        self.client = connect(url)  # checks the URL before the server starts
        self.rooms = rooms
        self.queue_limit = queue_limit
        self.pending: deque[tuple[str, "Event", float]] = deque()
        self.wake: asyncio.Event | None = None
        self.resync = True
        self.connected = False
        self.error: str | None = None
        self.down_since: float | None = None
        self.published = 0  # stream entries written
        self.republished = 0  # of those, re-published from the logs after an outage
        self.outages = 0
        self.overflows = 0
        self._listed: dict[str, str] = {}  # rooms in the registry → their session

    # -- in the loop -------------------------------------------------------------------------
    def notify(self, room: str, ev: "Event") -> None:
        """A room's event, to be published; returns at once."""
        if len(self.pending) >= self.queue_limit:
            # Redis does not keep up: drop the queue; the next round re-publishes from the logs.
            self.pending.clear()
            self.overflows += 1
            self.resync = True
        else:
            self.pending.append((room, ev, time.time()))
        if self.wake is not None:
            self.wake.set()

    def health(self) -> dict:
        out = {"url": redacted(self.url), "connected": self.connected, "pending": len(self.pending),
               "published": self.published}
        if not self.connected and self.error:
            out["error"] = self.error
            if self.down_since is not None:
                out["down_s"] = round(time.monotonic() - self.down_since, 1)
        return out

    def problem(self) -> str | None:
        if self.connected or self.error is None:
            return None
        return (f"redis {redacted(self.url)}: cannot publish ({self.error}); captions go on here and are "
                f"published when it is back")

    def metrics_lines(self) -> list[str]:
        return [*family("subtitler_redis_connected", "gauge", "1 while the host publishes to Redis.",
                        [("", int(self.connected))]),
                *family("subtitler_redis_published_total", "counter",
                        "Stream entries written (re-published ones included).", [("", self.published)]),
                *family("subtitler_redis_republished_total", "counter",
                        "Entries re-published from the rooms' logs after an outage.", [("", self.republished)]),
                *family("subtitler_redis_outages_total", "counter", "Times Redis became unreachable.",
                        [("", self.outages)]),
                *family("subtitler_redis_pending", "gauge", "Events waiting to be published.",
                        [("", len(self.pending))])]

    async def run(self) -> None:
        self.wake = asyncio.Event()
        backoff = BACKOFF_MIN
        next_tick = 0.0
        try:
            while True:
                try:
                    if self.resync:
                        await self._resync()
                    while self.pending:
                        await self._send_pending()
                    if time.monotonic() >= next_tick:
                        await self._write_registry()
                        next_tick = time.monotonic() + TICK
                    self._up()
                    backoff = BACKOFF_MIN
                except Exception as e:  # RedisError, OSError, a timeout: Redis is away
                    if not _is_redis_failure(e):
                        raise
                    self._down(e)
                    await asyncio.sleep(backoff)
                    backoff = min(BACKOFF_MAX, backoff * 2)
                    continue
                self.wake.clear()
                if not self.pending:
                    try:
                        async with asyncio.timeout(max(0.0, next_tick - time.monotonic())):
                            await self.wake.wait()
                    except TimeoutError:
                        pass
        finally:
            try:
                await self.client.aclose()
            except Exception:
                pass

    def _up(self) -> None:
        if not self.connected:
            if self.error is not None:
                log.warning("Redis %s is reachable again: publishing resumed (%d event(s) re-published from the "
                            "rooms' logs)", redacted(self.url), self.republished)
            self.connected, self.error, self.down_since = True, None, None

    def _down(self, e: BaseException) -> None:
        self.resync = True
        first = self.connected or self.error is None
        self.connected = False
        self.error = describe(e)
        if first:
            self.outages += 1
            self.down_since = time.monotonic()
            log.warning("Redis %s is unreachable (%s): captioning, transcripts and this host's screens go on; "
                        "publishing to the edges resumes by itself when it is back", redacted(self.url), self.error)

    async def _resync(self) -> None:
        """After a (re)connect or an overflow: each room's stream gets what its log holds after
        the stream's last entry of the room's session."""
        rooms = dict(self.rooms())
        async with self.client.pipeline(transaction=False) as pipe:
            for name in rooms:
                pipe.xrevrange(stream_key(name), "+", "-", count=1)
            lasts = await pipe.execute()
        # From here to the batch being built nothing awaits: the queue and the logs agree.
        self.pending.clear()
        batch: list[tuple[str, dict]] = []
        for (name, link), last in zip(rooms.items(), lasts):
            since = 0
            if last:
                fields = last[0][1]
                if fields.get(b"s", b"").decode(errors="replace") == link.session_id:
                    since = int(fields.get(b"q", 0))  # a "closed" entry has none
            now = time.time()
            floor = link.channel.log.floor
            batch += [(name, entry_fields(link.session_id, ev, floor, now)) for ev in link.channel.log.after(since)]
        for i in range(0, len(batch), BATCH):
            await self._xadd(batch[i:i + BATCH])
        self.republished += len(batch)
        self.resync = False

    async def _send_pending(self) -> None:
        rooms = self.rooms()
        batch = []
        while self.pending and len(batch) < BATCH:
            name, ev, at = self.pending.popleft()
            link = rooms.get(name)
            if link is not None:
                batch.append((name, entry_fields(link.session_id, ev, link.channel.log.floor, at)))
        if batch:
            await self._xadd(batch)

    async def _xadd(self, batch: list[tuple[str, dict]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for name, fields in batch:
                pipe.xadd(stream_key(name), fields, maxlen=STREAM_LEN, approximate=True)
            await pipe.execute()
        self.published += len(batch)

    async def _write_registry(self) -> None:
        rooms = self.rooms()
        now = time.time()
        mono = time.monotonic()
        entries = {name: dumps({"title": link.title, "session": link.session_id, "default": link.default,
                                "targets": link.targets, "languages": link.channel.languages,
                                "history": link.channel.log.history,
                                "source_language": link.source_language, "paused": link.paused,
                                "summary": link.summary(mono), "status": link.status(), "t": now})
                   for name, link in rooms.items()}
        gone = set(self._listed) - set(rooms)
        async with self.client.pipeline(transaction=False) as pipe:
            if entries:
                pipe.hset(REGISTRY, mapping=entries)
            if gone:
                self._closing(pipe, gone)
            await pipe.execute()
        self._listed = {name: link.session_id for name, link in rooms.items()}

    def _closing(self, pipe, names) -> None:
        """Rooms that closed: out of the registry, and a ``closed`` entry in their streams (a
        room missing from the registry is not closed: a restarted Redis has no registry yet)."""
        pipe.hdel(REGISTRY, *names)
        for name in names:
            pipe.xadd(stream_key(name), {"s": self._listed[name], "closed": 1}, maxlen=STREAM_LEN, approximate=True)
            pipe.expire(stream_key(name), CLOSED_STREAM_TTL)

    async def forget_all(self) -> None:
        """At the end of the session: the rooms leave the registry (edges close their screens)."""
        if not self._listed:
            return
        try:
            async with asyncio.timeout(2.0):
                async with self.client.pipeline(transaction=False) as pipe:
                    self._closing(pipe, list(self._listed))
                    await pipe.execute()
        except Exception:
            pass


def _is_redis_failure(e: BaseException) -> bool:
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover
        RedisError = ()  # noqa: N806
    return isinstance(e, (RedisError, OSError, TimeoutError, ConnectionError))


def parse_registry(raw: dict) -> dict[str, dict]:
    """HGETALL subtitler:rooms → {name: entry}; entries that are not JSON objects are skipped."""
    out = {}
    for k, v in raw.items():
        try:
            name = k.decode() if isinstance(k, bytes) else k
            entry = json.loads(v)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("session"), str):
            out[name] = entry
    return out
