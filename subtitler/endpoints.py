"""The WebSocket endpoints and who may open them (docs/protocol.md).

A room has three: ``/ws/view`` (screens, read-only, no token), ``/ws/control`` (its console)
and ``/ws/audio`` (its sender); the last two take the room's token or the venue token. The
venue has ``/ws/venue`` (the operator: open and close rooms), which only the venue token
opens. Each handler reads the first message (``hello``/``auth``), registers the connection
and serves it until it goes; a bad client costs its own connection, never the server.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import NoReturn, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .admission import AuthThrottle
from .channel import Fanout, close_ws
from .eventlog import normalize_langs
from .ingest import SenderGone
from .metrics import RoomMetrics
from .protocol import (AUDIO, CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TRY_LATER, CLOSE_UNSUPPORTED, CONTROL,
                       FIRST_MESSAGE_TIMEOUT, PROTOCOL_VERSION, TOO_MANY_ATTEMPTS, UNAUTHORIZED, VIEW, ProtocolError, audio_format_problem,
                       check_room_name, dumps, error_message, int_field, parse_message)
from .roomlink import RoomLink

log = logging.getLogger("subtitler.server")


class Refused(Exception):
    """A connection was answered with an error and closed; its handler ends quietly."""


class VenueControls(Protocol):
    """What /ws/venue's commands do (the host's venue); blocking, so run in a worker thread."""

    def open_room(self, name: str, options: dict) -> dict: ...
    def close_room(self, name: str) -> None: ...
    def capacity(self) -> dict: ...


class Venue(Protocol):
    """What /ws/venue needs of the server."""

    token: str
    venue_controls: VenueControls | None
    operators: Fanout
    throttle: AuthThrottle

    def venue_status(self) -> dict: ...
    def room_summary(self, name: str) -> dict | None: ...
    def venue_changed(self) -> None: ...


def token_matches(given: object, *tokens: str) -> bool:
    """Whether ``given`` is one of ``tokens``, in constant time (every token is compared)."""
    if not isinstance(given, str):
        return False
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given.encode(), token.encode())
    return matched


async def check_token(ws: ServerConnection, metrics: RoomMetrics, throttle: AuthThrottle, given: object,
                      tokens: tuple[str, ...], what: str, wrong: str) -> None:
    """Let the connection on if ``given`` is one of ``tokens``; else refuse it. Wrong tokens are
    logged and slow their address down (``AuthThrottle``): while it must wait, every attempt
    from it is refused at once, right or wrong, so guessing gets nowhere."""
    address = peer_address(ws)
    now = time.monotonic()
    wait = throttle.wait(address, now)
    if wait > 0:
        await refuse(ws, metrics, TOO_MANY_ATTEMPTS, f"too many wrong tokens from {address}: try again in "
                                                     f"{wait:.1f} s", CLOSE_TRY_LATER)
    if token_matches(given, *tokens):
        throttle.succeeded(address)
        proven = getattr(ws, "authenticated", None)  # the server's connection: its place is its own
        if callable(proven):
            proven()
        return
    n, delay = throttle.failed(address, now)
    log.warning("wrong token for %s from %s (%d in a row; its next attempt waits %.1f s)", what, address, n, delay)
    await refuse(ws, metrics, UNAUTHORIZED, wrong, CLOSE_POLICY)


def peer_address(ws: ServerConnection) -> str:
    peer = ws.remote_address
    return str(peer[0]) if peer else "?"


async def refuse(ws: ServerConnection, metrics: RoomMetrics, code: str, message: str,
                 close_code: int) -> NoReturn:
    """One error event, then the close; ends the handler (raises Refused)."""
    metrics.protocol_errors += 1
    try:
        async with asyncio.timeout(2.0):
            await ws.send(dumps(error_message(code, message)), text=True)
    except (TimeoutError, ConnectionClosed):
        pass
    await close_ws(ws, close_code, code)
    raise Refused


async def first_message(ws: ServerConnection, expected: str, metrics: RoomMetrics) -> dict:
    """The first message of a connection; anything else is refused (error + close 1008)."""
    try:
        async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT):
            message = await ws.recv()
    except TimeoutError:
        await refuse(ws, metrics, f"{expected}_required", f"no {expected} message within "
                                                           f"{FIRST_MESSAGE_TIMEOUT:g} s", CLOSE_POLICY)
    try:
        obj = parse_message(message)
    except ProtocolError as e:
        await refuse(ws, metrics, e.code, e.message, CLOSE_POLICY)
    if obj["type"] != expected:
        await refuse(ws, metrics, f"{expected}_required",
                     f'the first message must be {{"type": "{expected}", …}}', CLOSE_POLICY)
    return obj


async def guarded(ws: ServerConnection, handler, *args) -> None:
    """Run an endpoint's handler: a peer that goes or is refused ends it quietly; a bug costs
    this one connection (1011, logged), never the server."""
    try:
        await handler(*args)
    except (ConnectionClosed, Refused, SenderGone):
        pass
    except Exception:
        log.exception("handler for %s failed", ws.request.path[:100])
        await close_ws(ws, CLOSE_INTERNAL, "internal error")


async def serve_room(link: RoomLink, endpoint: str, ws: ServerConnection, venue_token: str,
                     throttle: AuthThrottle) -> None:
    if endpoint == VIEW:
        await guarded(ws, serve_viewer, link, ws)
    elif endpoint == CONTROL:
        await guarded(ws, serve_control, link, ws, venue_token, throttle)
    elif endpoint == AUDIO:
        await guarded(ws, serve_audio, link, ws, venue_token, throttle)


# -- a room's screens, console and sender ------------------------------------------------------

async def serve_viewer(link: RoomLink, ws: ServerConnection) -> None:
    hello = await first_message(ws, "hello", link.metrics)
    try:
        langs = normalize_langs(hello.get("langs"))
        since = int_field(hello, "since", 0)
        session = hello.get("session")
        if session is not None and not isinstance(session, str):
            raise ProtocolError("bad_message", '"session" must be a string')
    except ProtocolError as e:
        await refuse(ws, link.metrics, e.code, e.message, CLOSE_POLICY)
    # Welcome, replay and registration happen in one step of the loop: nothing published
    # in between can be missed or sent twice.
    channel = link.channel
    reset, replay = channel.replay(since, session, link.session_id)
    welcome = {"type": "welcome", "protocol": PROTOCOL_VERSION, "session": link.session_id,
               "room": link.name, "title": link.title, "languages": channel.languages,
               "source_language": link.source_language, "seq": channel.log.seq, "reset": reset,
               "paused": link.paused}
    first = [dumps(welcome)] + [ev.wire(langs, history=True) for ev in replay if ev.visible_to(langs)]
    c, pump = channel.join(ws, "viewer", first, langs)
    try:
        async for message in ws:
            try:
                obj = parse_message(message)
                if obj["type"] == "hello":
                    raise ProtocolError("already_joined", "hello is only accepted once; reconnect "
                                                          "to change languages")
                raise ProtocolError("viewer_read_only", "viewers cannot send commands; use /ws/control")
            except ProtocolError as e:
                channel.error(c, e)
    finally:
        channel.leave(c, pump)


async def _authorize(link: RoomLink, ws: ServerConnection, venue_token: str, throttle: AuthThrottle) -> dict:
    auth = await first_message(ws, "auth", link.metrics)
    await check_token(ws, link.metrics, throttle, auth.get("token"), (link.token, venue_token),
                      f"room '{link.name}' ({ws.request.path.partition('?')[0][:60]})",
                      f"wrong or missing token for room '{link.name}' (use the room's token, printed by "
                      f"`subtitler run` or `subtitler serve`, or [server] token; the venue token opens "
                      f"every room)")
    return auth


async def serve_control(link: RoomLink, ws: ServerConnection, venue_token: str, throttle: AuthThrottle) -> None:
    await _authorize(link, ws, venue_token, throttle)
    channel = link.channel
    ok = {"type": "ok", "command": "auth", "session": link.session_id, "protocol": PROTOCOL_VERSION,
          "source_languages": link.source_languages}
    c, pump = channel.join(ws, "console", [dumps(ok), dumps(link.status())])
    try:
        async for message in ws:
            try:
                reply = await _command(link, parse_message(message))
                channel.reply(c, reply)
                link.broadcast_status()  # every screen sees the new state at once
            except ProtocolError as e:
                channel.error(c, e)
    finally:
        channel.leave(c, pump)


async def _command(link: RoomLink, obj: dict) -> dict:
    kind = obj["type"]
    if kind == "auth":
        return {"type": "ok", "command": "auth"}
    if kind == "clear":
        link.channel.clear()
        return {"type": "ok", "command": "clear"}
    if kind not in ("pause", "resume", "set_language"):
        raise ProtocolError("unknown_command", f"unknown command '{kind[:40]}'; allowed: pause, resume, "
                                               f"clear, set_language")
    controls = link.controls
    if controls is None:
        raise ProtocolError("not_ready", "the session is still starting (loading the model); "
                                         "try again in a moment")
    if kind == "set_language":
        lang = obj.get("language")
        if not isinstance(lang, str) or not lang:
            raise ProtocolError("bad_message", '"language" must be a language code or "auto"')
        try:  # the engine takes its lock: never in the loop thread
            await asyncio.to_thread(controls.set_language, None if lang == "auto" else lang)
        except ValueError as e:
            raise ProtocolError("bad_language", str(e)) from None
        return {"type": "ok", "command": "set_language", "language": lang}
    await asyncio.to_thread(controls.pause if kind == "pause" else controls.resume)
    return {"type": "ok", "command": kind}


async def serve_audio(link: RoomLink, ws: ServerConnection, venue_token: str, throttle: AuthThrottle) -> None:
    auth = await _authorize(link, ws, venue_token, throttle)
    problem = audio_format_problem(auth)
    if problem is not None:
        await refuse(ws, link.metrics, "bad_format", problem, CLOSE_UNSUPPORTED)
    refusal = link.ingest.refusal()
    if refusal is not None:
        await refuse(ws, link.metrics, *refusal)
    await link.ingest.stream(ws, auth.get("realtime", True), resume=auth.get("resume") is True)


# -- the venue operator ---------------------------------------------------------------------------

ROOM_OPTIONS = ("title", "language", "targets", "token")  # what open_room passes on to the venue


async def serve_venue(venue: Venue, ws: ServerConnection) -> None:
    metrics = venue.operators.metrics
    auth = await first_message(ws, "auth", metrics)
    await check_token(ws, metrics, venue.throttle, auth.get("token"), (venue.token,), "the venue (/ws/venue)",
                      "wrong or missing venue token: /ws/venue takes the venue's operator token (printed by "
                      "`subtitler serve`, or [server] token); a room's token opens only that room's console")
    operators = venue.operators
    ok = {"type": "ok", "command": "auth", "protocol": PROTOCOL_VERSION,
          "can_open_rooms": venue.venue_controls is not None}
    c, pump = operators.join(ws, "operator", [dumps(ok), dumps({"type": "venue", **venue.venue_status()})])
    try:
        async for message in ws:
            try:
                reply = await _venue_command(venue, parse_message(message))
                operators.reply(c, reply)
            except ProtocolError as e:
                operators.error(c, e)
    finally:
        operators.leave(c, pump)


async def _venue_command(venue: Venue, obj: dict) -> dict:
    kind = obj["type"]
    if kind == "auth":
        return {"type": "ok", "command": "auth"}
    if kind not in ("open_room", "close_room"):
        raise ProtocolError("unknown_command", f"unknown command '{kind[:40]}'; allowed: open_room, close_room")
    try:
        name = check_room_name(obj.get("name"))
    except ValueError as e:
        raise ProtocolError("bad_room_name", str(e)) from None
    controls = venue.venue_controls
    if controls is None:
        raise ProtocolError("not_supported", "this server does not open or close rooms at run time "
                                             "(`subtitler run` serves one room); use `subtitler serve`")
    try:  # the host loads, starts and stops rooms: never in the loop thread
        if kind == "open_room":
            options = {k: obj[k] for k in ROOM_OPTIONS if k in obj}
            opened = await asyncio.to_thread(controls.open_room, name, options)
        else:
            await asyncio.to_thread(controls.close_room, name)
    except ValueError as e:  # a bad setting, a taken or unknown name, over capacity: the host says which
        raise ProtocolError("refused", str(e)) from None
    except Exception as e:
        log.exception("%s %s failed", kind, name)
        raise ProtocolError("failed", f"{kind} '{name}' failed: {str(e)[:200]}") from None
    finally:
        venue.venue_changed()
    if kind == "close_room":
        return {"type": "ok", "command": kind, "room": {"name": name}}
    room = venue.room_summary(name) or {"name": name, "title": opened.get("title", name)}
    return {"type": "ok", "command": kind, "room": {**room, "token": opened.get("token")}}
