"""Cue splitting as a subtitle editor cuts: display widths, per-language line lengths, breaks at
CJK punctuation, Latin words and numbers whole, nothing lost or duplicated, reading time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subtitler.cues import (Cue, CueRules, CueStyle, clean, cut_lines, display_width, split_cues)

ZH = "各位来宾，女士们，先生们，大家上午好！欢迎来到第七届中国国际智能产业博览会，今天我们在重庆相聚。"
JA = "本日はお忙しいところお集まりいただき、誠にありがとうございます。会議を始めます。"
KO = "안녕하십니까 여러분, 오늘 회의에 참석해 주셔서 대단히 감사합니다. 지금부터 회의를 시작하겠습니다."


def lines_of(cues):
    return [line for c in cues for line in c.lines]


def tiles(text: str, lines: list[str]) -> bool:
    """Whether ``lines``, in order, are ``text`` cut at some points, a space at a cut dropped:
    nothing lost, nothing duplicated, nothing inserted."""
    text, pos = clean(text), 0
    for line in lines:
        if not line or line != line.strip() or not text.startswith(line, pos):
            return False
        pos += len(line)
        if text[pos:pos + 1] == " ":
            pos += 1
    return pos == len(text)


# -- widths and defaults ---------------------------------------------------------------------------

def test_display_width_counts_cjk_as_two_columns():
    assert display_width("abc") == 3
    assert display_width("重庆") == 4 and display_width("重庆GPU") == 7
    assert display_width("，。！") == 6  # full-width punctuation
    assert display_width("안녕") == 4 and display_width("こんにちは") == 10


def test_per_language_line_lengths_in_their_own_characters():
    style = CueStyle()
    assert style.rules("zh").line_width == 32  # 16 full-width characters
    assert style.rules("zh-Hant").line_width == 32 and style.rules("zho_Hans").line_width == 32
    assert style.rules("ja").line_width == 26
    assert style.rules("ko").line_width == 32 and style.rules("ko").keep_words
    assert style.rules("en").line_width == 42 and style.rules("pt-BR").line_width == 42
    assert style.rules("zh").chars_per_second == 9 and style.rules("en").chars_per_second == 17
    custom = CueStyle(max_line_chars=37, line_chars={"zh": 14, "zh-Hant": 12})
    assert custom.rules("zh").line_width == 28 and custom.rules("zh-TW").line_width == 28
    assert custom.rules("zh_hant").line_width == 24  # the exact code first, compared as langcodes does
    assert custom.rules("ja").line_width == 74  # no entry: max_line_chars full-width characters
    assert custom.rules("de").line_width == 37


# -- Chinese -----------------------------------------------------------------------------------------

def test_chinese_lines_fit_16_characters_and_break_at_punctuation():
    cues = split_cues(ZH, 0.0, 9.0, lang="zh")
    lines = lines_of(cues)
    assert all(display_width(line) <= 32 for line in lines), lines
    assert all(len(c.lines) <= 2 for c in cues)
    assert tiles(ZH, lines)
    assert not any(" " in line for line in lines)  # no space inserted between CJK characters
    # every line ends at punctuation where the text has enough of it
    assert sum(line[-1] in "，。！？" for line in lines) >= len(lines) - 1, lines
    # never a closing mark at a line start
    assert not any(line[0] in "，。！？、；：）」" for line in lines)


def test_old_blind_cut_is_gone():
    # 42 characters of Chinese on one line was the old behaviour: now at most 16.
    text = "我们今天讨论的是人工智能在制造业中的应用以及未来十年的发展方向和面临的主要挑战还有机遇"
    lines = lines_of(split_cues(text, 0, 5, lang="zh"))
    assert max(map(len, lines)) <= 16 and tiles(text, lines)
    assert len(lines) in (3, 4) and max(map(len, lines)) - min(map(len, lines)) <= 3  # even lines, no stub
    for word in ("人工智能", "制造业", "发展", "方向", "挑战"):  # and words whole (jieba's)
        assert any(word in line for line in lines), (word, lines)


def test_chinese_is_cut_between_words():
    text = "大家好，欢迎来到第七届中国国际智能产业博览会，今天我们在重庆相聚。"
    cues = split_cues(text, 0, 5, lang="zh")
    assert cues[0].lines == ("大家好，欢迎来到第七届", "中国国际智能产业博览会，")  # not "…第七届中" / "国国际…"
    assert cues[1].lines == ("今天我们在重庆相聚。",)
    # Japanese has no segmenter here: it still breaks only where a character may end a line
    assert CueStyle().rules("ja").segment_words is False and CueStyle().rules("zh-Hant").segment_words


def test_latin_words_and_numbers_in_chinese_stay_whole():
    text = "本次大会共有来自GPT-4o团队的3.5万名开发者参加，会场位于重庆国际博览中心N2馆，时间是2026年9月。"
    lines = lines_of(split_cues(text, 0, 6, lang="zh", max_lines=2))
    assert tiles(text, lines)
    for token in ("GPT-4o", "3.5", "N2", "2026"):
        assert any(token in line for line in lines), (token, lines)
    assert all(display_width(line) <= 32 for line in lines)


def test_brackets_and_quotes_stay_with_their_words():
    text = "他说：“我们一定要把智博会办好。”大家都鼓掌了（热烈的掌声）然后会议继续进行下去直到中午结束。"
    lines = lines_of(split_cues(text, 0, 6, lang="zh"))
    assert tiles(text, lines)
    assert not any(line[-1] in "“（" for line in lines)
    assert not any(line[0] in "”）。，" for line in lines)


def test_short_chinese_stays_one_line_one_cue():
    assert split_cues("大家好。", 1.0, 2.0, lang="zh") == [Cue(1.0, 2.0, ("大家好。",))]


# -- Japanese and Korean -----------------------------------------------------------------------------

def test_japanese_13_characters_no_small_kana_at_a_line_start():
    lines = lines_of(split_cues(JA, 0, 8, lang="ja"))
    assert tiles(JA, lines)
    assert all(display_width(line) <= 26 for line in lines), lines
    assert not any(line[0] in "っゃゅょー、。" for line in lines)


def test_korean_breaks_between_words_only():
    lines = lines_of(split_cues(KO, 0, 8, lang="ko"))
    assert tiles(KO, lines)
    words = KO.split()
    for line in lines:
        assert all(w in words for w in line.split()), line  # no word cut in two
    assert all(display_width(line) <= 32 for line in lines)


# -- English stays as it was --------------------------------------------------------------------------

def test_english_keeps_42_columns_and_whole_words():
    text = ("The conference on intelligent industry opened this morning in Chongqing, with delegations "
            "from more than forty countries and regions.")
    lines = lines_of(split_cues(text, 0, 6, lang="en"))
    assert all(len(line) <= 42 for line in lines) and tiles(text, lines)
    assert " ".join(lines).split() == text.split()


def test_a_line_wider_than_the_limit_is_cut_only_when_it_must():
    url = "https://example.org/" + "x" * 60
    lines = lines_of(split_cues(f"请访问 {url} 了解详情。", 0, 3, lang="zh"))
    assert all(display_width(line) <= 32 for line in lines)
    assert "".join(lines).replace(" ", "") == f"请访问{url}了解详情。"


# -- time --------------------------------------------------------------------------------------------

def test_cue_times_share_the_span_by_width_and_are_contiguous():
    cues = split_cues(ZH, 10.0, 19.0, lang="zh")
    assert cues[0].start == 10.0 and cues[-1].end == 19.0
    assert all(a.end == b.start for a, b in zip(cues, cues[1:]))
    widths = [sum(display_width(l) for l in c.lines) for c in cues]
    for c, w in zip(cues, widths):
        assert c.end - c.start == pytest.approx(9.0 * w / sum(widths))


def test_reading_time_stretches_into_the_silence_never_over_the_next_caption():
    # 18 Chinese characters at 9 a second need 2 s; the caption was spoken in 0.8 s.
    text = "欢迎大家来到重庆参加今天的智博会开幕式"
    (cue,) = split_cues(text, 5.0, 5.8, lang="zh", next_start=20.0)
    assert cue.end == pytest.approx(5.0 + len(text) / 9)
    (cue,) = split_cues(text, 5.0, 5.8, lang="zh", next_start=6.3)
    assert cue.end == pytest.approx(6.3)  # only up to the next caption
    (cue,) = split_cues(text, 5.0, 5.8, lang="zh")
    assert cue.end == 5.8  # next caption unknown (live): the spoken span
    # English reads faster: the same gap holds it for less time
    (en,) = split_cues("Welcome to Chongqing.", 5.0, 5.4, lang="en", next_start=20.0)
    assert en.end == pytest.approx(5.0 + max(0.8, 19 / 17))


def test_rules_reject_nonsense():
    with pytest.raises(ValueError):
        CueRules(line_width=0)
    with pytest.raises(ValueError):
        CueRules(chars_per_second=0)
    with pytest.raises(ValueError):
        split_cues("x", 0, 1, max_lines=0)


# -- property: any mix of scripts ----------------------------------------------------------------------

_PIECES = st.sampled_from(list("重庆智博会议开幕式欢迎大家人工智能，。！？、；：（）“”《》") +
                          list("日本語のテキストっゃー") + list("한국어텍스트") +
                          ["GPT-4o", "3.5", "2026", "AI", "hello", "world,", "x" * 50, " ", " ", "…", "——"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, min_size=0, max_size=120), st.sampled_from(["zh", "ja", "ko", "en", "zh-Hant"]),
       st.integers(1, 3), st.integers(6, 30))
def test_property_nothing_lost_duplicated_or_too_wide(pieces, lang, max_lines, chars):
    text = "".join(pieces)
    rules = CueStyle(max_line_chars=chars, max_lines=max_lines, line_chars={}).rules(lang)
    groups = cut_lines(text, rules)
    lines = [line for g in groups for line in g]
    assert tiles(text, lines), (text, lines)
    assert all(1 <= len(g) <= max_lines for g in groups)
    assert all(display_width(line) <= rules.line_width for line in lines), lines
    cues = split_cues(text, 0.0, 10.0, rules=rules, next_start=12.0)
    assert [c.lines for c in cues] == groups
    if cues:
        assert cues[0].start == 0.0 and 10.0 <= cues[-1].end <= 12.0
        assert all(a.end == b.start and a.start <= a.end for a, b in zip(cues, cues[1:]))
