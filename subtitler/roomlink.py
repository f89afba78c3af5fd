"""One room as the server serves it: its channel, ingest, session controls, token and files.

``RoomLink`` is what the engine side (``venue``/``room``) holds of the server: every method
returns at once (except ``finish_ingest``) and is safe from any thread; the work is handed
to the server's asyncio loop, where the room's state lives without locks. ``RoomSink`` is
the room's engine sink.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Coroutine, Iterable, Protocol

from websockets.asyncio.server import ServerConnection

from .captions import Caption, SessionStats
from .channel import Channel
from .ingest import AudioIngest, Ingest
from .langcodes import same_language
from .metrics import RoomMetrics, RoomSample
from .protocol import room_path

if TYPE_CHECKING:
    from .config import ServerConfig

HEARD_WITHIN = 5.0  # a room whose audio advanced this recently is "live"
LAGGING_AFTER = 3.0  # seconds of undecoded audio beyond which a room is "lagging"


class Controls(Protocol):
    """What the console steers; the engine's room (or session) is one."""

    @property
    def paused(self) -> bool: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def set_language(self, language: str | None) -> None: ...
    def stats(self) -> SessionStats: ...


def new_session_id() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S") + "-" + secrets.token_hex(2)


class RoomLink:
    """A room of the server (see the module doc). ``call(fn, *args)`` runs ``fn`` in the server's
    loop and returns at once; ``run(coro, timeout)`` runs a coroutine there and waits for it."""

    def __init__(self, name: str, config: "ServerConfig", call: Callable[..., None],
                 run: Callable[[Coroutine, float], None], *, title: str = "", token: str | None = None,
                 languages: Iterable[str] = (), live: bool = True, default: bool = False):
        self.name, self.title = name, title or name
        self.token = token or secrets.token_urlsafe(16)
        self.live, self.default = live, default
        self.targets = list(dict.fromkeys(languages))  # the room's translation languages
        self.session_id = new_session_id()
        self.metrics = RoomMetrics()
        self.channel = Channel(self.metrics, history=config.history, client_queue=config.client_queue,
                               client_timeout_s=config.client_timeout_s, languages=self.targets)
        self.controls: Controls | None = None
        self.source_languages: list[str] = []
        self.stats: SessionStats | None = None
        self.ingest = AudioIngest(self.metrics, lambda: self.controls, lambda: self.stats,
                                  lambda: self.session_id)
        # 'srt' → file, 'es.srt' → a translation's file: served under transcripts/
        self.transcripts: dict[str, Path] = {}
        self.connections: set[ServerConnection] = set()  # every socket of this room, for closing it
        self.closed = False
        self.heard_at: float | None = None  # when the session's audio last advanced
        self.transcript_health: dict | None = None  # ``WriterHealth.to_dict()`` of the session's writer
        self._call, self._run = call, run
        self.sink = RoomSink(self)

    # -- called from any thread ---------------------------------------------------------------
    def attach(self, controls: Controls, *, source_languages: Iterable[str] = ()) -> None:
        """Connect the session: console commands, stats, and the languages it can be set to."""
        langs = list(source_languages)

        def apply() -> None:
            self.controls, self.source_languages = controls, langs
        self._call(apply)

    def attach_ingest(self, ingest: Ingest, queue_seconds: float = 10.0) -> None:
        """/ws/audio feeds ``ingest`` (a PushSource), from a new session's start. A sender that
        connects before ``attach`` is held back (not refused) until the session runs."""
        self._call(self.ingest.attach, ingest, queue_seconds)

    def update_stats(self, stats: SessionStats) -> None:
        self._call(self._set_stats, stats, time.monotonic())

    def publish_files(self, paths: dict[str, Path]) -> None:
        """The session's transcript files for the console's links: format → path, and
        'LANG.format' → path for a translation's files (``TranscriptWriter.all_paths``)."""
        self.transcripts = dict(paths)

    def set_transcript_health(self, health: dict) -> None:
        """The transcript writer's health (it calls at each change): status, /healthz, /metrics."""
        self.transcript_health = health  # one attribute, replaced whole: read by the loop as it is

    def clear(self) -> None:
        self._call(self.channel.clear)

    def on_audio_gap(self, listener) -> None:
        """``listener(at, seconds, reason)`` hears of every gap a sender reports (audio it lost:
        ``at`` is the session's audio second where it lies), in the server's loop: the room
        marks it in its transcript. It must return at once."""
        def apply() -> None:
            self.ingest.on_gap = listener
        self._call(apply)

    def finish_ingest(self, timeout: float = 5.0) -> None:
        """Blocking: the session finished the remote stream and flushed; answer the sender's
        ``end`` and wait (≤ ``timeout``) until that answer went out."""
        async def answer() -> None:
            self.ingest.finish()
            sender = self.ingest.sender
            if sender is not None and self.ingest.ended:  # so that stop() does not cut the ok off
                try:
                    async with asyncio.timeout(timeout):
                        await sender.wait_closed()
                except TimeoutError:
                    pass
        self._run(answer(), timeout + 1)

    # -- in the loop ----------------------------------------------------------------------------
    def _set_stats(self, stats: SessionStats, now: float) -> None:
        if self.stats is None or stats.audio_seconds > self.stats.audio_seconds:
            self.heard_at = now
        self.stats = stats

    def publish_caption(self, data: dict, arrived: float) -> None:
        ev = self.channel.publish_caption(data)
        if ev.kind == "final" and data.get("text") and self.live:
            self._record_latency(data, arrived)

    def _record_latency(self, data: dict, arrived: float) -> None:
        if self.ingest.remote:  # remote audio: from when the utterance's last sample reached us
            t = self.ingest.fed_at(data["end"])
            if t is None:
                return
            latency = arrived - t
        else:  # local capture: both clocks started with the session
            latency = data["emitted"] - data["end"]
        self.metrics.record_latency(latency)

    @property
    def paused(self) -> bool:
        if self.controls is not None:
            return bool(self.controls.paused)
        return bool(self.stats and self.stats.paused)

    @property
    def source_language(self) -> str:
        return self.stats.language if self.stats else "auto"

    def status(self) -> dict:
        """The ``status`` message every screen and console of the room gets each second."""
        st, p50 = self.stats, self.metrics.latency_p50()
        return {
            "type": "status",
            "paused": self.paused,
            "lag": round(st.lag, 2) if st else 0.0,
            "level_db": round(st.level_db, 1) if st and st.level_db > -200 else None,
            "in_speech": bool(st and st.in_speech),
            "language": self.source_language,
            "viewers": len(self.channel.viewers),
            # 20 ms blocks lost: the capture queue overflowed here, or a sender reported a gap
            "dropped_audio": (st.dropped_frames if st else 0) + round(self.ingest.gap_seconds * 50),
            "audio_gaps": self.ingest.gaps,
            "audio_gap_seconds": round(self.ingest.gap_seconds, 2),
            "skipped_utterances": st.skipped_utterances if st else 0,
            "skipped_seconds": round(st.skipped_seconds, 1) if st else 0.0,
            "audio_idle_s": round(st.audio_idle_s, 1) if st and st.audio_idle_s is not None else None,
            "transcripts": self.transcript_health,
            "final_latency_p50": round(p50, 2) if p50 is not None else None,
            "audio_seconds": round(st.audio_seconds, 1) if st else 0.0,
            "sender": (self.ingest.sender is not None) if self.ingest.source is not None else None,
        }

    def broadcast_status(self, heartbeat: bool = False) -> None:
        """The status to every screen (a change), or as the heartbeat: to those that need it."""
        if heartbeat:
            self.channel.heartbeat(self.status(), ("viewer", "console"))
        else:
            self.channel.broadcast(self.status(), ("viewer", "console"))

    def state(self, now: float) -> str:
        if self.paused:
            return "paused"
        if self.stats is not None and self.stats.lag > LAGGING_AFTER:
            return "lagging"
        if self.heard_at is not None and now - self.heard_at <= HEARD_WITHIN:
            return "live"
        return "idle"

    def summary(self, now: float) -> dict:
        """The room as /api/venue and the venue console list it."""
        source = self.source_language
        spoken = [] if source == "auto" else [source]
        return {"name": self.name, "title": self.title, "state": self.state(now),
                "languages": spoken + [t for t in self.targets if not (spoken and same_language(t, source))],
                "source_language": source, "targets": list(self.targets),
                "viewers": len(self.channel.viewers),
                "lag": round(self.stats.lag, 2) if self.stats else 0.0,
                "urls": {page: room_path(self.name, f"/{page}.html") for page in ("overlay", "console", "live")}
                | {"qr": room_path(self.name, "/qr.svg")}}

    def sample(self) -> RoomSample:
        return RoomSample(self.name, self.metrics, self.stats, len(self.channel.viewers),
                          len(self.channel.consoles), self.paused, self.transcript_health)

    def problems(self) -> list[str]:
        """What /healthz reports as wrong with this room (empty: nothing)."""
        t = self.transcript_health
        if t is None or (t["ok"] and not t["lost"]):
            return []
        if not t["ok"]:
            return [f"room {self.name}: {t['error']} ({t['pending']} caption(s) waiting, retrying)"]
        return [f"room {self.name}: {t['lost']} caption(s) could not be written to the transcripts"]

    async def drain(self, seconds: float) -> None:
        await self.channel.drain(seconds)


class RoomSink:
    """The engine's sink for the room: hands each caption to the server's loop and returns.

    A ``kind="translation"`` caption becomes one ``translation`` event per language (each
    screen gets only the languages it asked for); the spoken language itself is not sent
    again, since every screen has the caption's own text already."""

    accepts_translations = True

    def __init__(self, link: RoomLink):
        self.link = link

    def on_caption(self, caption: Caption) -> None:
        link = self.link
        if link.closed:
            return
        if caption.is_translation:
            for lang, text in caption.translations.items():
                if not same_language(lang, caption.lang):
                    link._call(link.channel.publish_translation, caption.id, lang, text)
            return
        data = caption.to_dict()
        data.pop("translation_errors", None)  # for transcripts and logs; screens show what came out
        link._call(link.publish_caption, data, time.monotonic())

    def on_translation(self, caption_id: int, lang: str, text: str) -> None:
        """A translation that arrives after its caption was shown."""
        if not self.link.closed:
            self.link._call(self.link.channel.publish_translation, caption_id, lang, text)
