"""Subtitle cues: a caption cut into lines and cues as a subtitle editor would cut it.

Pure: text, times and the rules in; cues out. Lines are measured in display columns (a CJK
character is two, as in a terminal or a fixed-width subtitle grid), with a line length per
language in that language's own characters: 16 full-width characters for Chinese, 13 for
Japanese, 16 for Korean, 42 for languages written with spaces.

Where lines break, best first:
  * after a sentence's end (。！？ . ! ?), then after a clause (，、；： , ; :);
  * at a space (languages written with spaces; Korean breaks only there: keep-all);
  * between two Chinese words;
  * between two CJK characters (Chinese and Japanese need no space to break).
Never inside a Latin word or a number set in Chinese text (``GPU``, ``3.5``, ``2026年`` keeps
``2026`` whole), never before closing punctuation or after an opening bracket (kinsoku), and
no space is ever added between CJK characters. Only a word wider than a whole line is cut.
Chinese is cut between words where it can (中国 stays whole): the words are jieba's, the
segmenter most Chinese NLP uses, loaded at the first Chinese caption that needs a break (about
2 s and 70 MB, once per process).

Among the cuts with the fewest cues, lines come out of even length (a full line and a stub of
two characters reads badly) and cue boundaries fall at sentence ends where they can. Each cue
gets a share of the caption's time in proportion to its width; with the next caption's start
known, a caption too short to read is stretched into the silence after it, up to the reading
time of its language (9 characters a second for Chinese, 17 for English), never over the next
(``math.inf`` for the last caption of a track: its full reading time). ``placed`` turns cues
into the whole milliseconds a file holds; the live files and a re-cut both use it, so they
agree to the millisecond.
"""

from __future__ import annotations

import functools
import logging
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Mapping

from wcwidth import wcwidth

from .langcodes import base_language, canonical

# Line length in the language's own characters (full-width ones for CJK).
LINE_CHARS: dict[str, int] = {"zh": 16, "yue": 16, "ja": 13, "ko": 16}
# Reading speed, characters a second (Netflix's timed-text style guides).
READING_CPS: dict[str, float] = {"zh": 9.0, "yue": 9.0, "ja": 4.0, "ko": 12.0}
# Languages whose line lengths count full-width characters (two columns each).
WIDE_LANGUAGES = frozenset({"zh", "yue", "ja", "ko"})
# Languages that break lines only between words (spaces), never between two characters.
KEEP_WORDS_LANGUAGES = frozenset({"ko"})
# Languages whose lines break between words found by a segmenter (jieba's Chinese dictionary).
SEGMENTED_LANGUAGES = frozenset({"zh", "yue"})

# Closing marks: never at the start of a line; they stay with what they close. Japanese small
# kana and the prolonged sound mark are held the same way (line-break: strict).
_NO_START = set("，。、；：！？）】」』》〉〕｝”’…‥—～·・%‰℃°,.;:!?)]}>"
                "ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶーヽヾゝゞ々〻")
# Opening marks: never at the end of a line.
_NO_END = set("（【「『《〈〔｛“‘([{<")
_SENTENCE_END = set("。！？!?．.…")
_CLAUSE_END = set("，、；：,;:）」』】》〉”’)]")

# Break costs (lower is better); a cue boundary costs three times a line break.
_COST_SENTENCE, _COST_CLAUSE, _COST_SPACE, _COST_CHAR, _COST_IN_WORD = 0.0, 1.0, 2.0, 4.0, 9.0
_CUE_BREAK = 3.0
_RAGGED = 8.0  # weight of the lines' deviation from an even length


def char_width(ch: str) -> int:
    """Display columns of one character: 2 for CJK, 0 for a combining mark, 1 otherwise
    (a control character counts as 1: it must not make a line look shorter than it is)."""
    w = wcwidth(ch)
    return 1 if w < 0 else w


def display_width(text: str) -> int:
    """Display columns of ``text`` ("重庆GPU" is 7)."""
    return sum(char_width(ch) for ch in text)


def _family(lang: str) -> str:
    base = base_language(lang or "")
    return {"zho": "zh", "cmn": "zh", "jpn": "ja", "kor": "ko"}.get(base, base)


@dataclass(frozen=True)
class CueRules:
    """How one language's captions are cut: ``line_width`` display columns a line,
    ``max_lines`` lines a cue, ``keep_words``: break only at spaces (Korean);
    ``chars_per_second``/``min_cue_s``: the time a cue needs to be read."""

    line_width: int = 42
    max_lines: int = 2
    keep_words: bool = False
    segment_words: bool = False  # Chinese: prefer breaks between words (jieba), not inside one
    chars_per_second: float = 17.0
    min_cue_s: float = 0.8

    def __post_init__(self):
        if self.line_width < 1 or self.max_lines < 1:
            raise ValueError("a line must be at least 1 column wide and a cue at least 1 line")
        if self.chars_per_second <= 0 or self.min_cue_s < 0:
            raise ValueError("reading speed must be positive and the minimum cue time not negative")

    def reading_time(self, lines: tuple[str, ...]) -> float:
        """Seconds a cue of ``lines`` needs on screen."""
        chars = sum(len(line.replace(" ", "")) for line in lines)
        return max(self.min_cue_s, chars / self.chars_per_second)


@dataclass(frozen=True)
class CueStyle:
    """The cue settings of every language (``[output]``): a line length and a reading speed
    by language, with the ones for languages written with spaces as the default."""

    max_line_chars: int = 42
    max_lines: int = 2
    line_chars: Mapping[str, int] = field(default_factory=lambda: dict(LINE_CHARS))
    chars_per_second: float = 17.0
    reading_cps: Mapping[str, float] = field(default_factory=lambda: dict(READING_CPS))
    min_cue_s: float = 0.8

    def _lookup(self, table: Mapping, lang: str):
        """``table``'s entry for ``lang``: the exact code, then its language ('zh-Hant' → 'zh')."""
        by_code = {canonical(k): v for k, v in table.items()}
        for key in (canonical(lang or ""), base_language(lang or ""), _family(lang)):
            if key in by_code:
                return by_code[key]
        return None

    def rules(self, lang: str = "") -> CueRules:
        """The rules for captions in ``lang`` (a Whisper code, ``zh-Hant``, ``pt-BR`` …)."""
        chars = self._lookup(self.line_chars, lang) or self.max_line_chars
        wide = _family(lang) in WIDE_LANGUAGES
        cps = self._lookup(self.reading_cps, lang) or self.chars_per_second
        return CueRules(line_width=chars * (2 if wide else 1), max_lines=self.max_lines,
                        keep_words=_family(lang) in KEEP_WORDS_LANGUAGES,
                        segment_words=_family(lang) in SEGMENTED_LANGUAGES,
                        chars_per_second=cps, min_cue_s=self.min_cue_s)


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


def placed(cues: list[Cue], after_ms: int = 0) -> list[tuple[int, int]]:
    """Each cue's (start, end) in whole milliseconds, clamped so that cues never overlap, go
    back or vanish: none starts before ``after_ms`` (where the track's previous cue ended), and
    each lasts at least 1 ms."""
    out: list[tuple[int, int]] = []
    for cue in cues:
        start = max(round(cue.start * 1000), after_ms)
        after_ms = max(round(cue.end * 1000), start + 1)
        out.append((start, after_ms))
    return out


def clean(text: str) -> str:
    """One line, single spaces: a newline (or a blank line) inside a cue would end it early in
    SRT/VTT, and "-->" would be read as a timing line."""
    return " ".join(text.split()).replace("-->", "->")


# -- atoms: the pieces a line is never broken inside ---------------------------------------------

@dataclass
class _Atom:
    text: str
    width: int
    space: bool  # a space before it in the text (kept as the line's space, or eaten by a break)
    start: int = 0  # where it begins in the text


def _is_wide(ch: str) -> bool:
    return char_width(ch) == 2 or unicodedata.east_asian_width(ch) in ("W", "F")


def _atoms(text: str, keep_words: bool) -> list[_Atom]:
    """``text`` (cleaned) as unbreakable pieces: a Latin word or number is one piece, each CJK
    character another (with the punctuation that may not be parted from it); in ``keep_words``
    mode every space-separated word is one piece."""
    pieces: list[tuple[str, bool, int]] = []  # (text, space before, where it begins)
    offset = 0
    for n, word in enumerate(text.split(" ")):
        at, offset = offset, offset + len(word) + 1
        if not word:
            continue
        space = n > 0
        if keep_words:
            pieces.append((word, space, at))
            continue
        run, run_at, first = "", at, len(pieces)  # pieces[first:] are this word's
        for i, ch in enumerate(word, at):
            if char_width(ch) == 0 and not run and len(pieces) > first:
                pieces[-1] = (pieces[-1][0] + ch, *pieces[-1][1:])  # a combining mark stays on its letter
                continue
            if _is_wide(ch):  # each CJK character is a piece; a Latin word or number stays one
                if run:
                    pieces.append((run, space, run_at))
                    space, run = False, ""
                pieces.append((ch, space, i))
                space = False
            else:
                if not run:
                    run_at = i
                run += ch
        if run:
            pieces.append((run, space, run_at))
    # Kinsoku: closing marks join the piece before them, opening marks the piece after.
    glued: list[list] = []
    pending_open, pending_space, pending_at = "", False, 0
    for piece, space, at in pieces:
        if piece[0] in _NO_START and glued and not space and not pending_open:
            glued[-1][0] += piece
            continue
        if pending_open and space:  # "( x": the space stays, the mark stands alone
            glued.append([pending_open, pending_space, pending_at])
            pending_open = ""
        if piece in _NO_END:
            if not pending_open:
                pending_space, pending_at = space, at
            pending_open += piece
            continue
        if pending_open:
            glued.append([pending_open + piece, pending_space, pending_at])
            pending_open = ""
        else:
            glued.append([piece, space, at])
    if pending_open:  # an opening mark at the very end has nothing to hold on to
        glued.append([pending_open, pending_space, pending_at])
    return [_Atom(t, display_width(t), s, at) for t, s, at in glued]


@functools.lru_cache(maxsize=1)
def _segmenter():
    """jieba, quiet, or None where it is not installed (lines then break between any two
    characters, as before)."""
    try:
        import jieba
    except ImportError:
        return None
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def _word_starts(text: str) -> frozenset[int] | None:
    """Where the words of a Chinese ``text`` begin, or None without a segmenter."""
    jieba = _segmenter()
    if jieba is None:
        return None
    starts, pos = set(), 0
    for word in jieba.cut(text):
        starts.add(pos)
        pos += len(word)
    return frozenset(starts) if pos == len(text) else None


def _fit(atoms: list[_Atom], width: int) -> list[_Atom]:
    """Cut a piece wider than a whole line (a URL, a run of digits) into line-wide chunks."""
    out: list[_Atom] = []
    for atom in atoms:
        if atom.width <= width:
            out.append(atom)
            continue
        chunk, w, space, at = "", 0, atom.space, atom.start
        for i, ch in enumerate(atom.text, atom.start):
            cw = char_width(ch)
            if chunk and w + cw > width:
                out.append(_Atom(chunk, w, space, at))
                chunk, w, space, at = "", 0, False, i
            chunk, w = chunk + ch, w + cw
        if chunk:
            out.append(_Atom(chunk, w, space, at))
    return out


def _break_cost(before: _Atom, after: _Atom, words: frozenset[int] | None) -> float:
    last = before.text[-1]
    if last in _SENTENCE_END:
        return _COST_SENTENCE
    if last in _CLAUSE_END:
        return _COST_CLAUSE
    if after.space:
        return _COST_SPACE
    return _COST_IN_WORD if words is not None and after.start not in words else _COST_CHAR


def _line_text(atoms: list[_Atom]) -> str:
    return "".join((" " if a.space and i else "") + a.text for i, a in enumerate(atoms))


def _greedy_lines(atoms: list[_Atom], width: int) -> int:
    """The fewest lines the atoms fit in (greedy filling is optimal for that)."""
    lines, used = 0, 0
    for i, a in enumerate(atoms):
        need = a.width + (1 if a.space and used else 0)
        if used and used + need <= width:
            used += need
        else:
            lines, used = lines + 1, a.width
    return lines


def _lines(atoms: list[_Atom], width: int, budget: int, max_lines: int,
           words: frozenset[int] | None = None) -> list[list[_Atom]]:
    """The atoms in at most ``budget`` lines of ``width`` columns at the least cost: break costs
    (a cue boundary's weighted) plus the lines' squared deviation from an even length."""
    n = len(atoms)
    total = sum(a.width for a in atoms) + sum(1 for a in atoms[1:] if a.space)
    even = max(1.0, total / budget)
    inf = float("inf")
    # best[k][j]: least cost of atoms[:j] in k lines; back[k][j]: where line k starts
    best = [[inf] * (n + 1) for _ in range(budget + 1)]
    back = [[0] * (n + 1) for _ in range(budget + 1)]
    best[0][0] = 0.0
    for k in range(1, budget + 1):
        prev_row, row, brow = best[k - 1], best[k], back[k]
        for j in range(1, n + 1):
            w = 0
            for i in range(j - 1, -1, -1):  # the line holds atoms[i:j]
                w += atoms[i].width + (1 if i < j - 1 and atoms[i + 1].space else 0)
                if w > width:
                    break
                if prev_row[i] == inf:
                    continue
                cost = prev_row[i] + _RAGGED * ((even - w) / even) ** 2
                if j < n:
                    b = _break_cost(atoms[j - 1], atoms[j], words)
                    cost += b * (_CUE_BREAK if k % max_lines == 0 else 1.0)
                if cost < row[j]:
                    row[j], brow[j] = cost, i
    k = min(range(1, budget + 1), key=lambda k: best[k][n])
    out: list[list[_Atom]] = []
    j = n
    while k:
        i = back[k][j]
        out.append(atoms[i:j])
        j, k = i, k - 1
    return out[::-1]


def cut_lines(text: str, rules: CueRules) -> list[tuple[str, ...]]:
    """``text`` as cues' lines: the fewest cues of at most ``rules.max_lines`` lines of
    ``rules.line_width`` columns, lines even, breaks where a subtitle editor would put them."""
    text = clean(text)
    atoms = _fit(_atoms(text, rules.keep_words), rules.line_width)
    if not atoms:
        return []
    fewest = _greedy_lines(atoms, rules.line_width)
    words = _word_starts(text) if rules.segment_words and fewest > 1 else None
    cues_needed = math.ceil(fewest / rules.max_lines)
    # A one-cue caption keeps its line count (a short sentence stays on one line); longer
    # ones fill every cue, so lines and cues come out of similar length.
    budget = fewest if cues_needed == 1 else cues_needed * rules.max_lines
    lines = [_line_text(line) for line in _lines(atoms, rules.line_width, budget, rules.max_lines, words)]
    return [tuple(lines[i:i + rules.max_lines]) for i in range(0, len(lines), rules.max_lines)]


def split_cues(text: str, start: float, end: float, max_chars: "int | CueStyle | None" = None, max_lines: int = 2,
               *, lang: str = "", rules: CueRules | None = None, next_start: float | None = None) -> list[Cue]:
    """Cut ``text`` (in ``lang``) into cues timed over [start, end].

    ``rules`` say how; else ``style.rules(lang)`` for a ``CueStyle`` given as ``max_chars``
    (every language's settings, as ``[output]`` has them), else the defaults with a line of
    ``max_chars`` characters for languages written with spaces (42 columns; 16 Chinese
    characters …). Each cue's share of the span is
    proportional to its width, so a cue stays on screen about as long as it takes to say; the
    spans are contiguous. When the caption is shorter than its reading time and
    ``next_start`` (the next caption's start) is known, it is stretched up to that reading
    time, never past ``next_start``; the last cue ends at that end. Empty text gives no cues.
    """
    if rules is None and isinstance(max_chars, CueStyle):
        rules = max_chars.rules(lang)
    elif rules is None:
        if (max_chars is not None and max_chars < 1) or max_lines < 1:
            raise ValueError("max_chars and max_lines must be at least 1")
        rules = CueStyle(max_line_chars=max_chars or 42, max_lines=max_lines).rules(lang)
    groups = cut_lines(text, rules)
    if not groups:
        return []
    weights = [sum(display_width(line) for line in g) for g in groups]
    if next_start is not None:
        need = sum(rules.reading_time(g) for g in groups)
        end = max(end, min(start + need, max(end, next_start)))
    cues, done, t0 = [], 0, start
    for i, (group, weight) in enumerate(zip(groups, weights)):
        done += weight
        t1 = end if i == len(groups) - 1 else start + (end - start) * done / sum(weights)
        cues.append(Cue(t0, t1, group))
        t0 = t1
    return cues
