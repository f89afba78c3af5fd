"""A setting: a dataclass field that says what it accepts.

Each stage's options class (``vad.VadOptions``, ``translate.TranslateConfig``, config.py's
sections) declares its fields with ``setting(...)``; the field's metadata (help text, bounds,
choices, kind) is what ``config.py``'s one validator checks a value from the file or the
command line against, and what config.toml's comments are written from. So a new setting is
one line in the stage that uses it. Pure: imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import field

# CTranslate2's compute types, for Whisper ([asr]) and the translation models ([translate]).
COMPUTE_TYPES = ["auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
                 "int16", "float16", "bfloat16", "float32"]

# What a value must be when the default does not say it (a default of None: "unset").
KINDS = ("bool", "int", "float", "text", "list", "language")


def setting(default, help: str, *, choices=None, lo=None, hi=None, kind: str | None = None, pattern=None,
            empty_ok: bool = False):
    """A dataclass field with its metadata.

    ``kind``: the value's kind when the default's type does not tell it — "list" (a list of
    texts, each one of ``choices`` or matching ``pattern``), "language" (a language code or
    'auto'), or "bool"/"int"/"float"/"text" for a default of None (unset, falls back to
    another setting). ``empty_ok``: an empty list is a valid value (e.g. no translation targets).
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi, "kind": kind, "pattern": pattern,
            "empty_ok": empty_ok}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def is_setting(f) -> bool:
    """Whether a dataclass field was declared with ``setting`` (others are not settable)."""
    return "help" in f.metadata
