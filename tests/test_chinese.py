"""Chinese in the script its readers expect, through the real OpenCC; zh-Hans / zh-Hant as
languages; the Chinese glossary; the Simplified prompt for a Chinese source."""

from __future__ import annotations

import pytest

from subtitler.captions import Caption
from subtitler.chinese import INITIAL_PROMPT, ScriptConverter, convert, initial_prompt
from subtitler.config import Config, ConfigError
from subtitler.langcodes import chinese_script, is_chinese, same_language, same_words
from subtitler.streaming import StreamingOptions
from subtitler.translate import Glossary, TranslationStage

TRADITIONAL = "各位來賓，歡迎參加會議。我們在重慶討論軟體與網路的發展。"
SIMPLIFIED = "各位来宾，欢迎参加会议。我们在重庆讨论软件与网络的发展。"


# -- OpenCC ---------------------------------------------------------------------------------------

def test_opencc_converts_traditional_to_simplified():
    assert convert("會議", "zh") == "会议"
    # Taiwan's phrases become the mainland's (軟體 → 软件, 網路 → 网络), not only characters
    assert convert(TRADITIONAL, "zh") == SIMPLIFIED
    assert convert(SIMPLIFIED, "zh") == SIMPLIFIED  # Simplified stays as it is
    assert convert("会議開始了", "zh") == "会议开始了"  # Whisper's mixed output too


def test_chinese_punctuation_is_full_width_and_unspaced():
    # Whisper's "各位來賓, 女士們, 大家好." as a Chinese subtitle sets it
    assert convert("各位來賓, 女士們, 大家好.", "zh") == "各位来宾，女士们，大家好。"
    assert convert("他说: 好的! 真的? 欢迎 各位; 谢谢", "zh") == "他说：好的！真的？欢迎各位；谢谢"
    assert convert("增长了3.5%.", "zh") == "增长了3.5%。"
    # Latin text inside Chinese keeps its own marks and spaces
    assert convert("GPT-4o, AI 很强", "zh") == "GPT-4o, AI 很强"
    assert convert("在 Chongqing 举行", "zh") == "在 Chongqing 举行"
    assert convert("Hello, world.", "en") == "Hello, world."
    assert convert("大家好, 欢迎.", "zh", "as-is") == "大家好, 欢迎."  # as-is: as Whisper wrote it


def test_script_by_code_and_by_setting():
    assert convert(SIMPLIFIED, "zh-Hant") == "各位來賓，歡迎參加會議。我們在重慶討論軟體與網路的發展。"
    assert convert(SIMPLIFIED, "zh-TW") == convert(SIMPLIFIED, "zh-Hant")
    assert convert("软件", "zh-HK") != "软件" and "軟" in convert("软件", "zh-HK")
    assert convert(TRADITIONAL, "zh-Hans") == SIMPLIFIED
    assert convert(SIMPLIFIED, "zh", "traditional") == convert(SIMPLIFIED, "zh-Hant")
    assert convert(TRADITIONAL, "zh", "as-is") == TRADITIONAL
    assert convert(TRADITIONAL, "zh-Hans", "as-is") == SIMPLIFIED  # a code that names its script wins
    for other in ("ja", "en", "yue", "ko"):
        assert convert("會議", other) == "會議"  # Japanese kanji, Cantonese: not Mandarin's business


def test_language_codes():
    assert is_chinese("zh") and is_chinese("zh-Hant") and is_chinese("zho_Hans") and is_chinese("cmn")
    assert not is_chinese("yue") and not is_chinese("ja") and not is_chinese("zu")
    assert chinese_script("zh-Hans") == chinese_script("zh_CN") == chinese_script("zho_Hans") == "simplified"
    assert chinese_script("zh-Hant") == chinese_script("zh-TW") == chinese_script("zh-HK") == "traditional"
    assert chinese_script("zh") is None and chinese_script("en") is None
    assert not same_language("zh", "zh-Hant") and same_words("zh", "zh-Hant") and same_words("zh-TW", "zh_Hans")
    assert not same_words("zh", "ja") and same_words("en", "EN")


def test_converter_writes_every_language_of_a_caption_in_its_script():
    conv = ScriptConverter("simplified")
    final = Caption(3, 9, "final", 1.0, 2.5, 3.0, "zh", TRADITIONAL, committed="會議", tentative="開始")
    out = conv.caption(final)
    assert (out.text, out.committed, out.tentative) == (SIMPLIFIED, "会议", "开始")
    assert (out.id, out.seq, out.start, out.end, out.kind) == (3, 9, 1.0, 2.5, "final")
    update = Caption(3, 10, "translation", 1.0, 2.5, 3.2, "en", "Welcome.",
                     translations={"zh": "歡迎參加會議。", "zh-Hant": "欢迎参加会议。", "es": "Bienvenidos."})
    out = conv.caption(update)
    assert out.translations == {"zh": "欢迎参加会议。", "zh-Hant": "歡迎參加會議。", "es": "Bienvenidos."}
    english = Caption(4, 11, "final", 3.0, 4.0, 4.5, "en", "Hello.")
    assert conv.caption(english) is english  # no Chinese: the same object, no copy
    assert ScriptConverter("traditional").caption(final).text == convert(SIMPLIFIED, "zh-Hant")
    with pytest.raises(ValueError, match="allowed: simplified, traditional, as-is"):
        ScriptConverter("pinyin")


def test_config_output_chinese():
    assert Config().output.chinese == "simplified"
    assert Config().with_overrides({"output.chinese": "traditional"}).output.chinese == "traditional"
    with pytest.raises(ConfigError, match=r"\[output\] chinese = 'mandarin'.*simplified, traditional, as-is"):
        Config().with_overrides({"output.chinese": "mandarin"})
    cfg = Config().with_overrides({"output.max_line_chars_by_language": "zh=14,ko=18",
                                   "output.chars_per_second_by_language": ["zh=7.5"]})
    style = cfg.output.cue_style()
    assert style.rules("zh").line_width == 28 and style.rules("ko").line_width == 36
    assert style.rules("ja").line_width == 26  # not named: keeps its default
    assert style.rules("zh").chars_per_second == 7.5
    with pytest.raises(ConfigError, match=r"max_line_chars_by_language.*zh=1 out of range"):
        Config().with_overrides({"output.max_line_chars_by_language": "zh=1"})
    with pytest.raises(ConfigError, match=r"max_line_chars_by_language"):
        Config().with_overrides({"output.max_line_chars_by_language": "zh:16"})


def test_config_file_table_form(tmp_path):
    from subtitler.config import load_config

    path = tmp_path / "c.toml"
    path.write_text('[output]\nchinese = "traditional"\n[output.max_line_chars_by_language]\nzh = 12\nja = 11\n',
                    encoding="utf-8")
    cfg = load_config(path)
    assert cfg.output.chinese == "traditional"
    assert cfg.output.cue_style().rules("zh").line_width == 24 and cfg.output.cue_style().rules("ja").line_width == 22


# -- zh-Hant as a target: no translation, a conversion -----------------------------------------------

def test_a_script_target_of_a_chinese_source_needs_no_backend():
    stage = TranslationStage(["zh-Hant", "zh-Hans"], [], source="zh")  # no backend at all
    result = stage.translate(SIMPLIFIED, "zh")
    assert result.errors == {}
    caption = Caption(1, 2, "final", 0.0, 2.0, 2.2, "zh", SIMPLIFIED)
    update = ScriptConverter().caption(result.caption(caption, seq=3, emitted=2.4))
    assert update.translations["zh-Hant"] == convert(SIMPLIFIED, "zh-Hant")
    assert update.translations["zh-Hans"] == SIMPLIFIED
    assert "zh-Hant" in stage.describe_routes("zh")


# -- the glossary in Chinese --------------------------------------------------------------------------

@pytest.fixture
def glossary() -> Glossary:
    return Glossary.from_config({"terms": ["重庆", "智博会", "SCO"],
                                 "en": {"重庆": "Chongqing", "智博会": "Smart China Expo"},
                                 "zh": {"SCO": "上合组织"}})


def test_chinese_terms_are_found_inside_unspaced_text(glossary):
    # Chinese has no spaces: a term is found wherever it is, not only between word boundaries.
    assert glossary.find("第七届智博会在重庆开幕，SCO代表团出席") == ["智博会", "重庆", "SCO"]
    assert glossary.find("the sco met") == ["SCO"] and glossary.find("a scooter") == []


def test_chinese_terms_come_out_of_chinese_as_the_glossary_says(glossary):
    p = glossary.protect("智博会在重庆开幕。", "inline", "en")
    assert p.text == "Smart China Expo在Chongqing开幕。"  # what a neural model copies through
    assert glossary.restore("The smart china expo opened in CHONGQING.", p, "en") == \
        "The Smart China Expo opened in Chongqing."
    ph = glossary.protect("智博会在重庆开幕。", "placeholder")
    assert "重庆" not in ph.text and "智博会" not in ph.text
    assert glossary.restore(ph.text.replace("在", " in ").replace("开幕。", " opened."), ph, "en") == \
        "Smart China Expo in Chongqing opened."
    assert glossary.hotwords("en") == "Chongqing, Smart China Expo, SCO."  # Whisper's zh → en prompt
    assert glossary.hotwords() == "重庆, 智博会, SCO."


def test_fixed_chinese_translations_reach_every_chinese_screen(glossary):
    assert glossary.fixed("SCO", "zh") == "上合组织"
    assert glossary.fixed("SCO", "zh-Hant") == "上合组织"  # then written in Traditional by the converter
    assert ScriptConverter().translations({"zh-Hant": "上合组织在重庆开会"}) == {"zh-Hant": "上合組織在重慶開會"}
    g = Glossary.from_config({"terms": ["SCO"], "zh": {"SCO": "上合组织"}, "zh-Hant": {"SCO": "上海合作組織"}})
    assert g.fixed("SCO", "zh_hant") == "上海合作組織" and g.fixed("SCO", "zh-CN") == "上合组织"


# -- Whisper's prompt -----------------------------------------------------------------------------------

def test_a_chinese_source_gets_the_simplified_punctuated_prompt():
    assert initial_prompt("zh") == INITIAL_PROMPT and initial_prompt("en") == "" and initial_prompt(None) == ""
    assert "，" in INITIAL_PROMPT and INITIAL_PROMPT.endswith("。") and convert(INITIAL_PROMPT, "zh") == INITIAL_PROMPT
    zh = Config().with_overrides({"asr.language": "zh", "asr.hotwords": "智博会"})
    assert StreamingOptions.from_config(zh.asr).prompt == INITIAL_PROMPT + " 智博会"
    own = zh.with_overrides({"asr.initial_prompt": "会议记录。"})
    assert StreamingOptions.from_config(own.asr).prompt == "会议记录。 智博会"  # a prompt set is kept
    assert StreamingOptions.from_config(Config().asr).prompt == ""  # auto / other languages: none


def test_a_missing_opencc_is_one_clear_error(monkeypatch):
    import sys

    from subtitler import chinese

    monkeypatch.setitem(sys.modules, "opencc", None)  # as if it were not installed
    chinese._opencc.cache_clear()
    try:
        with pytest.raises(chinese.ChineseScriptError, match="needs OpenCC.*pip install opencc"):
            ScriptConverter().check()
        assert convert("Hello", "en") == "Hello"  # nothing Chinese: nothing needed
    finally:
        chinese._opencc.cache_clear()
