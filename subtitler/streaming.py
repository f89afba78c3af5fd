"""The streaming policy: when to decode what, and which captions that yields.

A pure object in the style of whisper_streaming: the engine feeds it segmenter
events and decode results and asks it for the next decode job; tests drive it
by simulation with invented decodings, no model, thread or clock involved.

Scheduling, with one decoder (on a CPU one Whisper pass costs a fixed 0.3–0.6 s for base):
  1. an ended utterance waiting for its final always comes first (oldest first);
  2. when the speaker pauses, decode everything so far at once: if the pause becomes
     the end of the utterance, that decode already holds all the speech and becomes
     the final the moment the silence is confirmed (no second pass);
  3. otherwise, while speech goes on, a partial decode every ``partial_interval``.
  When utterances wait for their finals, partials stop (they thin out first); when
  the backlog still grows past ``max_lag_s``, the oldest waiting audio is skipped and
  counted, so the lag behind live audio stays bounded; each skipped stretch comes out of
  ``drain_skipped`` as a ``SkippedSpeech``, for the transcript to mark where speech went
  untranscribed.

Partials follow LocalAgreement-2: words on which two consecutive hypotheses agree
are committed; later partial decodes are forced to start with them (Whisper's prefix),
so within the partials only the tail changes. The decode that may become the final
(at a pause, or after the end) is not forced: it hears the whole utterance afresh, so
an early commit made from two short hypotheses can still be corrected in the final
(under a backlog, ``hurry``, finals are greedy and forced, to stay cheap).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from .asr import Decoding, Prompt, normalize_for_match
from .captions import SAMPLE_RATE, Caption
from .vad import SpeechAudio, SpeechEnd, SpeechPause, SpeechStart


SENTENCE_END = ".?!…。？！"


@dataclass(frozen=True)
class StreamingOptions:
    partial_interval: float = 1.0  # idle seconds after a decode before the next partial; 0 = none
    first_partial_s: float = 0.8  # speech needed before the first partial
    min_new_audio_s: float = 0.3  # a partial needs at least this much new audio
    beam_size: int = 5  # finals; partials decode greedily
    language: str | None = None  # None = detect per utterance
    task: str = "transcribe"
    prompt: str = ""  # hotwords / initial prompt, always given
    condition_on_previous: bool = True
    max_lag_s: float | None = 30.0  # None: never skip (offline files)
    speculate: bool = True  # decode at pauses so the final is ready when the silence confirms;
    # off for files read faster than real time: there the final decode of the whole
    # utterance is the one to run, and the result must not depend on thread timing
    context_chars: int = 200  # previous captions' text given as context (at most this many characters)
    context_reset_s: float = 20.0  # a silence this long starts the context afresh (a new topic, speaker)
    context_min_logprob: float = -0.8  # a final less sure than this never becomes context

    @classmethod
    def from_config(cls, asr, glossary=None, live: bool = True) -> "StreamingOptions":
        """The options of one room from its ``[asr]`` section (``config.AsrConfig``): every field
        of the same name is taken as it is; then the prompt is the initial prompt, the hotwords
        and the ``glossary``'s terms (so Whisper hears "Chongqing", not "Chung King"), language
        'auto' is None, and input that is not ``live`` (a file read as fast as it decodes) gets
        finals only, no skipping and no speculative decodes, so its result does not depend on
        thread timing."""
        from dataclasses import fields

        same = {f.name: getattr(asr, f.name) for f in fields(cls) if hasattr(asr, f.name)}
        hotwords = glossary.hotwords() if glossary is not None else ""
        from .chinese import initial_prompt  # a Chinese source: a Simplified, punctuated prompt unless one is set

        initial = asr.initial_prompt.strip() or initial_prompt(asr.language)
        prompt = " ".join(p for p in (initial, asr.hotwords.strip(), hotwords) if p)
        options = replace(cls(**same), prompt=prompt,
                          language=None if asr.language == "auto" else asr.language)
        if not live:
            options = replace(options, partial_interval=0.0, max_lag_s=None, speculate=False)
        return options


@dataclass(frozen=True)
class SkippedSpeech:
    """Speech let go undecoded to keep up with live audio: the utterances one backlog check
    dropped, from the first one's start to the last one's end (audio seconds), ``seconds`` of
    their audio (the figure ``skipped_seconds`` counts)."""

    start: float
    end: float
    seconds: float
    utterances: int


@dataclass(frozen=True)
class DecodeJob:
    utterance_id: int
    final: bool  # True: the utterance has ended and this is its last decode
    audio: np.ndarray
    language: str | None
    prior: str | None
    beam_size: int
    prefix: str
    prompt: str
    task: str
    fallback: bool
    may_finalize: bool = False  # decoded with the final's care (beam), so it may become the final
    lead: int = 0  # samples of audio before the utterance at the start of ``audio`` (vad.lead_ms)

    @property
    def samples(self) -> int:
        """The utterance's samples this decode heard (the lead not counted)."""
        return int(self.audio.size) - self.lead


@dataclass
class _Live:
    """An utterance the policy is working on."""

    id: int
    start: float
    lead: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))  # audio before start
    chunks: list = field(default_factory=list)
    samples: int = 0
    voiced_end: float = 0.0
    paused: bool = False
    ended: object = None  # the Utterance once SpeechEnd arrived
    committed: list = field(default_factory=list)  # words shown as stable
    previous_tail: list = field(default_factory=list)  # last hypothesis after the committed words
    tentative: list = field(default_factory=list)
    language: str | None = None
    best: tuple | None = None  # (samples covered, Decoding) of the latest decode
    decoded_samples: int = 0  # audio covered by the latest started decode
    last_decode_done: float = -1e9
    in_flight: bool = False
    shown: bool = False  # a partial went out
    last_partial: tuple = ()

    def audio(self) -> np.ndarray:
        if len(self.chunks) > 1:
            self.chunks = [np.concatenate(self.chunks)]
        return self.chunks[0] if self.chunks else np.zeros(0, np.int16)

    def needed_samples(self) -> int:
        """Samples a decode must hold to have heard all the voiced audio."""
        end = self.ended.end if self.ended is not None else self.voiced_end
        return int(round((end - self.start) * SAMPLE_RATE))


class StreamingPolicy:
    def __init__(self, options: StreamingOptions = StreamingOptions()):
        self.o = options
        self._current: _Live | None = None
        self._waiting: deque[_Live] = deque()  # ended, final not yet published
        self._out: list[Caption] = []
        self._skipped: list[SkippedSpeech] = []
        self._seq = 0
        self._recent_langs: deque[str] = deque(maxlen=5)
        # the previous captions as the next decode's context: their text, language, and where
        # the last of them ended (audio seconds)
        self._context = ""
        self._context_lang: str | None = None
        self._context_end = 0.0
        self.audio_time = 0.0
        self.finals = 0
        self.skipped_utterances = 0
        self.skipped_seconds = 0.0
        self.rejected: dict[str, int] = {}

    # -- inputs ---------------------------------------------------------------------------
    def on_event(self, event, now: float) -> None:
        if isinstance(event, SpeechStart):
            self._current = _Live(event.utterance_id, event.start, lead=event.lead, voiced_end=event.start)
        elif isinstance(event, SpeechAudio):
            live = self._live(event.utterance_id)
            if live is None:
                return
            live.chunks.append(event.samples)
            live.samples += event.samples.size
            if event.voiced_end > live.voiced_end:
                live.voiced_end, live.paused = event.voiced_end, False
            self.audio_time = max(self.audio_time, live.start + live.samples / SAMPLE_RATE)
        elif isinstance(event, SpeechPause):
            live = self._live(event.utterance_id)
            if live is not None:
                live.paused = True
        elif isinstance(event, SpeechEnd):
            utt = event.utterance
            live = self._live(utt.id)
            if live is None:
                return
            if self._current is live:
                self._current = None
            if event.reason == "too_short":
                self._retract(live, now)
                return
            live.ended = utt
            live.chunks, live.samples = [utt.audio], int(utt.audio.size)
            if event.reason == "max_length" and live.best is not None and live.best[0] > utt.audio.size:
                # cut mid-speech: decodes that heard past the cut speak for the next utterance too
                live.best, live.committed = None, []
            self._waiting.append(live)
            self._publish_ready(now)

    def on_audio_time(self, t: float) -> None:
        """Audio seconds received so far (speech or not), for the lag figure."""
        self.audio_time = max(self.audio_time, t)

    def next_job(self, now: float) -> DecodeJob | None:
        """The decode to run next, or None. Call only when the decoder is idle."""
        due = self._due(now)
        if due is None:
            return None
        live, final, hurry = due
        return self._job(live, now, final=final, hurry=hurry)

    def due(self, now: float) -> str | None:
        """What ``next_job`` would return, without taking it: "final" (an ended utterance),
        "pause" (a decode at a pause, which may become the final), "partial", or None. A host
        with several rooms asks every room this, then takes the job of the one it chooses."""
        due = self._due(now)
        if due is None:
            return None
        live, final, _ = due
        return "final" if final else "pause" if live.paused else "partial"

    def _due(self, now: float) -> tuple[_Live, bool, bool] | None:
        """(utterance, final, hurry) of the decode due now, or None."""
        self._publish_ready(now)
        self._bound_lag(now)
        if self._waiting:
            head = self._waiting[0]
            if head.in_flight:
                return None
            backlog = self.waiting_seconds()
            hurry = self.o.max_lag_s is not None and backlog > self.o.max_lag_s / 2
            return head, True, hurry
        live = self._current
        if live is None or live.in_flight:
            return None
        covered = live.best is not None and live.best[0] >= live.needed_samples()
        if self.o.speculate and live.paused and not covered and live.samples > live.decoded_samples:
            return live, False, False
        if (self.o.partial_interval > 0 and not live.paused
                and live.samples >= self.o.first_partial_s * SAMPLE_RATE
                and now - live.last_decode_done >= self.o.partial_interval
                and live.samples - live.decoded_samples >= self.o.min_new_audio_s * SAMPLE_RATE):
            return live, False, False
        return None

    def is_stale(self, job: DecodeJob) -> bool:
        """A partial overtaken by a pause or the end of speech: its text would only delay
        the decode that can become the final."""
        live = self._live(job.utterance_id)
        if live is None:
            return True
        return not job.final and (live.paused or live.ended is not None) \
            and job.samples < live.needed_samples()

    def on_result(self, job: DecodeJob, decoding: Decoding, now: float) -> None:
        live = self._live(job.utterance_id)
        if live is None:  # skipped while decoding
            return
        live.in_flight = False
        live.last_decode_done = now
        if decoding.rejected == "abandoned":
            self._publish_ready(now)
            return
        if decoding.rejected:
            self.rejected[decoding.rejected] = self.rejected.get(decoding.rejected, 0) + 1
        if job.final or job.may_finalize:  # a greedy partial never stands in for the final
            live.best = (job.samples, decoding)
        if live.language is None and decoding.ok and decoding.language_probability >= 0.7:
            live.language = decoding.language  # sure enough: pin it, later decodes skip detection
        if not job.final and live.ended is None and decoding.ok and self.o.partial_interval > 0:
            self._agree(live, decoding, now, forced=bool(job.prefix))
        self._publish_ready(now)

    def set_language(self, language: str | None) -> None:
        """From the next decode on: a fixed source language, or None to detect."""
        self.o = replace(self.o, language=language)

    def next_seq(self) -> int:
        """A new publication number, for a caption made outside the policy (a translation
        update): one counter for every caption of the session, so ``seq`` stays strictly
        increasing. Call under the same lock as the policy's other methods."""
        self._seq += 1
        return self._seq

    def drain(self) -> list[Caption]:
        """Captions produced since the last call, in publication order."""
        out, self._out = self._out, []
        return out

    def drain_skipped(self) -> list[SkippedSpeech]:
        """Stretches skipped since the last call, oldest first. Any caption ``drain`` returns in
        the same round was decided before them (finals of earlier speech, the retraction of a
        skipped utterance's partial), so a caller that hands out ``drain()`` first keeps the
        audio's order."""
        out, self._skipped = self._skipped, []
        return out

    # -- figures --------------------------------------------------------------------------
    def waiting_seconds(self) -> float:
        return sum(w.samples for w in self._waiting) / SAMPLE_RATE

    def lag(self) -> float:
        """Audio seconds received but not yet turned into captions (0 when all is caught up)."""
        if self._waiting:
            head = self._waiting[0]
            return max(0.0, self.audio_time - (head.start + head.decoded_samples / SAMPLE_RATE))
        if self._current is not None:
            live = self._current
            return max(0.0, self.audio_time - (live.start + live.decoded_samples / SAMPLE_RATE))
        return 0.0

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return self._current is None and not self._waiting

    @property
    def session_language(self) -> str | None:
        langs = list(self._recent_langs)
        if not langs:
            return None
        return max(reversed(langs), key=langs.count)  # a tie goes to the most recent

    # -- internals ------------------------------------------------------------------------
    def _live(self, utterance_id: int) -> _Live | None:
        if self._current is not None and self._current.id == utterance_id:
            return self._current
        return next((w for w in self._waiting if w.id == utterance_id), None)

    def _job(self, live: _Live, now: float, final: bool, hurry: bool = False) -> DecodeJob:
        live.in_flight = True
        audio = live.audio()
        live.decoded_samples = audio.size
        lead = live.lead.size
        if lead:
            audio = np.concatenate([live.lead, audio])
        prompt = Prompt(self.o.prompt, self._context_for(live), self._context_lang)
        # A final's beam search is worth its cost; partials and a backlog decode greedily.
        may_finalize = final or live.paused
        # Partials are forced to begin with the committed words, so the screens' stable text stays.
        # A decode that may become the final hears the whole utterance afresh, as an offline pass
        # would: a word committed from two early, short hypotheses ("Do in…", "Do increased…")
        # is not carried into the transcript.
        prefix = "" if may_finalize and not hurry else " ".join(live.committed)
        # The decode that may become the final detects the language on all the utterance's audio
        # (the pin came from a partial's first second); partials keep the pin.
        language = self.o.language or (None if may_finalize and not hurry else live.language)
        prior = live.language or self.session_language
        return DecodeJob(live.id, final, audio, language, prior,
                         self.o.beam_size if may_finalize and not hurry else 1,
                         prefix, prompt, self.o.task, fallback=may_finalize and not hurry,
                         may_finalize=may_finalize, lead=lead)

    def _agree(self, live: _Live, decoding: Decoding, now: float, forced: bool) -> None:
        """LocalAgreement-2 over the words after the committed prefix."""
        words = decoding.text.split()
        n = len(live.committed)
        if not forced and [normalize_for_match(w) for w in words[:n]] != \
                [normalize_for_match(w) for w in live.committed]:
            return  # an unforced decode (at a pause) that heard the committed words otherwise
        words = words[n:]
        agreed = 0
        for a, b in zip(live.previous_tail, words):
            if normalize_for_match(a) != normalize_for_match(b) or not normalize_for_match(b):
                break
            agreed += 1
        live.committed = live.committed + words[:agreed]
        live.tentative = words[agreed:]
        live.previous_tail = live.tentative
        if live.tentative:
            # the speaker goes on: a full stop after a word still being heard would be taken back
            last = live.tentative[-1].rstrip(SENTENCE_END)
            live.tentative = live.tentative[:-1] + ([last] if last else [])
        shown = (len(live.committed), " ".join(live.committed + live.tentative))
        if shown != live.last_partial:  # an unchanged line is not worth a screen update
            live.last_partial = shown
            self._emit(live, "partial", shown[1], now, decoding.language)

    def _publish_ready(self, now: float) -> None:
        """Publish finals, in order, for ended utterances whose latest decode heard everything."""
        while self._waiting:
            head = self._waiting[0]
            if head.best is None or head.best[0] < head.needed_samples():
                return  # an in-flight decode of it, if any, is simply not waited for
            self._waiting.popleft()
            decoding: Decoding = head.best[1]
            text = decoding.text if decoding.ok else " ".join(head.committed)
            if not text:
                self._retract(head, now)
                continue
            lang = decoding.language if decoding.ok else (head.language or decoding.language)
            text = self._steady(head, text)
            self._emit(head, "final", text, now, lang)
            self.finals += 1
            self._recent_langs.append(lang)
            self._remember(head, decoding, text, lang)

    def _context_for(self, live: _Live) -> str:
        """The previous captions' text this utterance's decodes are given: none after a long
        silence, none when the utterance's language is known to differ."""
        if not self.o.condition_on_previous or not self._context:
            return ""
        if live.start - self._context_end > self.o.context_reset_s:
            return ""
        known = self.o.language or live.language
        if known is not None and known != self._context_lang:
            return ""
        return self._context

    def _remember(self, live: _Live, decoding: Decoding, text: str, lang: str) -> None:
        """A published final becomes context, bounded: only a sure one (a doubtful final may be a
        hallucination, and Whisper would copy it on), and only with the captions of the same
        language just before it (a language change or a long silence starts afresh)."""
        if not self.o.condition_on_previous:
            return
        end = live.ended.end if live.ended is not None else live.voiced_end
        if (lang != self._context_lang or live.start - self._context_end > self.o.context_reset_s):
            self._context = ""
        self._context_lang, self._context_end = lang, end
        if not decoding.ok or decoding.avg_logprob < self.o.context_min_logprob:
            return
        context = (self._context + " " + text).strip()
        if len(context) > self.o.context_chars:  # keep whole words: the most recent ones
            context = context[-self.o.context_chars:]
            context = context.split(" ", 1)[1] if " " in context else context
        self._context = context

    @staticmethod
    def _steady(live: _Live, text: str) -> str:
        """The final, written as the screens already show it where the words agree: a word
        seen as "Lock" is not re-cased to "lock" (a visible jump for nothing). Punctuation the
        final adds after a shown word is kept; from the first word that differs on, the final's."""
        shown = live.last_partial[1].split() if live.last_partial else []
        if not shown:
            return text
        words = text.split()
        for i, (old, new) in enumerate(zip(shown, words)):
            if normalize_for_match(old) != normalize_for_match(new) or not normalize_for_match(new):
                break
            bare = old.rstrip(SENTENCE_END + ",;:")
            tail = new[len(new.rstrip(SENTENCE_END + ",;:")):]
            words[i] = bare + tail if tail else old
        return " ".join(words)

    def _retract(self, live: _Live, now: float) -> None:
        """An utterance turned out to hold nothing: clear any partial the screens show."""
        if live.shown:
            self._emit(live, "final", "", now, live.language or "")

    def _emit(self, live: _Live, kind: str, text: str, now: float, lang: str) -> None:
        seq = self.next_seq()
        end = live.ended.end if live.ended is not None else live.voiced_end
        committed = " ".join(live.committed) if kind == "partial" else text
        tentative = " ".join(live.tentative) if kind == "partial" else ""
        self._out.append(Caption(id=live.id, seq=seq, kind=kind, start=live.start, end=end,
                                 emitted=now, lang=lang, text=text, committed=committed, tentative=tentative))
        live.shown = True

    def _bound_lag(self, now: float) -> None:
        if self.o.max_lag_s is None:
            return
        dropped: list[_Live] = []
        while len(self._waiting) > 1 and self.waiting_seconds() > self.o.max_lag_s:
            live = self._waiting.popleft()
            dropped.append(live)
            self.skipped_utterances += 1
            self.skipped_seconds += live.samples / SAMPLE_RATE
            self._retract(live, now)
        if dropped:  # consecutive utterances, none transcribed between them: one stretch
            seconds = sum(live.samples for live in dropped) / SAMPLE_RATE
            end = max(live.start + live.samples / SAMPLE_RATE for live in dropped)
            self._skipped.append(SkippedSpeech(dropped[0].start, end, seconds, len(dropped)))
