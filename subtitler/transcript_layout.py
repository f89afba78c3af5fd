"""What a session's transcript files hold: which files there are, and the bytes each caption or mark
writes to them.

``TranscriptLayout`` is pure (no disk, no thread, no clock): a caption or a mark goes in, a list of
``FileWrite``s comes out, each an append of a whole record or a write over bytes already written
(a held cue's new timing line). ``transcripts.TranscriptWriter`` does them, in order, and tells the
layout where each record went, so the layout can later point a timing line's rewrite at it.

Files per language track: ``<basename>.srt/.vtt/.txt`` for the spoken text (each caption cut by
its own language's cue rules), ``<basename>.<lang>.srt/.vtt/.txt`` per translation (cut by that
language's), and one ``<basename>.jsonl`` for every language and every mark. The reading-time
hold of SRT/VTT cues and the marks of missing speech are described in ``transcripts.py``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .captions import Caption
from .cues import clean as _clean
from .cues import placed, split_cues

FORMATS = ("srt", "vtt", "txt", "jsonl")
_TEXT_FORMATS = ("srt", "vtt", "txt")  # the ones that also get a file per translation
MARK_KINDS = ("gap", "skipped")  # JSONL lines that mark speech missing from the transcript
SKIPPED_REASON = "decoding fell behind the live audio"
_UNSAFE = re.compile(r"[^0-9A-Za-z_-]+")  # anything else stays out of file names


def _stamp(ms: int, sep: str) -> str:
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _timing(start_ms: int, end_ms: int, sep: str) -> bytes:
    """A cue's timing line (SRT: ``sep`` ",", VTT: "."), without its newline."""
    return f"{_stamp(start_ms, sep)} --> {_stamp(end_ms, sep)}".encode()


def _hms(seconds: float) -> str:
    """A TXT line's time: whole seconds, truncated."""
    return _stamp(max(0, int(seconds)) * 1000, ",").split(",")[0]


@dataclass(frozen=True)
class Gap:
    """Audio the session never heard (a sender lost it): ``at`` seconds of the session's audio,
    ``seconds`` long. The JSONL marks it: ``{"kind": "gap", "at": …, "seconds": …, "reason": …}``."""

    at: float
    seconds: float
    reason: str


@dataclass(frozen=True)
class Skipped:
    """Speech the session heard but let go undecoded to keep up with live audio (``asr.max_lag_s``):
    ``start``–``end`` seconds of the session's audio, ``seconds`` of speech in it. The JSONL
    marks it: ``{"kind": "skipped", "start": …, "end": …, "seconds": …, "reason": …}``."""

    start: float
    end: float
    seconds: float
    reason: str = SKIPPED_REASON


def mark_record(mark: Gap | Skipped) -> dict:
    """A mark's JSONL line."""
    if isinstance(mark, Gap):
        return {"kind": "gap", "at": round(mark.at, 3), "seconds": round(mark.seconds, 3), "reason": mark.reason}
    return {"kind": "skipped", "start": round(mark.start, 3), "end": round(mark.end, 3),
            "seconds": round(mark.seconds, 3), "reason": mark.reason}


def mark_of(row: dict) -> Gap | Skipped | None:
    """The mark a JSONL line holds (None: a caption, or not a well-formed mark)."""
    def number(key: str) -> float | None:
        value = row.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    reason = row.get("reason") if isinstance(row.get("reason"), str) else ""
    if row.get("kind") == "gap" and number("at") is not None and number("seconds") is not None:
        return Gap(number("at"), number("seconds"), reason)
    if row.get("kind") == "skipped" and None not in (number("start"), number("end"), number("seconds")):
        return Skipped(number("start"), number("end"), number("seconds"), reason)
    return None


def mark_time(mark: Gap | Skipped) -> float:
    """Where a mark lies in the session's audio."""
    return mark.at if isinstance(mark, Gap) else mark.start


def mark_line(mark: Gap | Skipped) -> str:
    """A mark's TXT line: '[00:05:12] [not transcribed: 00:05:12–00:05:20, 8.0 s of speech skipped: …]'."""
    reason = _clean(mark.reason).replace("]", ")")
    if isinstance(mark, Gap):
        what = f"audio lost: {mark.seconds:.1f} s" + (f", {reason}" if reason else "")
    else:
        what = (f"not transcribed: {_hms(mark.start)}–{_hms(mark.end)}, {mark.seconds:.1f} s of speech skipped"
                + (f" ({reason})" if reason else ""))
    return f"[{_hms(mark_time(mark))}] [{what}]\n"


def mark_note(mark: Gap | Skipped) -> str:
    """A mark's VTT NOTE block: a comment, kept in the file, never shown."""
    reason = _clean(mark.reason)
    if isinstance(mark, Gap):
        text = f"audio lost: {mark.seconds:.1f} s at {_stamp(round(mark.at * 1000), '.')}"
    else:
        text = (f"not transcribed: {mark.seconds:.1f} s of speech from {_stamp(round(mark.start * 1000), '.')} "
                f"to {_stamp(round(mark.end * 1000), '.')}, skipped")
    return f"NOTE {text}" + (f" ({reason})" if reason else "") + "\n\n"


def _vtt_escape(line: str) -> str:
    # VTT cue text is markup: a bare "<" or "&" would be read as a tag or an entity.
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _infix(lang: str) -> str:
    return _UNSAFE.sub("_", lang) or "_"


@dataclass(frozen=True)
class TranscriptFile:
    """One of the session's files: where it is and which format it holds."""

    path: Path
    fmt: str


@dataclass
class _Held:
    """A track's latest caption, written with its spoken timing, whose cues get their reading-time
    hold once the next caption's start (or the end of the session) is known."""

    text: str
    start: float
    end: float
    lang: str  # its cue rules' language
    after_ms: int  # where the track's previous cue ended (no cue of it starts before)
    stamps: list[tuple[int, int]]  # its cues' (start, end) as written, ms
    timing_at: dict[str, list[int]]  # format → where each cue's timing line begins in its record
    record_at: dict[str, int]  # format → where its record begins in the file, once appended


class _Track:
    """One language's SRT/VTT/TXT files, with the cue number and end time so far."""

    def __init__(self, files: dict[str, TranscriptFile], lang: str | None = None) -> None:
        self.files = files
        self.lang = lang  # the cue rules' language: None for the spoken text (each caption's own)
        self.number = 0  # SRT cues are numbered across the whole session
        self.last_ms = 0  # no cue may start before the previous one ended
        self.held: _Held | None = None


@dataclass
class FileWrite:
    """One write of a caption's (or mark's) bytes to one file: appended as a whole record, or, with
    ``at``, written over the same number of bytes there (a held cue's new timing line)."""

    file: TranscriptFile
    data: bytes
    at: int | None = None
    held: _Held | None = None  # the held caption whose record this appends (``appended`` says where it went)


class TranscriptLayout:
    """A session's transcript files and what each caption or mark writes to them, with the state
    that takes (SRT cue numbers, where each track's last cue ended, the caption held for its
    reading time). Pure: the caller does the writes, in order, and reports each append's offset.

    ``folder`` may be set later (a folder made at the first caption); ``start`` then makes the
    session's first tracks. ``languages``: translation targets whose files are made with the
    others (other languages' at their first translation).
    """

    def __init__(
        self,
        folder: Path | None,
        formats: Iterable[str] = FORMATS,
        max_chars: int = 42,
        max_lines: int = 2,
        basename: str = "captions",
        languages: Iterable[str] = (),
    ) -> None:
        self.formats = tuple(dict.fromkeys(formats))  # keeps order, drops repeats
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown transcript format(s) {unknown}; allowed: {', '.join(FORMATS)}")
        self.max_chars, self.max_lines, self.basename = max_chars, max_lines, basename
        self.folder = folder
        self._languages = list(dict.fromkeys(languages))
        self._main: _Track | None = None
        self._langs: dict[str, _Track] = {}  # made on a language's first translation
        self._jsonl: TranscriptFile | None = None

    # -- which files ------------------------------------------------------------------------------
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

    @property
    def languages(self) -> tuple[str, ...]:
        """The translations that have files so far."""
        return tuple(self._langs)

    @property
    def started(self) -> bool:
        return self._main is not None

    def start(self) -> None:
        """The session's first files, in ``folder``: the source language's, the JSONL, the targets'."""
        self._jsonl = TranscriptFile(self.folder / f"{self.basename}.jsonl", "jsonl") if "jsonl" in self.formats else None
        self._main = _Track(self._track_files(""))  # each caption cut by its own language's rules
        for lang in self._languages:
            self._track(lang)

    def files(self) -> list[TranscriptFile]:
        """Every file so far."""
        return [f for t in self._tracks() for f in t.files.values()] + ([self._jsonl] if self._jsonl else [])

    def _tracks(self) -> list[_Track]:
        return ([self._main] if self._main else []) + list(self._langs.values())

    def _track_files(self, infix: str) -> dict[str, TranscriptFile]:
        return {fmt: TranscriptFile(self.folder / f"{self.basename}{infix}.{fmt}", fmt)
                for fmt in self.formats if fmt in _TEXT_FORMATS}

    def _track(self, lang: str) -> _Track:
        """A translation's files (the writer opens them at their first record)."""
        track = self._langs.get(lang)
        if track is None:
            track = _Track(self._track_files("." + _infix(lang)), lang)
            self._langs = {**self._langs, lang: track}  # replaced, never changed: read by other threads
        return track

    # -- what to write --------------------------------------------------------------------------
    def records(self, caption: Caption | Gap | Skipped) -> list[FileWrite]:
        """Every file's writes for a final, a translation update or a mark (after ``start``)."""
        if isinstance(caption, (Gap, Skipped)):
            return self._marks(caption)
        out: list[FileWrite] = []
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
            out.append(FileWrite(self._jsonl, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")))
        return out

    def appended(self, write: FileWrite, at: int) -> None:
        """The writer put ``write``'s record at ``at`` in its file (where a held cue's timing is)."""
        if write.held is not None:
            write.held.record_at[write.file.fmt] = at

    def last_holds(self) -> Iterator[list[FileWrite]]:
        """At a clean end: each track's last caption held for its full reading time (a list a track)."""
        for track in self._tracks():
            yield self._hold(track, math.inf)

    def _marks(self, mark: Gap | Skipped) -> list[FileWrite]:
        """A mark's JSONL line, and its line in every TXT and NOTE in every VTT so far."""
        out: list[FileWrite] = []
        for track in self._tracks():
            for fmt, text in (("txt", mark_line(mark)), ("vtt", mark_note(mark))):
                if fmt in track.files:
                    out.append(FileWrite(track.files[fmt], text.encode("utf-8")))
        if self._jsonl is not None:
            out.append(FileWrite(self._jsonl, (json.dumps(mark_record(mark), ensure_ascii=False) + "\n").encode("utf-8")))
        return out

    def _cue_times(self, held: _Held, next_start: float | None) -> list[tuple[int, int]]:
        cues = split_cues(held.text, held.start, held.end, self.max_chars, self.max_lines, lang=held.lang,
                          next_start=next_start)
        return placed(cues, held.after_ms)

    def _hold(self, track: _Track, next_start: float) -> list[FileWrite]:
        """The track's held caption timed for its reading, now that the next caption's start is
        known (``math.inf``: none will come): its changed timing lines, written over in place."""
        held, track.held = track.held, None
        if held is None:
            return []
        stamps = self._cue_times(held, next_start)
        track.last_ms = stamps[-1][1]
        out: list[FileWrite] = []
        for fmt, sep in (("srt", ","), ("vtt", ".")):
            f, at = track.files.get(fmt), held.record_at.get(fmt)
            if f is None or at is None:
                continue  # no such file, or the record never reached it
            for old, new, offset in zip(held.stamps, stamps, held.timing_at[fmt]):
                line, was = _timing(*new, sep), _timing(*old, sep)
                if new != old and len(line) == len(was):  # (a 100th hour would widen the stamp: left as is)
                    out.append(FileWrite(f, line, at=at + offset))
        return out

    def _cues(self, track: _Track, text: str, caption: Caption) -> list[FileWrite]:
        lang = track.lang or caption.lang  # the cue rules' language
        held = _Held(text, caption.start, caption.end, lang, 0, [], {"srt": [], "vtt": []}, {})
        if not self._cue_times(held, None):
            return []  # nothing said: an empty cue would not parse back
        out = self._hold(track, next_start=caption.start)  # the previous caption's reading time first
        held.after_ms = track.last_ms
        cues = split_cues(text, caption.start, caption.end, self.max_chars, self.max_lines, lang=lang)
        held.stamps = placed(cues, track.last_ms)  # spoken timing until the next caption is known
        track.last_ms = held.stamps[-1][1]
        srt, vtt = bytearray(), bytearray()
        for cue, (s, e) in zip(cues, held.stamps):
            track.number += 1
            srt += f"{track.number}\n".encode()
            held.timing_at["srt"].append(len(srt))
            srt += _timing(s, e, ",") + ("\n" + "\n".join(cue.lines) + "\n\n").encode("utf-8")
            held.timing_at["vtt"].append(len(vtt))
            vtt += _timing(s, e, ".") + ("\n" + "\n".join(map(_vtt_escape, cue.lines)) + "\n\n").encode("utf-8")
        track.held = held
        line = f"[{_hms(caption.start)}] {_clean(text)}\n"
        content = {"srt": bytes(srt), "vtt": bytes(vtt), "txt": line.encode("utf-8")}
        out += [FileWrite(f, content[fmt], held=held if fmt != "txt" else None) for fmt, f in track.files.items()]
        return out
