"""A session: one room on a host of its own, for what captions one source and ends with it.

``subtitler transcribe`` (a file) and the tests of one source use it: the given model, one
``Room``, and the ``Host`` decode thread that lives as long as the session. A venue
(``subtitler run`` / ``serve``) builds its ``Host`` once and its rooms through ``venue.Venue``.
"""

from __future__ import annotations

from typing import Callable, Iterable

from .asr import WhisperASR
from .audio import AudioSource
from .captions import SessionStats
from .config import Config
from .host import Host, check_translation, load_asr
from .room import Room, SessionResult, Sink, accepts_translations
from .translate import TranslationStage, build_stage

__all__ = ["Session", "SessionResult", "Sink", "accepts_translations", "load_asr", "load_translation"]


def load_translation(config: Config, asr: WhisperASR | None) -> TranslationStage | None:
    """Build the translation stage once per process (None without targets). Every target is
    checked here: one that nothing can produce raises TranslationConfigError before any audio."""
    if not config.translate.targets:
        return None
    check_translation(config)
    source = None if config.asr.language == "auto" else config.asr.language
    stage = build_stage(config.translate, asr=asr, glossary=config.glossary, source=source)
    if stage is not None:
        stage.warmup()
    return stage


class Session(Room):
    """One source captioned on ``asr`` by a host of its own; ``run()`` as ``Room.run``."""

    def __init__(self, asr: WhisperASR, source: AudioSource, sinks: Iterable[Sink], config: Config,
                 on_stats: Callable[[SessionStats], None] | None = None, stats_interval: float = 0.5,
                 translation: TranslationStage | None = None, name: str = "main"):
        super().__init__(Host(asr, config=config), name, source, sinks, config, on_stats=on_stats,
                         stats_interval=stats_interval, translation=translation)

    def run(self) -> SessionResult:
        try:
            return super().run()
        finally:
            self.host.stop()
