"""Whisper's own speech → English translation, for real: the packaged multilingual ``base`` on
Spanish Asterisk prompts, scored against their English versions (the parallel corpus).

Measured here (base, int8 decoder on CPU, beam 5; 16 prompts of 4+ words, 1–8 s of speech,
seed 0; both sides through ``corpus.normalize``): BLEU 26.4 with CTranslate2's int8 encoder,
26.5 with the bfloat16 torch one; chrF 55.0 / 54.8. Floors: BLEU 20, chrF 45 (another CPU
may pick other beams).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from subtitler.translate import TranslationError, TranslationStage, Translator
from subtitler.translate.whisper_en import WhisperTranslator

pytestmark = pytest.mark.slow

BLEU_FLOOR = 20.0
CHRF_FLOOR = 45.0
COUNT = 16


@pytest.fixture(scope="module")
def whisper(asr_base) -> WhisperTranslator:
    return WhisperTranslator(asr_base)


@pytest.fixture(scope="module")
def spanish_prompts() -> list[tuple[str, str]]:
    """(name, English reference) of Spanish prompts with a parallel English text."""
    import corpus

    try:
        en = corpus.load_prompts("en")
        pool = corpus.parallel_names(4, "es", duration=(1.0, 8.0))
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return [(n, en[n]) for n in random.Random(0).sample(pool, COUNT)]


def test_languages(whisper):
    assert isinstance(whisper, Translator)
    assert whisper.can_target("en") and not whisper.can_target("es")
    assert whisper.supports("es", "en") and whisper.supports("zh", "en")
    assert not whisper.supports("en", "en") and not whisper.supports("xx", "en")


def test_needs_the_audio(whisper):
    with pytest.raises(TranslationError, match="without its audio"):
        whisper.translate("Hola", "es", ["en"])
    with pytest.raises(TranslationError, match="into en only"):
        whisper.translate("Hola", "es", ["fr"], audio=np.zeros(16000, np.int16))


def test_bleu_spanish_speech_to_english(whisper, spanish_prompts):
    import corpus
    import sacrebleu

    stage = TranslationStage(["en", "es"], [whisper], overrides={"en": "whisper"}, source="es")
    hyps, refs = [], []
    for name, reference in spanish_prompts:
        audio = corpus.load_16k(corpus.prompt_path(name, "es"))
        result = stage.translate("(the Spanish transcript)", "es", audio=audio)
        assert result.backends.get("en") == "whisper" or "en" in result.errors
        assert result.translations["es"] == "(the Spanish transcript)"
        hyps.append(corpus.normalize(result.translations.get("en", ""), "en"))
        refs.append(corpus.normalize(reference, "en"))
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
    print(f"whisper base es → en: BLEU {bleu:.1f} chrF {chrf:.1f} on {len(hyps)} prompts")
    assert bleu >= BLEU_FLOOR and chrf >= CHRF_FLOOR


def test_translating_the_final_just_transcribed_skips_the_encoder(asr_base, spanish_prompts):
    """The engine transcribes an utterance, then Whisper translates the same audio: the second
    decode reuses the first one's encoder output (measured 0.8 s → 0.16 s here) and gives the
    same text as a decode with its own encoder pass."""
    import corpus

    name, _ = spanish_prompts[0]
    # a copy nobody decoded yet (the BLEU test above decoded the prompt itself)
    audio = np.concatenate([corpus.load_16k(corpus.prompt_path(name, "es")), np.zeros(160, np.int16)])
    passes = asr_base.encoder_passes
    heard = asr_base.decode(audio, language="es")
    english = asr_base.decode(audio, language="es", task="translate", known_speech=True)
    assert not heard.encoder_reused and english.encoder_reused
    assert asr_base.encoder_passes == passes + 1
    assert heard.ok and english.ok and english.text != heard.text
    asr_base.encoding.cache.clear()
    again = asr_base.decode(audio, language="es", task="translate", known_speech=True)
    assert not again.encoder_reused and again.text == english.text
    other = asr_base.decode(audio[: audio.size // 2], language="es")
    assert not other.encoder_reused  # other audio, its own pass
