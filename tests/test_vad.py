"""The segmenter, driven frame by frame by simulation.

Most tests inject ``is_speech`` so each frame's voiced/unvoiced decision is exact; a few
run the real webrtcvad on synthetic audio (a harmonic-rich tone, noise, zeros). The audio
is random noise, so every slice of it is unique: an utterance's samples can be compared
with the input at its start time, which catches any shift, loss or duplication.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from subtitler.captions import SAMPLE_RATE as SR
from subtitler.vad import Segmenter, SpeechAudio, SpeechEnd, SpeechPause, SpeechStart, VadOptions

FRAME_MS = (10, 20, 30)


def frames_for(ms: float, frame_ms: int) -> int:
    return max(1, math.ceil(ms / frame_ms))


class Script:
    """Audio built frame by frame, with the exact voiced decision of each frame."""

    def __init__(self, frame_ms: int = 30, seed: int = 0):
        self.frame_ms = frame_ms
        self.frame = SR * frame_ms // 1000
        self.rng = np.random.default_rng(seed)
        self._parts: list[np.ndarray] = []
        self.voiced: list[bool] = []

    def _add(self, n: int, amp: float, voiced: bool) -> "Script":
        for _ in range(n):
            if amp:
                self._parts.append((self.rng.standard_normal(self.frame) * amp).clip(-32000, 32000)
                                   .astype(np.int16))
            else:
                self._parts.append(np.zeros(self.frame, np.int16))
            self.voiced.append(voiced)
        return self

    def speech(self, n: int, amp: float = 8000) -> "Script":
        return self._add(n, amp, True)

    def silence(self, n: int, amp: float = 0) -> "Script":
        return self._add(n, amp, False)

    def quiet_voiced(self, n: int, amp: float = 60) -> "Script":
        """A soft stretch the detector still calls speech (a breath between words)."""
        return self._add(n, amp, True)

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros(0, np.int16)

    @property
    def n(self) -> int:
        return len(self.voiced)

    def t(self, frame_index: int) -> float:
        return frame_index * self.frame_ms / 1000

    def segmenter(self, **options) -> Segmenter:
        decisions = iter(self.voiced)
        return Segmenter(VadOptions(frame_ms=self.frame_ms, **options), is_speech=lambda f: next(decisions))


def push_frames(seg: Segmenter, script: Script) -> list[tuple[int, object]]:
    """Push one frame at a time; return (index of the frame that caused it, event)."""
    out = []
    audio, f = script.audio, script.frame
    for i in range(script.n):
        out.extend((i, e) for e in seg.push(audio[i * f:(i + 1) * f]))
    return out


def structure(events) -> list[tuple]:
    """Everything but the SpeechAudio chunking, which depends on how input was pushed."""
    out = []
    for e in events:
        if isinstance(e, SpeechStart):
            out.append(("start", e.utterance_id, e.start))
        elif isinstance(e, SpeechPause):
            out.append(("pause", e.utterance_id, e.speech_end))
        elif isinstance(e, SpeechEnd):
            u = e.utterance
            out.append(("end", u.id, u.start, u.end, e.reason, u.audio.tobytes()))
    return out


def ends(events) -> list[SpeechEnd]:
    return [e for e in events if isinstance(e, SpeechEnd)]


def assert_audio_is_input(utt, audio: np.ndarray) -> None:
    begin = round(utt.start * SR)
    assert utt.audio.dtype == np.int16
    np.testing.assert_array_equal(utt.audio, audio[begin:begin + utt.audio.size])


# -- options ----------------------------------------------------------------------------------

@pytest.mark.parametrize("frame_ms", FRAME_MS)
@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_valid_frame_lengths_and_aggressiveness(frame_ms, aggressiveness):
    seg = Segmenter(VadOptions(frame_ms=frame_ms, aggressiveness=aggressiveness))
    assert seg.frame == SR * frame_ms // 1000


@pytest.mark.parametrize("bad", [dict(frame_ms=25), dict(frame_ms=0), dict(frame_ms=40),
                                 dict(aggressiveness=-1), dict(aggressiveness=4)])
def test_invalid_options_are_refused(bad):
    with pytest.raises(ValueError):
        VadOptions(**bad)


def test_every_option_is_a_documented_setting_of_the_vad_section():
    # VadOptions is config.toml's [vad]: each field carries the help and bounds the config checks
    from dataclasses import fields

    from subtitler.settings import is_setting

    for f in fields(VadOptions):
        assert is_setting(f) and f.metadata["help"], f.name
        lo, hi, choices = f.metadata["lo"], f.metadata["hi"], f.metadata["choices"]
        if lo is not None:
            assert lo <= f.default <= hi, f.name
        if choices is not None:
            assert f.default in choices, f.name


# -- the real webrtcvad on synthetic audio ---------------------------------------------------

def tone(seconds: float, f0: float = 180.0, amp: float = 12000) -> np.ndarray:
    """A voice-like buzz: a harmonic-rich tone with a slow syllable-rate wobble."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 15))
    x = x * (1 + 0.3 * np.sin(2 * np.pi * 4 * t))
    return (x / np.abs(x).max() * amp).astype(np.int16)


@pytest.mark.parametrize("frame_ms", FRAME_MS)
@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_webrtcvad_finds_a_tone_burst(frame_ms, aggressiveness):
    audio = np.concatenate([np.zeros(SR, np.int16), tone(1.5), np.zeros(int(1.5 * SR), np.int16)])
    seg = Segmenter(VadOptions(frame_ms=frame_ms, aggressiveness=aggressiveness))
    events = seg.push(audio) + seg.flush()
    frame_s = frame_ms / 1000
    starts = [e for e in events if isinstance(e, SpeechStart)]
    (end,) = ends(events)
    assert len(starts) == 1
    assert end.reason == "silence"
    utt = end.utterance
    # 300 ms of pre-roll before the burst at 1.0 s, the end just past it at 2.5 s
    assert 1.0 - 0.3 - frame_s - 1e-9 <= utt.start <= 1.0 - 0.3 + 1e-9
    assert 2.5 - 1e-9 <= utt.end <= 2.5 + 0.2  # webrtcvad itself hangs on for up to ~170 ms
    assert_audio_is_input(utt, audio)


def test_webrtcvad_silence_gives_nothing():
    for frame_ms in FRAME_MS:
        seg = Segmenter(VadOptions(frame_ms=frame_ms))
        assert seg.push(np.zeros(3 * SR, np.int16)) + seg.flush() == []


def test_aggressiveness_decides_whether_steady_noise_is_speech():
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(4 * SR) * 1000).astype(np.int16)  # 4 s of steady hiss at 0.5 s
    audio = np.concatenate([np.zeros(SR // 2, np.int16), hiss, np.zeros(SR, np.int16)])

    def kept(aggressiveness: int) -> float:
        seg = Segmenter(VadOptions(aggressiveness=aggressiveness))
        return sum(e.utterance.duration for e in ends(seg.push(audio) + seg.flush())
                   if e.reason != "too_short")

    seconds = [kept(a) for a in range(4)]
    assert seconds[0] > 3.5  # 0 keeps most audio as speech
    assert seconds[3] < 2.0  # 3 is strict: webrtcvad adapts to the hiss and stops calling it speech
    assert seconds == sorted(seconds, reverse=True)


# -- starting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_utterance_starts_after_start_ms_and_keeps_the_pre_roll(frame_ms):
    o = VadOptions(frame_ms=frame_ms)
    lead = 40
    s = Script(frame_ms).silence(lead, amp=300).speech(60).silence(frames_for(o.end_silence_ms, frame_ms) + 5)
    seg = s.segmenter()
    events = push_frames(seg, s)
    started = [(i, e) for i, e in events if isinstance(e, SpeechStart)]
    assert len(started) == 1
    index, start = started[0]
    needed = frames_for(o.start_ms, frame_ms)
    assert index == lead + needed - 1  # not one frame earlier
    # the pre-roll: at least pre_roll_ms before the first voiced frame, less than a frame more
    first_voiced = s.t(lead)
    assert first_voiced - start.start >= o.pre_roll_ms / 1000 - 1e-9
    assert first_voiced - start.start < o.pre_roll_ms / 1000 + frame_ms / 1000
    (end,) = ends(e for _, e in events)
    assert end.utterance.start == start.start
    assert_audio_is_input(end.utterance, s.audio)  # so the first syllable is in the audio, whole


@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_scattered_voiced_frames_do_not_start_an_utterance(frame_ms):
    s = Script(frame_ms).silence(10)
    for _ in range(60):
        s.speech(1).silence(2)  # never start_ms of voice within 150 ms
    seg = s.segmenter()
    assert push_frames(seg, s) == []
    assert not seg.in_speech


@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_one_frame_short_of_start_ms_does_not_start(frame_ms):
    needed = frames_for(VadOptions().start_ms, frame_ms)
    s = Script(frame_ms).silence(20).speech(needed - 1).silence(40)
    assert push_frames(s.segmenter(), s) == []


def test_speech_right_at_the_beginning_starts_at_zero():
    s = Script(30).speech(30).silence(30)
    seg = s.segmenter()
    events = seg.push(s.audio)
    assert isinstance(events[0], SpeechStart) and events[0].start == 0.0
    (end,) = ends(events)
    assert end.utterance.start == 0.0 and end.utterance.end == pytest.approx(0.9)
    assert_audio_is_input(end.utterance, s.audio)


# -- pauses -----------------------------------------------------------------------------------

@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_speech_pause_fires_once_per_pause(frame_ms):
    o = VadOptions(frame_ms=frame_ms)
    pause, end = frames_for(o.pause_ms, frame_ms), frames_for(o.end_silence_ms, frame_ms)
    gap = pause + 5  # a real pause, much shorter than end_silence_ms
    assert gap < end
    s = Script(frame_ms).silence(20).speech(50).silence(gap).speech(40).silence(end + 10)
    events = push_frames(s.segmenter(), s)
    pauses = [(i, e) for i, e in events if isinstance(e, SpeechPause)]
    assert [i for i, _ in pauses] == [20 + 50 + pause - 1, 20 + 50 + gap + 40 + pause - 1]
    assert [p.speech_end for _, p in pauses] == pytest.approx([s.t(70), s.t(70 + gap + 40)])
    assert {p.utterance_id for _, p in pauses} == {1}
    (end_event,) = ends(e for _, e in events)
    assert end_event.reason == "silence"
    # the audio up to the pause went out with the pause, so a decoder may start on it
    before = [e for i, e in events if i <= pauses[0][0]]
    sent = sum(e.samples.size for e in before if isinstance(e, SpeechAudio))
    assert sent >= round((pauses[0][1].speech_end - end_event.utterance.start) * SR)


@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_a_pause_shorter_than_end_silence_does_not_end_the_utterance(frame_ms):
    o = VadOptions(frame_ms=frame_ms)
    end = frames_for(o.end_silence_ms, frame_ms)
    s = Script(frame_ms).silence(20).speech(40).silence(end - 1).speech(40).silence(end + 3)
    events = push_frames(s.segmenter(), s)
    assert [type(e).__name__ for _, e in events if not isinstance(e, SpeechAudio)] == \
        ["SpeechStart", "SpeechPause", "SpeechPause", "SpeechEnd"]
    (e,) = ends(e for _, e in events)
    assert e.utterance.end == pytest.approx(s.t(20 + 40 + end - 1 + 40))


# -- ending -----------------------------------------------------------------------------------

@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_end_after_end_silence_with_post_roll(frame_ms):
    o = VadOptions(frame_ms=frame_ms)
    end = frames_for(o.end_silence_ms, frame_ms)
    s = Script(frame_ms).silence(20).speech(40).silence(end + 30, amp=200)
    events = push_frames(s.segmenter(), s)
    ended = [(i, e) for i, e in events if isinstance(e, SpeechEnd)]
    assert len(ended) == 1
    index, e = ended[0]
    assert index == 20 + 40 + end - 1  # after end_silence_ms of silence, not before
    assert index * frame_ms >= (20 + 40) * frame_ms + o.end_silence_ms - frame_ms
    utt = e.utterance
    assert e.reason == "silence"
    assert utt.end == pytest.approx(s.t(60))  # just past the last voiced frame
    assert utt.id == 1
    post_roll_ms = (utt.audio.size / SR - utt.duration) * 1000
    assert o.post_roll_ms <= post_roll_ms + 1e-6 < o.post_roll_ms + frame_ms
    assert_audio_is_input(utt, s.audio)


@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_too_short_blip(frame_ms):
    o = VadOptions(frame_ms=frame_ms)
    blip = frames_for(o.start_ms, frame_ms) + 1
    assert blip * frame_ms < o.min_speech_ms
    s = Script(frame_ms).silence(20).speech(blip).silence(frames_for(o.end_silence_ms, frame_ms) + 5)
    events = [e for _, e in push_frames(s.segmenter(), s)]
    assert isinstance(events[0], SpeechStart)
    (e,) = ends(events)
    assert e.reason == "too_short"


@pytest.mark.parametrize("frame_ms", [30, 20, 10])
def test_less_voice_than_min_speech_ms_is_too_short(frame_ms):
    o = VadOptions(frame_ms=frame_ms)
    voiced = math.ceil(o.min_speech_ms / frame_ms) - 1  # the most voice that is still too little
    assert voiced * frame_ms < o.min_speech_ms
    s = Script(frame_ms).silence(20).speech(voiced).silence(frames_for(o.end_silence_ms, frame_ms) + 5)
    (e,) = ends(e for _, e in push_frames(s.segmenter(), s))
    assert e.reason == "too_short"


@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_min_speech_ms_of_voice_is_kept(frame_ms):
    o = VadOptions(frame_ms=frame_ms)
    voiced = math.ceil(o.min_speech_ms / frame_ms)
    s = Script(frame_ms).silence(20).speech(voiced).silence(frames_for(o.end_silence_ms, frame_ms) + 5)
    (e,) = ends(e for _, e in push_frames(s.segmenter(), s))
    assert e.reason == "silence"


def test_flush_ends_speech_in_progress():
    s = Script(30).silence(20).speech(50).silence(3)
    seg = s.segmenter()
    events = seg.push(s.audio)
    assert seg.in_speech and ends(events) == []
    flushed = seg.flush()
    (e,) = flushed
    assert isinstance(e, SpeechEnd) and e.reason == "flush"
    assert e.utterance.end == pytest.approx(s.t(70))
    # all audio pushed since the start is in it, trailing frames included
    assert e.utterance.audio.size == s.audio.size - round(e.utterance.start * SR)
    assert_audio_is_input(e.utterance, s.audio)
    assert not seg.in_speech
    assert seg.flush() == []


def test_flush_of_a_blip_is_too_short_and_flush_when_idle_is_empty():
    s = Script(30).silence(10).speech(4)
    seg = s.segmenter()
    seg.push(s.audio)
    (e,) = seg.flush()
    assert e.reason == "too_short"
    idle = Script(30).silence(10)
    seg = idle.segmenter()
    assert seg.push(idle.audio) == [] and seg.flush() == []


# -- too long: cut at the quietest recent point ----------------------------------------------

def check_partition(utterances, audio: np.ndarray) -> int:
    """Utterances are in order, never overlap, each holds exactly the input at its time; returns
    the samples outside all of them."""
    covered = 0
    previous_end = 0
    for u in utterances:
        begin = round(u.start * SR)
        assert begin >= previous_end, "utterance audio overlaps the previous one"
        assert_audio_is_input(u, audio)
        covered += u.audio.size
        previous_end = begin + u.audio.size
    gaps = audio.size - covered
    assert gaps >= 0
    return gaps


def test_max_utterance_cuts_in_the_quiet_dip_and_continues():
    o = VadOptions(frame_ms=30, max_utterance_s=3.0)
    # utterance starts (with pre-roll) at frame 10; cut due at frame 109; looks back to frame 60
    dip = 85
    s = (Script(30).silence(20).speech(dip - 20)  # loud "words"…
         .quiet_voiced(3)  # …a soft breath between two of them…
         .speech(150 - dip - 3)  # …and on, 4.5 s of speech in all
         .silence(30))
    seg = s.segmenter(max_utterance_s=3.0, tail_db=0)  # webrtcvad's own decisions: the dip stays speech
    events = push_frames(seg, s)
    ev = [e for _, e in events]
    kinds = [type(e).__name__ for e in ev if not isinstance(e, SpeechAudio)]
    assert kinds == ["SpeechStart", "SpeechEnd", "SpeechStart", "SpeechPause", "SpeechEnd"]
    first, second = ends(ev)
    assert first.reason == "max_length" and second.reason == "silence"
    a, b = first.utterance, second.utterance
    assert a.duration <= o.max_utterance_s
    # the cut lands inside the dip, not in the middle of a loud "word"
    assert s.t(dip) <= a.end <= s.t(dip + 3)
    assert a.end == pytest.approx(a.start + a.audio.size / SR)  # a cut one ends where its audio ends
    # the rest continues at once as a new utterance, contiguous, nothing lost or repeated
    new_start = [e for e in ev if isinstance(e, SpeechStart)][1]
    assert new_start.utterance_id == b.id == a.id + 1
    assert new_start.start == b.start == pytest.approx(a.end)
    assert b.end == pytest.approx(s.t(150))
    np.testing.assert_array_equal(np.concatenate([a.audio, b.audio]),
                                  s.audio[round(a.start * SR):round(a.start * SR) + a.audio.size + b.audio.size])
    gaps = check_partition([a, b], s.audio)
    assert gaps == round(a.start * SR) + (s.audio.size - round(b.start * SR) - b.audio.size)


def test_max_utterance_prefers_an_unvoiced_gap():
    # a short unvoiced gap (quieter than a soft voiced stretch elsewhere) is where to cut
    s = (Script(30).silence(20).speech(50).quiet_voiced(3, amp=200).speech(20)
         .silence(3, amp=250).speech(150 - 96).silence(30))
    seg = s.segmenter(max_utterance_s=3.0)
    first = ends(e for _, e in push_frames(seg, s))[0]
    assert first.reason == "max_length"
    assert s.t(93) <= first.utterance.end <= s.t(96)


@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_long_monologue_is_cut_into_bounded_contiguous_utterances(frame_ms):
    max_s = 4.0
    s = Script(frame_ms, seed=frame_ms).silence(frames_for(500, frame_ms))
    rng = np.random.default_rng(7)
    total = 0
    while total < 20_000:  # 20 s of talking: words with soft gaps, never a real pause
        word = int(rng.integers(150, 600)) // frame_ms
        s.speech(word, amp=float(rng.uniform(4000, 12000))).quiet_voiced(int(rng.integers(1, 4)), amp=80)
        total += word * frame_ms
    s.silence(frames_for(1000, frame_ms))
    seg = s.segmenter(max_utterance_s=max_s, tail_db=0)  # the soft gaps stay speech, as scripted
    events = seg.push(s.audio) + seg.flush()
    done = ends(events)
    assert len(done) >= 5
    speech = [e for e in done if e.reason != "too_short"]
    assert [e.reason for e in speech[:-1]] == ["max_length"] * (len(speech) - 1)
    assert speech[-1].utterance.end == pytest.approx(s.t(max(i for i, v in enumerate(s.voiced) if v) + 1))
    # no word is lost: every voiced frame is inside an utterance that will be decoded
    for i in (i for i, v in enumerate(s.voiced) if v):
        assert any(e.utterance.start - 1e-9 <= s.t(i) and s.t(i + 1) <= e.utterance.start
                   + e.utterance.audio.size / SR + 1e-9 for e in speech), f"voiced frame {i} lost"
    utts = [e.utterance for e in done]
    assert [u.id for u in utts] == list(range(1, len(utts) + 1))
    for a, b in zip(utts, utts[1:]):
        assert b.start == pytest.approx(a.end)  # contiguous times
        assert round(a.start * SR) + a.audio.size == round(b.start * SR)  # contiguous samples
    for u in utts:
        assert u.duration <= max_s + 1e-9
        assert u.audio.size / SR <= max_s + 1e-9
    gaps = check_partition(utts, s.audio)
    lead = round(utts[0].start * SR)
    tail = s.audio.size - round(utts[-1].start * SR) - utts[-1].audio.size
    assert sum(u.audio.size for u in utts) + lead + tail == s.audio.size
    assert gaps == lead + tail


# -- chunking and time ------------------------------------------------------------------------

def conversation(frame_ms: int = 30) -> Script:
    f = lambda ms: frames_for(ms, frame_ms)  # noqa: E731
    return (Script(frame_ms, seed=3).silence(f(700))
            .speech(f(1200)).silence(f(200)).speech(f(900)).silence(f(800))  # pause, then an end
            .speech(f(120)).silence(f(900))  # a blip
            .speech(f(2000)).quiet_voiced(2).speech(f(2500)).silence(f(510))  # cut (max 4 s)
            .speech(f(300)).silence(f(520))  # ends right after end_silence_ms
            .speech(f(1000)))  # still talking at the end: flush


@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_odd_sized_chunks_give_the_same_events_as_one_push(frame_ms):
    s = conversation(frame_ms)
    whole = s.segmenter(max_utterance_s=4.0)
    reference = whole.push(s.audio) + whole.flush()
    assert [e.reason for e in ends(reference)] == ["silence", "too_short", "max_length", "silence",
                                                   "silence", "flush"]
    rng = np.random.default_rng(frame_ms)
    for sizes in ([1, 7, 479, 481, 1000, 33], [s.frame - 1], [s.frame + 1], [5000, 3]):
        seg = s.segmenter(max_utterance_s=4.0)
        events, i, k = [], 0, 0
        audio = s.audio
        while i < audio.size:  # the given sizes in turn, every third chunk a random size
            n = sizes[k % len(sizes)] if k % 3 else int(rng.integers(1, 2 * s.frame))
            events += seg.push(audio[i:i + n])
            i, k = i + n, k + 1
        events += seg.flush()
        assert structure(events) == structure(reference)
        # the streamed audio of each utterance is the same sound, however it was chunked
        for e in ends(events):
            u = e.utterance
            streamed = np.concatenate([a.samples for a in events
                                       if isinstance(a, SpeechAudio) and a.utterance_id == u.id])
            assert streamed.size >= u.audio.size
            np.testing.assert_array_equal(streamed[:u.audio.size], u.audio)
            np.testing.assert_array_equal(streamed, audio[round(u.start * SR):round(u.start * SR) + streamed.size])


def test_speech_audio_continues_the_utterance_and_voiced_end_only_grows():
    s = conversation(30)
    seg = s.segmenter(max_utterance_s=4.0)
    events = []
    for i in range(0, s.audio.size, 1600):
        events += seg.push(s.audio[i:i + 1600])
    events += seg.flush()
    current, last_voiced_end = None, None
    for e in events:
        if isinstance(e, SpeechStart):
            current, last_voiced_end = e.utterance_id, e.start
        elif isinstance(e, SpeechAudio):
            assert e.utterance_id == current
            assert e.samples.dtype == np.int16 and e.samples.size > 0
            assert e.voiced_end >= last_voiced_end
            last_voiced_end = e.voiced_end
        elif isinstance(e, SpeechPause):
            assert e.utterance_id == current
        elif isinstance(e, SpeechEnd):
            assert e.utterance.id == current


def test_times_are_audio_seconds():
    # a minute of silence is pushed at once, far faster than real time: times follow the samples
    s = Script(30).silence(2000).speech(40).silence(30)
    seg = s.segmenter()
    events = seg.push(s.audio[:12345])
    assert seg.audio_time == pytest.approx(12345 / SR)  # a partial frame counts too
    events += seg.push(s.audio[12345:])
    assert seg.audio_time == pytest.approx(s.audio.size / SR)
    start = next(e for e in events if isinstance(e, SpeechStart))
    assert start.start == pytest.approx(60.0 - 0.3)
    (e,) = ends(events)
    assert e.utterance.end == pytest.approx(60.0 + 1.2)
    assert_audio_is_input(e.utterance, s.audio)


def test_level_meter_follows_the_input():
    seg = Segmenter(VadOptions(), is_speech=lambda f: False)
    seg.push(np.zeros(480, np.int16))
    quiet = seg.level_db
    seg.push(tone(0.03))
    assert quiet < -100 < -20 < seg.level_db <= 0


def test_ids_increase_per_utterance():
    s = Script(30)
    for _ in range(4):
        s.silence(25).speech(20)
    s.silence(25)
    events = s.segmenter().push(s.audio)
    assert [e.utterance.id for e in ends(events)] == [1, 2, 3, 4]
    check_partition([e.utterance for e in ends(events)], s.audio)


# -- a fading word ends sooner: the level gate (tail_db) ---------------------------------------

@pytest.mark.parametrize("frame_ms", [10, 30])
def test_a_fading_tail_the_detector_calls_speech_ends_the_word_at_the_level_drop(frame_ms):
    """webrtcvad keeps a word's fading tail as speech for ~0.15 s; with tail_db the pause, the
    end and so the final come at the level drop instead. Without the gate they come after it."""
    def run(tail_db):
        s = (Script(frame_ms).silence(frames_for(300, frame_ms)).speech(frames_for(900, frame_ms))
             .quiet_voiced(frames_for(150, frame_ms), amp=60)  # 42 dB down, still "voiced"
             .silence(frames_for(800, frame_ms)))
        seg = s.segmenter(tail_db=tail_db)
        events = seg.push(s.audio) + seg.flush()
        pause = next(e for e in events if isinstance(e, SpeechPause))
        (end,) = ends(events)
        return s, pause, end

    s, pause, end = run(35.0)
    loud_end = s.t(frames_for(300, frame_ms) + frames_for(900, frame_ms))
    assert pause.speech_end == pytest.approx(loud_end) and end.utterance.end == pytest.approx(loud_end)
    # the tail is still in the utterance's audio (post-roll): nothing said is cut off
    assert end.utterance.start + end.utterance.audio.size / SR >= loud_end + 0.15 - 1e-9
    _, pause_off, end_off = run(0.0)
    assert pause_off.speech_end == pytest.approx(loud_end + 0.15)
    assert end_off.utterance.end == pytest.approx(loud_end + 0.15)


def test_the_level_gate_leaves_speech_within_its_range_alone():
    """Soft speech 20 dB below the loudest word is still speech: no pause, one utterance."""
    s = (Script(30).silence(10).speech(30, amp=8000).speech(30, amp=800).speech(30, amp=8000)
         .silence(30))
    seg = s.segmenter(tail_db=35.0)
    events = seg.push(s.audio) + seg.flush()
    pauses = [e.speech_end for e in events if isinstance(e, SpeechPause)]
    assert pauses == [pytest.approx(s.t(100))]  # only at the real end, none at the soft words
    (end,) = ends(events)
    assert end.utterance.end == pytest.approx(s.t(100))
