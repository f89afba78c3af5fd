"""What every translation backend is: the protocol and the two errors."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

GlossaryStyle = Literal["placeholder", "inline"]


class TranslationError(RuntimeError):
    """A backend could not translate this caption (the message says why); the session goes on."""


class TranslationConfigError(ValueError):
    """The translation settings cannot work (a target nothing can produce, an unknown backend,
    a model that cannot be loaded): raised at start, before any audio is captioned."""


@runtime_checkable
class Translator(Protocol):
    """A translation backend: one call translates one caption into all of its targets.

    Language codes are Whisper's (``en``, ``es``, ``zh`` …); each backend maps them to its own.
    ``glossary_style`` says how glossary terms survive it: ``placeholder`` (rule-based MT copies
    an unknown word unchanged) or ``inline`` (neural MT copies a term written in the target
    language; Whisper hears it through its prompt).
    """

    name: str
    glossary_style: GlossaryStyle

    def can_target(self, target: str) -> bool:
        """Whether some source language can be translated into ``target``."""

    def supports(self, source: str, target: str) -> bool:
        """Whether ``source`` → ``target`` can be translated."""

    def describe(self) -> str:
        """One line on what this backend is and can do (for error messages and logs)."""

    def translate(self, text: str, source: str, targets: list[str], *, audio=None) -> dict[str, str]:
        """``text`` in ``source`` → {target: translation} for every target; raises TranslationError.
        ``audio`` is the utterance's 16 kHz samples, for backends that translate speech."""
