"""The room's seq'd event log and what a screen may see of it (docs/protocol.md).

Pure: no sockets, no asyncio. ``channel.Channel`` keeps one ``EventLog`` per room; what a
client may see of an ``Event`` is its ``wire`` form, serialised once per language selection.
Language selections are compared in ``langcodes.canonical`` form: a screen that asked for
``zh_Hant`` gets the ``zh-Hant`` translation.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .langcodes import canonical, is_language_code
from .protocol import ProtocolError, dumps

MAX_LANGS = 16
SELECTORS = ("*", "source")  # besides language codes: every language; whatever was spoken


def normalize_langs(value: Any) -> frozenset[str] | None:
    """A hello's ``langs`` → the canonical codes of the translations to send; None = all of them."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > MAX_LANGS or \
            not all(v in SELECTORS or is_language_code(v) for v in value):
        raise ProtocolError("bad_langs", f'"langs" must be a list of 1 to {MAX_LANGS} language codes '
                                         f'(e.g. ["zh", "en"]), "source" or "*"')
    if "*" in value:
        return None
    return frozenset(canonical(v) for v in value)


# -- the event log -----------------------------------------------------------------------------

class Event:
    """One numbered event; its wire form is cached per language selection."""

    __slots__ = ("seq", "type", "id", "kind", "lang", "payload", "_wire")  # lang: canonical

    def __init__(self, seq: int, payload: dict):
        self.seq, self.payload = seq, payload
        self.type = payload["type"]
        self.id = payload.get("id")
        self.kind = payload.get("kind")
        lang = payload.get("lang")
        self.lang = canonical(lang) if isinstance(lang, str) else None
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
                payload = dict(payload, translations={k: v for k, v in translations.items()
                                                      if canonical(k) in langs})
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
