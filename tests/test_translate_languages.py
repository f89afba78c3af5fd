"""Whisper's language codes → NLLB-200, M2M-100 and Apertium codes: complete and consistent."""

from __future__ import annotations

import pytest

from subtitler.translate import languages as L


def test_whisper_list_is_faster_whispers():
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert tuple(_LANGUAGE_CODES) == L.WHISPER_LANGUAGES
    assert len(set(L.WHISPER_LANGUAGES)) == 100


def test_nllb_map_covers_every_whisper_language_nllb_has():
    assert len(L.NLLB_LANGUAGES) == len(set(L.NLLB_LANGUAGES)) == 202
    assert set(L.WHISPER_TO_NLLB) | L.NLLB_MISSING == set(L.WHISPER_LANGUAGES)
    assert not set(L.WHISPER_TO_NLLB) & L.NLLB_MISSING
    assert set(L.WHISPER_TO_NLLB.values()) <= set(L.NLLB_LANGUAGES)
    assert len(set(L.WHISPER_TO_NLLB.values())) == len(L.WHISPER_TO_NLLB)  # no two languages share a code
    assert set(L.NLLB_ALIASES.values()) <= set(L.NLLB_LANGUAGES)


@pytest.mark.parametrize("whisper, nllb", [
    ("en", "eng_Latn"), ("zh", "zho_Hans"), ("yue", "yue_Hant"), ("es", "spa_Latn"), ("ar", "arb_Arab"),
    ("fa", "pes_Arab"), ("no", "nob_Latn"), ("nn", "nno_Latn"), ("ms", "zsm_Latn"), ("jw", "jav_Latn"),
    ("sr", "srp_Cyrl"), ("mn", "khk_Cyrl"), ("sq", "als_Latn"), ("mg", "plt_Latn"), ("he", "heb_Hebr"),
    ("uz", "uzn_Latn"), ("ps", "pbt_Arab"), ("ne", "npi_Deva"), ("lv", "lvs_Latn"), ("et", "est_Latn"),
])
def test_nllb_codes(whisper, nllb):
    assert L.to_nllb(whisper) == nllb


def test_nllb_accepts_its_own_codes_and_aliases_and_refuses_the_rest():
    assert L.to_nllb("zho_Hant") == "zho_Hant"
    assert L.to_nllb("zh-Hant") == "zho_Hant" and L.to_nllb("zh-TW") == "zho_Hant"
    assert L.to_nllb("eo") == "epo_Latn"
    for missing in ("la", "br", "haw", "xx", ""):
        assert L.to_nllb(missing) is None


def test_m2m100_map():
    assert len(L.M2M100_LANGUAGES) == 100
    assert L.to_m2m100("zh") == "__zh__"
    assert L.to_m2m100("jw") == "__jv__"  # Whisper's old Javanese code
    assert L.to_m2m100("ast") == "__ast__"  # an M2M-100 language Whisper lacks, as a target
    assert L.to_m2m100("__fr__") == "__fr__"
    assert L.to_m2m100("zh-Hant") == "__zh__"
    for code in L.WHISPER_LANGUAGES:
        token = L.to_m2m100(code)
        if code in L.M2M100_MISSING:
            assert token is None, code
        else:
            assert token[2:-2] in L.M2M100_LANGUAGES, code
    assert {"yue", "la", "haw", "mt", "te", "tg", "tk", "tt", "sa", "sn", "mi", "bo", "fo", "as",
            "eu", "nn"} == set(L.M2M100_MISSING)


def test_apertium_codes_cover_every_whisper_language():
    assert set(L.WHISPER_TO_APERTIUM) == set(L.WHISPER_LANGUAGES)
    for code, codes in L.WHISPER_TO_APERTIUM.items():
        assert codes and all(len(c) == 3 and c.isalpha() for c in codes), code
    assert L.apertium_codes("en") == ("eng", "en")
    assert L.apertium_codes("es")[0] == "spa" and "es" in L.apertium_codes("es")  # old pairs: es-pt
    assert "hbs" in L.apertium_codes("sr") and "hbs" in L.apertium_codes("hr")
    assert L.apertium_codes("epo") == ("epo",)  # a target given in Apertium's own code


def test_from_apertium():
    assert L.from_apertium("spa") == ("es",)
    assert L.from_apertium("eng_US") == ("en",)
    assert set(L.from_apertium("hbs")) == {"bs", "hr", "sr"}
    assert L.from_apertium("epo") == ("epo",)
