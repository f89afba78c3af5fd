"""The venue's server: one port for every room's pages and sockets, the venue page, /api/venue,
/healthz and /metrics.

This is the process edge: the thread and its asyncio loop, the rooms, the venue's state (its
operators, its capacity) and the services that run in the loop (the Redis publisher). What
arrives on the port — routing, pages, health, metrics and the guards against hostile or broken
clients — is the server's ``front.Front``.

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
import threading
import time
from pathlib import Path
from typing import Callable, Coroutine, Iterable

from websockets.http11 import Request

from .admission import AuthThrottle, ConnectionLimits
from .broker import Publisher
from .channel import CLOSE_TIMEOUT, Fanout, close_ws
from .config import ServerConfig
from .endpoints import VenueControls
from .front import Front
from .listening import ServerError, bind_error
from .metrics import RoomMetrics
from .pages import WEB_DIR
from .protocol import CLOSE_GOING_AWAY, PROTOCOL_VERSION, STATUS_INTERVAL, check_room_name, room_path
from .roomlink import RoomLink

log = logging.getLogger("subtitler.server")

ROOM_DRAIN = 1.0  # seconds a closing room's queued captions get before its clients are closed

__all__ = ["PROTOCOL_VERSION", "RoomLink", "Server", "ServerError", "WEB_DIR"]


class Server:
    """The venue's server running in a background thread with its own asyncio loop.

    ``start()`` binds (raising ``ServerError`` with a clear message if it cannot) and returns;
    ``add_room()`` gives a room its URLs and returns its ``RoomLink`` (before or after
    ``start``); ``stop()`` lets queued captions drain, closes every client with 1001 and joins
    the thread. ``token`` is the venue token: it opens every room's console and audio, and
    /ws/venue; ``throttle`` slows down wrong tokens. ``front`` makes what serves the port
    (``web_dir``: its pages). ``languages`` only serves the single-room calls at the end of
    the class.
    """

    def __init__(self, config: ServerConfig, *, web_dir: Path | None = None, live: bool = True,
                 languages: Iterable[str] = (), front: type[Front] = Front):
        self.config = config
        self.token = config.token or secrets.token_urlsafe(16)
        self.throttle = AuthThrottle()
        self.live = live
        self.rooms: dict[str, RoomLink] = {}  # replaced, never changed in place (read by the loop)
        self.default_room: RoomLink | None = None
        self.venue_controls: VenueControls | None = None
        self.operators = Fanout(RoomMetrics(), client_queue=config.client_queue,
                                client_timeout_s=config.client_timeout_s, roles=("operator",))
        self.loop: asyncio.AbstractEventLoop | None = None
        self._legacy_languages = list(languages)
        self._capacity: dict | None = None
        self._capacity_task: asyncio.Future | None = None
        self._lock = threading.Lock()
        self._pending: list[tuple[Callable, tuple]] = []  # calls made before the loop ran
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._drain = 2.0
        self.front = front(self, web_dir)
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
        self.front.prepare()
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
        try:
            ws_server = await self.front.listen()
        except OSError as e:
            self._error = ServerError(bind_error(self.config.host, self.config.port, e))
            self._ready.set()
            return
        with self._lock:
            self.loop, pending, self._pending = loop, self._pending, []
        for fn, args in pending:
            _guarded(fn, args)
        self._ready.set()
        heartbeat = asyncio.ensure_future(self._heartbeat())
        services = [asyncio.ensure_future(_run_service(run)) for run in self.services]
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

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            try:
                now = loop.time()
                self.operators.drop_unresponsive(now)
                for link in self.rooms.values():
                    link.channel.drop_unresponsive(now)
                    link.broadcast_status(heartbeat=True)
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
            loop.call_soon_threadsafe(_guarded, fn, args)
        except RuntimeError:  # loop closed: the session outlived the server
            pass

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
        self.front.host_metrics = fn

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

    # -- addresses and connections: the front's ------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port once started (before: the configured one)."""
        return self.front.port

    @property
    def limits(self) -> ConnectionLimits:
        return self.front.limits

    def base_urls(self) -> list[str]:
        return self.front.base_urls()

    def _public_base(self, request: Request) -> str:
        return self.front.public_base(request)

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

    # -- the single-room calls, before rooms: they act on the default room ------------------------
    # (kept for the callers that have not moved to add_room(…, default=True) → RoomLink: tests and
    # bench/fanout.py; a default room named "main" is made on first use if none was added)
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


async def _run_service(run: Callable[[], Coroutine]) -> None:
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


def _guarded(fn: Callable, args: tuple) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("server callback %s failed", getattr(fn, "__name__", fn))
