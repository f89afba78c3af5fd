"""The venue's server: one port for every room's pages and sockets, the venue page, /api/venue,
/healthz and /metrics.

This is the process edge: the thread and asyncio loop, the listening socket, HTTP routing
and the rooms. A room (``roomlink.RoomLink``) answers under ``/rooms/NAME/…``; the default
room (``subtitler run``'s one room) also on the bare single-room paths (``/ws/view``,
``/overlay.html`` …), so a v1 screen keeps working. The sockets' protocol is
``endpoints`` (handlers, tokens), ``channel`` (fan-out), ``ingest`` (audio); docs/protocol.md
describes it.

The edge also keeps hostile or broken clients from costing anyone else (``_Connection``,
``admission``): every TCP connection counts against a total and a per-address cap, far below
the open-file limit (raised at start where allowed); each endpoint (screens, consoles, senders)
has its own places; wrong tokens slow their address down; a browser page may steer a room only
from an origin this server serves; a request that is not one whole HTTP request is answered 400
and logged once per address. With ``tls_cert``/``tls_key`` every page and socket is served over
TLS (https://, wss://).

Threads: the engine publishes captions from its own threads; each RoomLink hands them to
the server's loop with ``call_soon_threadsafe`` and returns at once, so a pipeline never
waits on a screen. Rooms' state lives in that one loop thread and needs no locks; the
``rooms`` mapping is replaced (never changed in place) under a lock, so the loop reads it
freely.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Coroutine, Iterable

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidMessage
from websockets.http11 import Request, Response
from websockets.protocol import State

from .admission import FILES_RESERVE, AuthThrottle, Caps, ConnectionLimits, origin_allowed, served_origins
from .broker import Publisher
from .channel import CLOSE_TIMEOUT, WRITE_HIGH, Fanout, close_ws
from .config import ServerConfig
from .endpoints import VenueControls, guarded, serve_room, serve_venue
from .ingest import Ingest
from .langcodes import is_language_code
from .listening import (ServerError, bind_error, is_loopback, local_addresses, raise_open_file_limit, tls_context,
                        url_host)
from .metrics import RoomMetrics, family, render
from .pages import (WEB_DIR, file_response, http_response, index_page, json_response, qr_response, redirect,
                    request_host, static_file, text_response, transcript_list, transcript_response)
from .protocol import (AUDIO, CLOSE_GOING_AWAY, CONTROL, PROTOCOL_VERSION, ROOM_ENDPOINTS, STATUS_INTERVAL, VENUE,
                       VIEW, check_room_name, guard_abort, room_path, split_room_path)
from .roomlink import Controls, RoomLink

log = logging.getLogger("subtitler.server")

# The single-room paths of `subtitler run`: they serve the default room.
LEGACY_PATHS = frozenset((VIEW, CONTROL, AUDIO, "/api/session", "/overlay.html", "/console.html", "/live.html",
                          "/qr.svg"))
ROOM_DRAIN = 1.0  # seconds a closing room's queued captions get before its clients are closed
ENDPOINT_ROLES = {VIEW: "viewer", CONTROL: "console", AUDIO: "sender", VENUE: "console"}
HEAD_LIMIT = 1 << 16  # request head bytes scanned for pipelining (websockets refuses larger heads)
LOGGED_ADDRESSES = 4096  # addresses whose bad requests were logged once (then: no more logging)
PING_GRACE = 5.0  # websockets' keepalive gives up this long after our own slow-client check
BACKLOG, SMALL_BACKLOG = 2048, 64  # connections waiting to be accepted (and accepted at once)

__all__ = ["PROTOCOL_VERSION", "RoomLink", "Server", "ServerError", "WEB_DIR"]


class Server:
    """The venue's server running in a background thread with its own asyncio loop.

    ``start()`` binds (raising ``ServerError`` with a clear message if it cannot) and returns;
    ``add_room()`` gives a room its URLs and returns its ``RoomLink`` (before or after
    ``start``); ``stop()`` lets queued captions drain, closes every client with 1001 and joins
    the thread. ``token`` is the venue token: it opens every room's console and audio, and
    /ws/venue. ``languages`` only serves the single-room calls at the end of the class.
    """

    def __init__(self, config: ServerConfig, *, web_dir: Path | None = None, live: bool = True,
                 languages: Iterable[str] = ()):
        self.config = config
        self.token = config.token or secrets.token_urlsafe(16)
        self.web_dir = Path(web_dir) if web_dir is not None else WEB_DIR
        self.live = live
        self.rooms: dict[str, RoomLink] = {}  # replaced, never changed in place (read by the loop)
        self.default_room: RoomLink | None = None
        self.venue_controls: VenueControls | None = None
        self.operators = Fanout(RoomMetrics(), client_queue=config.client_queue,
                                client_timeout_s=config.client_timeout_s, roles=("operator",))
        self.started = time.monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = config.port
        self._legacy_languages = list(languages)
        self._host_metrics: Callable[[], str] | None = None
        self._capacity: dict | None = None
        self._capacity_task: asyncio.Future | None = None
        self._lock = threading.Lock()
        self._pending: list[tuple[Callable, tuple]] = []  # calls made before the loop ran
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._drain = 2.0
        self.caps = Caps((config.max_viewers, config.max_viewers_per_address),
                         (config.max_consoles, config.max_consoles_per_address),
                         (config.max_senders, config.max_senders_per_address))
        self.limits = ConnectionLimits(self.caps)
        self.throttle = AuthThrottle()
        self.origins: frozenset[str] = frozenset()  # set once the port is known
        self.tls: ssl.SSLContext | None = None
        self.backlog = BACKLOG
        self.bad_requests = 0
        self._bad_logged: set[str] = set()
        self.idle: dict[_Connection, None] = {}  # counted connections that sent no request yet, oldest first
        # console and sender places held by connections that have not shown a token yet, oldest first
        self.unproven: dict[str, dict[_Connection, None]] = {"console": {}, "sender": {}}
        self.evicted = 0
        # Tasks run in the loop while it serves (the Redis publisher; an edge's follower).
        self.services: list[Callable[[], Coroutine]] = []
        self.publisher: Publisher | None = None
        if config.redis:
            try:
                self.publisher = Publisher(config.redis, lambda: self.rooms)
            except ValueError as e:
                raise ServerError(str(e)) from None
            self.services.append(self.publisher.run)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "Server":
        self.tls = tls_context(self.config)
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
        self._thread = threading.Thread(target=self._run, name="subtitler-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ServerError("the server did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # pragma: no cover - surfaced by start()
            if not self._ready.is_set():
                self._error = ServerError(f"the server failed to start: {e}")
                self._ready.set()
            else:
                log.exception("the server stopped with an error")

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        host = self.config.host
        try:
            ws_server = await serve(self._handle, host, self.config.port, process_request=self._http,
                                    compression=None,  # per-client deflate would cost more than it saves
                                    max_size=self.config.max_message_bytes, close_timeout=CLOSE_TIMEOUT,
                                    write_limit=WRITE_HIGH, backlog=self.backlog, logger=log, ssl=self.tls,
                                    create_connection=lambda *a, **kw: _Connection(self, *a, **kw),
                                    # our own check (Fanout.drop_unresponsive) closes a client that
                                    # stopped reading with 1013 first; this is for the others
                                    ping_interval=min(10.0, max(1.0, self.config.client_timeout_s)),
                                    ping_timeout=self.config.client_timeout_s + PING_GRACE)
        except OSError as e:
            self._error = ServerError(bind_error(host, self.config.port, e))
            self._ready.set()
            return
        self.port = ws_server.sockets[0].getsockname()[1]
        self.origins = served_origins(self.scheme, self._served_hosts(), self.port, self.config.allowed_origins)
        with self._lock:
            self.loop, pending, self._pending = loop, self._pending, []
        for fn, args in pending:
            self._guarded(fn, args)
        self._ready.set()
        heartbeat = asyncio.ensure_future(self._heartbeat())
        services = [asyncio.ensure_future(self._service(run)) for run in self.services]
        await self._stop.wait()
        heartbeat.cancel()
        ws_server.close(close_connections=False)  # no new connections while the last captions go out
        await asyncio.gather(*(link.channel.drain(self._drain) for link in self.rooms.values()))
        await asyncio.gather(*(close_ws(ws, CLOSE_GOING_AWAY, "session ended")
                               for ws in list(ws_server.connections)))
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT + 1):
                await ws_server.wait_closed()
        except TimeoutError:
            pass
        if self.publisher is not None:  # the last captions went out: the rooms leave the registry
            try:
                async with asyncio.timeout(self._drain + 1):
                    while self.publisher.pending and self.publisher.connected:
                        await asyncio.sleep(0.02)
            except TimeoutError:
                pass
            await self.publisher.forget_all()
        for task in services:
            task.cancel()
        await asyncio.gather(*services, return_exceptions=True)

    @staticmethod
    async def _service(run: Callable[[], Coroutine]) -> None:
        """A service task; one that fails is logged and started again (it never takes the server down)."""
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; restarting it", getattr(run, "__qualname__", run))
                await asyncio.sleep(1.0)

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            try:
                now = loop.time()
                self.operators.drop_unresponsive(now)
                for link in self.rooms.values():
                    link.channel.drop_unresponsive(now)
                    link.broadcast_status()
                self._refresh_capacity()
                if self.operators.groups["operator"]:
                    self._push_venue()
            except Exception:
                log.exception("status broadcast failed")

    def stop(self, drain: float = 2.0) -> None:
        """Drain (≤ ``drain`` s), close every client with 1001, join the thread. Idempotent."""
        if self._thread is None or not self._thread.is_alive() or self.loop is None:
            return
        self._drain = drain
        try:
            self.loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:  # the loop already ended
            return
        self._thread.join(drain + 2 * CLOSE_TIMEOUT + 5)

    # -- called from other threads ----------------------------------------------------------
    def call(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` in the server's loop; never blocks. Before ``start`` it waits for
        the loop; a stopped server ignores it."""
        with self._lock:
            loop = self.loop
            if loop is None:
                self._pending.append((fn, args))
                return
        try:
            loop.call_soon_threadsafe(self._guarded, fn, args)
        except RuntimeError:  # loop closed: the session outlived the server
            pass

    @staticmethod
    def _guarded(fn: Callable, args: tuple) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("server callback %s failed", getattr(fn, "__name__", fn))

    def run_blocking(self, coro: Coroutine, timeout: float) -> None:
        """Run ``coro`` in the loop and wait for it (≤ ``timeout``); nothing to do when the
        server is not running. Never from the loop's own thread."""
        loop = self.loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            coro.close()
            return
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("run_blocking() from the server's own thread would wait on itself")
        try:
            asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)
        except RuntimeError:  # the loop closed meanwhile
            coro.close()
        except TimeoutError:
            log.warning("%s did not finish in %.0f s", getattr(coro, "__name__", coro), timeout)

    # -- rooms ------------------------------------------------------------------------------
    def add_room(self, name: str, *, title: str = "", token: str | None = None, languages: Iterable[str] = (),
                 live: bool = True, default: bool = False) -> RoomLink:
        """A new room with its URLs (/rooms/NAME/…); thread-safe, before or after ``start``.
        ``token`` None or '' → a random one. ``default``: the single-room paths serve it too.
        ValueError for a bad or taken name, or a second default room."""
        check_room_name(name)
        with self._lock:
            if name in self.rooms:
                raise ValueError(f"a room named '{name}' is already open; choose another name")
            if default and self.default_room is not None:
                raise ValueError(f"room '{self.default_room.name}' already serves the single-room paths; "
                                 f"only one room can be the default")
            link = RoomLink(name, self.config, self.call, self.run_blocking, title=title, token=token,
                            languages=languages, live=live, default=default)
            self.rooms = {**self.rooms, name: link}
            if default:
                self.default_room = link
            if self.publisher is not None:
                link.channel.listener = functools.partial(self.publisher.notify, name)
        self.call(self.venue_changed)
        return link

    def remove_room(self, name: str, drain: float = ROOM_DRAIN) -> None:
        """Blocking (≤ a few s): the room's URLs answer 404 from now on; its queued captions get
        ``drain`` s, then its clients are closed with 1001 "room closed". KeyError if unknown."""
        with self._lock:
            link = self.rooms.get(name)
            if link is None:
                raise KeyError(f"no room named '{name}'; rooms: {', '.join(self.rooms) or 'none'}")
            self.rooms = {n: r for n, r in self.rooms.items() if n != name}
            if self.default_room is link:
                self.default_room = None
            link.closed = True
        self.run_blocking(self._close_room(link, drain), drain + 2 * CLOSE_TIMEOUT + 2)

    async def _close_room(self, link: RoomLink, drain: float) -> None:
        await link.channel.drain(drain)
        link.ingest.finish()  # a sender waiting for its end's answer is let go
        await asyncio.gather(*(close_ws(ws, CLOSE_GOING_AWAY, "room closed") for ws in list(link.connections)))
        self.venue_changed()

    def set_venue(self, controls: VenueControls) -> None:
        """/ws/venue's open_room and close_room go to ``controls`` (the host's venue)."""
        self.venue_controls = controls
        self.call(self.venue_changed)

    def set_host_metrics(self, fn: Callable[[], str]) -> None:
        """``fn()`` → Prometheus text appended to /metrics (host-level lines); called in a worker thread."""
        self._host_metrics = fn

    # -- the venue's state (in the loop) --------------------------------------------------------
    def venue_status(self) -> dict:
        """What /api/venue answers and /ws/venue pushes."""
        now = time.monotonic()
        rooms = [link.summary(now) for link in self.rooms.values()]
        capacity = {"rooms": len(rooms), "max_rooms": None, "overloaded": False}
        if self._capacity is not None and self.venue_controls is not None:
            capacity.update({k: self._capacity[k] for k in ("rooms", "max_rooms", "overloaded")
                             if k in self._capacity})
        return {"protocol": PROTOCOL_VERSION, "rooms": rooms, "capacity": capacity}

    def room_summary(self, name: str) -> dict | None:
        link = self.rooms.get(name)
        return link.summary(time.monotonic()) if link is not None else None

    def venue_changed(self) -> None:
        """A room opened or closed: operators hear it now, and the capacity is asked again."""
        self._refresh_capacity()
        self._push_venue()

    def _push_venue(self) -> None:
        if self.operators.groups["operator"]:
            self.operators.broadcast({"type": "venue", **self.venue_status()}, ("operator",))

    def _refresh_capacity(self) -> None:
        """Ask the venue for its capacity in a worker thread (it may measure or take locks)."""
        controls = self.venue_controls
        if controls is None or (self._capacity_task is not None and not self._capacity_task.done()):
            return

        async def refresh() -> None:
            try:
                self._capacity = await asyncio.to_thread(controls.capacity)
            except Exception:
                log.exception("the venue's capacity() failed")
        self._capacity_task = asyncio.ensure_future(refresh())

    # -- addresses --------------------------------------------------------------------------
    def base_urls(self) -> list[str]:
        """http://HOST:PORT for each address the venue can use (LAN addresses for 0.0.0.0)."""
        host = self.config.host
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
        host = self.config.host
        hosts = [host]
        if host in ("0.0.0.0", "::", ""):
            hosts += local_addresses() + ["localhost", "127.0.0.1", "::1"]
            name = socket.gethostname()
            hosts += [name, name + ".local", socket.getfqdn()]
        elif host == "localhost" or is_loopback(host):
            hosts += ["localhost", "127.0.0.1", "::1"]
        return [h for h in dict.fromkeys(hosts) if h]

    def page_urls(self, name: str | None = None) -> dict[str, str]:
        """A room's addresses: overlay, console (with the room's token), live (phones), venue
        (the venue page), audio (what `subtitler send --server` takes). The default room keeps
        its single-room URLs. ``name`` None: the default room."""
        link = self.rooms[name] if name is not None else self._legacy_room()
        base = self.base_urls()[0]
        prefix = base if link.default else base + room_path(link.name, "")
        return {"overlay": f"{prefix}/overlay.html", "console": f"{prefix}/console.html#token={link.token}",
                "live": f"{prefix}/live.html", "venue": f"{base}/",
                "audio": base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)}

    def _public_base(self, request: Request) -> str:
        """The address a phone would use: a LAN address when serving every interface, else the
        Host the request came to."""
        host = request_host(request)
        if self.config.host in ("0.0.0.0", "::", "") or host is None:
            return self.base_urls()[0]
        return f"{self.scheme}://{host}"

    # -- WebSockets (in the loop) ---------------------------------------------------------------
    def _route(self, path: str) -> tuple[RoomLink | None, str]:
        """The room a path belongs to and the path within it; (None, path) if none."""
        name, rest = split_room_path(path)
        if name is not None:
            return self.rooms.get(name), rest
        if path in LEGACY_PATHS or path.startswith("/transcripts/"):
            return self.default_room, path
        return None, path

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path.partition("?")[0]
        if path == VENUE:
            await guarded(ws, serve_venue, self, ws)
            return
        link, endpoint = self._route(path)
        if link is None or link.closed:  # closed between the handshake and now
            await close_ws(ws, CLOSE_GOING_AWAY, "room closed")
            return
        link.connections.add(ws)
        try:
            await serve_room(link, endpoint, ws, self.token, self.throttle)
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
            link = self.rooms.get(name)
            if link is None:
                return text_response(404, f"no room '{name[:40]}' on this server; rooms: "
                                          f"{', '.join(sorted(self.rooms)) or 'none'} (GET /api/venue lists them)\n")
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
            return json_response(self.venue_status())
        if path in LEGACY_PATHS or path.startswith("/transcripts/"):
            link = self.default_room
            if link is None:
                return text_response(404, f"{path[:80]} belongs to a room, and this server has no default "
                                          f"room: use /rooms/NAME{path[:80]} (rooms: "
                                          f"{', '.join(sorted(self.rooms)) or 'none'}; the venue page / lists them)\n")
            return self._room_http(connection, link, path, query, request, "")
        if path.startswith("/ws/"):
            return text_response(404, f"no WebSocket endpoint {path[:80]}; use /rooms/NAME/ws/view, "
                                      f"/rooms/NAME/ws/control, /rooms/NAME/ws/audio or {VENUE}\n")
        target = static_file(self.web_dir, "/index.html" if path == "/" else path)
        if target is None and path == "/":
            return index_page([(r.title, f"{room_path(r.name, '/overlay.html')}", room_path(r.name, "/console.html"))
                               for r in self.rooms.values()], PROTOCOL_VERSION)
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
            url = self._public_base(request) + room_path(link.name, "/live.html")
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

    def _healthz(self) -> dict:
        health = {"status": "ok", "protocol": PROTOCOL_VERSION, "rooms": len(self.rooms),
                  "uptime": round(time.monotonic() - self.started, 1),
                  "viewers": sum(len(r.channel.viewers) for r in self.rooms.values()),
                  "connections": self.limits.sockets, "tls": self.tls is not None}
        if self.default_room is not None:
            health["session"] = self.default_room.session_id
        problems = [p for r in self.rooms.values() for p in r.problems()]
        if self.publisher is not None:
            health["redis"] = self.publisher.health()
            if self.publisher.problem():
                problems.append(self.publisher.problem())
        if problems:  # e.g. a full disk: captions still reach the screens, the files wait
            health["status"], health["problems"] = "degraded", problems
        return health

    async def _metrics_text(self) -> str:
        host_text = ""
        if self._host_metrics is not None:
            try:  # the host may take its own locks: not in the loop thread
                host_text = await asyncio.to_thread(self._host_metrics)
            except Exception:
                log.exception("the host's metrics failed")
        return render([r.sample() for r in self.rooms.values()], uptime=time.monotonic() - self.started,
                      host_text=self._edge_metrics() + host_text)

    def _edge_metrics(self) -> str:
        """The connection edge's and the audio ingest's lines for /metrics (Prometheus text)."""
        rooms = list(self.rooms.values())
        out: list[str] = []

        limits = self.limits
        out += family("subtitler_connections", "gauge", "Open connections: TCP, and WebSocket places by role.",
               [('kind="tcp"', limits.sockets)] + [(f'kind="{r}"', limits.count(r)) for r in ("viewer", "console", "sender")])
        out += family("subtitler_connections_refused_total", "counter", "Connections refused at the edge, by reason "
               "(idle: dropped to make room, having sent nothing).",
               [(f'reason="{k}"', v) for k, v in sorted({**limits.refused, "idle": self.evicted}.items())])
        out += family("subtitler_auth_failures_total", "counter", "Wrong or missing tokens.", [("", self.throttle.failures)])
        out += family("subtitler_auth_throttled_total", "counter", "Token attempts refused while their address had to wait.",
               [("", self.throttle.throttled)])
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
        if self.publisher is not None:
            out += self.publisher.metrics_lines()
        return "\n".join(out) + "\n"

    # -- the single-room calls, before rooms: they act on the default room ------------------------
    # (kept while callers move to add_room(…, default=True) → RoomLink; a default room named
    # "main" is made on first use if none was added)
    def _legacy_room(self) -> RoomLink:
        if self.default_room is None:
            try:
                self.add_room("main", token=self.token, languages=self._legacy_languages, live=self.live,
                              default=True)
            except ValueError:  # another thread made it first
                pass
        return self.default_room

    @property
    def sink(self):
        return self._legacy_room().sink

    @property
    def hub(self):
        """The default room's channel (its event log, viewers and metrics)."""
        return self._legacy_room().channel

    @property
    def session_id(self) -> str:
        return self._legacy_room().session_id

    def attach(self, controls: Controls, *, source_languages: Iterable[str] = ()) -> None:
        self._legacy_room().attach(controls, source_languages=source_languages)

    def attach_ingest(self, ingest: Ingest, queue_seconds: float = 10.0) -> None:
        self._legacy_room().attach_ingest(ingest, queue_seconds)

    def update_stats(self, stats) -> None:
        self._legacy_room().update_stats(stats)

    def publish_files(self, paths: dict[str, Path]) -> None:
        self._legacy_room().publish_files(paths)

    def clear(self) -> None:
        self._legacy_room().clear()

    def finish_ingest(self, timeout: float = 5.0) -> None:
        self._legacy_room().finish_ingest(timeout)


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
    """websockets' server connection, with this server's edge (see the module doc).

    * ``connection_made``: counts the TCP connection (``ConnectionLimits.open_socket``); over a
      cap it is answered 503 and closed before anything is read.
    * ``data_received``: bytes that follow a request before its answer (pipelining, or a
      client that does not wait for the handshake) are not fed to websockets, which would
      parse them as frames and fail the connection mid-handshake (an AssertionError and a
      traceback per request); the request is answered 400 instead.
    * ``send_data``: a request websockets could not parse gets a 400 before the close (it
      would close without a word).
    * the transport's ``abort`` is guarded (``protocol.guard_abort``).
    """

    def __init__(self, venue: Server, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.venue, self.address = venue, ""
        self.counted = False
        self.role: str | None = None  # the endpoint place this connection holds
        self.head: bytearray | None = bytearray()  # the request head, until it is complete
        self.pipelined = self.answered = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        guard_abort(self)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        venue = self.venue
        if venue.limits.full and venue.idle:
            # Full: make room by dropping the connection that has waited longest without sending
            # a request (a flood of idle sockets cannot lock the console or a sender out).
            oldest = next(iter(venue.idle))
            oldest.drop_idle()
        refusal = venue.limits.open_socket(self.address)
        if refusal is None:
            self.counted = True
            venue.idle[self] = None
            return
        transport.write(plain_response(503, "Service Unavailable", f"refused: {refusal}; try again later\n"))
        transport.close()

    def drop_idle(self) -> None:
        self.venue.idle.pop(self, None)
        self.venue.evicted += 1
        if self.counted:
            self.counted = False
            self.venue.limits.close_socket(self.address)
        self.transport.abort()

    def authenticated(self) -> None:
        """It showed a right token (``endpoints.check_token``): its place is its own now."""
        self.venue.unproven.get(self.role, {}).pop(self, None)

    def drop_unproven(self) -> None:
        venue = self.venue
        venue.unproven.get(self.role, {}).pop(self, None)
        venue.limits.refused["unproven"] = venue.limits.refused.get("unproven", 0) + 1
        if self.role is not None:
            venue.limits.release(self.role, self.address)
            self.role = None
        self.transport.abort()

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        self.venue.idle.pop(self, None)
        self.venue.unproven.get(self.role, {}).pop(self, None)
        if self.counted:
            self.counted = False
            self.venue.limits.close_socket(self.address)
        if self.role is not None:
            self.venue.limits.release(self.role, self.address)
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
            self.venue.idle.pop(self, None)  # it spoke: no longer a candidate for dropping

    def send_data(self) -> None:
        exc = self.protocol.handshake_exc
        if (not self.answered and self.request is None and isinstance(exc, InvalidMessage)
                and not isinstance(exc.__cause__, EOFError)):
            self.answered = True
            what = str(exc.__cause__ or exc)
            self.venue.bad_http(self.address, what)
            self.transport.write(plain_response(400, "Bad Request", f"bad HTTP request: {what[:200]}\n"))
        super().send_data()


