"""The pure guards of subtitler/asr.py: what a viewer is spared (loops, silence, credits)
and what must reach the screen untouched. No model is loaded."""

from __future__ import annotations

import pytest

from subtitler.asr import (
    Decoding,
    Thresholds,
    choose_language,
    collapse_repetitions,
    compression_ratio,
    is_known_hallucination,
    judge,
    normalize_for_match,
)

T = Thresholds()  # no_speech 0.6, logprob -1.0, compression ratio 2.4


def verdict(text: str, avg_logprob: float = -0.2, no_speech_prob: float = 0.05) -> str | None:
    """judge() the way WhisperASR.decode calls it: the ratio is that of the cleaned text."""
    return judge(text, avg_logprob, no_speech_prob, compression_ratio(text), T)


# -- collapse_repetitions ---------------------------------------------------------------------

@pytest.mark.parametrize("looped, expected", [
    ("extension extension extension extension extension extension", "extension"),
    ("We need an extension extension extension extension", "We need an extension"),
    ("the number the number the number the number", "the number"),
    ("I will go there I will go there I will go there I will go there", "I will go there"),
    # punctuation and case do not hide a loop; the first occurrence is kept as written
    ("Okay. Okay. Okay. Okay. Okay.", "Okay."),
    ("Thank you so much. Thank you so much. Thank you so much.", "Thank you so much."),
    # the text before and after a loop survives
    ("So the plan is the plan is the plan is the plan is to ship it.", "So the plan is to ship it."),
])
def test_loops_are_cut_to_one_occurrence(looped, expected):
    text, cut = collapse_repetitions(looped)
    assert text == expected
    assert cut is True


@pytest.mark.parametrize("sentence", [
    "no no",
    "No, no.",
    "I think that that is right.",
    "We had had enough by then.",
    "Bye bye, see you tomorrow.",
    "The quick brown fox jumps over the lazy dog.",
    "Chongqing and the SCO summit, day two.",
    "",
    "今天天气很好，我们去公园散步吧。",
])
def test_ordinary_speech_is_untouched(sentence):
    assert collapse_repetitions(sentence) == (sentence, False)


@pytest.mark.parametrize("looped, expected", [
    ("谢谢谢谢谢谢谢谢", "谢谢"),
    ("我们走吧我们走吧我们走吧我们走吧", "我们走吧"),
    ("他说我们走吧我们走吧我们走吧", "他说我们走吧"),
    ("ありがとうありがとうありがとう", "ありがとう"),
])
def test_unspaced_script_loops_are_cut(looped, expected):
    assert collapse_repetitions(looped) == (expected, True)


@pytest.mark.parametrize("sentence", [
    "The budget is 1000000 dollars.",
    "Our target is 2000000 users.",
])
def test_numbers_with_many_zeros_are_not_changed(sentence):
    assert collapse_repetitions(sentence) == (sentence, False)


def test_collapsed_loop_no_longer_counts_as_repetitive():
    looped = " ".join(["extension"] * 40)
    assert compression_ratio(looped) > T.compression_ratio
    text, _ = collapse_repetitions(looped)
    assert compression_ratio(text) < T.compression_ratio


# -- compression_ratio ------------------------------------------------------------------------

def test_compression_ratio():
    assert compression_ratio("") == 0.0
    sentence = "Good morning everyone, let's look at the quarterly figures together."
    assert compression_ratio(sentence) < 2.0
    assert compression_ratio("the number " * 30) > T.compression_ratio
    # longer loops compress better, i.e. look more repetitive
    assert compression_ratio("la " * 100) > compression_ratio("la " * 20) > 1.0
    # bytes are measured, so non-Latin text works too
    assert 0 < compression_ratio("今天天气很好") < 2.0


# -- judge ------------------------------------------------------------------------------------

def test_a_good_sentence_is_shown():
    assert verdict("Let's look at the quarterly figures together.") is None
    # a high no-speech probability alone is not enough when the text is confident (Whisper's rule)
    assert verdict("Let's look at the figures.", avg_logprob=-0.3, no_speech_prob=0.9) is None


def test_silence_is_no_speech():
    assert verdict("you", avg_logprob=-1.5, no_speech_prob=0.9) == "no_speech"
    assert verdict("Thanks for watching!", avg_logprob=-1.2, no_speech_prob=0.61) == "no_speech"


def test_unconfident_text_is_dropped():
    assert verdict("The figures were something like that.", avg_logprob=-1.4, no_speech_prob=0.1) \
        == "low_confidence"
    assert verdict("Anything at all.", avg_logprob=-1.01, no_speech_prob=0.6) == "low_confidence"


def test_repetitive_text_is_dropped():
    loop = "I'm going to go to the next one. " * 12
    assert verdict(loop) == "repetition"


@pytest.mark.parametrize("text", ["Thank you.", "Thank you very much!", "Bye.", "So"])
def test_confident_real_thank_you_is_kept_unconfident_one_dropped(text):
    assert verdict(text, avg_logprob=-0.15, no_speech_prob=0.02) is None
    assert verdict(text, avg_logprob=-0.7, no_speech_prob=0.02) == "hallucination"
    assert verdict(text, avg_logprob=-0.15, no_speech_prob=0.35) == "hallucination"


@pytest.mark.parametrize("credit", [
    "Subtitles by the Amara.org community",
    "subtitles by the amara.org community",
    "Amara.org",
    "ご視聴ありがとうございました",
    "Субтитры сделал DimaTorzok",
    "Untertitel im Auftrag des ZDF, 2017",
])
def test_credit_lines_are_always_dropped(credit):
    assert verdict(credit, avg_logprob=-0.05, no_speech_prob=0.0) == "hallucination"
    assert is_known_hallucination(credit, confident=True)


def test_empty_or_punctuation_only_output_is_dropped():
    assert verdict("") == "hallucination"
    assert verdict("...") == "hallucination"


def test_a_sentence_merely_containing_thank_you_is_kept():
    assert verdict("Thank you for coming, let's begin.", avg_logprob=-0.7, no_speech_prob=0.3) is None


def test_normalize_for_match():
    assert normalize_for_match("  Hello,   World! ") == "hello world"
    assert normalize_for_match("Amara.org") == "amaraorg"


def test_decoding_ok():
    assert Decoding("Hello.", "en").ok
    assert not Decoding("", "en").ok
    assert not Decoding("   ", "en").ok
    assert not Decoding("", "en", rejected="no_speech").ok


# -- choose_language --------------------------------------------------------------------------

def test_short_utterance_keeps_session_language():
    # "OK." in an English meeting, heard as slightly more likely Dutch
    probs = {"nl": 0.55, "en": 0.30, "de": 0.10}
    assert choose_language(probs, prior="en", duration=0.8) == ("en", 0.30)
    assert choose_language(probs, prior="en", duration=1.5) == ("en", 0.30)
    # moderately more likely other language, still short: the prior wins
    assert choose_language({"es": 0.9, "en": 0.06}, prior="en", duration=1.2)[0] == "en"


def test_long_clearly_different_utterance_switches():
    probs = {"es": 0.92, "en": 0.04}
    assert choose_language(probs, prior="en", duration=12.0) == ("es", 0.92)
    assert choose_language(probs, prior="en", duration=6.0)[0] == "es"


def test_prior_weight_falls_with_duration():
    probs = {"es": 0.6, "en": 0.1}  # 6x: kept while short, switched when long
    assert choose_language(probs, prior="en", duration=1.0)[0] == "en"
    assert choose_language(probs, prior="en", duration=10.0)[0] == "es"
    # beyond 10 s the prior still counts double
    assert choose_language({"es": 0.5, "en": 0.26}, prior="en", duration=25.0)[0] == "en"
    assert choose_language({"es": 0.5, "en": 0.24}, prior="en", duration=25.0)[0] == "es"


def test_no_usable_prior_takes_the_top_language():
    probs = {"fr": 0.7, "en": 0.2}
    assert choose_language(probs, prior=None, duration=1.0) == ("fr", 0.7)
    assert choose_language(probs, prior="fr", duration=1.0) == ("fr", 0.7)
    assert choose_language(probs, prior="zh", duration=1.0) == ("fr", 0.7)  # prior not among them


def test_known_speech_skips_the_silence_and_credit_guards_only():
    """A translation of a final already shown: "Gracias." → "Thank you." is speech, not a
    credit heard in noise; confidence, loops and emptiness still count."""
    def known(text, avg_logprob=-0.7, no_speech_prob=0.02):
        return judge(text, avg_logprob, no_speech_prob, compression_ratio(text), T, known_speech=True)

    assert verdict("Thank you.", avg_logprob=-0.7) == "hallucination"
    assert known("Thank you.") is None
    assert known("Thank you.", no_speech_prob=0.9, avg_logprob=-0.5) is None
    assert known("Thank you.", avg_logprob=-1.5) == "low_confidence"
    assert known("la " * 60) == "repetition"
    assert known("...") == "empty" and known("") == "empty"


# -- context echoes and rival languages ----------------------------------------------------------

def test_an_output_made_of_the_contexts_words_is_an_echo():
    from subtitler.asr import echoes

    context = ("Press 1 to record your temporary greeting. That conference is full. "
               "Please enter the number to be removed from the blacklist.")
    assert echoes("Press 1 to record your temporary greeting.", context)
    assert echoes("Press 1 to record your temporary greeting. Press 1 to record your temporary greeting.", context)
    # pieces of two sentences joined
    assert echoes("Press 1 to record your temporary greeting. Please enter the number to be removed from "
                  "the blacklist.", context)
    assert echoes("Full.", context)
    assert not echoes("Please hold while I try that extension.", context)
    assert not echoes("Press 2 to hear your new messages.", context)
    assert not echoes("Anything.", "") and not echoes("", context)


def test_other_languages_are_tried_only_where_the_language_is_in_doubt():
    from subtitler.asr import rivals

    sure = {"en": 0.93, "de": 0.03, "nl": 0.01}
    assert rivals(sure, "en", 0.93, prior="en", thorough=True) == []
    # the prior won over the detection: the detected languages are tried
    assert rivals({"it": 0.69, "en": 0.13, "es": 0.045}, "en", 0.13, prior="en", thorough=False) == ["it", "es"]
    # the detection won over the prior: the prior is tried too
    assert rivals({"en": 0.39, "fr": 0.22, "ja": 0.07, "es": 0.01}, "en", 0.39, prior="es",
                  thorough=False) == ["fr", "ja", "es"]
    # an unsure final agreeing with the prior: its likely neighbours, a partial: nothing
    unsure = {"en": 0.41, "es": 0.30, "gl": 0.1}
    assert rivals(unsure, "en", 0.41, prior="en", thorough=True) == ["es", "gl"]
    assert rivals(unsure, "en", 0.41, prior="en", thorough=False) == []
    # languages hardly detected at all are not tried
    assert rivals({"th": 0.6, "de": 0.01, "en": 0.005}, "th", 0.6, prior=None, thorough=True) == []


def test_a_prompt_is_its_whole_text_and_drops_its_context_for_another_language():
    from subtitler.asr import Prompt, prompt_text, without_context

    p = Prompt("Chongqing", "Welcome to Chongqing.", "en")
    assert p == "Chongqing Welcome to Chongqing." and isinstance(p, str)
    assert prompt_text(p, "en") == p and prompt_text(p, "es") == "Chongqing"
    assert without_context(p) == "Chongqing" and prompt_text("plain text", "es") == "plain text"
    assert Prompt("", "", "en") == "" and Prompt("", "Hola.", None).for_language("en") == "Hola."
