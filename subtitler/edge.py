"""`subtitler edge`: a stateless server of screens, fed from Redis alone (issue 12).

An edge is the host's ``server.Server`` with its rooms fed by a ``Follower`` instead of an
engine: each room (``EdgeRoom``) has the same ``Channel`` (fan-out, back-pressure, slow-screen
handling) whose event log is a ``MirrorLog`` — the host's events under the host's own ``seq``
numbers — so ``endpoints.serve_viewer`` answers a screen exactly as the host would: the same
welcome, the same ``since``/``session`` resume, history and reset. A screen cannot tell them
apart and may move between them (the overlay takes a list of servers).

It serves the venue page, the overlay, the audience page and ``/ws/view`` of every room the
host publishes (``broker`` describes the layout in Redis); the console, ``/ws/control``,
``/ws/audio``, ``/ws/venue`` and the transcripts live on the host and are refused here with a
text that says so. Nothing is kept on disk: start, stop and restart edges freely — a new one
reads each room's stream from its start and serves its history at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from .broker import BACKOFF_MAX, BACKOFF_MIN, REGISTRY, connect, describe, parse_registry, redacted, stream_key
from .channel import Channel, close_ws
from .config import ServerConfig
from .eventlog import Event, EventLog
from .front import Front
from .metrics import RoomMetrics, RoomSample, family
from .pages import text_response
from .protocol import (AUDIO, CLOSE_GOING_AWAY, CLOSE_TRY_LATER, CONTROL, PROTOCOL_VERSION, VENUE, VIEW,
                       check_room_name)
from .server import Server, ServerError

log = logging.getLogger("subtitler.edge")

XREAD_BLOCK_MS = 500  # a follower's wait for new entries (new rooms join its read within this)
XREAD_COUNT = 2000
DELAYS_KEPT = 4096  # host publish → edge send delays kept for /metrics' quantiles
HOST_STALE_S = 10.0  # a room's registry entry unchanged this long: its host is offline (screens, /healthz)
ROOM_EXPIRY_S = 120.0  # ... and this long: the host died without closing it; the room closes here
# ... and this long after that: the edge removes the dead entry and its stream from Redis, so that a
# venue whose hosts crash now and then does not keep their rooms there forever
REGISTRY_PURGE_S = 3600.0
# Removes a dead room's entry and stream only if the entry is still the one judged dead: a host
# that wrote it anew in the meantime keeps its room.
PURGE_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""
HOST_ONLY = ("/console.html", "/console.js", "/console.css", "/api/session")


class MirrorLog(EventLog):
    """An ``EventLog`` whose events keep the numbers the host gave them (``next_seq``)."""

    next_seq = 0

    def _append(self, kind: str, body: dict) -> Event:
        self.seq = self.next_seq - 1
        return super()._append(kind, body)


class EdgeRoom:
    """One room as an edge serves it: what ``serve_viewer``, the heartbeat, /api/venue and
    /metrics ask of a ``RoomLink``, from the host's registry entry and stream."""

    default = False
    closed = False
    offline = False  # its host has not rewritten the room's registry entry lately

    def __init__(self, name: str, entry: dict, config: ServerConfig):
        self.name = name
        self.config = config
        self.metrics = RoomMetrics()
        self.connections: set[ServerConnection] = set()
        self.transcripts: dict = {}
        self.last_id = b"0-0"  # the last stream entry read
        self.caught_up = False  # the stream's backlog is read: entries from now on are live
        self.relayed = 0  # events applied
        self.sent = 0  # messages to screens (an event × the screens that see it)
        self.gaps = 0  # times the host lost events this edge had not read (screens reset)
        self.session_id = entry["session"]
        self.sessions = {self.session_id}  # seen here: a stale registry never brings one back
        self.fresh_at = time.monotonic()  # when the host last rewrote the entry (this edge's clock)
        self.entry: dict = {}
        self.update(entry)
        self._new_channel()

    def _new_channel(self) -> None:
        old = getattr(self, "channel", None)
        targets = list(self.entry.get("targets") or ())
        history = self.entry.get("history")  # the host's: the same retained events, the same resets
        history = history if isinstance(history, int) and 0 <= history <= 100000 else self.config.history
        self.channel = Channel(self.metrics, history=history, client_queue=self.config.client_queue,
                               client_timeout_s=self.config.client_timeout_s, languages=targets)
        self.channel.log = MirrorLog(history, languages=len(targets))
        if old is not None:  # a new session: its screens start again from its history
            for c in old.clients():
                old.close(c, CLOSE_GOING_AWAY, "session ended")

    def update(self, entry: dict) -> None:
        # The host rewrites its entries every second with its clock in "t": an entry that stops
        # changing is a host that stopped (kill -9, a power cut) or lost Redis. Compared here, on
        # this edge's clock, so that the two machines' clocks need not agree.
        if entry.get("t") != self.entry.get("t"):
            self.fresh_at = time.monotonic()
        self.entry = entry
        self.title = str(entry.get("title") or self.name)
        self.default = bool(entry.get("default"))
        self.targets = list(entry.get("targets") or ())
        session = entry["session"]
        if session not in self.sessions and self.caught_up:
            # The host started a new session that has published nothing yet: screens move to it now.
            self._switch(session)

    def _switch(self, session: str) -> None:
        log.info("room %s: new session %s", self.name, session)
        self.session_id = session
        self.sessions.add(session)
        self._new_channel()

    # -- from the stream -----------------------------------------------------------------------
    def apply(self, fields: dict) -> float | None:
        """One stream entry; the host publish → send delay when it reached the screens live."""
        if b"closed" in fields:  # the host closed the room (or stopped)
            if fields.get(b"s", b"").decode(errors="replace") == self.entry.get("session"):
                self.closed = True
            return None
        try:
            session = fields[b"s"].decode()
            seq, floor = int(fields[b"q"]), int(fields[b"f"])
            payload = json.loads(fields[b"e"])
            at = float(fields[b"t"])
        except (KeyError, ValueError, UnicodeDecodeError):
            log.warning("room %s: a stream entry this edge cannot read was skipped: %r", self.name,
                        {k: v[:80] for k, v in fields.items()})
            return None
        if session != self.session_id:  # entries are in order: a session that follows is newer
            self._switch(session)
        log_ = self.channel.log
        if seq <= log_.seq:  # re-published after an outage: already here
            return None
        if log_.seq == 0 and seq > 1:
            floor = max(floor, seq - 1)  # the stream starts mid-session: what came before is not here
        elif floor > log_.seq:
            # The host no longer holds events this edge never read (a long Redis outage): its
            # screens reset and redraw from the history, as the host's own would.
            self.gaps += 1
            for c in list(self.channel.viewers):
                self.channel.close(c, CLOSE_TRY_LATER, "missed events: reconnect")
        log_.next_seq = seq
        kind = payload.get("type")
        body = {k: v for k, v in payload.items() if k not in ("type", "seq")}
        viewers = len(self.channel.viewers)
        if kind == "caption" and isinstance(body.get("id"), int):
            self.channel.publish_caption(body)
        elif kind == "translation" and isinstance(body.get("id"), int):
            self.channel.publish_translation(body["id"], str(body.get("lang")), str(body.get("text")))
        elif kind == "clear":
            self.channel.clear()
        else:
            return None
        log_.floor = max(log_.floor, floor)
        if self.caught_up:  # live news of this session: its host is alive, whatever its registry says
            self.fresh_at = time.monotonic()
        self.relayed += 1
        self.sent += viewers
        return time.time() - at if self.caught_up and viewers else None

    # -- what the server asks of a room ----------------------------------------------------------
    @property
    def paused(self) -> bool:
        return bool(self.entry.get("paused"))

    @property
    def source_language(self) -> str:
        return str(self.entry.get("source_language") or "auto")

    def status(self) -> dict:
        status = dict(self.entry.get("status") or {"type": "status"})
        status["viewers"] = len(self.channel.viewers)
        if self.offline:  # the host's last word is stale: nobody is speaking through it now
            status.update(offline=True, in_speech=False, lag=0.0)
        return status

    def broadcast_status(self, heartbeat: bool = False) -> None:
        """The status to every screen (a change), or as the heartbeat: to those that need it."""
        if heartbeat:
            self.channel.heartbeat(self.status(), ("viewer",))
        else:
            self.channel.broadcast(self.status(), ("viewer",))

    def summary(self, now: float) -> dict:
        summary = dict(self.entry.get("summary") or {"name": self.name, "title": self.title, "state": "idle"})
        summary["viewers"] = len(self.channel.viewers)
        if self.offline:
            summary["state"] = "offline"
            summary["offline_s"] = round(now - self.fresh_at, 1)
        urls = dict(summary.get("urls") or {})
        urls.pop("console", None)
        summary["urls"] = urls
        return summary

    def sample(self) -> RoomSample:
        return RoomSample(self.name, self.metrics, None, len(self.channel.viewers), 0, self.paused, None)

    def problems(self) -> list[str]:
        if self.offline:
            return [f"room {self.name}: its host has not published for {time.monotonic() - self.fresh_at:.0f} s "
                    f"(stopped, or cut off from Redis); its screens wait for it"]
        return []

    def close_screens(self, reason: str) -> None:
        for ws in list(self.connections):
            asyncio.ensure_future(close_ws(ws, CLOSE_GOING_AWAY, reason))


class Follower:
    """Reads the registry and every room's stream from Redis into an edge's rooms (in its loop)."""

    def __init__(self, edge: "EdgeServer", url: str):
        self.edge = edge
        self.url = url
        self.client = connect(url)
        self.connected = False
        self.error: str | None = None
        self.outages = 0
        self.registry_at: float | None = None  # the host's clock of its last registry write
        self.delays: deque[float] = deque(maxlen=DELAYS_KEPT)
        self.delay_sum = 0.0
        self.delay_count = 0
        self.stale_s, self.expiry_s = HOST_STALE_S, ROOM_EXPIRY_S
        # room → ((session, t) of the dead entry it closed on, when this edge judged it dead)
        self.expired: dict[str, tuple[tuple, float]] = {}
        self.purge_s = REGISTRY_PURGE_S
        self.purged = 0
        self.purging = True  # until Redis refuses the script (an ACL without EVAL)

    async def run(self) -> None:
        backoff = BACKOFF_MIN
        next_registry = 0.0
        try:
            while True:
                try:
                    if time.monotonic() >= next_registry:
                        async with self.client.pipeline(transaction=False) as pipe:
                            pipe.hgetall(REGISTRY)
                            pipe.time()
                            raw, (seconds, micros) = await pipe.execute()
                        self._up()  # first: hosts are not judged on the time Redis was away
                        self._apply_registry(parse_registry(raw), seconds + micros / 1e6)
                        await self._purge(raw)
                        next_registry = time.monotonic() + 1.0
                    rooms = self.edge.rooms
                    if not rooms:
                        self._up()
                        await asyncio.sleep(XREAD_BLOCK_MS / 1000)
                        continue
                    streams = {stream_key(name): room.last_id for name, room in rooms.items()}
                    # a room with a backlog to read does not wait: the others' news come with it
                    block = None if any(not r.caught_up for r in rooms.values()) else XREAD_BLOCK_MS
                    result = await self.client.xread(streams, count=XREAD_COUNT, block=block)
                    self._up()
                    backoff = BACKOFF_MIN
                    self._apply(rooms, result)
                except Exception as e:
                    if not _redis_failure(e):
                        raise
                    self._down(e)
                    await asyncio.sleep(backoff)
                    backoff = min(BACKOFF_MAX, backoff * 2)
        finally:
            try:
                await self.client.aclose()
            except Exception:
                pass

    def _apply(self, rooms: dict[str, EdgeRoom], result) -> None:
        got = set()
        for key, entries in result or ():
            name = (key.decode() if isinstance(key, bytes) else key)[len(stream_key("")):]
            room = rooms.get(name)
            if room is None:
                continue
            got.add(name)
            for entry_id, fields in entries:
                room.last_id = entry_id
                delay = room.apply(fields)
                if room.closed:
                    self._close(room)
                    break
                if delay is not None:
                    self.delays.append(delay)
                    self.delay_sum += delay
                    self.delay_count += 1
            if len(entries) < XREAD_COUNT:
                room.caught_up = True
        for name, room in rooms.items():  # nothing (more) to read: caught up
            if name not in got:
                room.caught_up = True

    def _apply_registry(self, entries: dict[str, dict], redis_now: float | None = None) -> None:
        """``redis_now``: Redis's clock, against which an entry met for the first time is aged (a
        new edge must not bring back for minutes the rooms of a host that died long ago)."""
        edge = self.edge
        rooms = dict(edge.rooms)
        changed = False
        now = time.monotonic()
        for name, entry in entries.items():
            try:
                check_room_name(name)
            except ValueError:
                continue
            key = (entry["session"], entry.get("t"))
            dead = self.expired.get(name)
            if dead is not None and dead[0] == key:
                continue  # the entry a dead host left: the room stays closed until the host writes again
            seen = self.expired.pop(name, None) is not None or name in rooms
            room = rooms.get(name)
            if room is None or room.closed:
                age = _age(entry, redis_now)
                if not seen and age > self.expiry_s:
                    # Only at first sight: a host whose clock is far behind Redis's writes a new
                    # "t" a second later, and its room opens then.
                    self._expire(name, key, now)
                    continue
                room = rooms[name] = EdgeRoom(name, entry, edge.config)
                if not seen and age > self.stale_s:
                    room.fresh_at = now - age  # silent since before this edge started
                changed = True
            else:
                room.update(entry)
            t = entry.get("t")
            if isinstance(t, (int, float)):
                self.registry_at = max(self.registry_at or 0.0, float(t))
        for name, room in list(rooms.items()):
            self._judge(room, now)
            if room.closed:
                del rooms[name]
                changed = True
        if changed or any(r.default for r in rooms.values()) != (edge.default_room is not None):
            with edge._lock:
                edge.rooms = rooms
                edge.default_room = next((r for r in rooms.values() if r.default), None)

    def _judge(self, room: EdgeRoom, now: float) -> None:
        """Offline after ``stale_s`` without a fresh entry (screens stay, the venue page says so);
        closed after ``expiry_s`` (a host that died never says "closed"; a room is not kept forever)."""
        silent = now - room.fresh_at
        offline = silent > self.stale_s
        if offline != room.offline:
            room.offline = offline
            if offline:
                log.warning("room %s: its host has not published for %.0f s (stopped, or cut off from Redis); "
                            "the room closes here after %.0f s", room.name, silent, self.expiry_s)
            else:
                log.info("room %s: its host publishes again", room.name)
        if silent > self.expiry_s and not room.closed:
            log.warning("room %s: closed here, its host silent for %.0f s; it opens again when the host writes",
                        room.name, silent)
            self._expire(room.name, (room.entry["session"], room.entry.get("t")), now)
            room.closed = True
            room.close_screens("room closed")

    def _expire(self, name: str, key: tuple, now: float) -> None:
        self.expired[name] = (key, now)

    async def _purge(self, raw: dict) -> None:
        """Remove from Redis the entries (and streams) judged dead ``purge_s`` ago on this edge's
        own clock: every edge may, whichever comes first; only an entry still unchanged goes."""
        from redis.exceptions import ResponseError

        now = time.monotonic()
        for name, (_, since) in list(self.expired.items()):
            value = raw.get(name.encode(), raw.get(name))
            if value is None:  # gone already (another edge, or the host closed it)
                del self.expired[name]
                continue
            if not self.purging or now - since < self.purge_s:
                continue
            try:
                removed = await self.client.eval(PURGE_SCRIPT, 2, REGISTRY, stream_key(name), name, value)
            except ResponseError as e:  # not a failure of Redis: this edge may not run scripts
                self.purging = False
                log.warning("cannot remove dead rooms from Redis (%s); they stay in %s, and edges ignore them",
                            e, REGISTRY)
                return
            if removed:
                self.purged += 1
                del self.expired[name]
                log.info("room %s: its dead entry and stream removed from Redis", name)

    def _close(self, room: EdgeRoom) -> None:
        """A room the host closed: its URLs answer 404 from now on, its screens are closed (1001)."""
        edge = self.edge
        with edge._lock:
            edge.rooms = {n: r for n, r in edge.rooms.items() if r is not room}
            if edge.default_room is room:
                edge.default_room = None
        room.close_screens("room closed")

    def _up(self) -> None:
        if not self.connected:
            if self.error is not None:
                log.warning("Redis %s is reachable again: following the rooms' streams from where they were",
                            redacted(self.url))
                now = time.monotonic()  # hosts get their grace again: this edge could not see them
                for room in self.edge.rooms.values():
                    room.fresh_at = now
            self.connected, self.error = True, None

    def _down(self, e: BaseException) -> None:
        first = self.connected or self.error is None
        self.connected, self.error = False, describe(e)
        if first:
            self.outages += 1
            log.warning("Redis %s is unreachable (%s): the screens stay connected and get what they missed "
                        "when it is back", redacted(self.url), self.error)

    def delay_quantile(self, q: float) -> float | None:
        if not self.delays:
            return None
        ordered = sorted(self.delays)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class EdgeServer(Server):
    """A ``Server`` whose rooms come from Redis (``Follower``) and serve screens only (``EdgeFront``)."""

    def __init__(self, config: ServerConfig, redis_url: str, **kwargs):
        if not redis_url:
            raise ServerError("subtitler edge needs the host's Redis: --redis redis://HOST:PORT/0 (or [server] redis)")
        super().__init__(_without_redis(config), live=True, front=EdgeFront, **kwargs)
        self.redis_url = redis_url
        try:
            self.follower = Follower(self, redis_url)
        except ValueError as e:
            raise ServerError(str(e)) from None
        self.services.append(self.follower.run)


class EdgeFront(Front):
    """An edge's front: the pages and screens of its rooms; the follower's health and metrics."""

    venue: EdgeServer

    # -- refusals: the console, audio and the operator live on the host ----------------------------
    def _room_http(self, connection: ServerConnection, link, rest: str, query: str, request: Request,
                   prefix: str) -> Response | None:
        if rest in (CONTROL, AUDIO) or rest in HOST_ONLY or rest.startswith("/transcripts/"):
            return _host_only(prefix + rest)
        return super()._room_http(connection, link, rest, query, request, prefix)

    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == VENUE:
            return _host_only(path)
        return await super()._http(connection, request)

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path.partition("?")[0]
        link, endpoint = self._route(path)
        if endpoint != VIEW:  # refused at the handshake already; never served here
            await close_ws(ws, CLOSE_GOING_AWAY, "an edge serves screens only")
            return
        await super()._handle(ws)

    # -- health and metrics: the follower's (an edge has no host) ---------------------------------
    def _healthz(self) -> dict:
        edge = self.venue
        f = edge.follower
        health = {"status": "ok", "role": "edge", "protocol": PROTOCOL_VERSION, "rooms": len(edge.rooms),
                  "uptime": round(time.monotonic() - self.started, 1),
                  "viewers": sum(len(r.channel.viewers) for r in edge.rooms.values()),
                  "connections": self.limits.sockets, "tls": self.tls is not None,
                  "redis": {"url": redacted(edge.redis_url), "connected": f.connected}}
        problems = []
        if not f.connected and f.error:
            health["redis"]["error"] = f.error
            problems.append(f"redis {redacted(edge.redis_url)}: {f.error}; screens stay connected and catch up "
                            f"when it is back")
        if f.registry_at is not None:
            health["host_seen_s"] = round(time.time() - f.registry_at, 1)
        problems += [p for r in edge.rooms.values() for p in r.problems()]
        if problems:
            health["status"], health["problems"] = "degraded", problems
        return health

    def _front_metrics(self) -> str:
        rooms = list(self.venue.rooms.values())
        f = self.venue.follower
        out: list[str] = []

        limits = self.limits
        out += family("subtitler_connections", "gauge", "Open connections: TCP, and screens.",
                      [('kind="tcp"', limits.sockets), ('kind="viewer"', limits.count("viewer"))])
        out += family("subtitler_connections_refused_total", "counter", "Connections refused at the edge, by reason.",
                      [(f'reason="{k}"', v) for k, v in sorted({**limits.refused, "idle": self.evicted}.items())])
        out += family("subtitler_bad_requests_total", "counter", "Requests that were not one whole HTTP request.",
                      [("", self.bad_requests)])
        out += family("subtitler_edge_screens", "gauge", "Screens connected to this edge, by room.",
                      [(f'room="{r.name}"', len(r.channel.viewers)) for r in rooms])
        out += family("subtitler_edge_events_relayed_total", "counter", "Events read from Redis and passed on, by room.",
                      [(f'room="{r.name}"', r.relayed) for r in rooms])
        out += family("subtitler_edge_messages_sent_total", "counter", "Messages sent to screens (an event times the "
                      "screens that see it), by room.", [(f'room="{r.name}"', r.sent) for r in rooms])
        out += family("subtitler_edge_gaps_total", "counter", "Times the host no longer held events this edge had not "
                      "read (its screens were reset), by room.", [(f'room="{r.name}"', r.gaps) for r in rooms])
        out += family("subtitler_redis_connected", "gauge", "1 while this edge reads from Redis.", [("", int(f.connected))])
        out += family("subtitler_redis_outages_total", "counter", "Times Redis became unreachable.", [("", f.outages)])
        out += family("subtitler_edge_rooms_purged_total", "counter", "Dead hosts' rooms this edge removed from Redis.",
                      [("", f.purged)])
        out += ["# HELP subtitler_edge_delay_seconds From the host's publication of an event to this edge's send "
                "(wall clocks: keep them in sync), over the last events.",
                "# TYPE subtitler_edge_delay_seconds summary"]
        for q in (0.5, 0.9, 0.99):
            v = f.delay_quantile(q)
            if v is not None:
                out.append(f'subtitler_edge_delay_seconds{{quantile="{q:g}"}} {v:.6f}')
        out += [f"subtitler_edge_delay_seconds_sum {f.delay_sum:.6f}",
                f"subtitler_edge_delay_seconds_count {f.delay_count}"]
        return "\n".join(out) + "\n"


def _age(entry: dict, redis_now: float | None) -> float:
    """Seconds since the host wrote the entry, by Redis's clock (0 when unknown)."""
    t = entry.get("t")
    if redis_now is None or not isinstance(t, (int, float)):
        return 0.0
    return max(0.0, redis_now - float(t))


def _host_only(path: str) -> Response:
    return text_response(403, f"{path[:80]} is not served by an edge (subtitler edge serves the pages and "
                              f"screens only): open the console, audio and transcripts on the host "
                              f"(subtitler serve)\n")


def _without_redis(config: ServerConfig) -> ServerConfig:
    import dataclasses

    return dataclasses.replace(config, redis="")  # the edge reads Redis; it never publishes


def _redis_failure(e: BaseException) -> bool:
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover
        RedisError = ()  # noqa: N806
    return isinstance(e, (RedisError, OSError, TimeoutError, ConnectionError))
