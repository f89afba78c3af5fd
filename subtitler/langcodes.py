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
