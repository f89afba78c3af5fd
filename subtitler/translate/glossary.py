"""Names and terms that must be heard right and come out of translation as specified.

A ``[glossary]`` table in config.toml::

    [glossary]
    terms = ["Chongqing", "SCO", "Subtitler Pro"]
    [glossary.es]            # fixed translations into one language (optional)
    SCO = "OCS"
    [glossary.zh]
    Chongqing = "重庆"

* ``hotwords()`` is the text given to Whisper (hotwords / prompt), so the terms are spelled
  right in the transcript.
* Chinese terms are found in either script: ``重庆`` in the config matches 重庆 and 重慶 in the
  text (a Taiwan session's captions are written in Traditional, Whisper's own output is often
  mixed), and ``[glossary.en] 重慶 = "Chongqing"`` is the fixed form of the term ``重庆``
  (OpenCC's conversions, as ``chinese.py`` uses them).
* ``protect`` / ``restore`` carry the terms through a translation backend:

  - ``placeholder`` style (Apertium, rule-based): each term becomes a made-up capitalised word
    (``Zqxa``, ``Zqxb`` …). A rule-based system copies an unknown word unchanged, and treats it
    as the proper noun the term usually is; ``restore`` puts the term back (or its fixed
    translation), whatever case or unknown-word mark the backend gave it.
  - ``inline`` style (neural MT, Whisper): the term is written in the source as it must come
    out in that target (its fixed translation, or itself), since neural models copy such
    spans far better than opaque placeholders; ``restore`` then corrects the spelling of any
    copy that came out with another case or other accents.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Mapping

from ..langcodes import base_language
from ..langcodes import canonical as canonical_code
from .base import GlossaryStyle

# Letters only: Apertium splits a digit off a word, and the stem is in no dictionary.
PLACEHOLDER_STEM = "Zqx"


def _placeholder(i: int) -> str:
    letters = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        letters = chr(ord("a") + r) + letters
    return PLACEHOLDER_STEM + letters


_HAN = re.compile("[\u3400-\u9fff\uf900-\ufaff]")  # Chinese characters (CJK ideographs)
_CJK_TEXT = re.compile("[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]")  # Han, kana, Hangul


def _simplified(text: str) -> str:
    """Chinese characters in Simplified (OpenCC, as the captions are converted); the text as it
    is where OpenCC is missing (the room stops at start then, saying so)."""
    from ..chinese import ChineseScriptError, convert

    try:
        return convert(text, "zh-Hans")
    except ChineseScriptError:
        return text


def _script_variants(term: str) -> set[str]:
    """A term as each Chinese script writes it (重庆, 重慶): the text may hold any of them."""
    if not _HAN.search(term):
        return {term}
    from ..chinese import ChineseScriptError, convert

    try:
        return {term, *(convert(term, code) for code in ("zh-Hans", "zh-Hant", "zh-HK"))}
    except ChineseScriptError:
        return {term}


@functools.lru_cache(maxsize=4096)
def _fold(text: str) -> str:
    """Lower case without accents, Chinese in Simplified, for matching spellings."""
    if _HAN.search(text):
        text = _simplified(text)
    t = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in t if not unicodedata.combining(ch))


@dataclass(frozen=True)
class Protected:
    """A text prepared for one backend call: ``text`` goes to the backend; ``terms`` are the
    glossary terms found in it, in order (placeholder i stands for terms[i])."""

    text: str
    terms: tuple[str, ...]
    style: GlossaryStyle


@dataclass
class Glossary:
    terms: list[str] = field(default_factory=list)
    # language → {term: fixed translation}
    translations: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for term in [*self.terms, *(t for table in self.translations.values() for t in table)]:
            term = " ".join(str(term).split())
            if term and _fold(term) not in seen:
                seen[_fold(term)] = term
        self.terms = list(seen.values())
        forms: set[str] = set()
        for term in self.terms:  # a Chinese term in each script it may be written in
            for variant in _script_variants(term):
                seen.setdefault(_fold(variant), term)
                forms.add(variant)
        self._canonical = seen  # folded (any script) → as written
        # Longest first, so "SCO summit" wins over "SCO".
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(_term_pattern, ordered)), re.IGNORECASE) if ordered else None

    @classmethod
    def from_config(cls, table: Mapping | None) -> "Glossary":
        """Build from the ``[glossary]`` table; a wrong shape is a ValueError naming the key."""
        table = dict(table or {})
        terms = table.pop("terms", [])
        if isinstance(terms, str):
            terms = [t.strip() for t in terms.split(",")]
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise ValueError("glossary.terms must be a list of texts, e.g. terms = [\"Chongqing\", \"SCO\"]")
        translations: dict[str, dict[str, str]] = {}
        for lang, fixed in table.items():
            if not isinstance(fixed, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in fixed.items()):
                raise ValueError(f"glossary.{lang} must be a table of term = \"translation\" "
                                 f"(e.g. [glossary.{lang}] SCO = \"…\")")
            translations[lang] = {" ".join(k.split()): v.strip() for k, v in fixed.items()}
        return cls(terms=[t for t in terms if t.strip()], translations=translations)

    def __bool__(self) -> bool:
        return bool(self.terms)

    # -- for Whisper -----------------------------------------------------------------------
    def hotwords(self, lang: str | None = None) -> str:
        """The terms as Whisper's hotwords / prompt text: 'Chongqing, SCO, Subtitler Pro.'; with
        ``lang``, as they must be written in it (Whisper translating 重庆 into English is
        prompted with its fixed English form, 'Chongqing')."""
        terms = list(dict.fromkeys(self.fixed(t, lang) for t in self.terms)) if lang else self.terms
        return ", ".join(terms) + "." if terms else ""

    # -- for translation -------------------------------------------------------------------
    def fixed(self, term: str, lang: str) -> str:
        """How ``term`` must be written in ``lang``: its fixed translation, else itself."""
        # the table of that very code (zh-Hant), else of its language (zh), codes compared as langcodes does
        tables = {canonical_code(code): t for code, t in self.translations.items()}
        table = tables.get(canonical_code(lang)) or tables.get(base_language(lang)) or {}
        canonical = self._canonical.get(_fold(term), term)
        for key, value in table.items():
            if _fold(key) == _fold(canonical):
                return value
        return canonical

    def unprotected(self, targets: list[str]) -> dict[str, list[str]]:
        """Terms written in Chinese, Japanese or Korean characters → the targets (other than those
        languages) with no fixed form for them. Translated out of the term's language, such a term
        comes out as the model makes of it: only a fixed form is written into the model's input."""
        out: dict[str, list[str]] = {}
        for term in self.terms:
            if not _CJK_TEXT.search(term):
                continue
            missing = [t for t in targets if base_language(t) not in ("zh", "yue", "ja", "ko")
                       and _fold(self.fixed(term, t)) == _fold(term)]
            if missing:
                out[term] = missing
        return out

    def find(self, text: str) -> list[str]:
        """The glossary terms in ``text``, in order, as the glossary writes them."""
        if self._pattern is None:
            return []
        return [self._canonical[_fold(" ".join(m.group(0).replace("-", " ").split()))]
                for m in self._pattern.finditer(text)
                if _fold(" ".join(m.group(0).replace("-", " ").split())) in self._canonical]

    def protect(self, text: str, style: GlossaryStyle = "placeholder", target: str | None = None) -> Protected:
        """``text`` with its glossary terms made safe for a backend of ``style`` (``inline``
        needs the ``target``, whose fixed translations are written in)."""
        if self._pattern is None or (style == "placeholder" and PLACEHOLDER_STEM.lower() in _fold(text)):
            return Protected(text, (), style)  # (a text holding the stem itself is left alone)
        terms: list[str] = []

        def swap(m: re.Match) -> str:
            key = _fold(" ".join(m.group(0).replace("-", " ").split()))
            term = self._canonical.get(key)
            if term is None:
                return m.group(0)
            terms.append(term)
            if style == "placeholder":
                return _placeholder(len(terms) - 1)
            form = self.fixed(term, target) if target else term
            if _HAN.search(form) and _fold(form) == _fold(m.group(0)):
                return m.group(0)  # no other form for this target: the term as written, in its script
            return form

        return Protected(self._pattern.sub(swap, text), tuple(terms), style)

    def restore(self, translated: str, protected: Protected, target: str) -> str:
        """The backend's output with every protected term as the glossary says for ``target``."""
        if not protected.terms:
            return translated
        if protected.style == "placeholder":
            def put_back(m: re.Match) -> str:
                index = _index(m.group(1))
                if index >= len(protected.terms):
                    return m.group(0)
                return self.fixed(protected.terms[index], target)

            # whole words, also right against Chinese characters ("届Zqxa在"), where \b sees none
            return re.sub(f"[*#@~]?(?<!{_SPACED_WORD}){PLACEHOLDER_STEM}([a-z]+)(?!{_SPACED_WORD})", put_back,
                          translated, flags=re.IGNORECASE)
        # inline: the expected forms, matched case- and accent-blind, spelled exactly.
        out = unicodedata.normalize("NFD", translated)
        for form in sorted({self.fixed(t, target) for t in protected.terms}, key=len, reverse=True):
            if form.split():
                out = re.sub(_loose(form), lambda m, f=form: unicodedata.normalize("NFD", f), out,
                             flags=re.IGNORECASE)
        return unicodedata.normalize("NFC", out)


def _spaced(ch: str) -> bool:
    """Whether ``ch`` belongs to a script that spaces its words (below the CJK blocks)."""
    return ord(ch) < 0x2E80


# A letter or digit of a script that spaces its words: what a whole word may not touch ("SCO"
# is not in "scooter", but is in "SCO代表团").
_SPACED_WORD = "[^\\W\u2e80-\U0010ffff]"


def _term_pattern(term: str) -> str:
    """A regex for a glossary term in text: whole words where its script spaces them ("SCO",
    not "scooter"); a Chinese or Japanese term anywhere, since "在重庆举行" has no word
    boundary around 重庆."""
    head = f"(?<!{_SPACED_WORD})" if _spaced(term[0]) else ""
    tail = f"(?!{_SPACED_WORD})" if _spaced(term[-1]) else ""
    return head + r"[\s\-]*".join(map(re.escape, term.split())) + tail


def _index(letters: str) -> int:
    n = 0
    for ch in letters.lower():
        n = n * 26 + (ord(ch) - ord("a") + 1)
    return n - 1


def _loose(form: str) -> str:
    """A regex for ``form`` in NFD text: any case, any accents, spaces or hyphens between words."""
    words = []
    for word in form.split():
        base = unicodedata.normalize("NFD", word)
        words.append("".join(re.escape(ch) + r"[\u0300-\u036f]*" for ch in base if not unicodedata.combining(ch)))
    # Word boundaries where the script spaces its words; "在重庆举行" has none to match.
    head = f"(?<!{_SPACED_WORD})" if _spaced(form[0]) else ""
    tail = f"(?!{_SPACED_WORD})" if _spaced(form[-1]) else ""
    return head + r"[\s\-]*".join(words) + tail
