"""The one vocabulary every stage and sink speaks.

Times come in two clocks, and every caption carries both:
  * audio time: seconds into the session's audio (``start``/``end``), as counted by
    the samples that reached the segmenter;
  * wall time: ``emitted``, seconds since the session started on the wall clock, at
    the moment the caption was published. On a real-time input ``emitted - end`` is
    the caption's latency.

This module imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

SAMPLE_RATE = 16000  # every stage after the audio source works on 16 kHz mono int16

# "translation": the translations of a final, published after it as an update of the same id
# (same times, text and lang as the final; ``translations`` holds every target that came out,
# ``translation_errors`` says why any other target is missing).
CaptionKind = Literal["partial", "final", "translation"]


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech cut by the segmenter, as 16 kHz mono int16 samples."""

    id: int
    start: float  # audio seconds of the first sample (pre-roll included)
    end: float  # audio seconds just past the last voiced frame
    audio: "object"  # numpy int16 array; typed loosely so this module needs no numpy

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Caption:
    """A caption for one utterance; partials and the final share the utterance's id.

    ``committed`` is the stable prefix of a partial (later partials keep it);
    ``tentative`` is the tail that later decodes may still rewrite. For a final,
    ``text`` is everything and ``tentative`` is empty; the final is decoded afresh and
    may correct a committed word.

    ``translations`` maps a target language to the caption's text in it. A final is published
    at once with none; its translations follow as a ``kind="translation"`` caption of the same
    id (a later ``seq``), whose ``translation_errors`` maps each target that is missing to why
    (a backend failed, timed out, or translation fell behind).
    """

    id: int  # utterance id
    seq: int  # session-wide publication order, strictly increasing
    kind: CaptionKind
    start: float
    end: float
    emitted: float
    lang: str
    text: str
    committed: str = ""
    tentative: str = ""
    translations: dict[str, str] = field(default_factory=dict)
    translation_errors: dict[str, str] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.kind == "final"

    @property
    def is_translation(self) -> bool:
        return self.kind == "translation"

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("start", "end", "emitted"):
            d[key] = round(d[key], 3)
        return d


@dataclass(frozen=True)
class SessionStats:
    """A periodic health report of a running session (for the terminal and metrics)."""

    audio_seconds: float  # audio received so far
    lag: float  # audio seconds received but not yet covered by a decode
    dropped_frames: int  # audio blocks lost because the capture queue was full
    utterances: int
    finals: int
    in_speech: bool
    level_db: float  # recent input level, dBFS
    paused: bool = False
    language: str = "auto"  # the source language setting in force
    skipped_utterances: int = 0  # utterances skipped (never decoded) to keep the lag bounded
    skipped_seconds: float = 0.0  # their audio
    audio_idle_s: float | None = None  # seconds since the source last delivered audio (None: none yet)
