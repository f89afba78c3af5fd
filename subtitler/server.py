"""The room server: one port for the caption pages, three WebSocket endpoints, /healthz, /metrics.

This is the process edge: the thread and asyncio loop, the listening socket, HTTP (pages from
web/, /healthz, /metrics, /api/session, /transcripts/), the room's URLs and the engine's sink.
The protocol itself (event log, clients, fan-out, endpoints) is ``hub.Hub``; the names other
modules and the tests import from here are re-exported below.

Threads: the engine publishes captions from its own threads; ``ServerSink`` hands each one
to the server's asyncio loop with ``call_soon_threadsafe`` and returns at once, so the
pipeline never waits on a screen. The hub lives in that one loop thread and needs no locks.
``Server`` runs the loop in a background thread, so ``Session.run()`` can block the main
thread, which keeps handling Ctrl-C.
"""

from __future__ import annotations

import asyncio
import http
import ipaddress
import logging
import mimetypes
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from datetime import datetime
from email.utils import formatdate
from pathlib import Path
from typing import Callable, Iterable

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .captions import Caption, SessionStats
from .config import ServerConfig
from .eventlog import dumps
from .hub import (AUDIO, CLOSE_GOING_AWAY, CLOSE_TIMEOUT, CONTROL, PROTOCOL_VERSION, VIEW, WRITE_HIGH,
                  Controls, Hub, Ingest, close_ws)

log = logging.getLogger("subtitler.server")

# The pages: web/ beside the package in a checkout (editable install), else where a regular
# install put them (pyproject's data-files).
WEB_DIR = next((d for d in (Path(__file__).resolve().parent.parent / "web",
                            Path(sys.prefix) / "share" / "subtitler" / "web") if d.is_dir()),
               Path(__file__).resolve().parent.parent / "web")

TRANSCRIPT_TYPES = {".srt": "text/plain; charset=utf-8", ".vtt": "text/vtt; charset=utf-8",
                    ".txt": "text/plain; charset=utf-8", ".jsonl": "application/x-ndjson; charset=utf-8"}
STATUS_INTERVAL = 1.0  # the heartbeat: a screen that hears nothing for 5 s reconnects


class ServerError(RuntimeError):
    """The server cannot start (port taken, address not on this machine); says what to do."""


# -- HTTP: pages, /healthz, /metrics, and who may open which WebSocket ---------------------------

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".json": "application/json", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8",
                 ".woff2": "font/woff2", ".png": "image/png", ".ico": "image/x-icon"}

INDEX_HTML = """<!doctype html>
<html lang="en"><meta charset="utf-8"><title>subtitler</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:18px/1.5 system-ui,sans-serif;margin:3em auto;max-width:40em;padding:0 1em}}</style>
<h1>subtitler</h1>
<ul>
<li><a href="overlay.html">overlay.html</a>: the captions, for the room's screens</li>
<li><a href="console.html">console.html</a>: the operator's console (needs the token)</li>
<li><a href="healthz">healthz</a>, <a href="metrics">metrics</a></li>
</ul>
<p>Session {session}, protocol v{protocol}.</p>
</html>
"""


def http_response(status: int, body: bytes, content_type: str, extra: Iterable[tuple[str, str]] = ()) -> Response:
    st = http.HTTPStatus(status)
    headers = Headers([("Date", formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Length", str(len(body))), ("Content-Type", content_type),
                       ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"), *extra])
    return Response(st.value, st.phrase, headers, body)


def text_response(status: int, text: str) -> Response:
    return http_response(status, text.encode(), "text/plain; charset=utf-8")


def static_file(web_dir: Path, url_path: str) -> Path | None:
    """The file under ``web_dir`` that ``url_path`` names, or None; never anything outside it."""
    path = urllib.parse.unquote(url_path.partition("?")[0].partition("#")[0])
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p]
    if any(p.startswith(".") for p in parts):  # "..", ".", and hidden files
        return None
    try:
        root = web_dir.resolve(strict=True)
        target = root.joinpath(*parts).resolve(strict=True)  # follows links, then checks where they led
    except (OSError, RuntimeError, ValueError):
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


def same_origin(request: Request) -> bool:
    """A browser's Origin must be this server's own address (a page served from here)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (subtitler send, scripts): the token still guards it
    try:
        parsed = urllib.parse.urlsplit(origin)
    except ValueError:
        return False
    host = request.headers.get("Host", "")
    return parsed.scheme in ("http", "https") and bool(parsed.netloc) and \
        parsed.netloc.lower() == host.lower()


# -- the server in its own thread ----------------------------------------------------------------

def new_session_id() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S") + "-" + secrets.token_hex(2)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Server:
    """The room server running in a background thread with its own asyncio loop.

    ``start()`` binds (raising ``ServerError`` with a clear message if it cannot) and returns;
    ``sink`` is the engine sink; ``attach()`` connects the session (controls, stats) and, for
    ``--input remote``, the ``PushSource``; ``stop()`` lets queued captions drain, closes
    every client with 1001 and joins the thread.
    """

    def __init__(self, config: ServerConfig, *, web_dir: Path | None = None, session_id: str | None = None,
                 live: bool = True, languages: Iterable[str] = ()):
        self.config = config
        self.token = config.token or secrets.token_urlsafe(16)
        self.session_id = session_id or new_session_id()
        self.web_dir = Path(web_dir) if web_dir is not None else WEB_DIR
        # 'srt' → file, 'es.srt' → a translation's file: served under /transcripts/
        self.transcripts: dict[str, Path] = {}
        self.live = live
        self._languages = list(languages)
        self.hub: Hub | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = config.port
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._drain = 2.0
        self.sink = ServerSink(self)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "Server":
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
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        hub = self.hub = Hub(self.config, self.token, self.session_id, live=self.live,
                             languages=self._languages)
        host = self.config.host
        try:
            ws_server = await serve(hub.handle, host, self.config.port, process_request=self._http,
                                    compression=None,  # per-client deflate would cost more than it saves
                                    max_size=self.config.max_message_bytes, close_timeout=CLOSE_TIMEOUT,
                                    write_limit=WRITE_HIGH, backlog=2048, logger=log)
        except OSError as e:
            self._error = ServerError(_bind_error(host, self.config.port, e))
            self._ready.set()
            return
        self.port = ws_server.sockets[0].getsockname()[1]
        self._ready.set()
        heartbeat = asyncio.ensure_future(self._heartbeat(hub))
        await self._stop.wait()
        heartbeat.cancel()
        ws_server.close(close_connections=False)  # no new connections while the last captions go out
        await hub.shutdown(self._drain)
        await asyncio.gather(*(close_ws(ws, CLOSE_GOING_AWAY, "session ended")
                               for ws in list(ws_server.connections)))
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT + 1):
                await ws_server.wait_closed()
        except TimeoutError:
            pass

    async def _heartbeat(self, hub: Hub) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            try:
                hub.broadcast_status()
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
        """Run ``fn(*args)`` in the server's loop; never blocks; a stopped server ignores it."""
        loop = self.loop
        if loop is None:
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

    def attach(self, controls: Controls, *, source_languages: Iterable[str] = ()) -> None:
        """Connect the session: console commands, stats, and the languages it can be set to."""
        langs = list(source_languages)

        def apply() -> None:
            self.hub.controls, self.hub.source_languages = controls, langs
        self.call(apply)

    def publish_files(self, paths: dict[str, Path]) -> None:
        """The session's transcript files for the console's links: format → path, and
        'LANG.format' → path for a translation's files (``TranscriptWriter.all_paths``)."""
        self.transcripts = dict(paths)

    def attach_ingest(self, ingest: Ingest, queue_seconds: float = 10.0) -> None:
        """/ws/audio feeds ``ingest`` (a PushSource). A sender that connects before ``attach``
        is held back (not refused) until the session runs."""
        def apply() -> None:
            self.hub.ingest, self.hub.queue_seconds = ingest, queue_seconds
        self.call(apply)

    def update_stats(self, stats: SessionStats) -> None:
        self.call(self.hub.set_stats, stats)

    def clear(self) -> None:
        self.call(self.hub.clear)

    def finish_ingest(self, timeout: float = 5.0) -> None:
        """The session has finished the remote stream and flushed: answer the sender's ``end``."""
        loop = self.loop
        if loop is None or not self._thread.is_alive():
            return

        async def done() -> None:
            hub = self.hub
            hub.finish_ingest()
            sender = hub.sender
            if sender is not None and hub.ingest_ended:  # wait until the ok went out, so stop() does not cut it off
                try:
                    async with asyncio.timeout(timeout):
                        await sender.wait_closed()
                except TimeoutError:
                    pass
        try:
            asyncio.run_coroutine_threadsafe(done(), loop).result(timeout + 1)
        except Exception:
            pass

    # -- addresses --------------------------------------------------------------------------
    def base_urls(self) -> list[str]:
        """http://HOST:PORT for each address the room can use (LAN addresses for 0.0.0.0)."""
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):  # every interface: name the ones the room can reach
            hosts = _local_addresses() + [socket.gethostname()]
        else:
            hosts = [host]
        return [f"http://{_url_host(h)}:{self.port}" for h in hosts]

    def page_urls(self) -> dict[str, str]:
        base = self.base_urls()[0]
        return {"overlay": f"{base}/overlay.html", "console": f"{base}/console.html#token={self.token}",
                "audio": base.replace("http://", "ws://", 1)}

    # -- HTTP (runs in the loop) -----------------------------------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        hub = self.hub
        path = request.path.partition("?")[0]
        if path in (VIEW, CONTROL, AUDIO):
            if path != VIEW and not same_origin(request):
                return text_response(403, "cross-origin WebSocket refused: open the console from this server\n")
            return None  # go on with the WebSocket handshake
        if path.startswith("/ws/"):
            return text_response(404, f"no WebSocket endpoint {path[:80]}; use {VIEW}, {CONTROL} or {AUDIO}\n")
        if path == "/healthz":
            return http_response(200, dumps(hub.healthz()), "application/json")
        if path == "/metrics":
            return http_response(200, hub.metrics_text().encode(), "text/plain; version=0.0.4; charset=utf-8")
        if path == "/api/session":
            files = []
            for key, p in self.transcripts.items():
                lang, _, fmt = key.rpartition(".")
                entry = {"name": p.name, "format": fmt, "url": f"/transcripts/{p.name}"}
                if lang:
                    entry["lang"] = lang  # a translation's file
                files.append(entry)
            return http_response(200, dumps({"session": self.session_id, "files": files}), "application/json")
        if path.startswith("/transcripts/"):
            # only this session's transcript files, by exact name: what the screens show anyway
            wanted = path[len("/transcripts/"):]
            match = next((p for p in self.transcripts.values() if p.name == wanted), None)
            if match is None:
                return text_response(404, "no such transcript file in this session\n")
            try:
                return http_response(200, match.read_bytes(), TRANSCRIPT_TYPES.get(match.suffix, "text/plain; charset=utf-8"))
            except OSError:
                return text_response(404, "transcript file not readable\n")
        target = static_file(self.web_dir, "/index.html" if path == "/" else path)
        if target is None:
            if path == "/":
                body = INDEX_HTML.format(session=self.session_id, protocol=PROTOCOL_VERSION).encode()
                return http_response(200, body, "text/html; charset=utf-8")
            return text_response(404, "not found\n")
        try:
            body = target.read_bytes()
        except OSError:
            return text_response(404, "not found\n")
        ctype = CONTENT_TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or \
            "application/octet-stream"
        return http_response(200, body, ctype)


def _same_language(a: str, b: str) -> bool:
    return a.replace("_", "-").lower() == b.replace("_", "-").lower()


class ServerSink:
    """The engine's sink for the room: hands each caption to the server's loop and returns.

    A ``kind="translation"`` caption becomes one ``translation`` event per language (each
    screen gets only the languages it asked for); the spoken language itself is not sent
    again, since every screen has the caption's own text already."""

    accepts_translations = True

    def __init__(self, server: Server):
        self.server = server

    def on_caption(self, caption: Caption) -> None:
        hub = self.server.hub
        if hub is None:
            return
        if caption.is_translation:
            for lang, text in caption.translations.items():
                if not _same_language(lang, caption.lang):
                    self.server.call(hub.publish_translation, caption.id, lang, text)
            return
        data = caption.to_dict()
        data.pop("translation_errors", None)  # for transcripts and logs; screens show what came out
        self.server.call(hub.publish_caption, data, time.monotonic())

    def on_translation(self, caption_id: int, lang: str, text: str) -> None:
        """A translation that arrives after its caption was shown."""
        hub = self.server.hub
        if hub is not None:
            self.server.call(hub.publish_translation, caption_id, lang, text)


def _bind_error(host: str, port: int, e: OSError) -> str:
    import errno

    if e.errno == errno.EADDRINUSE:
        return (f"cannot serve the room on {host}:{port}: the port is in use (another subtitler?); "
                f"choose another with --port or [server] port (0 = any free port)")
    if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(e, socket.gaierror):
        return (f"cannot serve the room on {host}:{port}: {e.strerror or e}; --host must be an address "
                f"of this machine: 127.0.0.1 (this machine only) or 0.0.0.0 (every network)")
    if e.errno == errno.EACCES:
        return (f"cannot serve the room on {host}:{port}: permission denied (ports below 1024 need "
                f"privileges); choose a port above 1024 with --port")
    return f"cannot serve the room on {host}:{port}: {e}"


def _local_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback, as the room's screens would use them."""
    found: list[str] = []

    def add(addr: str) -> None:
        try:
            if not ipaddress.ip_address(addr).is_loopback and addr not in found:
                found.append(addr)
        except ValueError:
            pass

    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            add(info[4][0])
    except OSError:
        pass
    # The address of the interface with the default route: connecting a UDP socket only asks
    # the routing table; no packet is sent.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1, never routed anywhere real
        add(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    return found
