"""A venue: one host's rooms on one server — what ``subtitler serve`` (and ``run``, a venue of
one room) runs.

``Venue`` is the edge that joins the parts: the ``Host`` (models, decode thread), the
``server.Server`` (one port; a ``RoomLink`` per room), and for each room a ``RoomRunner``
that opens its source, its transcript folder and its ``Room``, session after session. It is
also the ``VenueControls`` of the server's ``/ws/venue``: the operator opens and closes rooms
at run time through it.

A remote room (audio from ``subtitler send``) outlives its senders: when a sender ends its
stream, the last utterance is finished and flushed, the sender is answered, and the room
starts a new session (a new transcript folder) for the next sender. A file room (a
rehearsal) plays its file once; a microphone room runs until it is closed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Iterable

from .audio import AudioSource, PushSource, open_source
from .captions import SessionStats
from .config import Config, ConfigError
from .host import CapacityError, Host
from .langcodes import is_language_code
from .protocol import check_room_name
from .room import Room, SessionResult, Sink
from .transcripts import TranscriptWriter, session_folder

log = logging.getLogger("subtitler")

ROOM_OPTIONS = ("title", "language", "targets", "token")  # what /ws/venue's open_room may set


class SessionTranscripts:
    """A session's transcript files. ``open()`` makes the folder and files now (an error raises
    here); otherwise the writer thread makes them at the first caption, so a room waiting for
    its next sender leaves no empty folder behind, and a disk that is full then is retried.
    ``on_open(paths)`` says where they went; ``on_health(dict)`` how writing goes (the totals
    of the room's earlier sessions included, ``base``)."""

    accepts_translations = True

    def __init__(self, out_dir: Path, config: Config, on_open: Callable[[dict], None],
                 on_health: Callable[[dict], None] | None = None, base: dict | None = None):
        self.out_dir, self.config, self.on_open = out_dir, config, on_open
        self._on_health, self.base = on_health, dict(base or {})
        self.writer: TranscriptWriter | None = None

    def _make(self, folder) -> TranscriptWriter:
        o = self.config.output
        return TranscriptWriter(folder, o.formats, o.cue_style(), o.max_lines,
                                languages=self.config.translate.targets, on_open=self.on_open,
                                on_health=self._health)

    def open(self) -> TranscriptWriter:
        if self.writer is None:
            self.writer = self._make(session_folder(self.out_dir))
        return self.writer

    def on_caption(self, caption) -> None:
        self._writer().on_caption(caption)

    def on_gap(self, at: float, seconds: float, reason: str) -> None:
        """Audio the sender lost, marked in the transcript (from the server's loop: only queued)."""
        self._writer().on_gap(at, seconds, reason)

    def on_skipped(self, start: float, end: float, seconds: float) -> None:
        """Speech skipped to keep up with live audio, marked in the transcript (from the room's
        delivery thread: only queued)."""
        self._writer().on_skipped(start, end, seconds)

    def _writer(self) -> TranscriptWriter:
        if self.writer is None:
            self.writer = self._make(lambda: session_folder(self.out_dir))
            self._health(self.writer.health())
        return self.writer

    def _health(self, health) -> None:
        if self._on_health is not None:
            self._on_health(self.totals(health))

    def totals(self, health=None) -> dict:
        """The writer's health with the counts of the room's earlier sessions added."""
        h = (health or (self.writer.health() if self.writer is not None else None))
        d = h.to_dict() if h is not None else {"ok": True, "error": None, "pending": 0, "written": 0,
                                               "failures": 0, "lost": 0}
        for key in ("written", "failures", "lost"):
            d[key] += self.base.get(key, 0)
        return d

    @property
    def all_paths(self) -> dict[str, Path]:
        return self.writer.all_paths if self.writer is not None else {}

    @property
    def folder(self) -> Path | None:
        return self.writer.folder if self.writer is not None else None

    def close(self) -> dict:
        """Write what is queued (retrying a failing disk for a while), close; the final totals."""
        if self.writer is not None:
            self._health(self.writer.close())
        return self.totals()


class RoomRunner:
    """One room of the venue, session after session, until it is closed."""

    def __init__(self, venue: "Venue", name: str, config: Config, link, *, out_dir: Path,
                 extra_sinks: Iterable[Sink] = (), on_stats: Callable[[SessionStats], None] | None = None,
                 repeat: bool = True):
        self.venue, self.name, self.config, self.link = venue, name, config, link
        self.out_dir = out_dir
        self.extra_sinks = list(extra_sinks)
        self.on_stats = on_stats
        self.repeat = repeat
        self.room: Room | None = None
        self.writer: SessionTranscripts | None = None
        self.results: list[SessionResult] = []
        self.error: BaseException | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.source = self._open_source()

    @property
    def remote(self) -> bool:
        return self.config.audio.input == "remote"

    def _open_source(self) -> AudioSource:
        a = self.config.audio
        source = open_source(a.input, device=a.device, sample_rate=a.sample_rate, channels=a.channels,
                             queue_seconds=a.queue_seconds, realtime=a.realtime)
        if isinstance(source, PushSource):
            # attached before the model loads: an early sender is held back, not refused
            self.link.attach_ingest(source, a.queue_seconds)
        return source

    def _stats(self, stats: SessionStats) -> None:
        self.link.update_stats(stats)
        if self.writer is not None:  # the counts go on between the writer's own reports of a change
            self.link.set_transcript_health(self.writer.totals())
        if self.on_stats is not None:
            self.on_stats(stats)

    def begin_session(self) -> Room:
        """The next session's room and transcripts (the folder is made at its first caption,
        or now for a one-session room, as `run` has always done)."""
        host, c = self.venue.host, self.config
        base = self.writer.totals() if self.writer is not None else None  # the room's counts go on
        self.writer = SessionTranscripts(self.out_dir, c, self.link.publish_files,
                                         on_health=self.link.set_transcript_health, base=base)
        if not self.repeat:
            self.writer.open()
        self.room = Room(host, self.name, self.source, [self.writer, self.link.sink, *self.extra_sinks], c,
                         on_stats=self._stats, translation=self.venue.stages[self.name])
        if self.remote and hasattr(self.link, "on_audio_gap"):  # audio a sender lost: marked in the JSONL
            self.link.on_audio_gap(self.writer.on_gap)
        self.link.attach(self.room, source_languages=host.asr.languages)
        return self.room

    def run_session(self) -> SessionResult:
        """One session: the current source until it ends (``begin_session`` first if not done)."""
        room = self.room if self.room is not None and self.room.source is self.source else self.begin_session()
        try:
            result = room.run()
        finally:
            self.writer.close()
        if self.remote:
            self.link.finish_ingest()  # the sender's `end` is answered once the transcripts are flushed
        self.results.append(result)
        return result

    def run(self) -> None:
        """Sessions until the room is closed (a remote room), or one session (file, microphone)."""
        try:
            while True:
                self.run_session()
                if self._closing.is_set() or not (self.repeat and self.remote):
                    return
                self.source = self._open_source()  # the next sender's session
        except BaseException as e:
            self.error = e
            log.error("room %s stopped: %s", self.name, e)
            raise

    def start(self) -> "RoomRunner":
        def target() -> None:
            try:
                self.run()
            except BaseException:
                pass  # kept in self.error and logged; the other rooms go on
        self._thread = threading.Thread(target=target, name=f"subtitler-room-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the utterance in progress, flush, end."""
        self._closing.set()
        self.source.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class Venue:
    """The host's rooms on one server (see the module doc)."""

    def __init__(self, host: Host | None, server, config: Config, *, out_dir: Path | None = None,
                 rooms_in_folders: bool = True):
        self.host = host  # None until loaded: rooms may be declared (and senders held) first
        self.server = server
        self.config = config
        self.out_dir = Path(out_dir if out_dir is not None else config.output.dir)
        self.rooms_in_folders = rooms_in_folders  # OUT/NAME/<date_time>/; `run` keeps OUT/<date_time>/
        self.runners: dict[str, RoomRunner] = {}
        self.stages: dict[str, object] = {}
        self._lock = threading.RLock()

    # -- rooms ------------------------------------------------------------------------------
    def declare(self, name: str, config: Config | None = None, *, default: bool = False, token: str | None = None,
                extra_sinks: Iterable[Sink] = (), on_stats=None, repeat: bool = True) -> RoomRunner:
        """Make a room reachable (URLs, token, ingest) before it runs. ``default``: the old
        single-room URLs (/ws/view, /overlay.html …) serve it too."""
        check_room_name(name)
        config = config or self.config.for_room(name)
        rc = self.config.room(name)
        with self._lock:
            if name in self.runners:
                raise ValueError(f"a room named '{name}' is already open")
            link = self.server.add_room(name, title=rc.title or name, token=token or rc.token or None,
                                        languages=config.translate.targets, live=config.audio.input == "remote"
                                        or config.audio.realtime or config.audio.input == "mic", default=default)
            try:
                out = self.out_dir / name if self.rooms_in_folders else self.out_dir
                runner = RoomRunner(self, name, config, link, out_dir=out, extra_sinks=extra_sinks,
                                    on_stats=on_stats, repeat=repeat)
            except BaseException:
                self.server.remove_room(name)
                raise
            self.runners[name] = runner
        return runner

    def prepare(self, runner: RoomRunner) -> None:
        """Once the host is loaded: the room's translation stage (checked before any audio)."""
        self.stages[runner.name] = self.host.stage_for(runner.config)

    def open_room(self, name: str, options: dict | None = None) -> dict:
        """``/ws/venue``'s open_room: a new remote room at run time, within capacity."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(ROOM_OPTIONS))
        if unknown:
            raise ValueError(f"unknown room setting(s) {', '.join(unknown)}; allowed: {', '.join(ROOM_OPTIONS)}")
        check_room_name(name)
        with self._lock:
            if name in self.runners:
                raise ValueError(f"a room named '{name}' is already open")
            self.host.check_room_for(len(self.runners))
            config = self._config_with(name, options)
            runner = self.declare(name, config)
            try:
                self.prepare(runner)
            except BaseException:
                self.runners.pop(name, None)
                self.server.remove_room(name)
                raise
            runner.start()
        link = runner.link
        return {"name": name, "title": link.title, "token": link.token}

    def _config_with(self, name: str, options: dict) -> Config:
        """The room's config from the venue's, with the operator's settings (checked here)."""
        overrides: dict = {}
        section = f"rooms.{name}"
        if "title" in options:
            if not isinstance(options["title"], str) or len(options["title"]) > 200:
                raise ValueError("title must be a text of at most 200 characters")
        if "token" in options and (not isinstance(options["token"], str) or
                                   (options["token"] and len(options["token"]) < 8)):
            raise ValueError("token must be a text of at least 8 characters (or empty for a random one)")
        language = options.get("language")
        if language not in (None, "", "auto") and not (is_language_code(language)
                                                         and language in self.host.asr.languages):
            raise ValueError(f"language {str(language)[:20]!r} is not a language of this model; "
                             f"allowed: auto, {', '.join(self.host.asr.languages)}")
        targets = options.get("targets")
        if targets is not None and (not isinstance(targets, list) or
                                    not all(is_language_code(t) for t in targets) or len(targets) > 16):
            raise ValueError('targets must be a list of up to 16 language codes, e.g. ["en", "zh"]')
        for key in ROOM_OPTIONS:
            if options.get(key) not in (None, ""):
                overrides[f"{section}.{key}"] = options[key]
        try:
            venue_config = self.config.with_overrides(overrides, where="open_room") if overrides else self.config
        except ConfigError as e:
            raise ValueError(str(e)) from None
        self.config = venue_config  # the room's settings, for this room's declare()
        return venue_config.for_room(name)

    def close_room(self, name: str) -> None:
        """``/ws/venue``'s close_room: finish the room's utterance, flush, close its screens."""
        with self._lock:
            runner = self.runners.pop(name, None)
        if runner is None:
            raise ValueError(f"no room named '{name}' is open; open rooms: {', '.join(self.runners) or 'none'}")
        runner.stop()
        self.stages.pop(name, None)
        self.server.remove_room(name)

    def capacity(self) -> dict:
        out = self.host.capacity() if self.host is not None else {"rooms": 0, "max_rooms": 0, "overloaded": False}
        out["rooms"] = len(self.runners)
        return out

    def stop(self) -> None:
        """Every room finishes its utterance and flushes."""
        for runner in list(self.runners.values()):
            runner.source.stop()
        for runner in list(self.runners.values()):
            runner.stop()


__all__ = ["CapacityError", "RoomRunner", "Venue"]
