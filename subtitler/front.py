"""The server's front: what arrives on its one port — HTTP routing, the pages, /api/venue,
/healthz and /metrics, and each WebSocket handed to its room's endpoint (or /ws/venue).

A room (``roomlink.RoomLink``) answers under ``/rooms/NAME/…``; the default room (``subtitler
run``'s one room) also on the bare single-room paths (``/ws/view``, ``/overlay.html`` …), so a v1
screen keeps working. The sockets' protocol is ``endpoints`` (handlers, tokens), ``channel``
(fan-out), ``ingest`` (audio); docs/protocol.md describes it. The rooms, the loop and the thread
are the ``server.Server``'s; the front only reads them, in the loop.

The front also keeps hostile or broken clients from costing anyone else (``_Connection``,
``admission``): every TCP connection counts against a total and a per-address cap, far below
the open-file limit (raised at start where allowed); each endpoint (screens, consoles, senders)
has its own places; wrong tokens slow their address down; a browser page may steer a room only
from an origin this server serves; a request that is not one whole HTTP request is answered 400
and logged once per address. With ``tls_cert``/``tls_key`` every page and socket is served over
TLS (https://, wss://).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from websockets.asyncio.server import Server as Listener
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidMessage
from websockets.http11 import Request, Response
from websockets.protocol import State

from .admission import FILES_RESERVE, Caps, ConnectionLimits, origin_allowed, served_origins
from .channel import CLOSE_TIMEOUT, WRITE_HIGH, close_ws
from .endpoints import guarded, serve_room, serve_venue
from .langcodes import is_language_code
from .listening import is_loopback, local_addresses, raise_open_file_limit, tls_context, url_host
from .metrics import family, render
from .pages import (WEB_DIR, file_response, http_response, index_page, json_response, qr_response, redirect,
                    request_host, static_file, text_response, transcript_list, transcript_response)
from .protocol import (AUDIO, CLOSE_GOING_AWAY, CONTROL, PROTOCOL_VERSION, ROOM_ENDPOINTS, VENUE, VIEW, guard_abort,
                       room_path, split_room_path)
from .roomlink import RoomLink

if TYPE_CHECKING:  # the server makes its front; the front only reads the server's rooms
    from .server import Server

log = logging.getLogger("subtitler.server")  # the server's log: websockets' own lines go there too

# The single-room paths of `subtitler run`: they serve the default room.
LEGACY_PATHS = frozenset((VIEW, CONTROL, AUDIO, "/api/session", "/overlay.html", "/console.html", "/live.html",
                          "/qr.svg"))
ENDPOINT_ROLES = {VIEW: "viewer", CONTROL: "console", AUDIO: "sender", VENUE: "console"}
HEAD_LIMIT = 1 << 16  # request head bytes scanned for pipelining (websockets refuses larger heads)
LOGGED_ADDRESSES = 4096  # addresses whose bad requests were logged once (then: no more logging)
PING_GRACE = 5.0  # websockets' keepalive gives up this long after our own slow-client check
BACKLOG, SMALL_BACKLOG = 2048, 64  # connections waiting to be accepted (and accepted at once)


class Front:
    """The HTTP and WebSocket front of ``venue`` (a ``server.Server``), in its loop.

    ``prepare()`` (before the loop) loads TLS and fits the caps to the open-file limit;
    ``listen()`` (in the loop) binds the port. ``port`` is the bound port from then on.
    An edge serves other pages and its own health with a subclass (``edge.EdgeFront``).
    """

    def __init__(self, venue: Server, web_dir: Path | None = None):
        self.venue = venue
        config = venue.config
        self.web_dir = Path(web_dir) if web_dir is not None else WEB_DIR
        self.port = config.port
        self.started = time.monotonic()
        self.host_metrics: Callable[[], str] | None = None  # the host's lines for /metrics
        self.caps = Caps((config.max_viewers, config.max_viewers_per_address),
                         (config.max_consoles, config.max_consoles_per_address),
                         (config.max_senders, config.max_senders_per_address))
        self.limits = ConnectionLimits(self.caps)
        self.origins: frozenset[str] = frozenset()  # set once the port is known
        self.tls: ssl.SSLContext | None = None
        self.backlog = BACKLOG
        self.bad_requests = 0
        self._bad_logged: set[str] = set()
        self.idle: dict[_Connection, None] = {}  # counted connections that sent no request yet, oldest first
        # console and sender places held by connections that have not shown a token yet, oldest first
        self.unproven: dict[str, dict[_Connection, None]] = {"console": {}, "sender": {}}
        self.evicted = 0

    def prepare(self) -> None:
        """TLS (``ServerError`` for a bad certificate) and the caps the open-file limit allows."""
        self.tls = tls_context(self.venue.config)
        open_files = raise_open_file_limit()
        # asyncio accepts up to `backlog` connections in a row before any is counted (and a
        # refused one is closed a loop turn later): leave room for three such batches.
        small = open_files < self.caps.tcp_total + FILES_RESERVE + 3 * BACKLOG
        fitted = self.caps.fitted(open_files - 3 * SMALL_BACKLOG) if small else self.caps
        self.backlog = BACKLOG if not small else SMALL_BACKLOG
        if fitted != self.caps:
            log.warning("the open-file limit is %d: at most %d screens can connect (of [server] max_viewers = %d); "
                        "raise it (ulimit -n) for more", open_files, fitted.viewers[0], self.caps.viewers[0])
            self.caps = fitted
            self.limits = ConnectionLimits(fitted)

    async def listen(self) -> Listener:
        """Bind the port and serve it (OSError if it cannot be bound)."""
        config = self.venue.config
        listener = await serve(self._handle, config.host, config.port, process_request=self._http,
                               compression=None,  # per-client deflate would cost more than it saves
                               max_size=config.max_message_bytes, close_timeout=CLOSE_TIMEOUT,
                               write_limit=WRITE_HIGH, backlog=self.backlog, logger=log, ssl=self.tls,
                               create_connection=lambda *a, **kw: _Connection(self, *a, **kw),
                               # our own check (Fanout.drop_unresponsive) closes a client that
                               # stopped reading with 1013 first; this is for the others
                               ping_interval=min(10.0, max(1.0, config.client_timeout_s)),
                               ping_timeout=config.client_timeout_s + PING_GRACE)
        self.port = listener.sockets[0].getsockname()[1]
        self.origins = served_origins(self.scheme, self._served_hosts(), self.port, config.allowed_origins)
        return listener

    # -- addresses --------------------------------------------------------------------------
    def base_urls(self) -> list[str]:
        """http://HOST:PORT for each address the venue can use (LAN addresses for 0.0.0.0)."""
        host = self.venue.config.host
        if host in ("0.0.0.0", "::", ""):  # every interface: name the ones the rooms can reach
            hosts = local_addresses() + [socket.gethostname()]
        else:
            hosts = [host]
        return [f"{self.scheme}://{url_host(h)}:{self.port}" for h in hosts]

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def _served_hosts(self) -> list[str]:
        """Every name and address a page of this server can be loaded from (for Origin)."""
        host = self.venue.config.host
        hosts = [host]
        if host in ("0.0.0.0", "::", ""):
            hosts += local_addresses() + ["localhost", "127.0.0.1", "::1"]
            name = socket.gethostname()
            hosts += [name, name + ".local", socket.getfqdn()]
        elif host == "localhost" or is_loopback(host):
            hosts += ["localhost", "127.0.0.1", "::1"]
        return [h for h in dict.fromkeys(hosts) if h]

    def public_base(self, request: Request) -> str:
        """The address a phone would use: a LAN address when serving every interface, else the
        Host the request came to."""
        host = request_host(request)
        if self.venue.config.host in ("0.0.0.0", "::", "") or host is None:
            return self.base_urls()[0]
        return f"{self.scheme}://{host}"

    # -- WebSockets (in the loop) ---------------------------------------------------------------
    def _route(self, path: str) -> tuple[RoomLink | None, str]:
        """The room a path belongs to and the path within it; (None, path) if none."""
        name, rest = split_room_path(path)
        if name is not None:
            return self.venue.rooms.get(name), rest
        if path in LEGACY_PATHS or path.startswith("/transcripts/"):
            return self.venue.default_room, path
        return None, path

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path.partition("?")[0]
        if path == VENUE:
            await guarded(ws, serve_venue, self.venue, ws)
            return
        link, endpoint = self._route(path)
        if link is None or link.closed:  # closed between the handshake and now
            await close_ws(ws, CLOSE_GOING_AWAY, "room closed")
            return
        link.connections.add(ws)
        try:
            await serve_room(link, endpoint, ws, self.venue.token, self.venue.throttle)
        finally:
            link.connections.discard(ws)

    # -- HTTP (in the loop) ---------------------------------------------------------------------
    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if getattr(connection, "pipelined", False):
            self.bad_http(_peer(connection), "bytes after the request before its answer (pipelining)")
            return text_response(400, "one request at a time: send the next request after this answer "
                                      "(HTTP pipelining is not supported)\n")
        path, _, query = request.path.partition("?")
        name, rest = split_room_path(path)
        if name is not None:
            link = self.venue.rooms.get(name)
            if link is None:
                return text_response(404, f"no room '{name[:40]}' on this server; rooms: "
                                          f"{', '.join(sorted(self.venue.rooms)) or 'none'} (GET /api/venue lists them)\n")
            if rest in ("", "/"):
                return redirect(room_path(name, "/live.html"))
            return self._room_http(connection, link, rest, query, request, room_path(name, ""))
        if path == VENUE:
            return self._admit(connection, request, VENUE)
        if path == "/healthz":
            return json_response(self._healthz())
        if path == "/metrics":
            return http_response(200, (await self._metrics_text()).encode(), "text/plain; version=0.0.4; charset=utf-8")
        if path == "/api/venue":
            return json_response(self.venue.venue_status())
        if path in LEGACY_PATHS or path.startswith("/transcripts/"):
            link = self.venue.default_room
            if link is None:
                return text_response(404, f"{path[:80]} belongs to a room, and this server has no default "
                                          f"room: use /rooms/NAME{path[:80]} (rooms: "
                                          f"{', '.join(sorted(self.venue.rooms)) or 'none'}; the venue page / lists them)\n")
            return self._room_http(connection, link, path, query, request, "")
        if path.startswith("/ws/"):
            return text_response(404, f"no WebSocket endpoint {path[:80]}; use /rooms/NAME/ws/view, "
                                      f"/rooms/NAME/ws/control, /rooms/NAME/ws/audio or {VENUE}\n")
        target = static_file(self.web_dir, "/index.html" if path == "/" else path)
        if target is None and path == "/":
            return index_page([(r.title, f"{room_path(r.name, '/overlay.html')}", room_path(r.name, "/console.html"))
                               for r in self.venue.rooms.values()], PROTOCOL_VERSION)
        return file_response(target)

    def _room_http(self, connection: ServerConnection, link: RoomLink, rest: str, query: str, request: Request,
                   prefix: str) -> Response | None:
        """A room's own paths (``rest``, below ``prefix``: /rooms/NAME, or '' for the default room)."""
        if rest in ROOM_ENDPOINTS:
            return self._admit(connection, request, rest)  # None: go on with the WebSocket handshake
        if rest.startswith("/ws/"):
            return text_response(404, f"no WebSocket endpoint {prefix}{rest[:80]}; use {prefix}{VIEW}, "
                                      f"{prefix}{CONTROL} or {prefix}{AUDIO}\n")
        if rest == "/api/session":
            return json_response({"session": link.session_id, "room": link.name,
                                  "files": transcript_list(link.transcripts, prefix)})
        if rest.startswith("/transcripts/"):
            return transcript_response(link.transcripts, rest[len("/transcripts/"):])
        if rest == "/qr.svg":
            lang = urllib.parse.parse_qs(query).get("lang", [""])[-1]
            if lang and lang != "source" and not is_language_code(lang):
                return text_response(400, f"lang={lang[:20]!r} is not a language code; use e.g. qr.svg?lang=zh "
                                          f"(or no lang for the room's own choice)\n")
            url = self.public_base(request) + room_path(link.name, "/live.html")
            return qr_response(url + (f"?lang={lang}" if lang else ""))
        return file_response(static_file(self.web_dir, rest))

    def _admit(self, connection: ServerConnection, request: Request, endpoint: str) -> Response | None:
        """A WebSocket endpoint's door: a browser page from another origin may not steer a room
        (DNS rebinding included: the Origin must name an address this server serves), and each
        role has its places (``admission.ConnectionLimits``); the place is held until the
        connection closes."""
        if endpoint != VIEW and not origin_allowed(request.headers.get("Origin"), self.origins):
            self.limits.refused["origin"] = self.limits.refused.get("origin", 0) + 1
            return _cross_origin(request.headers.get("Origin", ""))
        role = ENDPOINT_ROLES[endpoint]
        if getattr(connection, "role", None) is not None:  # not a second place for one connection
            return None
        address = _peer(connection)
        refusal = self.limits.admit(role, address)
        unproven = self.unproven.get(role)
        if refusal is not None and unproven and self.limits.count(role) >= self.caps.role(role)[0]:
            # Every console (or sender) place is taken: the one that has held its place longest
            # without showing a token gives it up, so sockets that never authenticate cannot
            # lock the operator or a sender out.
            next(iter(unproven)).drop_unproven()
            refusal = self.limits.admit(role, address)
        if refusal is not None:
            log.debug("refused a %s from %s: %s", role, address, refusal)
            return text_response(503, f"refused: {refusal}; try again later\n")
        if isinstance(connection, _Connection):
            connection.role = role
            if unproven is not None:
                unproven[connection] = None
        else:  # pragma: no cover - every connection is a _Connection
            self.limits.release(role, address)
        return None

    def bad_http(self, address: str, what: str) -> None:
        """Count a request that was not one whole HTTP request; log it once per address."""
        self.bad_requests += 1
        if address in self._bad_logged or len(self._bad_logged) >= LOGGED_ADDRESSES:
            return
        self._bad_logged.add(address)
        log.warning("bad HTTP request from %s: %s; answered 400 (further bad requests from this address "
                    "are counted in /metrics, not logged)", address, what[:200])

    # -- health and metrics ---------------------------------------------------------------------
    def _healthz(self) -> dict:
        venue = self.venue
        health = {"status": "ok", "protocol": PROTOCOL_VERSION, "rooms": len(venue.rooms),
                  "uptime": round(time.monotonic() - self.started, 1),
                  "viewers": sum(len(r.channel.viewers) for r in venue.rooms.values()),
                  "connections": self.limits.sockets, "tls": self.tls is not None}
        if venue.default_room is not None:
            health["session"] = venue.default_room.session_id
        problems = [p for r in venue.rooms.values() for p in r.problems()]
        if venue.publisher is not None:
            health["redis"] = venue.publisher.health()
            if venue.publisher.problem():
                problems.append(venue.publisher.problem())
        if problems:  # e.g. a full disk: captions still reach the screens, the files wait
            health["status"], health["problems"] = "degraded", problems
        return health

    async def _metrics_text(self) -> str:
        host_text = ""
        if self.host_metrics is not None:
            try:  # the host may take its own locks: not in the loop thread
                host_text = await asyncio.to_thread(self.host_metrics)
            except Exception:
                log.exception("the host's metrics failed")
        return render([r.sample() for r in self.venue.rooms.values()], uptime=time.monotonic() - self.started,
                      host_text=self._front_metrics() + host_text)

    def _front_metrics(self) -> str:
        """The front's connection lines, the audio ingest's and the Redis publisher's for /metrics."""
        rooms = list(self.venue.rooms.values())
        publisher, throttle = self.venue.publisher, self.venue.throttle
        out: list[str] = []

        limits = self.limits
        out += family("subtitler_connections", "gauge", "Open connections: TCP, and WebSocket places by role.",
                      [('kind="tcp"', limits.sockets)]
                      + [(f'kind="{r}"', limits.count(r)) for r in ("viewer", "console", "sender")])
        out += family("subtitler_connections_refused_total", "counter", "Connections refused at the edge, by reason "
                      "(idle: dropped to make room, having sent nothing).",
                      [(f'reason="{k}"', v) for k, v in sorted({**limits.refused, "idle": self.evicted}.items())])
        out += family("subtitler_auth_failures_total", "counter", "Wrong or missing tokens.", [("", throttle.failures)])
        out += family("subtitler_auth_throttled_total", "counter", "Token attempts refused while their address had to wait.",
                      [("", throttle.throttled)])
        out += family("subtitler_bad_requests_total", "counter", "Requests that were not one whole HTTP request (answered 400).",
                      [("", self.bad_requests)])
        out += family("subtitler_audio_gaps_total", "counter", "Gaps in a room's audio that its sender reported (audio lost "
                      "before it could be sent).", [(f'room="{r.name}"', r.ingest.gaps) for r in rooms])
        out += family("subtitler_audio_gap_seconds_total", "counter", "Seconds of audio in those gaps.",
                      [(f'room="{r.name}"', round(r.ingest.gap_seconds, 3)) for r in rooms])
        out += family("subtitler_audio_resumes_total", "counter", "Senders that reconnected and resumed from the acknowledged "
                      "audio.", [(f'room="{r.name}"', r.ingest.resumes) for r in rooms])
        out += family("subtitler_audio_sender_connected", "gauge", "1 while an audio sender is connected.",
                      [(f'room="{r.name}"', int(r.ingest.sender is not None)) for r in rooms])
        if publisher is not None:
            out += publisher.metrics_lines()
        return "\n".join(out) + "\n"


def _cross_origin(origin: str) -> Response:
    return text_response(403, f"cross-origin WebSocket refused: a page from {origin[:100]!r} may not steer this "
                              f"server; open the console from this server's own address (or list the origin in "
                              f"[server] allowed_origins)\n")


def _peer(connection: ServerConnection) -> str:
    address = getattr(connection, "address", None)
    if address:
        return address
    peer = connection.remote_address
    return str(peer[0]) if peer else "?"


def plain_response(status: int, reason: str, text: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for answers given outside websockets."""
    body = text.encode()
    return (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class _Connection(ServerConnection):
    """websockets' server connection, with the front's guards (see the module doc).

    * ``connection_made``: counts the TCP connection (``ConnectionLimits.open_socket``); over a
      cap it is answered 503 and closed before anything is read.
    * ``data_received``: bytes that follow a request before its answer (pipelining, or a
      client that does not wait for the handshake) are not fed to websockets, which would
      parse them as frames and fail the connection mid-handshake (an AssertionError and a
      traceback per request); the request is answered 400 instead.
    * ``send_data``: a request websockets could not parse gets a 400 before the close (it
      would close without a word).
    * the transport's ``abort`` is guarded (``protocol.guard_abort``).
    * ``keepalive``: the first ping waits a random part of the interval more, so that pings
      do not come in one burst every interval forever after thousands of screens connected
      together (an edge's restart): each ping and its pong cost the loop tens of µs, and
      2500 of them in a second held up the captions' fan-out by a tenth of a second.
    """

    def __init__(self, front: Front, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.front, self.address = front, ""
        self.counted = False
        self.role: str | None = None  # the endpoint place this connection holds
        self.head: bytearray | None = bytearray()  # the request head, until it is complete
        self.pipelined = self.answered = False

    async def keepalive(self) -> None:
        await asyncio.sleep(random.uniform(0.0, self.ping_interval or 0.0))
        await super().keepalive()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        guard_abort(self)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        front = self.front
        if front.limits.full and front.idle:
            # Full: make room by dropping the connection that has waited longest without sending
            # a request (a flood of idle sockets cannot lock the console or a sender out).
            oldest = next(iter(front.idle))
            oldest.drop_idle()
        refusal = front.limits.open_socket(self.address)
        if refusal is None:
            self.counted = True
            front.idle[self] = None
            return
        transport.write(plain_response(503, "Service Unavailable", f"refused: {refusal}; try again later\n"))
        transport.close()

    def drop_idle(self) -> None:
        self.front.idle.pop(self, None)
        self.front.evicted += 1
        if self.counted:
            self.counted = False
            self.front.limits.close_socket(self.address)
        self.transport.abort()

    def authenticated(self) -> None:
        """It showed a right token (``endpoints.check_token``): its place is its own now."""
        self.front.unproven.get(self.role, {}).pop(self, None)

    def drop_unproven(self) -> None:
        front = self.front
        front.unproven.get(self.role, {}).pop(self, None)
        front.limits.refused["unproven"] = front.limits.refused.get("unproven", 0) + 1
        if self.role is not None:
            front.limits.release(self.role, self.address)
            self.role = None
        self.transport.abort()

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        self.front.idle.pop(self, None)
        self.front.unproven.get(self.role, {}).pop(self, None)
        if self.counted:
            self.counted = False
            self.front.limits.close_socket(self.address)
        if self.role is not None:
            self.front.limits.release(self.role, self.address)
            self.role = None

    def data_received(self, data: bytes) -> None:
        if self.request is None and self.head is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end >= 0:
                extra = len(self.head) - end - 4
                self.head = None
                if extra:
                    self.pipelined = True
                    data = data[:len(data) - extra]
            elif len(self.head) > HEAD_LIMIT:
                self.head = None  # websockets answers 431 itself
        elif self.request is not None and self.protocol.state is State.CONNECTING:
            self.pipelined = True  # more bytes before our answer: dropped, answered 400
            return
        super().data_received(data)
        if self.request is not None or self.head is None:
            self.front.idle.pop(self, None)  # it spoke: no longer a candidate for dropping

    def send_data(self) -> None:
        exc = self.protocol.handshake_exc
        if (not self.answered and self.request is None and isinstance(exc, InvalidMessage)
                and not isinstance(exc.__cause__, EOFError)):
            self.answered = True
            what = str(exc.__cause__ or exc)
            self.front.bad_http(self.address, what)
            self.transport.write(plain_response(400, "Bad Request", f"bad HTTP request: {what[:200]}\n"))
        super().send_data()
