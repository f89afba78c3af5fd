"""Apertium for real (Debian's apertium + apertium-eng-spa): English → Spanish on the Asterisk
prompts, whose Spanish versions (the Spanish Asterisk package) make a parallel corpus.

Measured here (apertium 3.8.3, apertium-eng-spa 0.8.1; 225 prompts of ≥ 3 words, both sides
through ``corpus.normalize``): en → es BLEU 18.3, chrF 50.9; es → en BLEU 18.0, chrF 50.1.
The floors below leave ~3 BLEU for other versions of the pair's data; Apertium is
deterministic, so a drop below them is a real change.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from pathlib import Path

import pytest

from subtitler.translate import TranslationError, TranslationStage, Translator
from subtitler.translate import apertium as ap

pytestmark = pytest.mark.skipif(not ap.available() or "eng-spa" not in ap.installed_pairs(),
                                reason="needs apt-get install apertium apertium-eng-spa")

BLEU_FLOOR = {"en-es": 15.0, "es-en": 15.0}
CHRF_FLOOR = {"en-es": 46.0, "es-en": 45.0}


@pytest.fixture(scope="module")
def apertium():
    tr = ap.ApertiumTranslator()
    yield tr
    tr.close()


@pytest.fixture(scope="module")
def parallel() -> list[tuple[str, str]]:
    import corpus

    try:
        en, es = corpus.load_prompts("en"), corpus.load_prompts("es")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    names = corpus.parallel_names(3, "en")
    assert len(names) >= 200
    return [(en[n], es[n]) for n in names]


def test_installed_pairs_are_translation_directions(tmp_path):
    pairs = ap.installed_pairs()
    assert {"eng-spa", "spa-eng"} <= set(pairs)
    for name in ("eng-spa", "eng-spa-tagger", "eng-spa-biltrans", "spa-eng_US", "es-pt", "README"):
        (tmp_path / f"{name}.mode").write_text("cat\n")
    assert set(ap.installed_pairs([tmp_path])) == {"eng-spa", "spa-eng_US", "es-pt"}


def test_pair_choice_and_languages(apertium):
    assert isinstance(apertium, Translator)
    assert apertium.pair_for("en", "es") == "eng-spa"
    assert apertium.pair_for("es", "en") == "spa-eng"  # the plain direction before spa-eng_US
    assert apertium.pair_for("en", "fr") is None
    assert apertium.can_target("es") and apertium.can_target("en") and not apertium.can_target("zh")
    assert {("en", "es"), ("es", "en")} <= apertium.languages
    fake = ap.ApertiumTranslator(pairs={"es-pt": Path("x"), "hbs-eng": Path("y")})
    assert fake.pair_for("es", "pt") == "es-pt"  # an old two-letter pair
    assert fake.supports("sr", "en") and fake.supports("hr", "en")  # Serbo-Croatian
    variants = ap.ApertiumTranslator(pairs={p: Path("x") for p in ("eng-hbs", "eng-hbs_HR", "eng-hbs_SR",
                                                                   "spa-eng", "spa-eng_US")})
    assert variants.pair_for("en", "hr") == "eng-hbs_HR" and variants.pair_for("en", "sr") == "eng-hbs_SR"
    assert variants.pair_for("en", "bs") == "eng-hbs"
    assert variants.pair_for("es", "en") == "spa-eng" and variants.pair_for("es", "en-US") == "spa-eng_US"


def test_translates_and_cleans_unknown_word_marks(apertium):
    out = apertium.translate("Press 7 to undelete this message.", "en", ["es"])
    assert out == {"es": "Prensa 7 a undelete este mensaje."}  # no '*undelete'
    assert apertium.translate("Hello world", "en", ["es"])["es"] == "Hola Mundo"
    assert apertium.translate("Marque 7 para recuperar el mensaje.", "es", ["en"])["en"].endswith("message.")


def test_reserved_characters_survive(apertium):
    out = apertium.translate("I paid $5 [really] for a/b <x> {y} ^z\\w @home.", "en", ["es"])["es"]
    for piece in ("$5", "[realmente]", "/b", "<x>", "{y}", "^z\\w"):
        assert piece in out, (piece, out)


def test_persistent_pipeline_is_fast(apertium):
    apertium.warmup(["es"])
    times = []
    for i in range(20):
        t0 = time.perf_counter()
        apertium.translate(f"Please enter your password followed by the pound key {i}.", "en", ["es"])
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.05, times


def test_one_process_per_call_gives_the_same_text(apertium):
    once = ap.ApertiumTranslator(persistent=False)
    for text in ("Your call is important to us.", "The conference is now unmuted."):
        assert once.translate(text, "en", ["es"]) == apertium.translate(text, "en", ["es"])


def test_a_killed_pipeline_is_replaced(apertium):
    apertium.translate("Hello.", "en", ["es"])
    pipe = apertium._pipes["eng-spa"]
    os.killpg(pipe.proc.pid, signal.SIGKILL)
    pipe.proc.wait()
    assert apertium.translate("Good morning.", "en", ["es"]) == {"es": "Buenos días."}


def test_a_stuck_or_dead_pipeline_is_an_error_and_the_next_call_starts_afresh(tmp_path):
    (tmp_path / "eng-xxx.mode").write_text("tail -f /dev/null\n")  # never answers
    (tmp_path / "eng-yyy.mode").write_text("head -c 0\n")  # ends at once
    tr = ap.ApertiumTranslator(pairs=ap.installed_pairs([tmp_path]), timeout_s=0.5)
    try:
        with pytest.raises(TranslationError, match="no answer within 0.5 s"):
            tr.translate("Hello", "en", ["xxx"])
        assert "eng-xxx" not in tr._pipes
        with pytest.raises(TranslationError, match="apertium eng-yyy"):
            tr.translate("Hello", "en", ["yyy"])
        stage = TranslationStage(["xxx", "yyy"], [tr])
        result = stage.translate("Hello", "en")
        assert set(result.errors) == {"xxx", "yyy"} and not result.translations
    finally:
        tr.close()


def test_a_pipeline_that_ends_just_before_a_caption_is_written_is_an_error_then_restarts(tmp_path):
    # The pipeline can end between the check that it is alive and the write: the caption stays
    # buffered, and closing the pipe must not raise the broken pipe a second time.
    (tmp_path / "eng-yyy.mode").write_text("head -c 0\n")  # ends at once
    tr = ap.ApertiumTranslator(pairs=ap.installed_pairs([tmp_path]), timeout_s=0.5)
    try:
        pipe = tr._pipe("eng-yyy")
        pipe.proc.wait()
        pipe.alive = lambda: True  # as if it ended right after the check
        with pytest.raises(TranslationError, match="apertium eng-yyy.*Broken pipe"):
            tr.translate("Hello", "en", ["yyy"])
        assert "eng-yyy" not in tr._pipes
        with pytest.raises(TranslationError, match="apertium eng-yyy"):
            tr.translate("Hello", "en", ["yyy"])  # a fresh pipeline, which ends too
    finally:
        tr.close()


@pytest.mark.parametrize("direction", ["en-es", "es-en"])
def test_bleu_on_the_asterisk_parallel_prompts(apertium, parallel, direction):
    import corpus
    import sacrebleu

    src, tgt = direction.split("-")
    pairs = parallel if src == "en" else [(b, a) for a, b in parallel]
    t0 = time.perf_counter()
    hyps = [apertium.translate(s, src, [tgt])[tgt] for s, _ in pairs]
    per_prompt = (time.perf_counter() - t0) / len(pairs)
    refs = [corpus.normalize(r, tgt) for _, r in pairs]
    hyps = [corpus.normalize(h, tgt) for h in hyps]
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
    print(f"apertium {direction}: BLEU {bleu:.1f} chrF {chrf:.1f} on {len(pairs)} prompts, "
          f"{per_prompt * 1000:.1f} ms a prompt")
    assert bleu >= BLEU_FLOOR[direction] and chrf >= CHRF_FLOOR[direction]
