"""Language codes as every part of subtitler takes them: one pattern, one equality.

A code is Whisper's (``es``, ``zh``, ``yue``), a regional or script variant (``zh-Hant``,
``pt-BR``), or a translation model family's own (``zho_Hant``, ``epo``). ``-`` and ``_`` are
the same separator and case does not matter when two codes are compared: ``zh_hant`` is
``zh-Hant``. ``web/client.js`` holds the same rule for the pages (a browser test keeps the
two equal). Pure: imports nothing.
"""

from __future__ import annotations

import re

# 2–3 letters, then up to three subtags of 2–8 letters or digits (script, region, variant).
LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$")


def is_language_code(code: object) -> bool:
    return isinstance(code, str) and LANGUAGE_CODE.fullmatch(code) is not None


def canonical(code: str) -> str:
    """The form codes are compared in: ``zh_Hant`` → ``zh-hant``."""
    return code.replace("_", "-").lower()


def same_language(a: str, b: str) -> bool:
    """'es' and 'ES': nothing to translate. 'zh' and 'zh-Hant' differ (a script to change)."""
    return canonical(a) == canonical(b)


# -- Chinese scripts ------------------------------------------------------------------------------
# Chinese is one written language in two scripts: a code names the script outright (zh-Hans,
# zh-Hant, NLLB's zho_Hant) or through a region that uses it (zh-CN, zh-TW, zh-HK); plain
# ``zh`` is whichever script the session writes (``[output] chinese``).
_CHINESE = frozenset({"zh", "zho", "cmn"})
_SIMPLIFIED = frozenset({"hans", "cn", "sg", "my"})
_TRADITIONAL = frozenset({"hant", "tw", "hk", "mo"})


def base_language(code: str) -> str:
    """The language without script or region: ``zh-Hant`` → ``zh``, ``pt_BR`` → ``pt``."""
    return canonical(code).split("-")[0]


def is_chinese(code: str) -> bool:
    """Written Chinese in either script (zh, zh-Hans, zh-TW, zho_Hant, cmn); not Cantonese."""
    return isinstance(code, str) and base_language(code) in _CHINESE


def chinese_script(code: str) -> str | None:
    """'simplified' or 'traditional' when a Chinese code names its script or a region that
    fixes it (zh-Hans, zh-CN, zh-SG / zh-Hant, zh-TW, zh-HK, zh-MO), else None (zh, or not
    Chinese)."""
    if not is_chinese(code):
        return None
    subtags = set(canonical(code).split("-")[1:])
    if subtags & _TRADITIONAL:
        return "traditional"
    if subtags & _SIMPLIFIED:
        return "simplified"
    return None


def same_words(a: str, b: str) -> bool:
    """Whether text in ``a`` is text in ``b`` once its script is changed, with nothing to
    translate: the same language (see ``same_language``), or two scripts of Chinese (zh and
    zh-Hant: a character conversion, not a translation)."""
    return same_language(a, b) or (is_chinese(a) and is_chinese(b))
