"""The room's seq'd event log and the wire format of its messages (docs/protocol.md).

Pure: no sockets, no asyncio. ``hub.Hub`` keeps one ``EventLog`` and turns clients' text
frames into messages with ``parse_message``; what a client may see of an ``Event`` is its
``wire`` form, serialised once per language selection.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

MAX_LANGS = 16
LANG_RE = re.compile(r"\*|source|[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,2}")


class ProtocolError(Exception):
    """A client's message is wrong: answered with one ``error`` event, never a crash."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def text_frame(data: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2), as a server sends it."""
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + data
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + data


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


def _int_field(obj: dict, key: str, default: int) -> int:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError("bad_message", f'"{key}" must be a whole number ≥ 0')
    return value


def normalize_langs(value: Any) -> frozenset[str] | None:
    """A hello's ``langs`` → the set of translation languages to send; None = all of them."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > MAX_LANGS or \
            not all(isinstance(v, str) and LANG_RE.fullmatch(v) for v in value):
        raise ProtocolError("bad_langs", f'"langs" must be a list of 1 to {MAX_LANGS} language codes '
                                         f'(e.g. ["zh", "en"]), "source" or "*"')
    if "*" in value:
        return None
    return frozenset(value)


# -- the event log -----------------------------------------------------------------------------

class Event:
    """One numbered event; its wire form is cached per language selection."""

    __slots__ = ("seq", "type", "id", "kind", "lang", "payload", "_wire")

    def __init__(self, seq: int, payload: dict):
        self.seq, self.payload = seq, payload
        self.type = payload["type"]
        self.id = payload.get("id")
        self.kind = payload.get("kind")
        self.lang = payload.get("lang")
        self._wire: dict = {}

    def visible_to(self, langs: frozenset[str] | None) -> bool:
        return self.type != "translation" or langs is None or self.lang in langs

    def wire(self, langs: frozenset[str] | None, history: bool = False) -> bytes:
        translations = self.payload.get("translations")
        key = (langs if translations else None, history)  # most events look the same to everyone
        data = self._wire.get(key)
        if data is None:
            payload = self.payload
            if translations and langs is not None:
                payload = dict(payload, translations={k: v for k, v in translations.items() if k in langs})
            if history:
                payload = dict(payload, history=True)
            data = self._wire[key] = dumps(payload)
        return data


class EventLog:
    """What a screen needs to catch up: the last ``history`` finals, the translations and clear
    that came with or after them, and the latest partial of the utterance in progress.

    ``floor``: events up to this ``seq`` that still matter may be gone; a client resuming from
    below it must reset its screen. A superseded partial is simply dropped (the newer one
    replaces it on screen), so it never moves the floor.
    """

    def __init__(self, history: int, languages: int = 0):
        self.history = history
        self.seq = 0
        self.floor = 0
        self._events: OrderedDict[int, Event] = OrderedDict()
        self._partial: dict[int, int] = {}  # utterance id → seq of its retained partial
        self._finals = 0  # non-empty finals retained
        # Bounds retractions/translations between finals too; room for one translation per
        # target language per final, so the last ``history`` finals keep theirs.
        self._limit = (4 + languages) * history + 64

    def _append(self, kind: str, body: dict) -> Event:
        self.seq += 1
        ev = Event(self.seq, {"type": kind, "seq": self.seq, **body})
        self._events[self.seq] = ev
        return ev

    def caption(self, data: dict) -> tuple[Event, int | None]:
        """Log a caption; returns it and the seq of the partial it supersedes (if any)."""
        old = self._partial.pop(data["id"], None)
        if old is not None:
            self._events.pop(old, None)
        ev = self._append("caption", data)
        if ev.kind == "partial":
            self._partial[ev.id] = ev.seq
        elif data.get("text"):
            self._finals += 1
        self._evict()
        return ev, old

    def translation(self, caption_id: int, lang: str, text: str) -> Event:
        ev = self._append("translation", {"id": caption_id, "lang": lang, "text": text})
        self._evict()
        return ev

    def clear(self) -> Event:
        # Nothing before a clear matters any more: while the clear itself is retained, any
        # client can resume (it replays the clear); its eviction moves the floor as usual.
        self.floor = 0
        self._events.clear()
        self._partial.clear()
        self._finals = 0
        return self._append("clear", {})

    def _evict(self) -> None:
        while self._events and (self._finals > self.history or len(self._events) > self._limit):
            seq, ev = self._events.popitem(last=False)
            self.floor = seq
            if ev.type == "caption":
                if ev.kind == "partial":
                    self._partial.pop(ev.id, None)
                elif ev.payload.get("text"):
                    self._finals -= 1

    def after(self, since: int) -> list[Event]:
        return [ev for seq, ev in self._events.items() if seq > since]

    def __len__(self) -> int:
        return len(self._events)
