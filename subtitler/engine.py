"""Wires one session: source → segmenter → streaming policy ⇄ Whisper → sinks.

Threads: the capture loop (source + VAD, cheap) runs in the caller's thread; one
decode thread runs Whisper, which releases the GIL. Both touch the policy under
one lock; captions are handed to the sinks under that lock too, so every sink
sees them in ``seq`` order. Sinks must be quick (a file append, a queue put).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from .asr import Thresholds, WhisperASR
from .audio import AudioSource
from .captions import Caption, SessionStats
from .config import Config
from .models import resolve_model
from .streaming import StreamingOptions, StreamingPolicy
from .vad import Segmenter, VadOptions

log = logging.getLogger("subtitler")


class Sink(Protocol):
    def on_caption(self, caption: Caption) -> None: ...


def load_asr(config: Config, progress: bool = True) -> WhisperASR:
    """Resolve and load the Whisper model once per process."""
    a = config.asr
    path = resolve_model(a.model, a.models_dir, progress=progress)
    asr = WhisperASR(path, a.device, a.compute_type, a.cpu_threads,
                     Thresholds(a.no_speech_threshold, a.logprob_threshold, a.compression_ratio_threshold))
    if a.language != "auto" and a.language not in asr.languages:
        raise ValueError(f"asr.language = '{a.language}' is not a language of model '{a.model}'; "
                         f"allowed: auto, {', '.join(asr.languages)}")
    return asr


def vad_options(config: Config) -> VadOptions:
    v = config.vad
    return VadOptions(frame_ms=v.frame_ms, aggressiveness=v.aggressiveness, start_ms=v.start_ms,
                      pre_roll_ms=v.pre_roll_ms, pause_ms=v.pause_ms, end_silence_ms=v.end_silence_ms,
                      min_speech_ms=v.min_speech_ms, max_utterance_s=v.max_utterance_s)


def streaming_options(config: Config, live: bool) -> StreamingOptions:
    a = config.asr
    prompt = " ".join(p for p in (a.initial_prompt.strip(), a.hotwords.strip()) if p)
    return StreamingOptions(partial_interval=a.partial_interval if live else 0.0,
                            first_partial_s=a.first_partial_s, beam_size=a.beam_size,
                            language=None if a.language == "auto" else a.language, task=a.task,
                            prompt=prompt, condition_on_previous=a.condition_on_previous,
                            max_lag_s=a.max_lag_s if live else None, speculate=live)


@dataclass
class SessionResult:
    finals: int
    audio_seconds: float
    dropped_blocks: int
    skipped_utterances: int
    max_lag: float


class Session:
    """One captioning session over one source. ``run()`` blocks until the input ends or
    ``stop()`` is called, then finishes the utterance in flight and returns."""

    def __init__(self, asr: WhisperASR, source: AudioSource, sinks: Iterable[Sink], config: Config,
                 on_stats: Callable[[SessionStats], None] | None = None, stats_interval: float = 0.5):
        self.asr, self.source, self.sinks = asr, source, list(sinks)
        self.live = source.realtime
        self.segmenter = Segmenter(vad_options(config))
        self.policy = StreamingPolicy(streaming_options(config, self.live))
        self._cond = threading.Condition()
        self._input_done = False
        self._t0 = time.monotonic()
        self._on_stats, self._stats_interval = on_stats, stats_interval
        self.max_lag = 0.0
        self.error: BaseException | None = None
        self._paused = False

    def now(self) -> float:
        return time.monotonic() - self._t0

    def stop(self) -> None:
        self.source.stop()

    # -- control (from the console; any thread) --------------------------------------------
    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop captioning: the utterance in progress is finished, later audio is ignored."""
        self._paused = True  # the capture thread ends the utterance at its next block

    def resume(self) -> None:
        self._paused = False

    def set_language(self, language: str | None) -> None:
        """Fix the spoken language (a code) or detect it per utterance (None / 'auto')."""
        language = None if language in (None, "", "auto") else language
        if language is not None and language not in self.asr.languages:
            raise ValueError(f"'{language}' is not a language of this model; allowed: auto, "
                             f"{', '.join(self.asr.languages)}")
        with self._cond:
            self.policy.set_language(language)

    # -- threads --------------------------------------------------------------------------
    def run(self) -> SessionResult:
        self._t0 = time.monotonic()
        decoder = threading.Thread(target=self._decode_loop, name="subtitler-decode", daemon=True)
        decoder.start()
        next_stats = 0.0
        try:
            for block in self.source:
                if self._paused:  # keep the clock and the level meter, caption nothing
                    events = self.segmenter.flush()
                    self.segmenter.skip(block)
                else:
                    events = self.segmenter.push(block)
                with self._cond:
                    for ev in events:
                        self.policy.on_event(ev, self.now())
                    self.policy.on_audio_time(self.segmenter.audio_time)
                    self._publish()
                    if events:
                        self._cond.notify_all()
                    if not self.live:  # a file read faster than it decodes: wait, lose nothing
                        while self.policy.waiting_seconds() > 5.0 and self.error is None:
                            self._cond.wait(0.1)
                if self._on_stats and self.now() >= next_stats:
                    next_stats = self.now() + self._stats_interval
                    self._on_stats(self.stats())
                if self.error is not None:
                    break
        finally:
            with self._cond:
                for ev in self.segmenter.flush():
                    self.policy.on_event(ev, self.now())
                self._publish()
                self._input_done = True
                self._cond.notify_all()
            decoder.join()
        if self.error is not None:
            raise self.error
        return SessionResult(self.policy.finals, self.segmenter.audio_time, self.source.dropped_blocks,
                             self.policy.skipped_utterances, self.max_lag)

    def _decode_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while True:
                        job = self.policy.next_job(self.now())
                        self._publish()
                        if job is not None:
                            break
                        if self._input_done and self.policy.idle:
                            return
                        self._cond.wait(0.02)  # partials are due by the clock, not only by events
                decoding = self.asr.decode(job.audio, language=job.language, prior=job.prior,
                                           task=job.task, beam_size=job.beam_size, prefix=job.prefix,
                                           prompt=job.prompt, fallback=job.fallback,
                                           abandon=lambda: self._stale(job))
                with self._cond:
                    self.policy.on_result(job, decoding, self.now())
                    self.max_lag = max(self.max_lag, self.policy.lag())
                    self._publish()
                    self._cond.notify_all()
        except BaseException as e:  # surface model failures in run(), never hang the session
            log.exception("decoding failed")
            with self._cond:
                self.error = e
                self._cond.notify_all()
            self.source.stop()

    def _stale(self, job) -> bool:
        with self._cond:
            return self.policy.is_stale(job)

    def _publish(self) -> None:
        for caption in self.policy.drain():
            for sink in self.sinks:
                try:
                    sink.on_caption(caption)
                except Exception:  # one broken sink must not stop the captions for the others
                    log.exception("sink %r failed on caption %s", sink, caption.id)

    def stats(self) -> SessionStats:
        with self._cond:
            return SessionStats(audio_seconds=self.segmenter.audio_time, lag=self.policy.lag(),
                                dropped_frames=self.source.dropped_blocks,
                                utterances=self.policy.finals + self.policy.waiting_count,
                                finals=self.policy.finals, in_speech=self.segmenter.in_speech,
                                level_db=self.segmenter.level_db, paused=self._paused,
                                language=self.policy.o.language or "auto")
