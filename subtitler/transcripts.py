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

What the files are and what each caption or mark writes to them (cues, timing lines, marks,
file names) is ``transcript_layout.TranscriptLayout``'s, a pure object; this module does the disk.

Subtitles follow the cue rules of their language (``cues.py``), the reading-time hold
included: a caption spoken faster than it can be read stays on screen into the silence after
it, never over the next caption. Its cues are written at once with their spoken timing (a
crash never costs a caption); once the next caption of that file is known, or the session ends,
the held timing is written over their timing lines in place (``HH:MM:SS,mmm --> HH:MM:SS,mmm``
has a fixed width: one ``pwrite`` of the same length, so a crash leaves the old timing or the
new one, never a broken cue). So the files a session leaves are the ones ``subtitler subtitles``
makes from its JSONL, to the millisecond; after a ``kill -9`` only the last caption of each file
keeps its spoken timing.

Speech that did not reach the transcript is marked where it lies: audio a sender lost
(``on_gap``) and speech skipped to keep up with live audio (``on_skipped``) are a JSONL line of
their own (``{"kind": "gap", …}``, ``{"kind": "skipped", …}``), a bracketed line in every TXT
and a ``NOTE`` block (a comment, not shown) in every VTT. SRT has no comments: a cue there
would be shown as if it were said, so SRT files carry no mark.

Translations go to files of their own, ``captions.<lang>.srt/.vtt/.txt``, with the
timing of their final; they arrive as ``kind="translation"`` captions after the final
(or in a final's ``translations``). The JSONL holds every language: a final's line as
before, then one line per translation update::

    {"id": 7, "seq": 45, "start": 12.48, "end": 15.3, "emitted": 16.01, "lang": "en", "text": "…", "translations": {}}
    {"id": 7, "seq": 46, "kind": "translation", "emitted": 16.2, "lang": "en",
     "translations": {"es": "…", "zh": "…"}, "translation_errors": {"ru": "ctranslate2: …"}}

``load_jsonl`` folds the updates into their final, so it returns one record per caption
with all its languages (``raw=True`` returns the lines as written, marks included).
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
from .cues import Cue, split_cues
from .transcript_layout import (
    FORMATS, MARK_KINDS, SKIPPED_REASON, FileWrite, Gap, Skipped, TranscriptFile, TranscriptLayout,
    mark_line, mark_note, mark_of, mark_record, mark_time,
)

# What the files hold (cues, marks, names) lives in transcript_layout; callers keep importing it here.
__all__ = [
    "CLOSE_WAIT_S", "FORMATS", "FSYNC_INTERVAL_S", "MARK_KINDS", "QUEUE_LIMIT", "RETRY_S", "SKIPPED_REASON",
    "Cue", "Gap", "OutputFolderError", "Skipped", "TranscriptWriter", "WriterHealth", "check_output_folder",
    "load_jsonl", "mark_line", "mark_note", "mark_of", "mark_record", "mark_time", "session_folder",
    "split_cues", "whole_length",
]

log = logging.getLogger("subtitler")

FSYNC_INTERVAL_S = 1.0  # a write reaches the disk itself (power-cut safe) within this
QUEUE_LIMIT = 10_000  # captions waiting for a failing disk (hours of speech) before more are lost
RETRY_S = (0.25, 5.0)  # back-off between attempts while writing fails: first, longest
CLOSE_WAIT_S = 10.0  # how long close() keeps retrying a failing disk for what is queued
_UNSAFE = re.compile(r"[^0-9A-Za-z_-]+")  # anything else stays out of file names


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
    """One transcript file as the writer holds it: opened at its first record; ``good`` is the
    length of its whole records (what a failed write is cut back to)."""

    __slots__ = ("path", "fmt", "fd", "patch_fd", "good", "broken", "dirty")

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        self.fd: int | None = None
        self.patch_fd: int | None = None  # without O_APPEND: for writing a held cue's timing in place
        self.good = 0
        self.broken = False  # a write failed and its partial bytes could not be cut off yet
        self.dirty = False  # written since the last fsync


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
    writer thread asks its ``TranscriptLayout`` what each caption writes where (the layout is
    the files' content and naming; this class is only the disk) and appends each record with one
    ``os.write``; a write that
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
        self._layout = TranscriptLayout(None if callable(folder) else Path(folder), formats, max_chars,
                                        max_lines, basename, languages)  # raises on an unknown format
        self.formats = self._layout.formats  # keeps order, drops repeats
        self.max_chars, self.max_lines = max_chars, max_lines
        self.basename, self.fsync, self.fsync_interval = basename, fsync, fsync_interval
        self.queue_limit = queue_limit
        self.on_health, self.on_open = on_health, on_open
        self._make_folder = folder if callable(folder) else None
        self._file_of: dict[TranscriptFile, _File] = {}  # each of the layout's files as the writer holds it
        self._cond = threading.Condition()
        self._queue: deque[Caption | Gap | Skipped] = deque()
        self._closing = False
        self._give_up = False
        self._closed = False
        self._written = self._failures = self._lost = 0
        self._error: str | None = None
        self._head: list[FileWrite] | None = None  # the head caption's writes not yet done
        self._sync_due: float | None = None
        self._announced = False
        if self.folder is not None:  # made now: a folder that cannot be written is an error here
            self._make_files()
        self._thread = threading.Thread(target=self._run, name="subtitler-transcripts", daemon=True)
        self._thread.start()

    # -- paths (the layout's) ----------------------------------------------------------------------
    @property
    def folder(self) -> Path | None:
        """The session's folder; None until a ``folder`` function has made it."""
        return self._layout.folder

    @property
    def paths(self) -> dict[str, Path]:
        return self._layout.paths

    @property
    def all_paths(self) -> dict[str, Path]:
        """Every file so far: ``paths`` plus the translations' as 'es.srt' → path."""
        return self._layout.all_paths

    @property
    def language_paths(self) -> dict[str, dict[str, Path]]:
        """Per-translation files so far: language -> format -> path."""
        return self._layout.language_paths

    # -- the caller's side ----------------------------------------------------------------------
    def on_caption(self, caption: Caption) -> None:
        if not caption.is_final and not caption.is_translation:
            return  # partials are for the screen; files keep only what was settled
        self._put(caption)

    def _put(self, item: "Caption | Gap | Skipped") -> None:
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

    def on_skipped(self, start: float, end: float, seconds: float) -> None:
        """Mark speech skipped to keep up with live audio, in its place among the captions."""
        self._put(Skipped(float(start), float(end), float(seconds)))

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
            with self._cond:
                ended = self._closing and not self._queue and not self._give_up
            if ended:  # a clean end: the last caption of each file gets its reading time too
                self._end_holds()
            self._sync()
            for f in self._files():
                for fd in (f.fd, f.patch_fd):
                    if fd is not None:
                        os.close(fd)
                f.fd = f.patch_fd = None

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

    def _file(self, spec: TranscriptFile) -> _File:
        f = self._file_of.get(spec)
        if f is None:
            f = self._file_of[spec] = _File(spec.path, spec.fmt)
        return f

    def _files(self) -> list[_File]:
        return [self._file(spec) for spec in self._layout.files()]

    def _make_files(self) -> None:
        """The folder and the session's first files (the source language's, the targets'); on
        a failure, called again: it picks up where it stopped."""
        if self._layout.folder is None:
            self._layout.folder = Path(self._make_folder())
        if not self._layout.started:
            self._layout.folder.mkdir(parents=True, exist_ok=True)
            self._layout.start()
        for f in self._files():
            if f.fd is None:
                self._open(f)
        if not self._announced:
            self._announced = True
            if self.on_open is not None:
                self.on_open(self.all_paths)

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

    def _append(self, f: _File, data: bytes) -> int:
        """One whole record onto the file's whole records; on failure the file is cut back.
        Returns where the record begins."""
        if f.fd is None:
            self._open(f)
        if f.broken:  # an earlier failure left bytes we could not cut off then
            os.ftruncate(f.fd, f.good)
            f.broken = False
        at = f.good  # the file is its whole records: the record goes there
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
        return at

    def _overwrite(self, f: _File, data: bytes, at: int) -> None:
        """``data`` over the same number of bytes at ``at``, inside the file's whole records (a
        held cue's timing line: one ``pwrite``, so a crash leaves the old line or the new one)."""
        if at + len(data) > f.good:
            return  # not in the file (cannot happen: records are only ever appended)
        if f.patch_fd is None:
            f.patch_fd = os.open(f.path, os.O_WRONLY | os.O_CLOEXEC)  # O_APPEND would ignore ``at``
        done = 0
        while done < len(data):
            done += os.pwrite(f.patch_fd, data[done:], at + done)
        f.dirty = True

    def _do(self, write: FileWrite) -> None:
        f = self._file(write.file)
        if write.at is not None:
            self._overwrite(f, write.data, write.at)
            return
        self._layout.appended(write, self._append(f, write.data))

    def _write_caption(self, caption: "Caption | Gap | Skipped") -> None:
        """Every file's record of the caption at the queue's head, resuming where a failed
        attempt stopped (records already appended are not appended again)."""
        if not self._announced:
            self._make_files()
        if self._head is None:
            languages = self._layout.languages
            self._head = self._layout.records(caption)
            if self._layout.languages != languages and self.on_open is not None:
                self.on_open(self.all_paths)  # a translation's first files (opened at their first record)
        while self._head:
            self._do(self._head[0])
            self._head.pop(0)
        self._head = None
        if self.fsync and self.fsync_interval <= 0:
            self._sync()

    def _end_holds(self) -> None:
        """At a clean close: each file's last caption held for its full reading time."""
        for writes in self._layout.last_holds():
            try:
                for write in writes:
                    self._do(write)
            except OSError as e:
                log.warning("transcripts: the last caption of %s keeps its spoken timing: %s",
                            self.folder, e.strerror or e)

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


def load_jsonl(path: Path, raw: bool = False) -> list[dict]:
    """Read a captions JSONL back, skipping a trailing line cut off by a crash: one record per
    caption, its later translation updates folded in (``translations`` holds every language
    that came out, ``translation_errors`` why any other is missing). ``raw``: the lines as
    written, updates and marks included (``{"kind": "gap", …}``: audio a sender lost;
    ``{"kind": "skipped", …}``: speech skipped to keep up with live audio)."""
    data = Path(path).read_bytes()
    # Split on b"\n" only: JSON text may hold U+2028 and friends, which splitlines() would cut.
    lines = data.split(b"\n")
    rows = [json.loads(line) for line in lines[:-1] if line.strip()]
    if raw:
        return rows
    out: list[dict] = []
    latest: dict = {}  # caption id → its record
    for row in rows:
        if row.get("kind") in MARK_KINDS:
            continue  # speech missing from the transcript: ``raw=True`` keeps these marks
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
