"""What a decode is given besides its audio, on the real ``base`` model and real speech
(Debian's Asterisk prompts): the previous captions as context, dropped when the utterance is in
another language; an output that only echoes that context heard again without it; the session's
language as a prior that a clearly different language overrides, never translating by accident;
and a partial's decode over noise, with the previous caption as context, showing nothing."""

from __future__ import annotations

import numpy as np
import pytest

import corpus
from subtitler.asr import Prompt

pytestmark = pytest.mark.slow

ENGLISH_CONTEXT = "Please enter the number to be removed from the blacklist. The conference is now locked."


def prompt_audio(name: str, lang: str) -> tuple[str, np.ndarray]:
    x = corpus.load_16k(corpus.prompt_path(name, lang))
    on, off = corpus.speech_bounds(x, corpus.SAMPLE_RATE)
    return corpus.load_prompts(lang)[name], x[max(0, on - 4800): off + 3200]


def final(asr, audio, **kw):
    """A final's decode as the streaming policy asks for it: beam 5 with the fallback."""
    asr.encoding.cache.clear()
    return asr.decode(audio, beam_size=5, fallback=True, **kw)


def partial(asr, audio, **kw):
    """A partial's decode: greedy, no fallback."""
    asr.encoding.cache.clear()
    return asr.decode(audio, beam_size=1, fallback=False, **kw)


@pytest.mark.parametrize("name", ["vm-pls-try-again", "transfer", "vm-passchanged"])
def test_spanish_after_english_captions_is_captioned_in_spanish(asr_base, name):
    """The first Spanish utterance after a minute of English: the English prior and context
    must not turn it into English (a translation labelled en) or into a repeat of them."""
    reference, audio = prompt_audio(name, "es")
    d = final(asr_base, audio, prior="en", prompt=Prompt("", ENGLISH_CONTEXT, "en"))
    assert d.ok and d.language == "es", (d.language, d.text, d.languages)
    assert corpus.wer([reference], [d.text], lang="es") <= 0.25, d.text


def test_the_context_is_given_only_to_an_utterance_of_its_language(asr_base):
    reference, audio = prompt_audio("vm-pls-try-again", "es")
    spanish = Prompt("", "Por favor espere mientras le comunico con esa extension.", "es")
    d = final(asr_base, audio, language="es", prompt=spanish)
    assert d.language == "es" and corpus.wer([reference], [d.text], lang="es") <= 0.25
    assert Prompt("", ENGLISH_CONTEXT, "en").for_language("es") == ""


def test_an_utterance_said_again_is_captioned_again(asr_base):
    """The context holds the same sentence: the decode's output echoes it, so it is heard again
    without the context; what was really said comes out again."""
    reference, audio = prompt_audio("confbridge-locked", "en")
    d = final(asr_base, audio, prior="en", prompt=Prompt("", ENGLISH_CONTEXT, "en"))
    assert d.ok and d.echo_retried
    assert corpus.wer([reference], [d.text]) == 0.0, d.text


@pytest.mark.parametrize("seconds", [1.5, 3.0])
def test_a_partial_over_noise_with_the_previous_caption_as_context_shows_nothing(asr_base, seconds):
    """10 s of loud fan-like noise in the stream woke the segmenter: the partial decodes of it,
    given the previous caption as context, must not show text (nor that caption again)."""
    rng = np.random.default_rng(4)
    noise = np.round(corpus._noise(int(seconds * corpus.SAMPLE_RATE), rng, -35.0)).astype(np.int16)
    for prompt in (Prompt("", ENGLISH_CONTEXT, "en"), Prompt()):
        d = partial(asr_base, noise, prior="en", prompt=prompt)
        assert not d.ok, (prompt, d.text, d.avg_logprob, d.no_speech_prob)


@pytest.mark.parametrize("digit", ["4", "21"])
def test_a_number_said_in_the_sessions_language_keeps_its_label(asr_base, digit):
    """A Spanish "cuatro" comes out as "4" in Spanish and in Italian alike, likelier under
    Italian's token: digits belong to no language, so the session's Spanish stands and the
    caption is not labelled Italian (nor kept from the room's Spanish screens)."""
    reference = corpus.load_prompts("es")[f"digits/{digit}"]
    pad = np.zeros(corpus.SAMPLE_RATE * 3 // 10, dtype=np.int16)  # the whole recording, 0.3 s of silence around it
    audio = np.concatenate([pad, corpus.load_16k(corpus.prompt_path(f"digits/{digit}", "es")), pad])
    d = final(asr_base, audio, prior="es")
    assert d.ok and d.language == "es", (d.language, d.text, d.languages)
    assert corpus.wer([reference], [d.text], lang="es") == 0.0, (reference, d.text)
