"""Translation of final captions into the configured target languages.

    stage = build_stage(TranslateConfig(targets=["es", "fr", "en"]), asr=asr, glossary=glossary,
                        source=None)            # raises TranslationConfigError at start
    result = stage.translate("Hola a todos.", "es", audio=utterance_audio)
    result.translations   # {"es": "Hola a todos.", "fr": "...", "en": "..."}
    result.errors         # {target: why it is missing} — a failing backend never raises

Backends (``Translator``): ``CTranslate2Translator`` (NLLB-200, M2M-100, OPUS-MT),
``ApertiumTranslator`` (Debian's rule-based pairs), ``WhisperTranslator`` (speech → en).
``TranslationWorker`` runs a stage on its own thread so the source caption is published first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..langcodes import LANGUAGE_CODE
from ..settings import COMPUTE_TYPES, setting
from .base import GlossaryStyle, TranslationConfigError, TranslationError, Translator
from .glossary import Glossary, Protected
from .stage import (AUTO_ORDER, AUTO_ORDER_EN, BACKEND_NAMES, SentenceCache, TranslationResult, TranslationStage,
                    TranslationWorker, split_sentences)

__all__ = [
    "AUTO_ORDER", "AUTO_ORDER_EN", "BACKEND_NAMES", "Glossary", "GlossaryStyle", "Protected", "SentenceCache",
    "TranslateConfig", "TranslationConfigError", "TranslationError", "TranslationResult", "TranslationStage",
    "TranslationWorker", "Translator", "build_stage", "model_names", "parse_overrides", "split_sentences",
]


@dataclass(frozen=True)
class TranslateConfig:
    """The ``[translate]`` section of config.toml, as ``build_stage`` and the engine take it.

    Each field's metadata (help, bounds, choices) is what the config validator checks."""

    targets: list = setting([], "languages every final caption is translated into, e.g. [\"en\", \"zh\", \"es\"]; "
                                "[] = no translation", kind="list", pattern=LANGUAGE_CODE, empty_ok=True)
    backend: str = setting("auto", "auto = the CTranslate2 model when set, else Whisper for en, else Apertium",
                           choices=list(BACKEND_NAMES))
    # The config's form ("target=backend" texts); ``parsed_overrides`` is the checked mapping.
    overrides: list = setting([], "per-target backends, e.g. [\"en=whisper\", \"es=apertium\"]",
                              kind="list", pattern=re.compile(r"^[^=\s]+\s*=\s*[a-z0-9]+$"), empty_ok=True)
    model: str = setting("", "CTranslate2 model: a name in models_dir (nllb-200-distilled-600M, m2m100_418M, "
                             "opus-mt-en-es, …; `subtitler models pull NAME`) or a folder; several separated by "
                             "commas, each target taken by the first that has it (on a CPU an OPUS-MT pair "
                             "takes ~0.1 s a caption, NLLB-600M ~0.6 s); '' = none")
    models_dir: str = setting("models", "where `subtitler models pull` puts translation models")
    device: str = setting("auto", "where the CTranslate2 model runs", choices=["auto", "cpu", "cuda"])
    compute_type: str = setting("auto", "auto = int8_float16 on CUDA, int8 on CPU", choices=COMPUTE_TYPES)
    beam_size: int = setting(2, "beam width of the CTranslate2 model", lo=1, hi=16)
    cpu_threads: int = setting(0, "CPU threads for the CTranslate2 model; 0 = all cores", lo=0, hi=256)
    max_pending: int = setting(8, "live: finals waiting for translation beyond this are skipped (and marked)",
                               lo=1, hi=10000)
    slow_s: float = setting(2.0, "a backend call slower than this is logged", lo=0.1, hi=600.0)
    partials: bool = setting(False, "translate partial captions too (text backends only; a translated line "
                                    "changes only when its source sentence changed)")
    partial_interval: float = setting(1.0, "seconds between partial translations, at least", lo=0.1, hi=60.0)

    @property
    def parsed_overrides(self) -> dict[str, str]:
        """``overrides`` as {target: backend}; TranslationConfigError for a malformed one."""
        return parse_overrides(self.overrides)


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


def build_stage(settings: TranslateConfig, *, asr=None, glossary: Glossary | None = None,
                source: str | None = None) -> TranslationStage | None:
    """Load the backends the settings need and check every target; None when there are no
    targets. ``asr`` (a WhisperASR) enables the Whisper backend; ``source`` is the fixed
    spoken language, or None when it is detected per utterance."""
    if not settings.targets:
        return None
    from .. import models
    from . import apertium

    overrides = settings.parsed_overrides
    wanted = {settings.backend, *overrides.values()}
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

        # Whisper writes English: prompted with the terms' English forms (重庆 → "Chongqing")
        backends.append(WhisperTranslator(asr, prompt=glossary.hotwords("en")))
    elif "whisper" in wanted:
        raise TranslationConfigError("translate: backend 'whisper' needs the Whisper model")
    try:
        stage = TranslationStage(settings.targets, backends, backend=settings.backend,
                                 overrides=overrides, glossary=glossary, source=source,
                                 slow_s=settings.slow_s)
    except TranslationConfigError:
        for b in backends:
            if hasattr(b, "close"):
                b.close()
        raise
    return stage

