"""The translation stage's routing additions and the worker's partial slot, with fake backends
(no model, no subprocess): the automatic choice per target, sentence-by-sentence translation
through the cache (a sentence that did not change keeps its translation), partials that never
hold up a final, and a file session's worker that never skips."""

from __future__ import annotations

import threading
import time

import pytest

from subtitler.captions import Caption
from subtitler.translate import (SentenceCache, TranslateConfig, TranslationConfigError, TranslationStage,
                                 TranslationWorker, build_stage, split_sentences)
from subtitler.translate.stage import join_sentences


class Fake:
    """A text backend: 'xx: TEXT' for each target it can do; counts its calls."""

    glossary_style = "placeholder"

    def __init__(self, name: str, targets: set[str], delay: float = 0.0, audio: bool = False):
        self.name, self.targets, self.delay = name, targets, delay
        self.needs_audio = audio
        self.calls: list[tuple[str, tuple[str, ...], object]] = []

    def describe(self):
        return f"{self.name}: fake → {', '.join(sorted(self.targets))}"

    def can_target(self, target):
        return target in self.targets

    def supports(self, source, target):
        return target in self.targets and source != target

    def translate(self, text, source, targets, *, audio=None):
        self.calls.append((text, tuple(targets), audio))
        time.sleep(self.delay)
        return {t: f"{t}: {text}" for t in targets}


def caption(id_: int, text: str, kind: str = "final", lang: str = "en") -> Caption:
    return Caption(id=id_, seq=id_, kind=kind, start=0.0, end=1.0, emitted=1.0, lang=lang, text=text)


def test_split_and_join_sentences():
    assert split_sentences("Hello there.  How are you? Fine!") == ["Hello there.", "How are you?", "Fine!"]
    assert split_sentences("Call Dr. Smith, e.g. today.") == ["Call Dr.", "Smith, e.g. today."]
    assert split_sentences("今天很好。我们走吧！好") == ["今天很好。", "我们走吧！", "好"]
    assert split_sentences("no end yet") == ["no end yet"] and split_sentences("  ") == []
    assert join_sentences(["你好。", "再见。"], "zh") == "你好。再见。"
    assert join_sentences(["Hola.", "Adiós."], "es") == "Hola. Adiós."
    assert join_sentences(["a", "b"], "zho_Hant") == "ab"


def test_auto_prefers_whisper_for_english_and_the_pairs_otherwise():
    whisper = Fake("whisper", {"en"}, audio=True)
    apertium = Fake("apertium", {"en", "es"})
    stage = TranslationStage(["en", "es"], [apertium, whisper])
    assert stage.route("es") == ({"whisper": ["en"]}, {})
    assert stage.route("en") == ({"apertium": ["es"]}, {})
    assert stage.uses_audio and stage.text_targets("es") == ["es"]  # en comes from the speech
    assert stage.text_targets("fr") == ["es"]
    assert stage.describe_routes("fr") == "en ← whisper, es ← apertium"
    assert stage.describe_routes("es") == "en ← whisper, es = the spoken language"
    stage = TranslationStage(["en"], [apertium, whisper], overrides={"en": "apertium"})
    assert stage.route("es") == ({"apertium": ["en"]}, {}) and not stage.uses_audio


def test_impossible_target_names_the_model_that_would_do_it():
    with pytest.raises(TranslationConfigError, match="nothing can translate into 'zh'.*models pull nllb-200"):
        TranslationStage(["zh"], [Fake("apertium", {"es"})])


def test_translate_a_subset_of_the_targets():
    apertium = Fake("apertium", {"es", "ca"})
    result = TranslationStage(["es", "ca"], [apertium]).translate("Hello.", "en", targets=["ca"])
    assert result.translations == {"ca": "ca: Hello."} and apertium.calls == [("Hello.", ("ca",), None)]


def test_sentence_cache_keeps_unchanged_sentences():
    apertium = Fake("apertium", {"es", "ca"})
    whisper = Fake("whisper", {"en"}, audio=True)
    stage = TranslationStage(["es", "ca", "en"], [apertium, whisper])
    cache = SentenceCache()
    first = stage.translate("Good morning. The budget", "fr", cache=cache, targets=stage.text_targets("fr"))
    assert first.translations == {"es": "es: Good morning. es: The budget", "ca": "ca: Good morning. ca: The budget"}
    assert whisper.calls == []  # partials: text backends only
    apertium.calls.clear()
    final = stage.translate("Good morning. The budget is approved.", "fr", cache=cache, audio="AUDIO")
    assert apertium.calls == [("The budget is approved.", ("es", "ca"), None)]  # one call, both targets
    assert final.translations["es"] == "es: Good morning. es: The budget is approved."
    assert whisper.calls == [("Good morning. The budget is approved.", ("en",), "AUDIO")]  # whole, with audio
    assert final.translations["en"] == "en: Good morning. The budget is approved."


def test_sentence_cache_is_bounded():
    cache = SentenceCache(size=2)
    for i in range(3):
        cache.put("en", f"s{i}", {"es": str(i)})
    assert cache.get("en", "s0") == {} and cache.get("en", "s2") == {"es": "2"}


def test_worker_partials_wait_for_finals_and_the_newest_wins():
    slow = Fake("apertium", {"es"}, delay=0.2)
    got: list[tuple[str, int, str]] = []
    done = threading.Event()

    def on_result(c, result):
        got.append((c.kind, c.id, result.translations.get("es", "")))
        if c.kind == "final" and c.id == 2:
            done.set()

    worker = TranslationWorker(TranslationStage(["es"], [slow]), on_result, partial_interval=0.05)
    worker.submit(caption(1, "One."))  # busy 0.2 s with this one
    time.sleep(0.05)
    worker.submit_partial(caption(2, "Two", kind="partial"))
    worker.submit_partial(caption(2, "Two and", kind="partial"))  # replaces the one not yet started
    worker.submit(caption(2, "Two and three."))  # the final drops its waiting partial
    worker.submit_partial(caption(3, "Four", kind="partial"))
    assert done.wait(10)
    time.sleep(0.4)
    assert worker.close()
    assert got == [("final", 1, "es: One."), ("final", 2, "es: Two and three."), ("partial", 3, "es: Four")]


def test_worker_throttles_partials():
    fast = Fake("apertium", {"es"})
    got = []
    worker = TranslationWorker(TranslationStage(["es"], [fast]), lambda c, r: got.append(time.monotonic()),
                               partial_interval=0.3)
    for i in range(8):
        worker.submit_partial(caption(1, f"word {i}", kind="partial"))
        time.sleep(0.1)
    worker.close()
    assert 2 <= len(got) <= 4, got
    assert all(b - a >= 0.29 for a, b in zip(got, got[1:]))


def test_worker_without_partial_translation_ignores_partials_and_a_file_never_skips():
    slow = Fake("apertium", {"es"}, delay=0.02)
    got = []
    worker = TranslationWorker(TranslationStage(["es"], [slow]), lambda c, r: got.append((c.id, r)),
                               max_pending=None)
    worker.submit_partial(caption(0, "ignored", kind="partial"))
    for i in range(1, 21):
        worker.submit(caption(i, f"caption {i}"))
    assert worker.close(timeout=None)
    assert [i for i, _ in got] == list(range(1, 21)) and worker.skipped == 0
    assert all(not r.errors for _, r in got)


# -- the [translate] section, as build_stage takes it --------------------------------------------------

def test_translate_config_is_the_section_and_its_overrides_parse_once():
    t = TranslateConfig(targets=["en", "es"], overrides=["en=whisper", "es = apertium"])
    assert t.parsed_overrides == {"en": "whisper", "es": "apertium"}
    assert TranslateConfig().parsed_overrides == {} and TranslateConfig().partials is False
    with pytest.raises(TranslationConfigError, match="not target=backend"):
        TranslateConfig(overrides=["en:whisper"]).parsed_overrides
    assert build_stage(TranslateConfig()) is None  # no targets: no stage, nothing loaded
    # an override for a target the settings do not have is refused at start, naming it
    with pytest.raises(TranslationConfigError, match="'fr', which is not one of the targets"):
        TranslationStage(["es"], [Fake("apertium", {"es"})], overrides=TranslateConfig(
            targets=["es"], overrides=["fr=apertium"]).parsed_overrides)
