"""One room: source → segmenter → streaming policy → sinks, decoded by its host's model.

A room owns what is its own: the audio source, the VAD segmenter, the streaming policy, the
captions' sinks (transcripts, screens, terminal), the translation of its finals into its
targets, and the console's controls (pause, resume, language). It owns no model: the
``Host`` it belongs to runs every room's decodes on one Whisper model, asking each room what
it has due (``due``), taking the job (``take_job``) and handing the result back
(``finish_job``).

Threads: ``run()`` is the capture loop (source + VAD, cheap) in the caller's thread; the
host's decode thread calls in from its own. Both touch the policy under the room's lock, and
put the captions it produced into the room's outbox there; the room's delivery thread hands
them to the sinks, in ``seq`` order, so a slow sink never holds up capture or decoding (it
only delays the sinks after it). Sinks should still be quick (a queue put): the transcript
writer and the screens' channel each hand the work to a thread of their own.

A clock thread reports the room's stats every ``stats_interval`` whether audio comes or not;
when a live source goes quiet mid-utterance (a sender gone, a stalled device) for
``AUDIO_STALL_S``, it ends that utterance, so its final comes out and the status stops saying
"speech".

With translation targets, a ``TranslationWorker`` thread translates each final after it was
published: the final never waits. Its result comes back as a ``kind="translation"`` caption
of the same id with the next ``seq``. Only sinks with ``accepts_translations = True`` get
those (a sink that knows only partials and finals is not handed a kind it cannot show).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from .asr import Decoding
from .audio import AudioSource
from .captions import SAMPLE_RATE, Caption, SessionStats
from .chinese import ScriptConverter
from .config import Config
from .streaming import DecodeJob, SkippedSpeech, StreamingOptions, StreamingPolicy
from .translate import TranslationResult, TranslationStage, TranslationWorker
from .vad import Segmenter

if TYPE_CHECKING:  # the host imports rooms; a room only calls back into it
    from .host import Host

log = logging.getLogger("subtitler")

# Seconds a live session's end waits for the translations still queued.
TRANSLATION_DRAIN_S = 30.0
# A file read faster than it decodes waits while this much speech is waiting for its finals.
FILE_BACKLOG_S = 5.0
# A live source that delivers nothing for this long mid-utterance has stopped: end the utterance.
AUDIO_STALL_S = 2.0


class Sink(Protocol):
    def on_caption(self, caption: Caption) -> None: ...


def accepts_translations(sink) -> bool:
    """Whether a sink takes ``kind="translation"`` captions (it says so with an attribute)."""
    return bool(getattr(sink, "accepts_translations", False))


class Delivery:
    """Hands a room's captions to its sinks from a thread of its own, in the order posted.
    ``post`` is called under the room's lock (so the order is ``seq`` order) and only queues;
    a slow or hung sink delays the sinks, never capture or decoding."""

    def __init__(self, sinks: list, name: str):
        self.sinks, self.name = sinks, name
        self._queue: deque[Caption] = deque()
        self._cond = threading.Condition()  # taken inside the room's lock, never around it
        self._thread: threading.Thread | None = None
        self._stopping = False

    def post(self, caption: "Caption | SkippedSpeech") -> None:
        with self._cond:
            self._queue.append(caption)
            self._cond.notify_all()

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"subtitler-deliver-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Hand out what was posted, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
            for caption in batch:
                self.deliver(caption)

    def deliver(self, caption: "Caption | SkippedSpeech") -> None:
        if isinstance(caption, SkippedSpeech):  # for the sinks that mark it (the transcripts)
            for sink in self.sinks:
                mark = getattr(sink, "on_skipped", None)
                if mark is None:
                    continue
                try:
                    mark(caption.start, caption.end, caption.seconds)
                except Exception:
                    log.exception("sink %r failed on skipped speech at %.1f s", sink, caption.start)
            return
        translation = caption.is_translation
        for sink in self.sinks:
            if translation and not accepts_translations(sink):
                continue
            try:
                sink.on_caption(caption)
            except Exception:  # one broken sink must not stop the captions for the others
                log.exception("sink %r failed on caption %s", sink, caption.id)


@dataclass
class SessionResult:
    finals: int
    audio_seconds: float
    dropped_blocks: int
    skipped_utterances: int
    max_lag: float
    skipped_seconds: float = 0.0


class Room:
    """One room's captioning over one source. ``run()`` blocks until the input ends or
    ``stop()`` is called, then waits for the host to decode the utterance in flight (and,
    with a ``translation`` stage, for the translations still queued) and returns."""

    def __init__(self, host: "Host", name: str, source: AudioSource, sinks: Iterable[Sink], config: Config, *,
                 on_stats: Callable[[SessionStats], None] | None = None, stats_interval: float = 0.5,
                 translation: TranslationStage | None = None):
        self.host, self.name, self.source, self.sinks = host, name, source, list(sinks)
        self.asr = host.asr
        self.live = source.realtime
        self.segmenter = Segmenter(config.vad)
        self.policy = StreamingPolicy(StreamingOptions.from_config(config.asr, config.glossary, self.live))
        self._cond = threading.Condition()
        self._delivery = Delivery(self.sinks, name)  # the sinks, out of the room's lock
        self._capture = threading.Lock()  # the segmenter: the capture loop, or the clock on a stall
        self._last_audio: float | None = None  # monotonic time of the latest block
        self._clock: threading.Thread | None = None
        self._clock_stop = threading.Event()
        self._input_done = False
        self._t0 = time.monotonic()
        self._on_stats, self._stats_interval = on_stats, stats_interval
        self.max_lag = 0.0
        self.error: BaseException | None = None
        self._paused = False
        self.decodes = 0  # decodes the host ran for this room
        self.decode_seconds = 0.0
        # translation
        self.stage = translation
        self.script = ScriptConverter(config.output.chinese)  # zh in Simplified (or as configured)
        self.script.check()  # a missing OpenCC stops the room now, not at its first Chinese caption
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

    # -- the capture loop -----------------------------------------------------------------
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
        self._delivery.start()
        self.host.attach(self)
        self._start_clock()
        first = True
        try:
            for block in self.source:
                with self._capture:
                    self._last_audio = time.monotonic()
                    if first:
                        # The session clock starts with its first audio (the block just captured), not
                        # when the room began waiting: a remote sender may connect much later, and
                        # `emitted − end` must be the latency there as it is for a microphone.
                        self._t0 = self._last_audio - len(block) / SAMPLE_RATE
                        first = False
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
                        if not self.live:  # a file read faster than it decodes: wait, lose nothing
                            while self.policy.waiting_seconds() > FILE_BACKLOG_S and self.error is None:
                                self.host.wake()
                                self._cond.wait(0.1)
                if events:
                    self.host.wake()
                if self.error is not None:
                    break
        finally:
            with self._capture, self._cond:
                for ev in self.segmenter.flush():
                    self.policy.on_event(ev, self.now())
                self._publish()
                self._input_done = True
            self.host.wake()
            with self._cond:  # the host decodes what is left; a model failure ends the wait
                while not self.policy.idle and self.error is None and self.host.running:
                    self._cond.wait(0.1)
            self.host.detach(self)
            self._finish_translations()
            self._stop_clock()
            self._delivery.stop()  # everything published reaches the sinks before run() returns
        if self.error is not None:
            raise self.error
        return SessionResult(self.policy.finals, self.segmenter.audio_time, self.source.dropped_blocks,
                             self.policy.skipped_utterances, self.max_lag, self.policy.skipped_seconds)

    # -- the clock: stats while no audio comes, and the end of a stalled utterance ------------------
    def _start_clock(self) -> None:
        self._clock_stop.clear()
        self._clock = threading.Thread(target=self._tick, name=f"subtitler-clock-{self.name}", daemon=True)
        self._clock.start()

    def _stop_clock(self) -> None:
        self._clock_stop.set()
        if self._clock is not None:
            self._clock.join(5.0)
        if self._on_stats:  # the final word: nothing in speech, the lag as it ended
            self._report_stats()

    def _tick(self) -> None:
        skipped = 0
        while not self._clock_stop.wait(self._stats_interval):
            self._end_stalled_utterance()
            if self._on_stats:
                self._report_stats()
            with self._cond:
                now_skipped, seconds = self.policy.skipped_utterances, self.policy.skipped_seconds
            if now_skipped > skipped:  # said as it happens, not only in the summary at the end
                log.warning("room %s: %d utterance(s) skipped to keep up with live audio (%d, %.1f s of audio "
                            "in all): decoding is slower than the speech", self.name, now_skipped - skipped,
                            now_skipped, seconds)
                skipped = now_skipped

    def _report_stats(self) -> None:
        try:
            self._on_stats(self.stats())
        except Exception:  # a broken reporter must not stop the clock
            log.exception("room %s: reporting stats failed", self.name)

    def _end_stalled_utterance(self) -> None:
        """A live source silent (no blocks at all) for AUDIO_STALL_S mid-utterance, with no final
        waiting to be decoded: end the utterance."""
        last = self._last_audio
        if not self.live or last is None or time.monotonic() - last < AUDIO_STALL_S:
            return
        if not self.segmenter.in_speech or not self._capture.acquire(blocking=False):
            return  # nothing to end, or the capture loop is busy with a block (audio flows)
        try:
            with self._cond:
                # A sender held back by the server (a recording sent faster than it decodes) waits
                # for the finals due: that is not a stall.
                if self._last_audio != last or self._input_done or self.policy.waiting_count:
                    return
                events = self.segmenter.flush()
                for ev in events:
                    self.policy.on_event(ev, self.now())
                self._publish()
        finally:
            self._capture.release()
        if events:
            log.info("room %s: no audio for %.1f s; the utterance in progress is ended", self.name,
                     time.monotonic() - last)
            self.host.wake()

    # -- what the host's decode thread calls --------------------------------------------------
    def due(self) -> str | None:
        """The kind of decode this room has due now ("final", "pause", "partial") or None."""
        with self._cond:
            if self.error is not None:
                return None
            kind = self.policy.due(self.now())
            self._publish()
            return kind

    def take_job(self) -> DecodeJob | None:
        with self._cond:
            job = self.policy.next_job(self.now())
            self._publish()
            return job

    def is_stale(self, job: DecodeJob) -> bool:
        with self._cond:
            return self.policy.is_stale(job)

    def finish_job(self, job: DecodeJob, decoding: Decoding) -> None:
        with self._cond:
            self.decodes += 1
            self.decode_seconds += decoding.elapsed
            if self._keep_audio and (job.final or job.may_finalize) and decoding.rejected != "abandoned":
                # the audio behind the final this decode may become, for speech translation:
                # without the lead (vad.lead_ms), which helps a transcription hear the first sound
                # but made Whisper's speech → English unsure (2 of 4 Spanish prompts rejected); with
                # no lead the translation reuses the final's encoder output
                self._final_audio[job.utterance_id] = job.audio[job.lead:]
            self.policy.on_result(job, decoding, self.now())
            self.max_lag = max(self.max_lag, self.policy.lag())
            self._publish()
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """The model failed on this room's audio: the room stops, the others go on."""
        with self._cond:
            self.error = error
            self._cond.notify_all()
        self.source.stop()

    def wake(self) -> None:
        """The host stops: nothing more will be decoded; ``run()`` stops waiting for it."""
        with self._cond:
            self._cond.notify_all()

    # -- captions to the sinks ------------------------------------------------------------
    def _publish(self) -> None:
        """Take the policy's new captions into the outbox, and the finals to translation (under
        the lock; the delivery thread hands them to the sinks)."""
        for caption in map(self.script.caption, self.policy.drain()):  # Chinese in its script, once
            self._delivery.post(caption)
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
        for skipped in self.policy.drain_skipped():  # after the captions decided before it
            self._delivery.post(skipped)

    # -- translation ----------------------------------------------------------------------
    def _on_translation(self, caption: Caption, result: TranslationResult) -> None:
        """From the worker thread: publish a caption's translations as an update of its id."""
        with self._cond:
            if not self._translations_open:
                return  # the session ended without waiting for this one
            if caption.kind == "partial":
                self._on_partial_translation(caption, result)
            else:
                update = self.script.caption(result.caption(caption, seq=self.policy.next_seq(), emitted=self.now()))
                self.translations += 1
                self.translation_errors += len(update.translation_errors)
                self._delivery.post(update)

    def _on_partial_translation(self, caption: Caption, result: TranslationResult) -> None:
        # Only while this partial is still the one on the screens: a newer partial or the final
        # has replaced it otherwise, and an old line must not come back.
        if self._partials.get(caption.id) is not caption or not result.translations:
            return
        translations = {**caption.translations, **self.script.translations(result.translations)}
        if translations == caption.translations:
            return  # nothing changed: no screen update
        update = dataclasses.replace(caption, seq=self.policy.next_seq(), emitted=self.now(),
                                     translations=translations)
        self._partials[caption.id] = update
        self._delivery.post(update)

    def _finish_translations(self) -> None:
        """After the last decode: let the queued translations come out, then stop the worker."""
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
        last = self._last_audio
        with self._cond:
            return SessionStats(audio_seconds=self.segmenter.audio_time, lag=self.policy.lag(),
                                dropped_frames=self.source.dropped_blocks,
                                utterances=self.policy.finals + self.policy.waiting_count,
                                finals=self.policy.finals, in_speech=self.segmenter.in_speech,
                                level_db=self.segmenter.level_db, paused=self._paused,
                                language=self.policy.o.language or "auto",
                                skipped_utterances=self.policy.skipped_utterances,
                                skipped_seconds=self.policy.skipped_seconds,
                                audio_idle_s=None if last is None else max(0.0, time.monotonic() - last))
