"""WhisperASR.decode_batch on real models (``base`` and ``tiny.en``) and real speech (Debian's
Asterisk prompts): several rooms' utterances decoded together give, each, what ``decode``
gives it alone (text, language, confidence, verdict), with one encoder pass for the batch and
one text generation per group of prompts CTranslate2 can batch.

"Alone" below is ``decode`` with the encoder cache emptied first, so it pays its own encoder
pass as a room's first decode of that audio would.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from subtitler.asr import DecodeRequest, WhisperASR

pytestmark = pytest.mark.slow

MODELS = ["base", "tiny.en"]


@pytest.fixture(params=MODELS)
def asr(request) -> WhisperASR:
    return request.getfixturevalue("asr_base" if request.param == "base" else "asr_tiny_en")


def speech(name: str, lang: str = "en") -> tuple[str, np.ndarray]:
    """A prompt's reference text and its 16 kHz int16 audio."""
    import corpus

    return corpus.load_prompts(lang)[name], corpus.load_16k(corpus.prompt_path(name, lang))


def alone(asr: WhisperASR, r: DecodeRequest):
    asr.encoding.cache.clear()
    return asr.decode(r.audio, language=r.language, prior=r.prior, task=r.task, beam_size=r.beam_size,
                      prefix=r.prefix, prompt=r.prompt, fallback=r.fallback, abandon=r.abandon,
                      known_speech=r.known_speech)


def same(a, b) -> bool:
    """Two decodings agree on everything but the time taken and the encoder cache."""
    def fields(d):
        return {k: v for k, v in dataclasses.asdict(d).items() if k not in ("elapsed", "encoder_reused")}

    return fields(a) == fields(b)


class Calls:
    """Records the batch's encoder passes and text generations (which requests went together)."""

    def __init__(self, asr: WhisperASR, monkeypatch):
        self.encoder: list[int] = []  # windows per encoder call
        self.generate: list[tuple[float, list[int]]] = []  # (temperature, ids of the requests)
        encode, generate = asr.encoding.encode, asr._generate

        def spy_encode(features):
            self.encoder.append(len(features))
            return encode(features)

        def spy_generate(works, temperature):
            self.generate.append((temperature, [id(w.request) for w in works]))
            return generate(works, temperature)

        monkeypatch.setattr(asr.encoding, "encode", spy_encode)
        monkeypatch.setattr(asr, "_generate", spy_generate)

    def sizes(self, temperature: float = 0.0) -> list[int]:
        return sorted(len(ids) for t, ids in self.generate if t == temperature)


def test_three_rooms_in_one_batch_get_what_each_would_alone(asr, monkeypatch):
    """Different lengths (1.9, ~5, 11.5 s); one detects its language (Spanish on base), one has
    it fixed, one is forced to begin with a prefix, as a room's partial is."""
    import corpus

    if asr.multilingual:
        detect_text, detect_audio = speech("agent-newlocation", "es")
    else:
        detect_text, detect_audio = speech("agent-user")
    long_text, long_audio = speech("dir-intro")
    short_text, short_audio = speech("conf-extended")
    requests = [DecodeRequest(detect_audio),
                DecodeRequest(long_audio, language="en"),
                DecodeRequest(short_audio, language="en", beam_size=1, fallback=False,
                              prefix=" ".join(short_text.split()[:2]))]
    singles = [alone(asr, r) for r in requests]

    asr.encoding.cache.clear()
    calls = Calls(asr, monkeypatch)
    passes = asr.encoder_passes
    t0 = time.perf_counter()
    batch = asr.decode_batch(requests)
    wall = time.perf_counter() - t0

    for one, together in zip(singles, batch):
        assert same(one, together), (one, together)
    assert all(d.ok for d in batch), batch
    assert batch[0].language == ("es" if asr.multilingual else "en")
    for d, text, lang in zip(batch, (detect_text, long_text, short_text),
                             ("es" if asr.multilingual else "en", "en", "en")):
        assert corpus.wer([text], [d.text], lang=lang) <= 0.25, (text, d.text)
    assert calls.encoder == [3] and asr.encoder_passes == passes + 3
    # the two without a prefix share one generation (Spanish and English alike); the prefixed one
    # has its own, as their keys said before any decode
    assert calls.sizes() == [1, 2]
    keys = [asr.batch_key(r) for r in requests]
    assert keys[0] == keys[1] != keys[2]
    # each decoding carries its share of the time: together, the batch's wall time
    assert sum(d.elapsed for d in batch) == pytest.approx(wall, rel=0.05, abs=0.01)


def test_silence_and_noise_are_rejected_in_a_batch_as_alone(asr):
    noise = np.random.default_rng(0).normal(0, 300, 3 * 16000).astype(np.int16)
    quiet = np.random.default_rng(1).normal(0, 10, 2 * 16000).astype(np.int16)  # -70 dBFS
    requests = [DecodeRequest(speech("agent-user")[1], language="en"),
                DecodeRequest(noise),
                DecodeRequest(quiet, language="en"),
                DecodeRequest(speech("conf-extended")[1], language="en")]
    singles = [alone(asr, r) for r in requests]
    asr.encoding.cache.clear()
    batch = asr.decode_batch(requests)
    for one, together in zip(singles, batch):
        assert same(one, together), (one, together)
    assert batch[0].ok and batch[3].ok
    assert batch[1].rejected and batch[2].rejected and not batch[1].text and not batch[2].text


def test_a_batch_of_one_is_decode(asr):
    _, audio = speech("agent-user")
    request = DecodeRequest(audio, prior="en", prompt="Welcome to the call centre.", prefix="Agent")
    one = alone(asr, request)
    asr.encoding.cache.clear()
    (batched,) = asr.decode_batch([request])
    assert same(one, batched) and batched.ok and batched.text.startswith("Agent")
    assert not batched.encoder_reused


def test_abandon_is_asked_per_request_once_the_encoder_ran(asr, monkeypatch):
    asked = {"kept": 0, "dropped": 0}

    def keep():
        asked["kept"] += 1
        return False

    def drop():
        asked["dropped"] += 1
        return True

    requests = [DecodeRequest(speech("agent-user")[1], language="en", abandon=keep),
                DecodeRequest(speech("agent-pass")[1], language="en", beam_size=1, abandon=drop),
                DecodeRequest(speech("conf-extended")[1], language="en")]
    singles = [alone(asr, r) for r in requests]
    asked.update(kept=0, dropped=0)
    asr.encoding.cache.clear()
    calls = Calls(asr, monkeypatch)
    batch = asr.decode_batch(requests)

    assert asked == {"kept": 1, "dropped": 1}
    assert batch[1].rejected == "abandoned" and batch[1].text == "" and same(singles[1], batch[1])
    assert same(singles[0], batch[0]) and same(singles[2], batch[2]) and batch[0].ok and batch[2].ok
    assert calls.encoder == [3]  # encoded with the others before it was asked…
    assert id(requests[1]) not in {i for _, ids in calls.generate for i in ids}  # …never generated
    assert calls.sizes() == [2]


def test_an_empty_batch(asr):
    passes = asr.encoder_passes
    assert asr.decode_batch([]) == []
    assert asr.encoder_passes == passes


def test_prompts_of_different_lengths_are_generated_apart(asr, monkeypatch):
    """CTranslate2 batches prompts whose start-of-transcript sits at the same place: rooms with
    the same context share a generation, the others run on their own, all as alone."""
    audios = [speech(n)[1] for n in ("agent-loginok", "conf-extended", "agent-pass", "agent-user")]
    contexts = ["The agent is ready.", "The agent is ready.", "", "Good morning, everyone, and welcome."]
    requests = [DecodeRequest(a, language="en", prompt=c) for a, c in zip(audios, contexts)]
    singles = [alone(asr, r) for r in requests]
    asr.encoding.cache.clear()
    calls = Calls(asr, monkeypatch)
    batch = asr.decode_batch(requests)
    for one, together in zip(singles, batch):
        assert same(one, together), (one, together)
    assert calls.sizes() == [1, 1, 2]
    assert calls.encoder == [4]
    keys = [asr.batch_key(r) for r in requests]
    assert keys[0] == keys[1] and len(set(keys)) == 3


@pytest.mark.parametrize("beam_size", [1, 5])
def test_a_request_cut_by_its_own_length_limit_is_decoded_as_alone(asr, monkeypatch, beam_size):
    """A generation runs to its longest request's limit (CTranslate2 takes one max_length). A
    short audio with a long forced prefix reaches its own, shorter limit inside the prefix: in
    the batch it is generated again on its own, so its text stops where it would alone."""
    long_text, long_audio = speech("dir-intro")
    short_audio = speech("conf-hasjoin")[1]  # 1.5 s
    prefix = speech("demo-congrats")[0]  # 74 words: more tokens than 1.5 s of audio may have
    requests = [DecodeRequest(long_audio, language="en", beam_size=beam_size, fallback=False,
                              prefix=" ".join(long_text.split()[:2])),
                DecodeRequest(short_audio, language="en", beam_size=beam_size, fallback=False,
                              prefix=prefix, known_speech=True)]
    singles = [alone(asr, r) for r in requests]
    cut = singles[1].text
    # alone, its limit stops it inside the prefix
    assert cut[:40] == prefix[:40] and len(cut) < len(prefix) - 40, cut
    asr.encoding.cache.clear()
    calls = Calls(asr, monkeypatch)
    batch = asr.decode_batch(requests)
    for one, together in zip(singles, batch):
        assert same(one, together), (one, together)
    assert calls.generate == [(0.0, [id(r) for r in requests]), (0.0, [id(requests[1])])]


def test_fallbacks_run_one_request_at_a_time(asr_base, monkeypatch):
    """Reversed speech sounds like speech but is no language: its beam search output fails
    the guards, so it is retried at higher temperatures, alone; the real speech beside it is
    settled by the batch's generation and comes out as alone."""
    reversed_ = [speech(n)[1][::-1].copy() for n in ("agent-pass", "at-tone-time-exactly", "agent-incorrect")]
    requests = [DecodeRequest(speech("agent-user")[1], language="en"),
                *(DecodeRequest(a, language="en") for a in reversed_),
                DecodeRequest(speech("conf-extended")[1], language="en")]
    real = [requests[0], requests[-1]]
    singles = [alone(asr_base, r) for r in real]
    asr_base.encoding.cache.clear()
    calls = Calls(asr_base, monkeypatch)
    batch = asr_base.decode_batch(requests)
    retried = [ids for t, ids in calls.generate if t > 0]
    assert retried and all(len(ids) == 1 for ids in retried)
    assert {i for ids in retried for i in ids} <= {id(r) for r in requests[1:-1]}
    assert same(singles[0], batch[0]) and same(singles[1], batch[-1])


def test_the_same_audio_twice_is_encoded_once(asr_base):
    """A final transcribed and translated to English by Whisper in the same batch."""
    text, audio = speech("agent-newlocation", "es")
    requests = [DecodeRequest(audio, language="es"),
                DecodeRequest(audio, language="es", task="translate", known_speech=True)]
    singles = [alone(asr_base, r) for r in requests]
    asr_base.encoding.cache.clear()
    passes = asr_base.encoder_passes
    heard, english = asr_base.decode_batch(requests)
    assert asr_base.encoder_passes == passes + 1
    assert not heard.encoder_reused and english.encoder_reused
    assert same(singles[0], heard) and same(singles[1], english)
    assert heard.ok and english.ok and heard.text != english.text


def test_batching_is_used_where_it_was_measured_faster(asr):
    """bench/batch_decode.py measured batches faster on this CPU (CPU_BATCHING), up to 4."""
    from subtitler.asr import CPU_BATCH, CPU_BATCHING

    assert asr.device == "cpu" and asr.batch_benefit is CPU_BATCHING
    assert asr.batch_size == (CPU_BATCH if CPU_BATCHING else 1) >= 1


def test_an_abandoned_partial_gives_up_its_encoder_pass_between_layers(repo_root):
    """A partial overtaken by a final (the host's ``abandon`` turns true) stops within one
    encoder layer (torch encoder), and the next decode of the same audio is whole and right."""
    from subtitler.models import resolve_model

    path = resolve_model("tiny.en", models_dir=repo_root / "models", download=False, progress=False)
    asr = WhisperASR(path, device="cpu", compute_type="int8", encoder="torch")
    text, audio = speech("dir-intro")
    asked = []

    def abandon() -> bool:  # a final shows up in another room while layer 1 runs
        asked.append(True)
        return len(asked) > 2

    d = asr.decode(audio, language="en", beam_size=1, abandon=abandon)
    assert d.rejected == "abandoned" and d.text == ""
    assert asr.encoding.stops == 1 and len(asked) == 3  # asked before layers 0, 1 and 2: stopped there
    # nothing half-encoded was kept: the same audio decodes whole afterwards
    again = asr.decode(audio, language="en", beam_size=1)
    assert not again.encoder_reused and again.ok
    import corpus
    assert corpus.wer([text], [again.text]) <= 0.25, again.text
