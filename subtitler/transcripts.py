"""Transcript files written as a session runs: SRT, WebVTT, plain text and JSONL.

``TranscriptWriter`` writes from a thread of its own: the session hands it a caption and goes
on, whatever the disk does. Each caption is appended to every file with a single ``os.write``
of its complete bytes (O_APPEND), so a ``kill -9`` leaves every file holding a whole number of
captions, parseable as it stands. A write that fails (disk full, I/O error) is cut back off the
file and retried until it succeeds: no record is ever appended onto a broken one, and a file
found with a broken tail (an earlier crash) is cut back to its whole records when opened.
Files are fsynced about once a second (``FSYNC_INTERVAL_S``) and at close, so a power cut
loses at most the last second; a process crash loses only captions still in the writer's
queue (written within milliseconds when the disk keeps up).

Translations go to files of their own, ``captions.<lang>.srt/.vtt/.txt``, with the
timing of their final; they arrive as ``kind="translation"`` captions after the final
(or in a final's ``translations``). The JSONL holds every language: a final's line as
before, then one line per translation update::

    {"id": 7, "seq": 45, "start": 12.48, "end": 15.3, "emitted": 16.01, "lang": "en", "text": "…", "translations": {}}
    {"id": 7, "seq": 46, "kind": "translation", "emitted": 16.2, "lang": "en",
     "translations": {"es": "…", "zh": "…"}, "translation_errors": {"ru": "ctranslate2: …"}}

``load_jsonl`` folds the updates into their final, so it returns one record per caption
with all its languages (``raw=True`` returns the lines as written).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

from .captions import Caption
from .cues import Cue, split_cues  # noqa: F401  (Cue: part of this module's interface)
from .cues import clean as _clean

log = logging.getLogger("subtitler")

FORMATS = ("srt", "vtt", "txt", "jsonl")
FSYNC_INTERVAL_S = 1.0  # a write reaches the disk itself (power-cut safe) within this
QUEUE_LIMIT = 10_000  # captions waiting for a failing disk (hours of speech) before more are lost
RETRY_S = (0.25, 5.0)  # back-off between attempts while writing fails: first, longest
CLOSE_WAIT_S = 10.0  # how long close() keeps retrying a failing disk for what is queued
_TEXT_FORMATS = ("srt", "vtt", "txt")  # the ones that also get a file per translation
_UNSAFE = re.compile(r"[^0-9A-Za-z_-]+")  # anything else stays out of file names


def _stamp(ms: int, sep: str) -> str:
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _vtt_escape(line: str) -> str:
    # VTT cue text is markup: a bare "<" or "&" would be read as a tag or an entity.
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _os_write(fd: int, data) -> int:
    """The writer's lowest layer, one ``os.write``: where tests that cannot mount a small file
    system put a full disk."""
    return os.write(fd, data)


# Where a whole record of each format ends; a file is whole up to its last one.
_RECORD_END = {"srt": b"\n\n", "vtt": b"\n\n", "txt": b"\n", "jsonl": b"\n"}


def whole_length(fd: int, size: int, end: bytes) -> int:
    """The length of the file's whole records: up to (and with) the last ``end`` marker."""
    pos, tail = size, b""
    while pos > 0:
        start = max(0, pos - 65536)
        tail = os.pread(fd, pos - start, start) + tail[: len(end) - 1]
        i = tail.rfind(end)
        if i >= 0:
            return start + i + len(end)
        pos = start
    return 0


class _File:
    """One transcript file: opened at its first record; ``good`` is the length of its whole
    records (what a failed write is cut back to)."""

    __slots__ = ("path", "fmt", "fd", "good", "broken", "dirty")

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        self.fd: int | None = None
        self.good = 0
        self.broken = False  # a write failed and its partial bytes could not be cut off yet
        self.dirty = False  # written since the last fsync


class _Track:
    """One language's SRT/VTT/TXT files, with the cue number and end time so far."""

    def __init__(self, files: dict[str, _File]) -> None:
        self.files = files
        self.number = 0  # SRT cues are numbered across the whole session
        self.last_ms = 0  # no cue may start before the previous one ended


@dataclass(frozen=True)
class Gap:
    """Audio the session never heard (a sender lost it): ``at`` seconds of the session's audio,
    ``seconds`` long. The JSONL marks it: ``{"kind": "gap", "at": …, "seconds": …, "reason": …}``."""

    at: float
    seconds: float
    reason: str


@dataclass(frozen=True)
class WriterHealth:
    """How a ``TranscriptWriter`` is doing, for the console, /healthz and /metrics."""

    ok: bool  # the last attempt to write succeeded (or nothing failed yet)
    error: str | None  # while writing fails: what the file system said, and which file
    pending: int  # captions waiting to be written
    written: int  # captions in every file
    failures: int  # failed write attempts so far (each is retried)
    lost: int  # captions that will never be written (the queue was full, or closed while failing)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "error": self.error, "pending": self.pending, "written": self.written,
                "failures": self.failures, "lost": self.lost}


class TranscriptWriter:
    """Sink for captions: appends each final to its transcript files, and each translation to
    its language's files, from a thread of its own.

    ``on_caption`` only queues the caption (bounded by ``queue_limit``; beyond it a caption is
    counted as lost), so a slow or full disk never holds up capture, decoding or screens. The
    writer thread formats and appends each caption with one ``os.write`` per file; a write that
    fails (disk full, I/O error) is cut back off the file (``ftruncate`` to the last whole
    record) and retried with back-off until it succeeds, so a record is never appended onto a
    broken one; while it fails, ``health()`` says so and ``on_health`` is called at each change.
    A file that already holds a broken tail when opened (a crash in an earlier run) is cut back
    to its whole records first.

    ``fsync``: files are synced by the writer thread ``fsync_interval`` seconds after a write
    (0: after every caption) and at ``close``. ``folder``: a path (the folder and files are made
    now, and an error raises here), or a function that makes the folder and returns it (called
    by the writer thread at the first caption, retried while it fails: a session waiting for
    speech leaves nothing behind). ``languages``: translation targets whose files are made with
    the others (other languages' at their first translation).
    """

    accepts_translations = True  # the engine hands it kind="translation" captions too

    def __init__(
        self,
        folder: Path | Callable[[], Path],
        formats: Iterable[str] = FORMATS,
        max_chars: int = 42,
        max_lines: int = 2,
        basename: str = "captions",
        fsync: bool = True,
        languages: Iterable[str] = (),
        *,
        fsync_interval: float = FSYNC_INTERVAL_S,
        queue_limit: int = QUEUE_LIMIT,
        on_health: Callable[[WriterHealth], None] | None = None,
        on_open: Callable[[dict[str, Path]], None] | None = None,
    ) -> None:
        self.formats = tuple(dict.fromkeys(formats))  # keeps order, drops repeats
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown transcript format(s) {unknown}; allowed: {', '.join(FORMATS)}")
        self.max_chars, self.max_lines = max_chars, max_lines
        self.basename, self.fsync, self.fsync_interval = basename, fsync, fsync_interval
        self.queue_limit = queue_limit
        self.on_health, self.on_open = on_health, on_open
        self._make_folder = folder if callable(folder) else None
        self.folder: Path | None = None if callable(folder) else Path(folder)
        self._languages = list(dict.fromkeys(languages))
        self._main: _Track | None = None
        self._langs: dict[str, _Track] = {}  # made on a language's first translation
        self._jsonl: _File | None = None
        self._cond = threading.Condition()
        self._queue: deque[Caption] = deque()
        self._closing = False
        self._give_up = False
        self._closed = False
        self._written = self._failures = self._lost = 0
        self._error: str | None = None
        self._head: list[tuple[_File, bytes]] | None = None  # the head caption's bytes not yet written
        self._sync_due: float | None = None
        self._announced = False
        if self.folder is not None:  # made now: a folder that cannot be written is an error here
            self._make_files()
        self._thread = threading.Thread(target=self._run, name="subtitler-transcripts", daemon=True)
        self._thread.start()

    # -- paths --------------------------------------------------------------------------------
    @property
    def paths(self) -> dict[str, Path]:
        if self.folder is None:
            return {}
        return {f: self.folder / f"{self.basename}.{f}" for f in self.formats}

    @property
    def all_paths(self) -> dict[str, Path]:
        """Every file so far: ``paths`` plus the translations' as 'es.srt' → path."""
        out = dict(self.paths)
        for lang, files in self.language_paths.items():
            out.update({f"{lang}.{fmt}": path for fmt, path in files.items()})
        return out

    @property
    def language_paths(self) -> dict[str, dict[str, Path]]:
        """Per-translation files so far: language -> format -> path."""
        return {lang: {fmt: f.path for fmt, f in track.files.items()} for lang, track in list(self._langs.items())}

    # -- the caller's side ----------------------------------------------------------------------
    def on_caption(self, caption: Caption) -> None:
        if not caption.is_final and not caption.is_translation:
            return  # partials are for the screen; files keep only what was settled
        self._put(caption)

    def _put(self, item: "Caption | Gap") -> None:
        with self._cond:
            if self._closed or self._closing:
                raise ValueError("TranscriptWriter is closed")
            if len(self._queue) >= self.queue_limit:
                self._lost += 1
                first = self._lost == 1
            else:
                self._queue.append(item)
                self._cond.notify_all()
                return
        if first:
            log.error("transcripts: %d captions are waiting for the disk; later ones are not written (%s)",
                      self.queue_limit, self._error or "the disk is too slow")
        self._report()

    def on_gap(self, at: float, seconds: float, reason: str) -> None:
        """Mark audio the session never heard in the JSONL, in its place among the captions."""
        self._put(Gap(float(at), float(seconds), str(reason)))

    def health(self) -> WriterHealth:
        with self._cond:
            return WriterHealth(self._error is None, self._error, len(self._queue), self._written,
                                self._failures, self._lost)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued caption is written (False if ``timeout`` passed first)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue or self._give_up, timeout) and not self._queue

    def close(self, timeout: float = CLOSE_WAIT_S) -> WriterHealth:
        """Write what is queued (retrying up to ``timeout`` seconds while the disk fails), sync,
        close the files. Captions still unwritten then are counted as lost, and said so."""
        with self._cond:
            if self._closed:
                return self.health()
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                self._give_up = True
                self._cond.notify_all()
            self._thread.join(5.0)
        with self._cond:
            self._closed = True
            left = len(self._queue)
            if left:
                self._lost += left
                self._queue.clear()
        if left:
            log.error("transcripts: %d caption(s) could not be written to %s: %s", left, self.folder, self._error)
            self._report()
        return self.health()

    def __enter__(self) -> "TranscriptWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        delay = RETRY_S[0]
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing and not self._sync_now():
                        self._cond.wait(None if self._sync_due is None else self._sync_due - time.monotonic())
                    if self._give_up or (self._closing and not self._queue):
                        break
                    caption = self._queue[0] if self._queue else None
                if self._sync_now():
                    self._sync()
                if caption is None:
                    continue
                try:
                    self._write_caption(caption)
                except Exception as e:  # OSError: the disk; anything else is a bug, said with its traceback
                    if not isinstance(e, OSError):
                        log.exception("transcripts: writing a caption failed")
                    self._failed(e)
                    with self._cond:  # back off; close() giving up wakes it
                        if not self._give_up:
                            self._cond.wait(delay)
                    delay = min(delay * 2, RETRY_S[1])
                    continue
                delay = RETRY_S[0]
                with self._cond:
                    self._queue.popleft()
                    self._written += 1
                    recovered, self._error = self._error is not None, None
                    self._cond.notify_all()
                if recovered:
                    log.warning("transcripts: writing again in %s; %s", self.folder,
                                f"{self._lost} caption(s) lost" if self._lost else "nothing was lost")
                    self._report()
                if self.fsync and self._sync_due is None:
                    self._sync_due = time.monotonic() + self.fsync_interval
        finally:
            self._sync()
            for f in self._files():
                if f.fd is not None:
                    os.close(f.fd)
                    f.fd = None

    def _sync_now(self) -> bool:
        return self._sync_due is not None and time.monotonic() >= self._sync_due

    def _failed(self, e: Exception) -> None:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        message = f"cannot write the transcripts{where}: {getattr(e, 'strerror', None) or e}"
        with self._cond:
            self._failures += 1
            changed, self._error = message != self._error, message
            pending = len(self._queue)
        if changed:
            log.error("transcripts: %s; %d caption(s) waiting, retrying (nothing written is damaged)",
                      message, pending)
            self._report()

    def _report(self) -> None:
        if self.on_health is not None:
            try:
                self.on_health(self.health())
            except Exception:
                log.exception("transcripts: reporting the writer's health failed")

    def _files(self) -> list[_File]:
        tracks = ([self._main] if self._main else []) + list(self._langs.values())
        return [f for t in tracks for f in t.files.values()] + ([self._jsonl] if self._jsonl else [])

    def _make_files(self) -> None:
        """The folder and the session's first files (the source language's, the targets'); on
        a failure, called again: it picks up where it stopped."""
        if self.folder is None:
            self.folder = Path(self._make_folder())
        if self._main is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._jsonl = _File(self.folder / f"{self.basename}.jsonl", "jsonl") if "jsonl" in self.formats else None
            self._main = _Track(self._track_files(""))
            for lang in self._languages:
                self._track(lang)
        for f in self._files():
            if f.fd is None:
                self._open(f)
        if not self._announced:
            self._announced = True
            if self.on_open is not None:
                self.on_open(self.all_paths)

    def _track_files(self, infix: str) -> dict[str, _File]:
        return {fmt: _File(self.folder / f"{self.basename}{infix}.{fmt}", fmt)
                for fmt in self.formats if fmt in _TEXT_FORMATS}

    def _track(self, lang: str) -> _Track:
        """A translation's files (opened at their first record)."""
        track = self._langs.get(lang)
        if track is None:
            track = _Track(self._track_files("." + _infix(lang)))
            self._langs = {**self._langs, lang: track}  # replaced, never changed: read by other threads
            if self._announced and self.on_open is not None:
                self.on_open(self.all_paths)
        return track

    def _open(self, f: _File) -> None:
        """Open (creating) the file; cut a broken tail off what an earlier writer left."""
        fd = os.open(f.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            good = whole_length(fd, size, _RECORD_END[f.fmt])
            if good != size:
                os.ftruncate(fd, good)
                log.warning("transcripts: %s ended in a broken record (%d bytes), cut back to its whole "
                            "records", f.path, size - good)
            if self.fsync and size == 0:  # the new directory entry itself must survive a power cut
                dfd = os.open(f.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except BaseException:
            os.close(fd)
            raise
        f.fd, f.good = fd, good
        if f.fmt == "vtt" and good == 0:
            self._append(f, b"WEBVTT\n\n")  # valid (empty) VTT from the first moment

    def _append(self, f: _File, data: bytes) -> None:
        """One whole record onto the file's whole records; on failure the file is cut back."""
        if f.fd is None:
            self._open(f)
        if f.broken:  # an earlier failure left bytes we could not cut off then
            os.ftruncate(f.fd, f.good)
            f.broken = False
        view = memoryview(data)
        try:
            while view:  # regular files come up short only when the disk is full: then it raises
                view = view[_os_write(f.fd, view):]
        except OSError as e:
            if e.filename is None:
                e.filename = str(f.path)
            try:
                os.ftruncate(f.fd, f.good)
            except OSError:
                f.broken = True
            raise
        f.good += len(data)
        f.dirty = True

    def _write_caption(self, caption: Caption) -> None:
        """Every file's record of the caption at the queue's head, resuming where a failed
        attempt stopped (records already appended are not appended again)."""
        if not self._announced:
            self._make_files()
        if self._head is None:
            self._head = self._records(caption)
        while self._head:
            f, data = self._head[0]
            self._append(f, data)
            self._head.pop(0)
        self._head = None
        if self.fsync and self.fsync_interval <= 0:
            self._sync()

    def _records(self, caption: "Caption | Gap") -> list[tuple[_File, bytes]]:
        if isinstance(caption, Gap):
            if self._jsonl is None:
                return []
            record = {"kind": "gap", "at": round(caption.at, 3), "seconds": round(caption.seconds, 3),
                      "reason": caption.reason}
            return [(self._jsonl, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))]
        out: list[tuple[_File, bytes]] = []
        translation = caption.is_translation
        if not translation:
            out += self._cues(self._main, caption.text, caption)
        for lang, text in caption.translations.items():
            out += self._cues(self._track(lang), text, caption)
        if self._jsonl is not None:
            if translation:  # an update of the final's line: its new languages (and why any is missing)
                record = {"id": caption.id, "seq": caption.seq, "kind": "translation",
                          "emitted": round(caption.emitted, 3), "lang": caption.lang,
                          "translations": caption.translations}
            else:
                record = {k: v for k, v in caption.to_dict().items()
                          if k not in ("committed", "tentative", "kind", "translation_errors")}
            if caption.translation_errors:
                record["translation_errors"] = caption.translation_errors
            out.append((self._jsonl, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")))
        return out

    def _cues(self, track: _Track, text: str, caption: Caption) -> list[tuple[_File, bytes]]:
        srt, vtt = [], []
        lang = next((code for code, t in self._langs.items() if t is track), caption.lang)  # the cue rules' language
        for cue in split_cues(text, caption.start, caption.end, self.max_chars, self.max_lines, lang=lang):
            # Whole milliseconds, clamped so cues never overlap, go back, or vanish.
            s = max(round(cue.start * 1000), track.last_ms)
            e = max(round(cue.end * 1000), s + 1)
            track.last_ms = e
            track.number += 1
            srt.append(f"{track.number}\n{_stamp(s, ',')} --> {_stamp(e, ',')}\n" + "\n".join(cue.lines) + "\n\n")
            vtt.append(f"{_stamp(s, '.')} --> {_stamp(e, '.')}\n" + "\n".join(map(_vtt_escape, cue.lines)) + "\n\n")
        if not srt:
            return []  # nothing said: an empty cue would not parse back
        line = f"[{_stamp(max(0, int(caption.start)) * 1000, ',').split(',')[0]}] {_clean(text)}\n"
        content = {"srt": "".join(srt), "vtt": "".join(vtt), "txt": line}
        return [(f, content[fmt].encode("utf-8")) for fmt, f in track.files.items()]

    def _sync(self) -> None:
        """fsync what was written since the last time (the writer thread only)."""
        self._sync_due = None
        if not self.fsync:
            return
        for f in self._files():
            if f.dirty and f.fd is not None:
                try:
                    os.fsync(f.fd)
                    f.dirty = False
                except OSError as e:  # the data may be gone from the cache: say so
                    self._failed(OSError(e.errno, e.strerror, str(f.path)))


def session_folder(out_dir: Path, now: datetime | None = None, name: str | None = None) -> Path:
    """Create and return a fresh ``out_dir/YYYY-MM-DD_HH-MM-SS[_name]`` (``-2``, ``-3``... if taken)."""
    stem = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    if name:
        stem += "_" + _UNSAFE.sub("_", name).strip("_")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = Path(out_dir) / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()  # atomic: two sessions started in the same second get different folders
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free session folder for {stem} in {out_dir}")


class OutputFolderError(ValueError):
    """Transcripts cannot be written where they are asked to go; says why and what to do."""


_WHY = {errno.EROFS: "it is on a read-only file system", errno.ENOTDIR: "a part of that path is a file, not a folder",
        errno.EEXIST: "it is a file, not a folder", errno.EACCES: "permission denied",
        errno.EPERM: "permission denied", errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up"}


def check_output_folder(path: Path) -> Path:
    """Whether transcripts can be written below ``path``, before anything starts: the folders
    missing on the way are made and a file is written there, then all of it is removed again (a
    refused start leaves nothing behind). Raises OutputFolderError saying why not."""
    path = Path(path)
    made: list[Path] = []
    try:
        if path.exists() and not path.is_dir():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
        for folder in reversed([path, *path.parents]):
            if not folder.exists():
                folder.mkdir()
                made.append(folder)
        fd, probe = tempfile.mkstemp(prefix=".subtitler-write-check-", dir=path)
        try:
            os.write(fd, b"subtitler")  # creating a file is not enough on a full disk
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        why = _WHY.get(e.errno, e.strerror or str(e))
        raise OutputFolderError(f"cannot write transcripts to {path}: {why}; choose another folder with "
                                f"--out DIR (or [output] dir in the config)") from None
    finally:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
    return path


def _infix(lang: str) -> str:
    return _UNSAFE.sub("_", lang) or "_"


def load_jsonl(path: Path, raw: bool = False) -> list[dict]:
    """Read a captions JSONL back, skipping a trailing line cut off by a crash: one record per
    caption, its later translation updates folded in (``translations`` holds every language
    that came out, ``translation_errors`` why any other is missing). ``raw``: the lines as
    written, updates and gap marks (``{"kind": "gap", …}``: audio a sender lost) included."""
    data = Path(path).read_bytes()
    # Split on b"\n" only: JSON text may hold U+2028 and friends, which splitlines() would cut.
    lines = data.split(b"\n")
    rows = [json.loads(line) for line in lines[:-1] if line.strip()]
    if raw:
        return rows
    out: list[dict] = []
    latest: dict = {}  # caption id → its record
    for row in rows:
        if row.get("kind") == "gap":
            continue  # audio never heard: ``raw=True`` keeps these marks
        if row.get("kind") != "translation":
            out.append(row)
            latest[row.get("id")] = row
            continue
        record = latest.get(row.get("id"))
        if record is None:
            continue  # an update whose final is not in the file
        record["translations"] = {**record.get("translations", {}), **row.get("translations", {})}
        errors = {k: v for k, v in {**record.get("translation_errors", {}),
                                    **row.get("translation_errors", {})}.items()
                  if k not in record["translations"]}
        if errors:
            record["translation_errors"] = errors
        else:
            record.pop("translation_errors", None)
    return out
