"""The CTranslate2 backend on tiny random-weight models built here through ``ctranslate2.specs``,
with a sentencepiece model trained here: NLLB-200, M2M-100 and Marian layouts. Their
translations are nonsense; tokens, language prefixes, batching, limits and errors are real.
Also the stage around the backends: routing, config errors at start, failures that never
stop the captions."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("sentencepiece")

from subtitler.captions import Caption  # noqa: E402
from subtitler.models import ModelNotFoundError  # noqa: E402
from subtitler.translate import (Glossary, TranslateConfig, TranslationConfigError, TranslationError,  # noqa: E402
                                 TranslationStage, TranslationWorker, Translator, build_stage,
                                 parse_overrides)
from subtitler.translate import ct2  # noqa: E402
from subtitler.translate.ct2 import CTranslate2Translator  # noqa: E402
from subtitler.translate.testing import random_model, train_sentencepiece  # noqa: E402

TEXT = "The conference is now unmuted. Press one to listen to your messages."


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory) -> Path:
    return train_sentencepiece(tmp_path_factory.mktemp("spm") / "sentencepiece.bpe.model")


@pytest.fixture(scope="module")
def models(tmp_path_factory, spm_file) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ct2")
    return {
        "nllb": random_model(root / "tiny-nllb", "nllb", spm_file=spm_file),
        "m2m100": random_model(root / "tiny-m2m100", "m2m100", spm_file=spm_file),
        "marian": random_model(root / "opus-mt-en-es", "marian", spm_file=spm_file),
    }


@pytest.fixture(scope="module")
def nllb(models) -> CTranslate2Translator:
    return CTranslate2Translator(models["nllb"], device="cpu", beam_size=2)


class Spy:
    """Stands in for the ctranslate2.Translator, records every translate_batch call."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def translate_batch(self, source, **kwargs):
        results = self.model.translate_batch(source, **kwargs)
        self.calls.append({"source": source, "results": results, **kwargs})
        return results


@pytest.fixture
def spy(nllb):
    real = nllb.model
    nllb.model = Spy(real)
    yield nllb.model
    nllb.model = real


# -- loading -----------------------------------------------------------------------------------

def test_family_is_detected_from_the_folder(models):
    for family, path in models.items():
        tr = CTranslate2Translator(path, device="cpu")
        assert isinstance(tr, Translator)
        assert tr.family == family
        assert tr.device == "cpu" and tr.compute_type == "int8"
    assert CTranslate2Translator(models["marian"], device="cpu").pair == ("en", "es")


def test_spec_built_model_has_the_family_vocabulary(models):
    vocab = json.loads((models["nllb"] / "shared_vocabulary.json").read_text())
    assert vocab[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert "eng_Latn" in vocab and "zho_Hans" in vocab and len(vocab) == len(set(vocab))
    assert "__zh__" in json.loads((models["m2m100"] / "shared_vocabulary.json").read_text())


def test_loading_errors_are_clear(models, tmp_path):
    with pytest.raises(TranslationConfigError, match="no model.bin"):
        CTranslate2Translator(tmp_path / "nowhere")
    broken = tmp_path / "no-spm"
    broken.mkdir()
    for f in ("model.bin", "config.json", "shared_vocabulary.json"):
        (broken / f).write_bytes((models["nllb"] / f).read_bytes())
    with pytest.raises(TranslationConfigError, match="sentencepiece"):
        CTranslate2Translator(broken)
    (broken / "sentencepiece.bpe.model").write_bytes((models["nllb"] / "sentencepiece.bpe.model").read_bytes())
    (broken / "model.bin").write_bytes(b"not a model")
    with pytest.raises(TranslationConfigError, match="cannot load the translation model"):
        CTranslate2Translator(broken, device="cpu")
    (broken / "shared_vocabulary.json").write_text(json.dumps(["<s>", "</s>", "hello"]))
    with pytest.raises(TranslationConfigError, match="cannot tell which kind"):
        CTranslate2Translator(broken)
    with pytest.raises(TranslationConfigError, match="unknown translation model family"):
        CTranslate2Translator(models["nllb"], family="gpt")


# -- tokens and language codes -----------------------------------------------------------------

def test_nllb_rows_have_language_tokens(nllb):
    source, prefix = nllb.encode("Hello world", "en", "zh")
    assert source[0] == "eng_Latn" and source[-1] == "</s>" and prefix == ["zho_Hans"]
    assert "".join(source[1:-1]).replace("▁", " ").strip() == "Hello world"
    assert nllb.encode("Hola", "es", "yue")[1] == ["yue_Hant"]
    assert nllb.encode("Hola", "es", "zho_Hant")[1] == ["zho_Hant"]  # a model's own code works too


def test_m2m100_rows_have_language_tokens(models):
    tr = CTranslate2Translator(models["m2m100"], device="cpu")
    source, prefix = tr.encode("Hello", "en", "zh")
    assert source[0] == "__en__" and source[-1] == "</s>" and prefix == ["__zh__"]
    assert tr.encode("Hello", "jw", "es")[0][0] == "__jv__"
    assert not tr.can_target("yue") and not tr.supports("en", "la")


def test_marian_pair_has_no_prefix_and_supports_exactly_its_pair(models):
    tr = CTranslate2Translator(models["marian"], device="cpu")
    source, prefix = tr.encode("Hello", "en", "es")
    assert prefix is None and source[-1] == "</s>" and "eng_Latn" not in source
    assert tr.supports("en", "es") and not tr.supports("fr", "es") and not tr.can_target("de")
    assert len(tr.translate(TEXT, "en", ["es"])["es"]) > 0
    with pytest.raises(TranslationError, match="cannot translate en → de"):
        tr.translate(TEXT, "en", ["de"])


def test_languages_of_the_model(nllb):
    assert nllb.supports("en", "es") and nllb.supports("zh", "en") and nllb.can_target("yue")
    assert not nllb.can_target("la") and not nllb.supports("haw", "en")
    assert "202 languages" in nllb.describe()


# -- one batched call --------------------------------------------------------------------------

@pytest.mark.parametrize("targets", [["es"], ["es", "fr"], ["es", "fr", "zh", "de"]])
def test_all_targets_in_one_batched_call_with_prefixes(nllb, spy, targets):
    out = nllb.translate(TEXT, "en", targets)
    assert list(out) == targets
    assert all(isinstance(v, str) and v for v in out.values())
    assert len(spy.calls) == 1
    call = spy.calls[0]
    assert len(call["source"]) == len(targets)
    assert all(row[0] == "eng_Latn" for row in call["source"])
    expected = [[ct2.to_nllb(t)] for t in targets]
    assert call["target_prefix"] == expected
    # CTranslate2 decoded each row after its own language token, and the token is not in the text.
    for result, prefix in zip(call["results"], expected):
        assert result.hypotheses[0][0] == prefix[0]
    assert not any(tok in v for v in out.values() for tok in ("eng_Latn", "spa_Latn", "</s>"))
    assert call["beam_size"] == 2


def test_decoding_is_bounded(nllb, spy):
    nllb.translate("Hello", "en", ["es"])
    call = spy.calls[0]
    assert call["max_decoding_length"] == 2 * len(call["source"][0]) + 10 + 1
    assert len(call["results"][0].hypotheses[0]) <= call["max_decoding_length"]


def test_rows_may_differ_per_target(nllb, spy):
    out = nllb.translate_rows([("Hello SCO", "es"), ("Hello OCS", "fr")], "en")
    assert len(out) == 2 and len(spy.calls) == 1
    assert spy.calls[0]["source"][0] != spy.calls[0]["source"][1]


def test_unsupported_pair_raises_translation_error(nllb):
    with pytest.raises(TranslationError, match="cannot translate en → la"):
        nllb.translate(TEXT, "en", ["es", "la"])


# -- the stage around it -----------------------------------------------------------------------

class Failing:
    name = "apertium"
    glossary_style = "placeholder"

    def __init__(self, fail_on: str = "", delay: float = 0.0):
        self.fail_on, self.delay, self.calls = fail_on, delay, []

    def describe(self):
        return "fake apertium: en → br"

    def can_target(self, target):
        return target == "br"

    def supports(self, source, target):
        return source == "en" and target == "br"

    def translate(self, text, source, targets, *, audio=None):
        self.calls.append((text, targets))
        time.sleep(self.delay)
        if self.fail_on and self.fail_on in text:
            raise RuntimeError("segmentation fault in the pipeline")
        return {t: f"[br] {text}" for t in targets}


def caption(id_: int, text: str, lang: str = "en") -> Caption:
    return Caption(id=id_, seq=id_, kind="final", start=0.0, end=1.0, emitted=1.0, lang=lang, text=text)


def test_stage_routes_targets_and_batches_per_backend(nllb, spy):
    fake = Failing()
    stage = TranslationStage(["es", "br", "fr", "en"], [nllb, fake])
    result = stage.translate(TEXT, "en")
    assert result.translations["en"] == TEXT  # the source language needs no backend
    assert result.backends == {"es": "ctranslate2", "fr": "ctranslate2", "br": "apertium"}
    assert len(spy.calls) == 1 and len(spy.calls[0]["source"]) == 2
    assert fake.calls == [(TEXT, ["br"])]
    assert not result.errors


def test_a_failing_backend_is_marked_and_the_others_go_on(nllb, caplog):
    stage = TranslationStage(["es", "br"], [nllb, Failing(fail_on="unmuted")])
    result = stage.translate(TEXT, "en")
    assert "es" in result.translations and "br" not in result.translations
    assert "segmentation fault" in result.errors["br"] and result.errors["br"].startswith("apertium:")
    assert "failed" in caplog.text


def test_targets_nothing_can_do_are_config_errors_at_start(nllb):
    with pytest.raises(TranslationConfigError, match="nothing can translate into 'la'"):
        TranslationStage(["es", "la"], [nllb])
    with pytest.raises(TranslationConfigError, match="set to backend 'whisper', which is not available"):
        TranslationStage(["en"], [nllb], overrides={"en": "whisper"})
    with pytest.raises(TranslationConfigError, match="unknown backend 'deepl'"):
        TranslationStage(["es"], [nllb], backend="deepl")
    with pytest.raises(TranslationConfigError, match="not one of the targets"):
        TranslationStage(["es"], [nllb], overrides={"fr": "ctranslate2"})
    with pytest.raises(TranslationConfigError, match="br → es"):  # fixed source language
        TranslationStage(["es"], [Failing()], source="br")
    # a per-target override wins over auto
    stage = TranslationStage(["es", "br"], [nllb, Failing()], overrides={"br": "apertium"})
    assert stage.route("en")[0] == {"ctranslate2": ["es"], "apertium": ["br"]}


def test_a_source_a_backend_cannot_read_is_marked_not_raised():
    stage = TranslationStage(["br"], [Failing()])
    result = stage.translate("Hola", "es")
    assert result.translations == {} and "no backend translates es → br" in result.errors["br"]


def test_overrides_from_config():
    assert parse_overrides({"en": "whisper"}) == {"en": "whisper"}
    assert parse_overrides(["en=whisper", "ca = apertium"]) == {"en": "whisper", "ca": "apertium"}
    assert parse_overrides("en=whisper,ca=auto") == {"en": "whisper", "ca": "auto"}
    with pytest.raises(TranslationConfigError, match="not target=backend"):
        parse_overrides("en:whisper")
    with pytest.raises(TranslationConfigError, match="unknown backend 'google'"):
        parse_overrides({"en": "google"})


def test_build_stage_from_settings(models):
    assert build_stage(TranslateConfig(targets=[])) is None
    stage = build_stage(TranslateConfig(targets=["es", "zh"], model=str(models["nllb"]), backend="ctranslate2"))
    assert stage.route("en")[0] == {"ctranslate2": ["es", "zh"]}
    with pytest.raises(TranslationConfigError, match="subtitler models pull"):
        build_stage(TranslateConfig(targets=["es"], model="nllb-200-distilled-600M", models_dir="/nonexistent"))
    with pytest.raises(TranslationConfigError, match="needs a model"):
        build_stage(TranslateConfig(targets=["es"], backend="ctranslate2"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, spm_file) -> dict[str, Path]:
    """Three OPUS-MT-style pair models: en→es, en→fr and es→en (the name tells the pair)."""
    root = tmp_path_factory.mktemp("pairs")
    return {name: random_model(root / f"opus-mt-{name}", "marian", spm_file=spm_file, seed=i)
            for i, name in enumerate(("en-es", "en-fr", "es-en"))}


def test_pair_models_share_one_backend_each_target_to_its_model(pairs):
    stage = build_stage(TranslateConfig(targets=["es", "fr", "en"], backend="ctranslate2",
                                          model=", ".join(str(p) for p in pairs.values())))
    backend = stage.backends["ctranslate2"]
    assert isinstance(backend, ct2.CTranslate2Models) and len(backend.translators) == 3
    spies = [Spy(t.model) for t in backend.translators]
    for t, sp in zip(backend.translators, spies):
        t.model = sp
    result = stage.translate(TEXT, "en")
    # English speech: es and fr each from their own pair model, one call each, no prefix
    assert set(result.translations) == {"en", "es", "fr"} and result.translations["en"] == TEXT
    assert result.translations["es"] and result.translations["fr"] and not result.errors
    assert [len(sp.calls) for sp in spies] == [1, 1, 0]
    assert all("target_prefix" not in call for sp in spies for call in sp.calls)
    # Spanish speech: en from the es→en model; fr has no es→fr model
    result = stage.translate("Hola a todos.", "es")
    assert set(result.translations) == {"en", "es"} and [len(sp.calls) for sp in spies] == [1, 1, 1]
    assert "no backend translates es → fr" in result.errors["fr"]
    assert "opus-mt-en-es" in backend.describe() and "opus-mt-es-en" in backend.describe()


def test_glossary_forms_reach_each_pair_model(pairs):
    glossary = Glossary.from_config({"terms": ["Chongqing"], "es": {"SCO": "OCS"}})
    models = ct2.CTranslate2Models([CTranslate2Translator(pairs[n], device="cpu") for n in ("en-es", "en-fr")])
    spies = [Spy(t.model) for t in models.translators]
    for t, sp in zip(models.translators, spies):
        t.model = sp
    result = TranslationStage(["fr", "es"], [models], glossary=glossary).translate("The SCO met in Chongqing.", "en")

    def text(row):
        return "".join(t for t in row if t != "</s>").replace("▁", " ").strip()

    assert [[text(r) for r in sp.calls[0]["source"]] for sp in spies] == [
        ["The OCS met in Chongqing."], ["The SCO met in Chongqing."]]
    assert set(result.translations) == {"es", "fr"} and not result.errors


def test_a_target_no_pair_model_has_is_a_config_error_at_start(pairs):
    with pytest.raises(TranslationConfigError, match="nothing can translate into 'de'"):
        build_stage(TranslateConfig(targets=["es", "de"], backend="ctranslate2",
                                      model=f"{pairs['en-es']},{pairs['en-fr']}"))
    with pytest.raises(TranslationConfigError, match="opus-mt-en-de"):
        build_stage(TranslateConfig(targets=["es", "de"], backend="ctranslate2",
                                      model=f"{pairs['en-es']}, opus-mt-en-de", models_dir="/nonexistent"))


def test_worker_publishes_every_caption_even_when_a_backend_fails(nllb):
    got: list[tuple[Caption, object]] = []
    done = threading.Event()

    def on_result(final, result):
        got.append((final, result))
        if len(got) == 3:
            done.set()

    stage = TranslationStage(["es", "br"], [nllb, Failing(fail_on="boom")])
    worker = TranslationWorker(stage, on_result)
    for i, text in enumerate(["Hello there.", "boom goes the pipeline", "Goodbye."]):
        worker.submit(caption(i, text))
    assert done.wait(30)
    worker.close()
    assert [c.id for c, _ in got] == [0, 1, 2]
    assert "br" in got[0][1].translations and "br" in got[2][1].translations
    assert "br" in got[1][1].errors and "es" in got[1][1].translations
    tr = got[1][1].caption(got[1][0], seq=99, emitted=2.5)
    assert tr.kind == "translation" and tr.id == 1 and tr.seq == 99 and tr.text == "boom goes the pipeline"
    assert tr.translations == got[1][1].translations


def test_worker_skips_the_oldest_when_it_falls_behind():
    slow = Failing(delay=0.2)
    got = []
    worker = TranslationWorker(TranslationStage(["br"], [slow]), lambda c, r: got.append((c.id, r)),
                               max_pending=2)
    for i in range(6):
        worker.submit(caption(i, f"caption {i}"))
    assert worker.close(timeout=30)
    assert [i for i, _ in got] == list(range(6))  # every caption gets its result, in order
    skipped = [i for i, r in got if "br" in r.errors]
    assert skipped and all("fell more than 2 captions behind" in r.errors["br"] for i, r in got if i in skipped)
    assert got[-1][1].translations == {"br": "[br] caption 5"}  # the newest is translated
    assert worker.skipped == len(skipped)


def test_glossary_inline_rows_reach_the_model(nllb, spy):
    glossary = Glossary.from_config({"terms": ["Chongqing"], "es": {"SCO": "OCS"}})
    stage = TranslationStage(["es", "fr"], [nllb], glossary=glossary)
    result = stage.translate("The SCO met in Chongqing.", "en")
    rows = ["".join(r[1:-1]).replace("▁", " ").strip() for r in spy.calls[0]["source"]]
    assert rows == ["The OCS met in Chongqing.", "The SCO met in Chongqing."]
    assert set(result.translations) == {"es", "fr"}


# -- fetching models ---------------------------------------------------------------------------

def test_pull_offline_says_which_files_to_put_where(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        ct2.pull_model("nllb-600m", tmp_path / "models", offline=True)
    msg = str(e.value)
    assert str(tmp_path / "models" / "nllb-200-distilled-600M") in msg
    for piece in ("model.bin", "config.json", "shared_vocabulary", "sentencepiece.bpe.model",
                  "facebook/nllb-200-distilled-600M", "ct2-transformers-converter"):
        assert piece in msg
    with pytest.raises(ModelNotFoundError, match="source.spm, target.spm"):
        ct2.pull_model("opus-mt-en-de", tmp_path / "models", offline=True)
    with pytest.raises(ModelNotFoundError, match="unknown translation model"):
        ct2.pull_model("gpt-5", tmp_path / "models", offline=True)


def test_pull_fails_fast_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="cannot be reached"):
        ct2.pull_model("m2m100_418M", tmp_path / "models")
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "models" / "m2m100_418M").exists()


def test_pull_returns_a_model_already_in_place(models, tmp_path):
    store = tmp_path / "models"
    folder = store / "opus-mt-en-es"
    folder.mkdir(parents=True)
    for f in models["marian"].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    assert ct2.pull_model("opus-mt-en-es", store, offline=True) == folder
    assert ct2.resolve_translation_model("opus-mt-en-es", store) == folder
