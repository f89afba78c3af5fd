"""Wires one session: source → segmenter → streaming policy ⇄ Whisper → sinks, and the
finals → translation stage → sinks.

Threads: the capture loop (source + VAD, cheap) runs in the caller's thread; one
decode thread runs Whisper, which releases the GIL. Both touch the policy under
one lock; captions are handed to the sinks under that lock too, so every sink
sees them in ``seq`` order. Sinks must be quick (a file append, a queue put).

With translation targets, a third thread (``TranslationWorker``) translates each
final after it was published: the final never waits. Its result comes back as a
``kind="translation"`` caption of the same id with the next ``seq``, handed to the
sinks under the same lock. Only sinks with ``accepts_translations = True`` get those
(a sink that knows only partials and finals is not handed a kind it cannot show).
"""

from __future__ import annotations

import dataclasses
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
from .translate import (TranslateSettings, TranslationConfigError, TranslationResult, TranslationStage,
                        TranslationWorker, build_stage, parse_overrides)
from .vad import Segmenter, VadOptions

log = logging.getLogger("subtitler")

# Seconds a live session's end waits for the translations still queued.
TRANSLATION_DRAIN_S = 30.0


class Sink(Protocol):
    def on_caption(self, caption: Caption) -> None: ...


def accepts_translations(sink) -> bool:
    """Whether a sink takes ``kind="translation"`` captions (it says so with an attribute)."""
    return bool(getattr(sink, "accepts_translations", False))


def load_asr(config: Config, progress: bool = True) -> WhisperASR:
    """Resolve and load the Whisper model once per process."""
    a = config.asr
    path = resolve_model(a.model, a.models_dir, progress=progress)
    asr = WhisperASR(path, a.device, a.compute_type, a.cpu_threads,
                     Thresholds(a.no_speech_threshold, a.logprob_threshold, a.compression_ratio_threshold),
                     a.encoder)
    if a.language != "auto" and a.language not in asr.languages:
        raise ValueError(f"asr.language = '{a.language}' is not a language of model '{a.model}'; "
                         f"allowed: auto, {', '.join(asr.languages)}")
    return asr


def translate_settings(config: Config) -> TranslateSettings:
    t = config.translate
    return TranslateSettings(targets=list(t.targets), backend=t.backend, overrides=parse_overrides(t.overrides),
                             model=t.model, models_dir=t.models_dir, device=t.device,
                             compute_type=t.compute_type, beam_size=t.beam_size, cpu_threads=t.cpu_threads,
                             max_pending=t.max_pending, slow_s=t.slow_s)


def load_translation(config: Config, asr: WhisperASR | None) -> TranslationStage | None:
    """Build the translation stage once per process (None without targets). Every target is
    checked here: one that nothing can produce raises TranslationConfigError before any audio."""
    if not config.translate.targets:
        return None
    if config.asr.task == "translate":
        raise TranslationConfigError(
            "asr.task = 'translate' turns the captions into English, so there is no source text to "
            "translate from; keep asr.task = 'transcribe' and add 'en' to translate.targets instead")
    source = None if config.asr.language == "auto" else config.asr.language
    stage = build_stage(translate_settings(config), asr=asr, glossary=config.glossary, source=source)
    if stage is not None:
        stage.warmup()
    return stage


def vad_options(config: Config) -> VadOptions:
    v = config.vad
    return VadOptions(frame_ms=v.frame_ms, aggressiveness=v.aggressiveness, start_ms=v.start_ms,
                      pre_roll_ms=v.pre_roll_ms, pause_ms=v.pause_ms, end_silence_ms=v.end_silence_ms,
                      min_speech_ms=v.min_speech_ms, max_utterance_s=v.max_utterance_s, tail_db=v.tail_db)


def streaming_options(config: Config, live: bool) -> StreamingOptions:
    a = config.asr
    # The glossary's terms are hotwords too: Whisper hears "Chongqing" rather than "Chung King".
    prompt = " ".join(p for p in (a.initial_prompt.strip(), a.hotwords.strip(), config.glossary.hotwords()) if p)
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
    ``stop()`` is called, then finishes the utterance in flight (and, with a ``translation``
    stage, the translations still queued) and returns."""

    def __init__(self, asr: WhisperASR, source: AudioSource, sinks: Iterable[Sink], config: Config,
                 on_stats: Callable[[SessionStats], None] | None = None, stats_interval: float = 0.5,
                 translation: TranslationStage | None = None):
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
        # translation
        self.stage = translation
        self._translate = config.translate
        self._worker: TranslationWorker | None = None
        self._keep_audio = translation is not None and translation.uses_audio
        self._final_audio: dict[int, object] = {}  # utterance id → audio of its latest final-grade decode
        self._partials: dict[int, Caption] = {}  # utterance id → its latest published partial
        self._translations_open = False
        self.translations = 0  # translation captions published
        self.translation_errors = 0  # targets marked missing on them

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
        if self.stage is not None:
            t = self._translate
            # Live, the newest captions matter: a backlog beyond max_pending is skipped (and
            # marked). A file loses nothing: every final is translated, however long it takes.
            self._worker = TranslationWorker(self.stage, self._on_translation,
                                             max_pending=t.max_pending if self.live else None,
                                             partial_interval=t.partial_interval if t.partials else None)
            self._translations_open = True
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
            self._finish_translations()
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
                    if self._keep_audio and (job.final or job.may_finalize) and decoding.rejected != "abandoned":
                        # the audio behind the final this decode may become, for speech translation
                        self._final_audio[job.utterance_id] = job.audio
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
        """Hand the policy's new captions to the sinks and the finals to translation (under the lock)."""
        for caption in self.policy.drain():
            self._deliver(caption)
            if self._worker is None:
                continue
            if caption.is_final:
                self._partials.pop(caption.id, None)
                audio = self._final_audio.pop(caption.id, None)
                for uid in [u for u in self._final_audio if u < caption.id]:  # skipped or retracted
                    del self._final_audio[uid]
                if caption.text.strip():
                    self._worker.submit(caption, audio)  # returns at once: the final is out already
            elif caption.kind == "partial":
                self._partials[caption.id] = caption
                self._worker.submit_partial(caption)

    def _deliver(self, caption: Caption) -> None:
        translation = caption.is_translation
        for sink in self.sinks:
            if translation and not accepts_translations(sink):
                continue
            try:
                sink.on_caption(caption)
            except Exception:  # one broken sink must not stop the captions for the others
                log.exception("sink %r failed on caption %s", sink, caption.id)

    # -- translation ----------------------------------------------------------------------
    def _on_translation(self, caption: Caption, result: TranslationResult) -> None:
        """From the worker thread: publish a caption's translations as an update of its id."""
        with self._cond:
            if not self._translations_open:
                return  # the session ended without waiting for this one
            if caption.kind == "partial":
                self._on_partial_translation(caption, result)
                return
            update = result.caption(caption, seq=self.policy.next_seq(), emitted=self.now())
            self.translations += 1
            self.translation_errors += len(update.translation_errors)
            self._deliver(update)

    def _on_partial_translation(self, caption: Caption, result: TranslationResult) -> None:
        # Only while this partial is still the one on the screens: a newer partial or the final
        # has replaced it otherwise, and an old line must not come back.
        if self._partials.get(caption.id) is not caption or not result.translations:
            return
        translations = {**caption.translations, **result.translations}
        if translations == caption.translations:
            return  # nothing changed: no screen update
        update = dataclasses.replace(caption, seq=self.policy.next_seq(), emitted=self.now(),
                                     translations=translations)
        self._partials[caption.id] = update
        self._deliver(update)

    def _finish_translations(self) -> None:
        """After the decoder: let the queued translations come out, then stop the worker."""
        worker = self._worker
        if worker is None:
            return
        done = worker.close(timeout=TRANSLATION_DRAIN_S if self.live else None)
        with self._cond:
            self._translations_open = False
            self._final_audio.clear()
            self._partials.clear()
        if not done:
            log.warning("translation did not finish within %.0f s of the end; %d caption(s) left untranslated",
                        TRANSLATION_DRAIN_S, worker.pending)

    def stats(self) -> SessionStats:
        with self._cond:
            return SessionStats(audio_seconds=self.segmenter.audio_time, lag=self.policy.lag(),
                                dropped_frames=self.source.dropped_blocks,
                                utterances=self.policy.finals + self.policy.waiting_count,
                                finals=self.policy.finals, in_speech=self.segmenter.in_speech,
                                level_db=self.segmenter.level_db, paused=self._paused,
                                language=self.policy.o.language or "auto")
