"""Re-cut a saved transcript: SRT / WebVTT / TXT again from a session's ``captions.jsonl``,
with the current rules (``subtitler subtitles``).

After a session users ask for other cuts: shorter lines for a video edit, Traditional instead
of Simplified, one language's files only. The JSONL keeps every caption's times, its spoken
text and every translation, so the files can be made again without the audio:

* the spoken text → ``<stem>.srt`` (as the session wrote it); each translation language →
  ``<stem>.<lang>.srt``; with ``languages`` only those, each ``<stem>.<lang>.*`` holding the
  caption itself where it was spoken in that language and its translation elsewhere (as a
  screen showing that language does); ``zh-Hant`` of a ``zh`` transcript is its text in
  Traditional characters;
* cues cut by ``cues.split_cues`` for each file's language, and, knowing the next caption,
  held on screen for their reading time where the silence after them allows;
* Chinese written in the script asked for (``chinese.convert``);
* speech missing from the transcript (audio a sender lost, speech skipped to keep up with live
  audio: the JSONL's ``gap`` and ``skipped`` lines) marked in every TXT and VTT, in its place
  by time, as the session's own files mark it (``transcripts.mark_line``/``mark_note``).

Files are written whole to a temporary name and renamed: an interrupted re-cut leaves either
the old file or the new one. The session's own folder is refused as the destination.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .chinese import convert
from .cues import Cue, CueStyle, clean, placed, split_cues
from .langcodes import canonical, is_language_code, same_language, same_words
from .transcripts import MARK_KINDS, Gap, Skipped, mark_line, mark_note, mark_of, mark_time

FORMATS = ("srt", "vtt", "txt")
_UNSAFE = re.compile(r"[^0-9A-Za-z_-]+")  # as the session's own files are named


class SubtitlesError(ValueError):
    """The transcript or the request cannot be re-cut; the message says what and how to fix it."""


@dataclass(frozen=True)
class Entry:
    """One caption of one language's track."""

    start: float
    end: float
    text: str
    lang: str  # the language it is written in (its cue rules)


def read_transcript(path: Path) -> tuple[list[dict], list["Gap | Skipped"]]:
    """A captions JSONL → one record per caption, translation updates folded in (as
    ``transcripts.load_jsonl``), and the marks of speech missing from it, with a clear error for
    a file that is not one. A last line cut off by a crash is skipped, as the writer promises."""
    path = Path(path)
    if not path.is_file():
        raise SubtitlesError(f"{path}: no such file; give the captions.jsonl of a session "
                             f"(transcripts/<date_time>/captions.jsonl)")
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise SubtitlesError(f"{path}: cannot be read: {e.strerror}") from None
    records: list[dict] = []
    marks: list[Gap | Skipped] = []
    by_id: dict = {}
    for number, raw in enumerate(lines[:-1], 1):  # the last piece: after the final newline
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SubtitlesError(f"{path}: line {number} is not JSON; is this a captions.jsonl written by "
                                 f"subtitler?") from None
        if not isinstance(row, dict):
            raise SubtitlesError(f"{path}: line {number} is not a caption record")
        if row.get("kind") in MARK_KINDS:
            mark = mark_of(row)
            if mark is None:
                raise SubtitlesError(f"{path}: line {number}: a '{row['kind']}' mark without its times; is this a "
                                     f"captions.jsonl written by subtitler?")
            marks.append(mark)
            continue
        if row.get("kind") == "translation":
            record = by_id.get(row.get("id"))
            if record is not None and isinstance(row.get("translations"), dict):
                record["translations"] = {**record["translations"], **row["translations"]}
            continue
        for key, kind in (("start", (int, float)), ("end", (int, float)), ("text", str), ("lang", str)):
            if not isinstance(row.get(key), kind) or isinstance(row.get(key), bool):
                raise SubtitlesError(f"{path}: line {number}: the caption has no valid '{key}'; is this a "
                                     f"captions.jsonl written by subtitler?")
        translations = row.get("translations") or {}
        row["translations"] = {k: v for k, v in translations.items() if isinstance(v, str)} \
            if isinstance(translations, dict) else {}
        records.append(row)
        by_id[row.get("id")] = row
    return records, sorted(marks, key=mark_time)


def languages_in(records: list[dict]) -> list[str]:
    """Every language a transcript holds: spoken ones, then translations, in order of appearance."""
    seen: dict[str, str] = {}
    for r in records:
        for lang in [r["lang"], *r["translations"]]:
            if lang and is_language_code(lang):
                seen.setdefault(canonical(lang), lang)
    return list(seen.values())


def track(records: list[dict], lang: str | None, chinese: str) -> list[Entry]:
    """The captions of one file: ``lang`` None is the spoken text; a language is the caption
    itself where spoken in it (in that script: zh-Hant of zh is converted), else its translation."""
    out: list[Entry] = []
    for r in records:
        if lang is None:
            text, written_in = r["text"], r["lang"]
        elif same_language(r["lang"], lang) or (same_words(r["lang"], lang) and not _translation(r, lang)):
            text, written_in = r["text"], lang
        else:
            text, written_in = _translation(r, lang), lang
        text = clean(text or "")
        if text:
            out.append(Entry(float(r["start"]), float(r["end"]), convert(text, written_in, chinese), written_in))
    return sorted(out, key=lambda e: e.start)


def _translation(record: dict, lang: str) -> str | None:
    return next((t for l, t in record["translations"].items() if same_language(l, lang)), None)


def cues_of(entries: list[Entry], style: CueStyle) -> list[Cue]:
    """Every caption's cues by its language's rules, each held for its reading time where the
    next caption allows, in whole milliseconds, never overlapping, never going back."""
    out: list[Cue] = []
    last_ms = 0
    for i, e in enumerate(entries):
        next_start = entries[i + 1].start if i + 1 < len(entries) else math.inf  # the last: its reading time
        cues = split_cues(e.text, e.start, e.end, rules=style.rules(e.lang), next_start=next_start)
        for cue, (start, end) in zip(cues, placed(cues, last_ms)):  # as the live files place them
            out.append(Cue(start / 1000, end / 1000, cue.lines))
            last_ms = end
    return out


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render(fmt: str, entries: list[Entry], cues: list[Cue], marks: list["Gap | Skipped"] = ()) -> str:
    """One file's text; ``marks`` (by time) go before the first cue or line that starts at or
    after them (SRT has no comments: none there)."""
    if fmt == "srt":
        return "".join(f"{n}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n" + "\n".join(c.lines) + "\n\n"
                       for n, c in enumerate(cues, 1))
    if fmt == "vtt":
        esc = lambda line: line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # noqa: E731
        blocks = [(c.start, f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n" + "\n".join(map(esc, c.lines))
                   + "\n\n") for c in cues]
        return "WEBVTT\n\n" + "".join(_with_marks(blocks, marks, mark_note))
    lines = [(e.start, f"[{_stamp(max(0.0, float(int(e.start))), ',').split(',')[0]}] {e.text}\n") for e in entries]
    return "".join(_with_marks(lines, marks, mark_line))


def _with_marks(blocks: list[tuple[float, str]], marks, text_of) -> list[str]:
    """Timed blocks with each mark's text put before the first block at or after it."""
    out: list[str] = []
    pending = list(marks)
    for start, block in blocks:
        while pending and mark_time(pending[0]) <= start:
            out.append(text_of(pending.pop(0)))
        out.append(block)
    return out + [text_of(m) for m in pending]


def _infix(lang: str) -> str:
    return _UNSAFE.sub("_", lang) or "_"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def recut(jsonl: Path, out_dir: Path, *, languages: Iterable[str] | None = None,
          formats: Iterable[str] = FORMATS, style: CueStyle | None = None,
          chinese: str = "simplified") -> dict[str, Path]:
    """Write the subtitle files of ``jsonl`` into ``out_dir``; returns {"zh.srt": path, …}
    ("srt" for the spoken text's). Raises SubtitlesError for a bad file or request."""
    jsonl, out_dir = Path(jsonl), Path(out_dir)
    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise SubtitlesError(f"formats {','.join(bad) or '(none)'}: not a subtitle format; allowed: "
                             f"{', '.join(FORMATS)}")
    records, marks = read_transcript(jsonl)
    if not records:
        raise SubtitlesError(f"{jsonl}: holds no caption yet; nothing to re-cut")
    present = languages_in(records)
    if languages is None:
        wanted: list[str | None] = [None, *dict.fromkeys(l for r in records for l in r["translations"])]
    else:
        wanted = list(dict.fromkeys(languages))
        bad_codes = [l for l in wanted if not is_language_code(l)]
        if bad_codes:
            raise SubtitlesError(f"--lang {','.join(bad_codes)}: not a language code; this transcript has: "
                                 f"{', '.join(present)}")
        missing = [l for l in wanted if not any(same_words(l, p) for p in present)]
        if missing:
            raise SubtitlesError(f"--lang {','.join(missing)}: not in {jsonl.name}; it has: {', '.join(present)}")
    try:
        same_folder = out_dir.resolve() == jsonl.resolve().parent
    except OSError:
        same_folder = False
    if same_folder:
        raise SubtitlesError(f"--out {out_dir}: that is the session's own folder, whose files stay as they were "
                             f"written; give another folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SubtitlesError(f"--out {out_dir}: cannot make the folder: {e.strerror}") from None
    style = style or CueStyle()
    written: dict[str, Path] = {}
    stem = jsonl.stem
    for lang in wanted:
        entries = track(records, lang, chinese)
        cues = cues_of(entries, style)
        for fmt in formats:
            name = f"{stem}.{fmt}" if lang is None else f"{stem}.{_infix(lang)}.{fmt}"
            path = out_dir / name
            try:
                _write(path, render(fmt, entries, cues, marks))
            except OSError as e:
                raise SubtitlesError(f"{path}: cannot be written: {e.strerror}") from None
            written[fmt if lang is None else f"{lang}.{fmt}"] = path
    return written
