"""Voice activity segmentation: 16 kHz int16 samples in → utterance events out.

A pure object (no threads, devices or clocks): ``push(samples)`` returns the
events those samples caused, ``flush()`` ends the stream. Times are audio
seconds counted from the first sample pushed.

Events, in order, for each utterance:
  SpeechStart → SpeechAudio… (with SpeechPause whenever the speaker stops briefly)
  → SpeechEnd (reason "silence", "max_length", "flush", or "too_short" — a too-short
  utterance carries no audio worth decoding and should be discarded).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .captions import SAMPLE_RATE, Utterance
from .settings import setting


@dataclass(frozen=True)
class SpeechStart:
    utterance_id: int
    start: float
    # the audio just before ``start`` (``lead_ms``, no speech in it): decoders hear it, as a
    # whole-file pass hears what comes before a sentence, so the first sound is not lost;
    # the caption's times do not include it
    lead: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))


@dataclass(frozen=True)
class SpeechAudio:
    utterance_id: int
    samples: np.ndarray  # int16, continues the utterance's audio
    voiced_end: float  # audio seconds just past the latest voiced frame so far


@dataclass(frozen=True)
class SpeechPause:
    """Trailing silence reached ``pause_ms``: the utterance may be over (not yet certain)."""

    utterance_id: int
    speech_end: float


@dataclass(frozen=True)
class SpeechEnd:
    utterance: Utterance
    reason: str


@dataclass(frozen=True)
class VadOptions:
    """The ``[vad]`` section of config.toml: how speech is cut into utterances (webrtcvad).

    Each field's metadata (help, bounds, choices) is what the config validator checks."""

    frame_ms: int = setting(30, "webrtcvad frame length", choices=[10, 20, 30])
    aggressiveness: int = setting(2, "0 = keeps most audio as speech … 3 = strictest", lo=0, hi=3)
    start_ms: int = setting(90, "voiced audio (within a 150 ms window) that starts an utterance", lo=10, hi=1000)
    pre_roll_ms: int = setting(300, "audio kept before the detected start, so the first syllable is not cut",
                               lo=0, hi=2000)
    lead_ms: int = setting(700, "audio before the pre-roll that the decoder hears too (not part of the caption's "
                                "time), so an utterance's first sound is heard in context", lo=0, hi=5000)
    pause_ms: int = setting(60, "trailing silence after which a decode may start speculatively", lo=10, hi=2000)
    end_silence_ms: int = setting(500, "trailing silence that ends an utterance", lo=100, hi=5000)
    min_speech_ms: int = setting(200, "utterances with less voiced audio are ignored", lo=0, hi=5000)
    max_utterance_s: float = setting(15.0, "longer speech is cut at its quietest recent point", lo=2.0, hi=28.0)
    # Whisper likes a little silence after the last word; capped at end_silence_ms.
    post_roll_ms: int = setting(200, "trailing silence kept in an utterance's audio (at most end_silence_ms)",
                                lo=0, hi=2000)
    # webrtcvad keeps ~0.15 s of a word's fading tail as speech; frames this far below the
    # utterance's loudest count as silence instead, so the pause (and the decode that becomes
    # the final) comes that much sooner. Noise above the gate keeps it inert.
    tail_db: float = setting(35.0, "voiced frames this many dB below the utterance's loudest count as silence, "
                                   "so a fading word ends sooner; 0 = off", lo=0.0, hi=90.0)

    def __post_init__(self):
        # The two the Segmenter cannot run with at all, whoever builds the options.
        if self.frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30 (webrtcvad's frame lengths)")
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError("aggressiveness must be 0..3")


START_WINDOW_MS = 150  # the window in which start_ms of voiced frames start an utterance
CUT_SEARCH_S = 3.0  # how far back a too-long utterance looks for a quiet place to cut


def _level_db(frame: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(frame.astype(np.float32) ** 2)) + 1e-9)
    return 20 * float(np.log10(rms / 32768.0))


class Segmenter:
    def __init__(self, options: VadOptions = VadOptions(), is_speech=None):
        self.o = options
        if is_speech is None:
            import webrtcvad

            vad = webrtcvad.Vad(options.aggressiveness)
            is_speech = lambda frame: vad.is_speech(frame.tobytes(), SAMPLE_RATE)  # noqa: E731
        self._is_speech = is_speech
        self.frame = SAMPLE_RATE * options.frame_ms // 1000
        n = lambda ms: max(1, -(-ms // options.frame_ms))  # noqa: E731 - frames, rounded up
        self._start_window = n(START_WINDOW_MS)
        self._start_needed = min(n(options.start_ms), self._start_window)
        self._pre_roll = n(options.pre_roll_ms)
        self._lead = options.lead_ms // options.frame_ms
        self._pause = n(options.pause_ms)
        self._end = n(options.end_silence_ms)
        self._post_roll = min(n(options.post_roll_ms), self._end)
        self._min_voiced = -(-options.min_speech_ms // options.frame_ms)  # rounded up
        self._max_frames = int(options.max_utterance_s * 1000 / options.frame_ms)

        self._pending = np.zeros(0, np.int16)
        self._frames_seen = 0  # frames classified so far; frame i starts at i * frame samples
        self._history: deque[tuple[np.ndarray, bool]] = deque(
            maxlen=self._lead + self._pre_roll + self._start_window)
        self._next_id = 1
        # the utterance in progress
        self._active = False
        self._utt_id = 0
        self._utt_first = 0  # index of its first frame
        self._frames: list[np.ndarray] = []
        self._voiced: list[bool] = []
        self._last_voiced = -1  # index into _frames
        self._sent = 0  # frames already sent as SpeechAudio
        self._paused = False
        self.level_db = -120.0  # loudness of the latest frame, for meters
        self._peak_db = float("-inf")  # loudest voiced frame of the utterance (for tail_db)

    # -- public -------------------------------------------------------------------------
    @property
    def in_speech(self) -> bool:
        return self._active

    @property
    def audio_time(self) -> float:
        return (self._frames_seen * self.frame + self._pending.size) / SAMPLE_RATE

    def push(self, samples: np.ndarray) -> list:
        samples = np.asarray(samples, dtype=np.int16).reshape(-1)
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n = data.size // self.frame
        self._pending = data[n * self.frame:].copy()
        events: list = []
        for i in range(n):
            frame = data[i * self.frame:(i + 1) * self.frame]
            self._step(frame, bool(self._is_speech(frame)), events)
        if self._active:
            self._send_audio(len(self._frames), events)
        return events

    def skip(self, samples: np.ndarray) -> None:
        """Let audio pass unheard (captioning paused): times and the level meter move on."""
        samples = np.asarray(samples, dtype=np.int16).reshape(-1)
        if samples.size:
            self.level_db = _level_db(samples)
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n = data.size // self.frame
        self._frames_seen += n
        self._pending = data[n * self.frame:].copy()
        self._history.clear()

    def flush(self) -> list:
        """End of input: whatever speech is in progress ends now."""
        events: list = []
        if self._active:
            self._finish(len(self._frames), "flush", events)
        return events

    # -- internals ----------------------------------------------------------------------
    def _t(self, frame_index: int) -> float:
        return frame_index * self.frame / SAMPLE_RATE

    def _step(self, frame: np.ndarray, voiced: bool, events: list) -> None:
        self.level_db = _level_db(frame)
        index = self._frames_seen
        self._frames_seen += 1
        if not self._active:
            self._history.append((frame, voiced))
            recent = list(self._history)[-self._start_window:]
            if sum(v for _, v in recent) >= self._start_needed:
                self._begin(index, events)
            return
        if self.o.tail_db > 0 and voiced:
            self._peak_db = max(self._peak_db, self.level_db)
            voiced = self.level_db >= self._peak_db - self.o.tail_db
        self._frames.append(frame)
        self._voiced.append(voiced)
        if voiced:
            self._last_voiced = len(self._frames) - 1
            self._paused = False
        silent_for = len(self._frames) - 1 - self._last_voiced
        if silent_for >= self._end:
            self._finish(self._last_voiced + 1 + self._post_roll, "silence", events)
        elif silent_for >= self._pause and not self._paused:
            self._paused = True
            self._send_audio(len(self._frames), events)
            events.append(SpeechPause(self._utt_id, self._t(self._utt_first + self._last_voiced + 1)))
        elif len(self._frames) >= self._max_frames:
            self._cut_long(events)

    def _begin(self, index: int, events: list, carried: list | None = None) -> None:
        """Start an utterance with the pre-roll (or the frames carried over from a cut)."""
        if carried is None:
            history = list(self._history)
            self._history.clear()
            first_voiced = next(i for i, (_, v) in enumerate(history) if v)
            begin = max(0, first_voiced - self._pre_roll)
            keep = history[begin:]
            lead = [f for f, _ in history[max(0, begin - self._lead):begin]]
            frames = [f for f, _ in keep]
            voiced = [v for _, v in keep]
            first = index + 1 - len(frames)
        else:  # a cut: what came before is the same speech, decoded already
            frames, voiced, first = carried
            lead = []
        self._active, self._paused = True, False
        # the level gate measures against the loudest voiced frame heard so far
        self._peak_db = max((_level_db(f) for f, v in zip(frames, voiced) if v), default=float("-inf"))
        self._utt_id, self._next_id = self._next_id, self._next_id + 1
        self._utt_first, self._frames, self._voiced, self._sent = first, frames, voiced, 0
        self._last_voiced = max((i for i, v in enumerate(voiced) if v), default=-1)
        events.append(SpeechStart(self._utt_id, self._t(first),
                                  np.concatenate(lead) if lead else np.zeros(0, np.int16)))

    def _send_audio(self, upto: int, events: list) -> None:
        if upto > self._sent:
            samples = np.concatenate(self._frames[self._sent:upto])
            self._sent = upto
            events.append(SpeechAudio(self._utt_id, samples,
                                      self._t(self._utt_first + self._last_voiced + 1)))

    def _finish(self, upto: int, reason: str, events: list) -> None:
        upto = min(upto, len(self._frames))
        self._send_audio(upto, events)
        voiced_frames = sum(self._voiced[:upto])
        end_index = self._last_voiced + 1 if self._last_voiced >= 0 and reason != "max_length" else upto
        end_index = min(end_index, upto)
        audio = np.concatenate(self._frames[:upto]) if upto else np.zeros(0, np.int16)
        utt = Utterance(self._utt_id, self._t(self._utt_first), self._t(self._utt_first + end_index), audio)
        if voiced_frames < self._min_voiced:
            reason = "too_short"
        events.append(SpeechEnd(utt, reason))
        rest_frames, rest_voiced = self._frames[upto:], self._voiced[upto:]
        self._active = False
        self._frames, self._voiced = [], []
        # what followed the end (post-roll overshoot) seeds the idle history again
        for f, v in zip(rest_frames, rest_voiced):
            self._history.append((f, v))

    def _cut_long(self, events: list) -> None:
        """Too long: end at the quietest recent place and carry the rest into a new utterance."""
        search = min(int(CUT_SEARCH_S * 1000 / self.o.frame_ms), len(self._frames) // 2)
        lo = len(self._frames) - search
        energy = np.array([float(np.mean(f.astype(np.float32) ** 2)) for f in self._frames[lo:]])
        smooth = np.convolve(energy, np.ones(3) / 3, mode="same")  # a quiet place, not a quiet sample
        unvoiced_bonus = np.array([0.5 if not v else 1.0 for v in self._voiced[lo:]])
        cut = lo + int(np.argmin(smooth * unvoiced_bonus))
        cut = max(cut, 1)
        carried_frames, carried_voiced = self._frames[cut:], self._voiced[cut:]
        carried_first = self._utt_first + cut
        self._finish(cut, "max_length", events)
        # Frames past the cut may already have gone out as SpeechAudio of the old utterance;
        # SpeechEnd's audio is authoritative for it, and the new one starts afresh with them.
        self._history.clear()
        self._begin(0, events, carried=(carried_frames, carried_voiced, carried_first))
