"""Translation of final captions into the configured target languages.

    stage = build_stage(TranslateSettings(targets=["es", "fr", "en"]), asr=asr, glossary=glossary,
                        source=None)            # raises TranslationConfigError at start
    result = stage.translate("Hola a todos.", "es", audio=utterance_audio)
    result.translations   # {"es": "Hola a todos.", "fr": "...", "en": "..."}
    result.errors         # {target: why it is missing} — a failing backend never raises

Backends (``Translator``): ``CTranslate2Translator`` (NLLB-200, M2M-100, OPUS-MT),
``ApertiumTranslator`` (Debian's rule-based pairs), ``WhisperTranslator`` (speech → en).
``TranslationWorker`` runs a stage on its own thread so the source caption is published first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import GlossaryStyle, TranslationConfigError, TranslationError, Translator
from .glossary import Glossary, Protected
from .stage import (AUTO_ORDER, AUTO_ORDER_EN, BACKEND_NAMES, SentenceCache, TranslationResult, TranslationStage,
                    TranslationWorker, split_sentences)

__all__ = [
    "AUTO_ORDER", "AUTO_ORDER_EN", "BACKEND_NAMES", "Glossary", "GlossaryStyle", "Protected", "SentenceCache",
    "TranslateSettings", "TranslationConfigError", "TranslationError", "TranslationResult", "TranslationStage",
    "TranslationWorker", "Translator", "build_stage", "model_names", "parse_overrides", "split_sentences",
]


@dataclass
class TranslateSettings:
    """The ``[translate]`` section of config.toml."""

    targets: list[str] = field(default_factory=list)  # Whisper codes: ["es", "fr", "zh"]
    backend: str = "auto"  # auto, ctranslate2, apertium, whisper
    overrides: dict[str, str] = field(default_factory=dict)  # target → backend, e.g. {"en": "whisper"}
    model: str = ""  # CTranslate2 model(s), comma-separated: names in models_dir (nllb-200-distilled-600M,
    # opus-mt-en-es …) or folders
    models_dir: str = "models"
    device: str = "auto"
    compute_type: str = "auto"
    beam_size: int = 2
    cpu_threads: int = 0
    max_pending: int = 8  # captions waiting beyond this are skipped (and marked)
    slow_s: float = 2.0  # a backend call longer than this is logged


def parse_overrides(value) -> dict[str, str]:
    """Per-target backends from config: a table {"en": "whisper"}, a list ["en=whisper"] or
    the text "en=whisper, ca=apertium" (for --set). Names are checked here; targets by the stage."""
    if isinstance(value, dict):
        items = list(value.items())
    else:
        parts = value.split(",") if isinstance(value, str) else list(value or [])
        items = []
        for part in parts:
            if not isinstance(part, str) or "=" not in part:
                raise TranslationConfigError(f"translate.overrides: {part!r} is not target=backend "
                                             f"(e.g. \"en=whisper\")")
            target, _, backend = part.partition("=")
            items.append((target, backend))
    out = {}
    for target, backend in items:
        target, backend = str(target).strip(), str(backend).strip()
        if backend not in BACKEND_NAMES:
            raise TranslationConfigError(f"translate.overrides: unknown backend '{backend}' for '{target}'; "
                                         f"choose one of {', '.join(BACKEND_NAMES)}")
        out[target] = backend
    return out


def model_names(value: str) -> list[str]:
    """``translate.model``: one model, or several separated by commas (OPUS-MT pairs, one per
    target: "opus-mt-en-es, opus-mt-en-fr")."""
    return list(dict.fromkeys(n.strip() for n in (value or "").split(",") if n.strip()))


def build_stage(settings: TranslateSettings, *, asr=None, glossary: Glossary | None = None,
                source: str | None = None) -> TranslationStage | None:
    """Load the backends the settings need and check every target; None when there are no
    targets. ``asr`` (a WhisperASR) enables the Whisper backend; ``source`` is the fixed
    spoken language, or None when it is detected per utterance."""
    if not settings.targets:
        return None
    from .. import models
    from . import apertium

    wanted = {settings.backend, *settings.overrides.values()}
    glossary = glossary or Glossary()
    backends = []
    names = model_names(settings.model)
    if names:
        from .ct2 import CTranslate2Models, CTranslate2Translator, resolve_translation_model

        loaded = []
        for name in names:
            try:
                path = resolve_translation_model(name, settings.models_dir)
            except models.ModelNotFoundError as e:
                raise TranslationConfigError(str(e)) from None
            loaded.append(CTranslate2Translator(path, device=settings.device, compute_type=settings.compute_type,
                                                beam_size=settings.beam_size, cpu_threads=settings.cpu_threads))
        backends.append(loaded[0] if len(loaded) == 1 else CTranslate2Models(loaded))
    elif "ctranslate2" in wanted:
        raise TranslationConfigError("translate: backend 'ctranslate2' needs a model: set translate.model "
                                     "(e.g. 'nllb-200-distilled-600M', fetched by `subtitler models pull`)")
    if apertium.available() and apertium.installed_pairs():
        backends.append(apertium.ApertiumTranslator())
    elif "apertium" in wanted:
        raise TranslationConfigError(f"translate: backend 'apertium' is not installed or has no pair: "
                                     f"{apertium.INSTALL_HINT}")
    if asr is not None:
        from .whisper_en import WhisperTranslator

        backends.append(WhisperTranslator(asr, prompt=glossary.hotwords()))
    elif "whisper" in wanted:
        raise TranslationConfigError("translate: backend 'whisper' needs the Whisper model")
    try:
        stage = TranslationStage(settings.targets, backends, backend=settings.backend,
                                 overrides=settings.overrides, glossary=glossary, source=source,
                                 slow_s=settings.slow_s)
    except TranslationConfigError:
        for b in backends:
            if hasattr(b, "close"):
                b.close()
        raise
    return stage

