"""Transcript files written as a session runs: SRT, WebVTT, plain text and JSONL.

Each final caption is appended to every file with a single ``os.write`` of its
complete bytes (O_APPEND) and, by default, an ``fsync``. A ``kill -9`` or power
cut therefore leaves every file holding a whole number of captions, parseable as
it stands; nothing needs to be closed or repaired afterwards.

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

import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable

from .captions import Caption
from .cues import Cue, split_cues  # noqa: F401  (Cue: part of this module's interface)
from .cues import clean as _clean

FORMATS = ("srt", "vtt", "txt", "jsonl")
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


class _Track:
    """One language's SRT/VTT/TXT files, with the cue number and end time so far."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}
        self.number = 0  # SRT cues are numbered across the whole session
        self.last_ms = 0  # no cue may start before the previous one ended


class TranscriptWriter:
    """Sink for captions: appends each final to its transcript files as it arrives, and each
    translation to its language's files. ``languages``: translation targets whose files are
    created at once (others are opened at their first translation)."""

    accepts_translations = True  # the engine hands it kind="translation" captions too

    def __init__(
        self,
        folder: Path,
        formats: Iterable[str] = FORMATS,
        max_chars: int = 42,
        max_lines: int = 2,
        basename: str = "captions",
        fsync: bool = True,
        languages: Iterable[str] = (),
    ) -> None:
        self.formats = tuple(dict.fromkeys(formats))  # keeps order, drops repeats
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown transcript format(s) {unknown}; allowed: {', '.join(FORMATS)}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_chars, self.max_lines = max_chars, max_lines
        self.basename, self.fsync = basename, fsync
        self._lock = threading.Lock()
        self._closed = False
        self._main = _Track()
        self._langs: dict[str, _Track] = {}  # opened on a language's first translation
        self._jsonl = self._open(self.folder / f"{basename}.jsonl") if "jsonl" in self.formats else None
        self._open_track(self._main, "")
        for lang in languages:
            self._track(lang)

    @property
    def paths(self) -> dict[str, Path]:
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
        """Per-translation files opened so far: language -> format -> path."""
        return {
            lang: {f: self.folder / f"{self.basename}.{_infix(lang)}.{f}" for f in track.fds}
            for lang, track in self._langs.items()
        }

    def _track(self, lang: str) -> _Track:
        track = self._langs.get(lang)
        if track is None:
            track = self._langs[lang] = _Track()
            self._open_track(track, "." + _infix(lang))
        return track

    def _open(self, path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        if self.fsync:  # make the new directory entry itself survive a power cut
            dfd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return fd

    def _open_track(self, track: _Track, infix: str) -> None:
        for fmt in (f for f in self.formats if f in _TEXT_FORMATS):
            fd = track.fds[fmt] = self._open(self.folder / f"{self.basename}{infix}.{fmt}")
            if fmt == "vtt" and os.fstat(fd).st_size == 0:
                self._write(fd, b"WEBVTT\n\n")  # valid (empty) VTT from the first moment

    def _write(self, fd: int, data: bytes) -> None:
        # One write of the whole caption, so a crash can't leave half of it. Regular
        # files only come up short when the disk is full; finish the job then anyway.
        while data:
            data = data[os.write(fd, data) :]
        if self.fsync:
            os.fsync(fd)

    def _append(self, track: _Track, text: str, caption: Caption) -> None:
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
            return  # nothing said: an empty cue would not parse back
        line = f"[{_stamp(max(0, int(caption.start)) * 1000, ',').split(',')[0]}] {_clean(text)}\n"
        for fmt, fd in track.fds.items():
            self._write(fd, {"srt": "".join(srt), "vtt": "".join(vtt), "txt": line}[fmt].encode("utf-8"))

    def on_caption(self, caption: Caption) -> None:
        translation = caption.is_translation
        if not caption.is_final and not translation:
            return  # partials are for the screen; files keep only what was settled
        with self._lock:
            if self._closed:
                raise ValueError("TranscriptWriter is closed")
            if not translation:
                self._append(self._main, caption.text, caption)
            for lang, text in caption.translations.items():
                self._append(self._track(lang), text, caption)
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
                self._write(self._jsonl, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fds = [fd for t in (self._main, *self._langs.values()) for fd in t.fds.values()]
            for fd in fds + ([self._jsonl] if self._jsonl is not None else []):
                os.close(fd)

    def __enter__(self) -> "TranscriptWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _infix(lang: str) -> str:
    return _UNSAFE.sub("_", lang) or "_"


def load_jsonl(path: Path, raw: bool = False) -> list[dict]:
    """Read a captions JSONL back, skipping a trailing line cut off by a crash: one record per
    caption, its later translation updates folded in (``translations`` holds every language
    that came out, ``translation_errors`` why any other is missing). ``raw``: the lines as
    written, updates included."""
    data = Path(path).read_bytes()
    # Split on b"\n" only: JSON text may hold U+2028 and friends, which splitlines() would cut.
    lines = data.split(b"\n")
    rows = [json.loads(line) for line in lines[:-1] if line.strip()]
    if raw:
        return rows
    out: list[dict] = []
    latest: dict = {}  # caption id → its record
    for row in rows:
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
