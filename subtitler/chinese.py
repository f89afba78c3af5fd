"""Chinese as its readers expect it: Simplified or Traditional characters, and a prompt that
steers Whisper towards punctuated text.

Whisper writes Mandarin in Traditional or mixed characters, often without punctuation. A
mainland audience reads Simplified, a Taiwan or Hong Kong one Traditional. ``[output] chinese``
says which script plain ``zh`` is written in (``simplified`` by default, ``traditional``, or
``as-is`` for Whisper's own output); a code that names its script (``zh-Hans``, ``zh-Hant``,
``zh-TW``, ``zh-HK``) is always written in it. The conversion is OpenCC's (the maintained
dictionaries with phrase tables: 軟體 → 软件, not only character for character), applied once
where a caption is made (``ScriptConverter.caption``), so the screens, the files and the
translations all read the same text.

A Chinese source gets ``INITIAL_PROMPT`` as Whisper's initial prompt (unless the config sets
one): a Simplified sentence with full-width punctuation, which Whisper continues in kind.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from .captions import Caption
from .langcodes import canonical, chinese_script, is_chinese

SCRIPTS = ("simplified", "traditional", "as-is")

# Whisper continues its prompt's style: a Simplified sentence with full-width punctuation
# ("What follows is a Mandarin speech, in Simplified characters, with punctuation.").
INITIAL_PROMPT = "以下是普通话的演讲，使用简体中文，并加上标点符号。"

# OpenCC's configurations: Whisper's Traditional is mostly Taiwan usage, so Simplified is made
# with Taiwan's phrases turned into the mainland's (tw2sp: 軟體 → 软件); Traditional in the
# target region's own characters and phrases.
_TO_SIMPLIFIED = "tw2sp"
_TO_TRADITIONAL = {"hk": "s2hk", "mo": "s2hk", "tw": "s2twp"}
_TO_TRADITIONAL_DEFAULT = "s2twp"  # zh-Hant: the Taiwan standard, the most read Traditional


class ChineseScriptError(RuntimeError):
    """OpenCC is missing or broken: the fix is to install it."""


@functools.lru_cache(maxsize=None)
def _opencc(config: str):
    try:
        import opencc
    except ImportError:
        raise ChineseScriptError("Chinese script conversion needs OpenCC, which subtitler depends on: "
                                 "pip install opencc (or reinstall subtitler: bash scripts/install.sh)") from None
    try:
        return opencc.OpenCC(config if config.endswith(".json") else config + ".json")
    except Exception as e:  # a build without its dictionaries
        raise ChineseScriptError(f"OpenCC could not load its '{config}' conversion ({e}); reinstall it: "
                                 f"pip install --force-reinstall opencc") from None


def _conversion(lang: str, chinese: str) -> str | None:
    """The OpenCC configuration that writes text in ``lang`` as it should be, or None."""
    if not is_chinese(lang):
        return None
    script = chinese_script(lang) or (None if chinese == "as-is" else chinese)
    if script == "simplified":
        return _TO_SIMPLIFIED
    if script == "traditional":
        regions = set(canonical(lang).split("-")[1:])
        return next((_TO_TRADITIONAL[r] for r in regions if r in _TO_TRADITIONAL), _TO_TRADITIONAL_DEFAULT)
    return None


# Chinese punctuation is full-width. Whisper often writes "各位來賓, 女士們," with half-width
# marks and spaces: a mark right after a CJK character becomes its full-width form (not in
# "3.5" or "GPT-4o, AI"), and spaces between CJK characters go (Chinese puts none).
_CJK = "\u2e80-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef"
_FULL_WIDTH = {",": "，", ".": "。", "?": "？", "!": "！", ";": "；", ":": "："}
_HALF_MARK = re.compile(f"(?<=[{_CJK}])[ \t]*([,.?!;:])(?![0-9A-Za-z.])[ \t]*")
_CJK_SPACE = re.compile(f"(?<=[{_CJK}])[ \t]+(?=[{_CJK}])")


def punctuate(text: str) -> str:
    """Chinese punctuation as Chinese is set: '大家好, 欢迎 各位.' → '大家好，欢迎各位。'."""
    text = _HALF_MARK.sub(lambda m: _FULL_WIDTH[m.group(1)], text)
    text = _CJK_SPACE.sub("", text)
    if len(text) > 1 and text[-1] in ".?!" and text[-2] != "." and re.search(f"[{_CJK}]", text):
        text = text[:-1] + _FULL_WIDTH[text[-1]]  # a Chinese sentence ends in a full-width mark: "3.5%。"
    return text


def convert(text: str, lang: str, chinese: str = "simplified") -> str:
    """``text`` in ``lang`` written in the script it should be, with Chinese punctuation:
    '會議開始, 歡迎' in zh → '会议开始，欢迎'; text in any other language is returned as it is
    (and with ``as-is``, plain ``zh`` too)."""
    config = _conversion(lang, chinese)
    if config is None or not text:
        return text
    return punctuate(_opencc(config).convert(text))


def initial_prompt(language: str | None) -> str:
    """Whisper's initial prompt for a source in ``language``: ``INITIAL_PROMPT`` for Chinese,
    else ''."""
    return INITIAL_PROMPT if language and is_chinese(language) else ""


@dataclasses.dataclass(frozen=True)
class ScriptConverter:
    """Writes every caption's Chinese in its script: the text in the caption's language, each
    translation in its target's (``zh`` per ``chinese``, ``zh-Hant`` Traditional …)."""

    chinese: str = "simplified"

    def __post_init__(self):
        if self.chinese not in SCRIPTS:
            raise ValueError(f"chinese = {self.chinese!r}; allowed: {', '.join(SCRIPTS)}")

    def check(self) -> None:
        """Load the conversions a session may need now, so a missing OpenCC stops it at start."""
        for lang in ("zh", "zh-Hans", "zh-Hant", "zh-HK"):
            config = _conversion(lang, self.chinese)
            if config is not None:
                _opencc(config)

    def text(self, text: str, lang: str) -> str:
        return convert(text, lang, self.chinese)

    def translations(self, translations: dict[str, str]) -> dict[str, str]:
        return {lang: convert(text, lang, self.chinese) for lang, text in translations.items()}

    def caption(self, caption: Caption) -> Caption:
        """``caption`` with its Chinese converted (the same object when it holds none)."""
        own = _conversion(caption.lang, self.chinese) is not None
        if not own and not any(_conversion(lang, self.chinese) for lang in caption.translations):
            return caption
        changes: dict = {"translations": self.translations(caption.translations)}
        if own and not caption.is_translation:  # an update's text is its final's, converted already
            changes.update(text=self.text(caption.text, caption.lang),
                           committed=self.text(caption.committed, caption.lang),
                           tentative=self.text(caption.tentative, caption.lang))
        return dataclasses.replace(caption, **changes)
