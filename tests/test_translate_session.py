"""The engine's translation wiring without a model: real speech (an Asterisk prompt stream) through
the real segmenter and policy, a stand-in decoder that answers at once, and fake backends. Checks
which sinks get translation captions, that a speech backend gets the very audio its final was
decoded from, that ``seq`` stays one strictly increasing counter across the decode and
translation threads, and that a raising backend is marked, not fatal."""

from __future__ import annotations

import numpy as np
import pytest

import corpus
from subtitler.asr import Decoding
from subtitler.audio import FileSource
from subtitler.captions import SAMPLE_RATE, Caption
from subtitler.config import Config
from subtitler.engine import Session, accepts_translations
from subtitler.translate import TranslationStage


class InstantASR:
    """Answers every decode at once with a text that names the audio it was given."""

    languages = ["en", "es"]
    multilingual = True

    def __init__(self):
        self.audio_sizes: list[int] = []

    def decode(self, audio, **kwargs) -> Decoding:
        self.audio_sizes.append(int(audio.size))
        return Decoding(text=f"Heard {audio.size} samples.", language="en", avg_logprob=-0.1)


class Backend:
    def __init__(self, name, targets, *, audio=False, fail=False):
        self.name, self.targets, self.needs_audio, self.fail = name, set(targets), audio, fail
        self.glossary_style = "inline"
        self.audio: list[int] = []

    def describe(self):
        return f"{self.name}: test"

    def can_target(self, target):
        return target in self.targets

    def supports(self, source, target):
        return target in self.targets and source != target

    def translate(self, text, source, targets, *, audio=None):
        if self.fail:
            raise RuntimeError("backend exploded")
        if self.needs_audio:
            assert audio is not None
            self.audio.append(int(np.asarray(audio).size))
        return {t: f"[{t}] {text}" for t in targets}


class Plain:
    """A sink from before translation: partials and finals only."""

    def __init__(self):
        self.captions: list[Caption] = []

    def on_caption(self, caption):
        self.captions.append(caption)


class Everything(Plain):
    accepts_translations = True


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> dict:
    return corpus.build_stream(tmp_path_factory.mktemp("sess") / "s.wav", count=3, seed=2)


def test_translation_captions_reach_only_the_sinks_that_take_them(stream):
    speech = Backend("whisper", ["de"], audio=True)
    text = Backend("apertium", ["es"])
    broken = Backend("ctranslate2", ["fr"], fail=True)
    stage = TranslationStage(["de", "es", "fr", "en"], [speech, text, broken], source="en")
    plain, everything, asr = Plain(), Everything(), InstantASR()
    session = Session(asr, FileSource(stream["wav"]), [plain, everything], Config(), translation=stage)
    result = session.run()
    assert not accepts_translations(plain) and accepts_translations(everything)
    assert all(c.kind != "translation" for c in plain.captions)
    finals = [c for c in everything.captions if c.is_final and c.text]
    updates = [c for c in everything.captions if c.is_translation]
    assert len(finals) == result.finals == 3 and len(updates) == 3
    assert [c.id for c in updates] == [c.id for c in finals]
    seqs = [c.seq for c in everything.captions]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for f, u in zip(finals, updates):
        assert u.seq > f.seq and u.text == f.text
        assert u.translations == {"de": f"[de] {f.text}", "es": f"[es] {f.text}", "en": f.text}
        assert u.translation_errors == {"fr": "ctranslate2: RuntimeError: backend exploded"}
    # The speech backend got each final's own audio, the decode that made its text, without the
    # lead before the utterance (vad.lead_ms; the stream's gaps are longer, so each had a whole one).
    v = Config().vad
    lead = (v.lead_ms // v.frame_ms) * v.frame_ms * SAMPLE_RATE // 1000
    assert lead > 0 and speech.audio == [int(f.text.split()[1]) - lead for f in finals]
    assert session.translations == 3 and session.translation_errors == 3
    assert session._final_audio == {} and session._partials == {}


def test_no_stage_no_worker_and_no_audio_kept(stream):
    rec = Everything()
    session = Session(InstantASR(), FileSource(stream["wav"]), [rec], Config())
    session.run()
    assert session._worker is None and session._final_audio == {}
    assert all(c.kind in ("partial", "final") for c in rec.captions) and rec.captions


def test_audio_is_kept_only_for_a_speech_backend(stream):
    stage = TranslationStage(["es"], [Backend("apertium", ["es"])])
    session = Session(InstantASR(), FileSource(stream["wav"]), [Everything()], Config(), translation=stage)
    assert not session._keep_audio
    session.run()
    assert session.translations == 3


def test_sample_rate_sanity(stream):
    # the stand-in's text carries sample counts; a 16 kHz stream of 3 prompts holds seconds of each
    asr = InstantASR()
    Session(asr, FileSource(stream["wav"]), [Plain()], Config()).run()
    assert all(size > 0.5 * SAMPLE_RATE for size in asr.audio_sizes)
