"""The wire protocol's names, shared by the server, its clients (``subtitler send``) and the
config: endpoint paths, room names, message helpers, error and close codes.
docs/protocol.md is its description. Pure: imports nothing of ours.
"""

from __future__ import annotations

import json
import re

PROTOCOL_VERSION = 1

# -- rooms and paths ----------------------------------------------------------------------------

# A room's name is part of its URLs (/rooms/NAME/…) and of its transcript folder.
ROOM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
ROOMS = "/rooms/"  # /rooms/NAME/ws/view …; the default room also answers on the bare paths

# A room's WebSocket endpoints (under /rooms/NAME, or bare for the default room)
VIEW, CONTROL, AUDIO = "/ws/view", "/ws/control", "/ws/audio"
ROOM_ENDPOINTS = (VIEW, CONTROL, AUDIO)
VENUE = "/ws/venue"  # the venue operator's socket (venue token)


def check_room_name(name: object) -> str:
    """``name`` if it can name a room, else ValueError saying what a room name may be."""
    if not isinstance(name, str) or not ROOM_NAME.fullmatch(name):
        raise ValueError(f"room name {str(name)[:40]!r} is not allowed: use 1 to 32 lower-case letters, "
                         f"digits, '-' or '_', starting with a letter or digit (e.g. 'hall', 'forum-2')")
    return name


def room_path(name: str, path: str = "/") -> str:
    """``room_path("hall", "/ws/view")`` → ``/rooms/hall/ws/view``."""
    return f"{ROOMS}{name}{path}"


def split_room_path(path: str) -> tuple[str | None, str]:
    """``/rooms/hall/ws/view`` → ``("hall", "/ws/view")``; ``/rooms/hall`` → ``("hall", "")``;
    a path outside /rooms/ → ``(None, path)``. The name is not checked here."""
    if not path.startswith(ROOMS):
        return None, path
    name, slash, rest = path[len(ROOMS):].partition("/")
    return name, slash + rest


# -- audio ingest -------------------------------------------------------------------------------

AUDIO_SAMPLE_RATE, AUDIO_CHANNELS, AUDIO_FORMAT = 16000, 1, "s16le"


def audio_auth(token: str, realtime: bool, resume: bool = False) -> dict:
    """The first message a sender puts on /ws/audio; ``resume``: it is coming back after a drop
    (and resends from the ``received`` of the server's ``ok``)."""
    auth = {"type": "auth", "token": token, "sample_rate": AUDIO_SAMPLE_RATE, "channels": AUDIO_CHANNELS,
            "format": AUDIO_FORMAT, "realtime": bool(realtime)}
    if resume:
        auth["resume"] = True
    return auth


def audio_format_problem(auth: dict) -> str | None:
    """What is wrong with an /ws/audio auth's format fields (absent = the default), or None."""
    fmt = (auth.get("sample_rate", AUDIO_SAMPLE_RATE), auth.get("channels", AUDIO_CHANNELS),
           auth.get("format", AUDIO_FORMAT))
    if fmt != (AUDIO_SAMPLE_RATE, AUDIO_CHANNELS, AUDIO_FORMAT) or not isinstance(auth.get("realtime", True), bool):
        return (f"audio must be {AUDIO_SAMPLE_RATE} Hz, {AUDIO_CHANNELS} channel, {AUDIO_FORMAT} "
                f"(\"realtime\": true or false); got {fmt!r}")[:300]
    return None


# -- error codes a client acts on ---------------------------------------------------------------

UNAUTHORIZED = "unauthorized"
BAD_FORMAT = "bad_format"
NO_REMOTE_INPUT = "no_remote_input"
ENDED = "ended"
BUSY = "busy"
TOO_MANY_ATTEMPTS = "too_many_attempts"  # wrong tokens from this address: wait, then try again

# -- close codes (RFC 6455 §7.4.1) ----------------------------------------------------------------

CLOSE_NORMAL = 1000  # /ws/audio after the end of the stream
CLOSE_GOING_AWAY = 1001  # the session ended, or the room was closed
CLOSE_UNSUPPORTED = 1003  # audio in another format
CLOSE_POLICY = 1008  # unauthorized, bad first message, too many bad messages
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013  # too slow, or /ws/audio busy

# -- timing ---------------------------------------------------------------------------------------

FIRST_MESSAGE_TIMEOUT = 10.0  # hello / auth must come this soon after connecting
MAX_ERRORS = 20  # bad messages one connection may send before it is closed
STATUS_INTERVAL = 1.0  # the heartbeat: a screen that hears nothing for 5 s reconnects

# -- messages -------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """A client's message is wrong: answered with one ``error`` event, never a crash."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def wire(self) -> dict:
        return error_message(self.code, self.message)


def error_message(code: str, message: str) -> dict:
    return {"type": "error", "code": code, "message": message}


def dumps(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def parse_message(message: str | bytes) -> dict:
    """A client's text frame → a JSON object with a string ``type``, or ProtocolError."""
    if not isinstance(message, str):
        raise ProtocolError("bad_message", "binary frames are only accepted on /ws/audio after auth; "
                                           "send JSON text messages")
    try:
        obj = json.loads(message)
    except (ValueError, RecursionError) as e:  # RecursionError: "[[[[…" nested past the C stack
        raise ProtocolError("bad_json", f"not valid JSON: {str(e)[:100]}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError("bad_message", 'expected a JSON object with a string "type"')
    return obj


def int_field(obj: dict, key: str, default: int) -> int:
    """A whole number ≥ 0 from a message (absent or null = ``default``), or ProtocolError."""
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError("bad_message", f'"{key}" must be a whole number ≥ 0')
    return value


def guard_abort(connection) -> None:
    """Make ``connection.transport.abort()`` a no-op once the connection is gone.

    CPython's selector transport (3.11, 3.12) forgets its loop when a ``close()`` that had to
    flush its buffer completes, without marking itself lost: a later ``abort()`` (which
    websockets calls when a close times out) then raises ``AttributeError: 'NoneType' object has
    no attribute 'call_soon'``, which took `subtitler send` down mid-stream. Call it from the
    connection's ``connection_made``.
    """
    transport = connection.transport
    abort = transport.abort

    def abort_unless_lost() -> None:
        if not connection.connection_lost_waiter.done():
            abort()
    transport.abort = abort_unless_lost


def text_frame(data: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2), as a server sends it."""
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + data
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + data
