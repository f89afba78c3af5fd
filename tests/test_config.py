"""Settings: the shipped config.toml, every kind of mistake, CLI overrides, and the CLI's
refusal to start on a bad config (exit status 2, one clear line, nothing created)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from subtitler.config import (SECTIONS, Config, ConfigError, RoomConfig, describe_allowed, load_config,
                              parse_set_option)
from subtitler.streaming import StreamingOptions

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> tuple[str, Path]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return str(e.value), path


# -- the shipped file -------------------------------------------------------------------------

def test_repo_config_equals_builtin_defaults():
    cfg = load_config(ROOT / "config.toml")
    assert cfg.source == str(ROOT / "config.toml")
    assert replace(cfg, source=Config().source) == Config()


def test_repo_config_documents_every_setting():
    lines = (ROOT / "config.toml").read_text(encoding="utf-8").splitlines()
    for section, cls in SECTIONS.items():
        start = lines.index(f"[{section}]")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        for f in fields(cls):
            at = [i for i in range(start, end) if lines[i].startswith(f"{f.name} = ")]
            assert at, f"[{section}] {f.name} missing from config.toml"
            # the comment above each key is the setting's own help and allowed values
            assert lines[at[0] - 1] == f"# {f.metadata['help']} ({describe_allowed(f)})", (section, f.name)


def test_every_room_key_is_documented_in_config_toml():
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    for f in fields(RoomConfig):
        assert f"\n#   {f.name} " in text or f"[rooms.NAME.{f.name}]" in text or f.name == "name", f.name


def test_the_commented_room_example_is_a_valid_config(tmp_path):
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    example = text[text.index("# [rooms.hall]"):]
    cfg = load_config(write(tmp_path, "\n".join(line.removeprefix("# ").removeprefix("#")
                                                for line in example.splitlines()), name="venue.toml"))
    assert list(cfg.rooms) == ["hall", "forum"]
    hall = cfg.for_room("hall")
    assert hall.asr.language == "zh" and hall.translate.targets == ["en", "ru"] and hall.audio.input == "remote"
    assert hall.glossary.fixed("重庆", "en") == "Chongqing"
    forum = cfg.for_room("forum")
    assert (forum.audio.input, forum.audio.device, cfg.room("forum").token) == ("mic", "USB", "forum-2-secret")


def test_no_path_and_no_local_file_gives_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config() == Config()


def test_local_config_toml_is_read_when_present(tmp_path, monkeypatch):
    write(tmp_path, "[asr]\nbeam_size = 2\n", name="config.toml")
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.asr.beam_size == 2
    assert cfg.source == "config.toml"


def test_a_partial_file_overrides_only_its_keys(tmp_path):
    cfg = load_config(write(tmp_path, '[vad]\nend_silence_ms = 400\n[output]\nformats = ["srt"]\n',
                            name="ok.toml"))
    assert cfg.vad.end_silence_ms == 400
    assert cfg.output.formats == ["srt"]
    assert cfg.asr == Config().asr
    assert replace(cfg, vad=Config().vad, output=Config().output, source=Config().source) == Config()


def test_toml_values_are_coerced_to_the_field_type(tmp_path):
    cfg = load_config(write(tmp_path, "[asr]\nmax_lag_s = 60\nbeam_size = 3.0\n[audio]\ndevice = 3\n",
                            name="ok.toml"))
    assert cfg.asr.max_lag_s == 60.0 and isinstance(cfg.asr.max_lag_s, float)
    assert cfg.asr.beam_size == 3 and isinstance(cfg.asr.beam_size, int)
    assert cfg.audio.device == "3"


def test_defaults_do_not_share_lists():
    a, b = Config(), Config()
    assert a.output.formats == b.output.formats
    assert a.output.formats is not b.output.formats


# -- mistakes in the file ---------------------------------------------------------------------

def test_unknown_section(tmp_path):
    msg, path = config_error(tmp_path, "[whisper]\nmodel = 'base'\n")
    assert str(path) in msg
    assert "[whisper]" in msg
    assert "audio, vad, asr, output" in msg


def test_unknown_key(tmp_path):
    msg, path = config_error(tmp_path, "[vad]\nend_silence = 400\n")
    assert str(path) in msg
    assert "end_silence" in msg and "[vad]" in msg
    assert "end_silence_ms" in msg  # the allowed keys are listed


@pytest.mark.parametrize("toml, key, problem, allowed", [
    ('[vad]\nframe_ms = "thirty"\n', "[vad] frame_ms", "not a number", "one of 10, 20, 30"),
    ("[audio]\nrealtime = 1\n", "[audio] realtime", "expected true or false", "true or false"),
    ('[audio]\nrealtime = "maybe"\n', "[audio] realtime", "expected true or false", "true or false"),
    ("[asr]\nbeam_size = 2.5\n", "[asr] beam_size", "whole number", "a whole number from 1 to 16"),
    ("[asr]\nbeam_size = true\n", "[asr] beam_size", "expected a number", "a whole number from 1 to 16"),
    ("[asr]\nmodel = 3\n", "[asr] model", "expected text", "text"),
    ("[asr]\nmax_lag_s = [1, 2]\n", "[asr] max_lag_s", "expected a number", "a number from 5.0 to 600.0"),
    ("[output]\nformats = [1, 2]\n", "[output] formats", "list of names", "one of srt, vtt, txt, jsonl"),
])
def test_wrong_type(tmp_path, toml, key, problem, allowed):
    msg, path = config_error(tmp_path, toml)
    assert str(path) in msg
    assert key in msg
    assert problem in msg
    assert f"allowed: {allowed}" in msg


@pytest.mark.parametrize("toml, key, allowed", [
    ("[vad]\naggressiveness = 5\n", "[vad] aggressiveness", "a whole number from 0 to 3"),
    ("[vad]\nend_silence_ms = 50\n", "[vad] end_silence_ms", "a whole number from 100 to 5000"),
    ("[vad]\nmax_utterance_s = 29.5\n", "[vad] max_utterance_s", "a number from 2.0 to 28.0"),
    ("[asr]\nno_speech_threshold = -0.1\n", "[asr] no_speech_threshold", "a number from 0.0 to 1.0"),
    ("[asr]\nmax_lag_s = nan\n", "[asr] max_lag_s", "a number from 5.0 to 600.0"),
    ("[asr]\nmax_lag_s = inf\n", "[asr] max_lag_s", "a number from 5.0 to 600.0"),
])
def test_out_of_range(tmp_path, toml, key, allowed):
    msg, path = config_error(tmp_path, toml)
    assert str(path) in msg and key in msg
    assert "out of range" in msg
    assert f"allowed: {allowed}" in msg


@pytest.mark.parametrize("toml, key, allowed", [
    ("[vad]\nframe_ms = 25\n", "[vad] frame_ms", "one of 10, 20, 30"),
    ('[asr]\ndevice = "tpu"\n', "[asr] device", "one of auto, cpu, cuda"),
    ('[asr]\ntask = "summarize"\n', "[asr] task", "one of transcribe, translate"),
    ('[asr]\ncompute_type = "fp16"\n', "[asr] compute_type", "one of auto, int8,"),
])
def test_bad_choice(tmp_path, toml, key, allowed):
    msg, path = config_error(tmp_path, toml)
    assert str(path) in msg and key in msg
    assert "not an allowed value" in msg
    assert f"allowed: {allowed}" in msg


@pytest.mark.parametrize("toml, problem", [
    ('[output]\nformats = ["srt", "pdf"]\n', "unknown: pdf"),
    ('[output]\nformats = ["srt", "pdf", "docx"]\n', "unknown: pdf, docx"),
    ("[output]\nformats = []\n", "empty list"),
])
def test_bad_list_item(tmp_path, toml, problem):
    msg, path = config_error(tmp_path, toml)
    assert str(path) in msg and "[output] formats" in msg
    assert problem in msg
    assert "allowed: one of srt, vtt, txt, jsonl (a list)" in msg


def test_section_that_is_not_a_table(tmp_path):
    msg, path = config_error(tmp_path, "vad = 3\n")
    assert str(path) in msg and "[vad]" in msg


def test_invalid_toml(tmp_path):
    msg, path = config_error(tmp_path, "[vad]\nframe_ms = = 30\n")
    assert str(path) in msg
    assert "not valid TOML" in msg
    assert "line 2" in msg  # tomllib says where


def test_invalid_utf8(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[asr]\nmodel = \"\xff\xfe\"\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        load_config(missing)
    assert str(missing) in str(e.value)
    assert "not found" in str(e.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# -- command-line overrides -------------------------------------------------------------------

@pytest.mark.parametrize("dotted, text, expected", [
    ("audio.realtime", "true", True),
    ("audio.realtime", "TRUE", True),
    ("audio.realtime", "1", True),
    ("audio.realtime", "yes", True),
    ("audio.realtime", "0", False),
    ("audio.realtime", "false", False),
    ("asr.partial_interval", "0.5", 0.5),
    ("asr.partial_interval", "0", 0.0),
    ("asr.beam_size", "1", 1),
    ("vad.frame_ms", "20", 20),
    ("vad.max_utterance_s", "10", 10.0),
    ("output.formats", "srt,vtt", ["srt", "vtt"]),
    ("output.formats", " srt , jsonl ,", ["srt", "jsonl"]),
    ("asr.language", "es", "es"),
    ("audio.device", "2", "2"),
])
def test_overrides_coerce_cli_strings(dotted, text, expected):
    cfg = Config().with_overrides({dotted: text})
    section, key = dotted.split(".")
    value = getattr(getattr(cfg, section), key)
    assert value == expected
    assert type(value) is type(expected)
    # nothing else changed
    assert replace(cfg, **{section: getattr(Config(), section)}) == Config()


def test_overrides_skip_none_and_leave_the_original_alone():
    base = Config()
    cfg = base.with_overrides({"asr.model": None, "asr.beam_size": "2"})
    assert cfg.asr.model == "base" and cfg.asr.beam_size == 2
    assert base.asr.beam_size == 5


@pytest.mark.parametrize("dotted, text, needle", [
    ("audio.realtime", "sometimes", "expected true or false"),
    ("asr.beam_size", "five", "not a number"),
    ("asr.beam_size", "0", "out of range"),
    ("vad.frame_ms", "25", "not an allowed value"),
    ("output.formats", "srt,pdf", "unknown: pdf"),
    ("output.formats", ",", "empty list"),
    ("asr.beamsize", "1", "unknown key 'beamsize' in [asr]"),
    ("whisper.model", "base", "unknown section [whisper]"),
])
def test_override_errors_name_the_command_line_and_key(dotted, text, needle):
    with pytest.raises(ConfigError) as e:
        Config().with_overrides({dotted: text})
    msg = str(e.value)
    assert msg.startswith("command line: ")
    assert needle in msg


def test_parse_set_option():
    assert parse_set_option("asr.beam_size=1") == ("asr.beam_size", "1")
    assert parse_set_option(" vad.end_silence_ms = 400 ") == ("vad.end_silence_ms", "400")
    assert parse_set_option("asr.initial_prompt=a=b") == ("asr.initial_prompt", "a=b")
    assert parse_set_option("asr.hotwords=") == ("asr.hotwords", "")


@pytest.mark.parametrize("text", ["asr.beam_size", "beam_size=1", "=1", ""])
def test_parse_set_option_errors(text):
    with pytest.raises(ConfigError) as e:
        parse_set_option(text)
    assert "section.key=value" in str(e.value)
    assert repr(text) in str(e.value)


# -- the CLI refuses a bad config before doing anything ---------------------------------------

def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "subtitler", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def assert_refused(result: subprocess.CompletedProcess, tmp_path: Path, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("subtitler: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.stderr
    assert "Loading Whisper model" not in result.stderr + result.stdout
    created = sorted(p.name for p in tmp_path.iterdir())
    assert created == ["bad.toml"] or created == [], created  # no transcripts/ folder


def test_cli_run_with_bad_config_exits_2(tmp_path):
    write(tmp_path, '[vad]\nend_silence_ms = 50\n[output]\ndir = "transcripts"\n')
    result = run_cli(tmp_path, "run", "--config", "bad.toml")
    assert_refused(result, tmp_path, "bad.toml", "[vad] end_silence_ms", "from 100 to 5000")


def test_cli_run_with_bad_set_exits_2(tmp_path):
    write(tmp_path, "[asr]\nbeam_size = 2\n")
    result = run_cli(tmp_path, "run", "--config", "bad.toml", "--set", "output.formats=srt,pdf")
    assert_refused(result, tmp_path, "[output] formats", "unknown: pdf", "srt, vtt, txt, jsonl")


def test_cli_run_with_missing_config_exits_2(tmp_path):
    result = run_cli(tmp_path, "run", "--config", "missing.toml")
    assert_refused(result, tmp_path, "missing.toml", "not found")


# -- [translate] and [glossary] -------------------------------------------------------------------

def test_translate_defaults_and_an_empty_target_list():
    t = Config().translate
    assert t.targets == [] and t.backend == "auto" and t.overrides == [] and t.partials is False
    assert Config().with_overrides({"translate.targets": ""}).translate.targets == []
    assert Config().with_overrides({"translate.targets": "es, zh-Hant,zho_Hans,es"}).translate.targets == [
        "es", "zh-Hant", "zho_Hans"]


def test_translate_from_a_file(tmp_path):
    cfg = load_config(write(tmp_path, '[translate]\ntargets = ["en", "zh", "ru", "es"]\nbackend = "apertium"\n'
                                      '[translate.overrides]\nen = "whisper"\n', name="ok.toml"))
    assert cfg.translate.targets == ["en", "zh", "ru", "es"] and cfg.translate.backend == "apertium"
    assert cfg.translate.overrides == ["en=whisper"]  # the table form is the list's equal
    cfg = load_config(write(tmp_path, '[translate]\noverrides = ["en=whisper", "es = apertium"]\ntargets = "en,es"\n',
                            name="ok2.toml"))
    assert cfg.translate.targets == ["en", "es"]  # a text is a comma-separated list, as on the command line
    assert cfg.translate.parsed_overrides == {"en": "whisper", "es": "apertium"}


@pytest.mark.parametrize("toml, needles", [
    ('[translate]\ntargets = ["es", "Spanish!"]\n', ["[translate] targets", "unknown: Spanish!", "language codes"]),
    ('[translate]\ntargets = [1]\n', ["[translate] targets", "list of names"]),
    ('[translate]\nbackend = "deepl"\n', ["[translate] backend", "auto, ctranslate2, apertium, whisper"]),
    ('[translate]\noverrides = ["en:whisper"]\n', ["[translate] overrides", "unknown: en:whisper"]),
    ('[translate]\noverrides = ["en=google"]\n', ["[translate] overrides", "unknown backend 'google' for 'en'"]),
    ('[translate]\nbeam_size = 0\n', ["[translate] beam_size", "from 1 to 16"]),
    ('[glossary]\nterms = "SCO"\n[glossary.es]\nSCO = 3\n', ["[glossary]", "glossary.es"]),
    ('[glossary]\nterms = [1, 2]\n', ["[glossary]", "glossary.terms must be a list"]),
    ('glossary = 3\n', ["'glossary' must be a table"]),
])
def test_translate_and_glossary_mistakes(tmp_path, toml, needles):
    msg, path = config_error(tmp_path, toml)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, msg


def test_glossary_from_the_file_and_the_command_line(tmp_path):
    cfg = load_config(write(tmp_path, '[glossary]\nterms = ["Chongqing", "SCO"]\n[glossary.es]\nSCO = "OCS"\n'
                                      '[glossary.zh]\nChongqing = "重庆"\n', name="ok.toml"))
    g = cfg.glossary
    assert g.terms == ["Chongqing", "SCO"] and g.fixed("SCO", "es") == "OCS" and g.fixed("Chongqing", "zh") == "重庆"
    g2 = cfg.with_overrides({"glossary.terms": "Subtitler Pro, SCO"}).glossary
    assert g2.terms == ["Subtitler Pro", "SCO", "Chongqing"] and g2.fixed("SCO", "es") == "OCS"
    with pytest.raises(ConfigError, match="only glossary.terms"):
        cfg.with_overrides({"glossary.es": "x"})
    assert StreamingOptions.from_config(cfg.asr, cfg.glossary, live=True).prompt == "Chongqing, SCO."
    both = cfg.with_overrides({"asr.hotwords": "Anna Smith"})
    assert StreamingOptions.from_config(both.asr, both.glossary, live=True).prompt == "Anna Smith Chongqing, SCO."


def test_unknown_section_lists_glossary_too(tmp_path):
    msg, _ = config_error(tmp_path, "[glosary]\nterms = []\n")
    assert "audio, vad, asr, output, server, translate, glossary, rooms" in msg


def test_cli_with_a_bad_target_exits_2_before_loading_the_model(tmp_path):
    write(tmp_path, '[translate]\ntargets = ["es", "e s"]\n')
    result = run_cli(tmp_path, "run", "--config", "bad.toml")
    assert_refused(result, tmp_path, "bad.toml", "[translate] targets", "unknown: e s")


# -- sections owned by their stages ------------------------------------------------------------------

def test_each_stage_takes_its_own_section_as_it_is():
    from subtitler.translate import TranslateConfig
    from subtitler.vad import Segmenter, VadOptions

    cfg = Config().with_overrides({"vad.end_silence_ms": "400", "vad.post_roll_ms": "100"})
    assert isinstance(cfg.vad, VadOptions) and isinstance(cfg.translate, TranslateConfig)
    seg = Segmenter(cfg.vad, is_speech=lambda frame: False)
    assert seg.o is cfg.vad and seg.o.end_silence_ms == 400 and seg.o.post_roll_ms == 100


def test_streaming_options_from_the_asr_section():
    cfg = Config().with_overrides({"asr.beam_size": "3", "asr.language": "es", "asr.first_partial_s": "0.5",
                                   "asr.initial_prompt": "A talk.", "asr.max_lag_s": "20",
                                   "asr.condition_on_previous": "false", "glossary.terms": "SCO"})
    live = StreamingOptions.from_config(cfg.asr, cfg.glossary, live=True)
    assert (live.beam_size, live.language, live.first_partial_s, live.partial_interval) == (3, "es", 0.5, 1.0)
    assert live.prompt == "A talk. SCO." and live.max_lag_s == 20.0 and live.speculate
    assert live.condition_on_previous is False and live.task == "transcribe"
    # a file read as fast as it decodes: finals only, nothing skipped, no speculative decodes
    offline = StreamingOptions.from_config(cfg.asr, cfg.glossary, live=False)
    assert (offline.partial_interval, offline.max_lag_s, offline.speculate) == (0.0, None, False)
    assert StreamingOptions.from_config(Config().asr, None, live=True).language is None  # 'auto'
    assert StreamingOptions.from_config(Config().asr).prompt == ""


@pytest.mark.parametrize("value, ok", [("en", True), ("zh-Hant", True), ("pt_BR", True), ("auto", True),
                                       ("english", False), ("e", False), ("", False), ("en-", False)])
def test_asr_language_is_a_language_code_or_auto(value, ok):
    if ok:
        assert Config().with_overrides({"asr.language": value}).asr.language == value
    else:
        with pytest.raises(ConfigError, match=r"\[asr\] language = .*not a language code; allowed: auto or a "):
            Config().with_overrides({"asr.language": value})


# -- the venue: [server] and [rooms.NAME] ------------------------------------------------------------

VENUE = '''
[asr]
language = "zh"
[translate]
targets = ["en", "ru"]
overrides = ["en=whisper"]
[audio]
device = "2"
realtime = true
[glossary]
terms = ["Chongqing", "SCO"]
[glossary.en]
SCO = "Shanghai Cooperation Organisation"
Chongqing = "Chongqing"

[rooms.hall]
title = "Main hall"

[rooms.forum]
language = "en"
targets = ["zh", "es"]
token = "forum-secret"
[rooms.forum.glossary]
terms = ["Smart China Expo"]
[rooms.forum.glossary.en]
sco = "SCO"
[rooms.forum.glossary.es]
"Smart China Expo" = "Feria Inteligente de China"

[rooms.rehearsal]
input = "talks/opening.wav"
realtime = false

[rooms.booth]
input = "mic"
device = "USB"
'''


def test_server_venue_settings():
    server = Config().server
    assert server.max_rooms == 0 and server.venue_title == ""
    cfg = Config().with_overrides({"server.max_rooms": "16", "server.venue_title": "Smart China Expo"})
    assert cfg.server.max_rooms == 16 and cfg.server.venue_title == "Smart China Expo"
    with pytest.raises(ConfigError, match=r"\[server\] max_rooms = -1: out of range; allowed: a whole number"):
        Config().with_overrides({"server.max_rooms": "-1"})


def test_no_rooms_by_default():
    assert Config().rooms == {} and load_config(ROOT / "config.toml").rooms == {}


def test_rooms_are_read_in_the_order_of_the_file(tmp_path):
    cfg = load_config(write(tmp_path, VENUE, name="venue.toml"))
    assert list(cfg.rooms) == ["hall", "forum", "rehearsal", "booth"]
    hall, forum = cfg.rooms["hall"], cfg.rooms["forum"]
    assert isinstance(hall, RoomConfig) and hall.name == "hall" and hall.title == "Main hall"
    # unset: the venue-wide setting (None), a random token (''), the name as title, remote input
    assert (hall.language, hall.targets, hall.device, hall.realtime, hall.glossary) == (None,) * 5
    assert (hall.token, hall.input) == ("", "remote")
    assert forum.title == "forum" and forum.token == "forum-secret"
    assert forum.language == "en" and forum.targets == ["zh", "es"]
    assert cfg.room("hall") is hall


def test_a_room_falls_back_to_the_venue_wide_settings(tmp_path):
    cfg = load_config(write(tmp_path, VENUE, name="venue.toml"))
    hall = cfg.for_room("hall")
    assert hall.asr.language == "zh" and hall.translate.targets == ["en", "ru"]
    assert hall.translate.overrides == ["en=whisper"]
    assert (hall.audio.input, hall.audio.device, hall.audio.realtime) == ("remote", "2", True)
    assert hall.glossary == cfg.glossary
    assert hall.vad == cfg.vad and hall.server == cfg.server and hall.output == cfg.output
    assert hall.rooms == {"hall": cfg.rooms["hall"]} and hall.source == cfg.source
    # the room's own settings win
    forum = cfg.for_room("forum")
    assert forum.asr.language == "en" and forum.translate.targets == ["zh", "es"]
    assert forum.asr.model == cfg.asr.model and forum.asr.beam_size == cfg.asr.beam_size
    # the venue's en=whisper is for a target this room does not have: dropped, not an error at start
    assert forum.translate.overrides == []
    rehearsal = cfg.for_room("rehearsal")
    assert (rehearsal.audio.input, rehearsal.audio.realtime) == ("talks/opening.wav", False)
    booth = cfg.for_room("booth")
    assert (booth.audio.input, booth.audio.device) == ("mic", "USB")
    assert cfg.for_room("hall").for_room("hall") == hall  # a room's config is its own room's


def test_a_room_glossary_is_merged_over_the_venue_glossary(tmp_path):
    cfg = load_config(write(tmp_path, VENUE, name="venue.toml"))
    g = cfg.for_room("forum").glossary
    assert g.terms == ["Chongqing", "SCO", "Smart China Expo"]
    assert g.fixed("SCO", "en") == "SCO"  # the room's fixed form wins, however it spells the term
    assert g.fixed("Chongqing", "en") == "Chongqing"  # the venue's others stay
    assert g.fixed("Smart China Expo", "es") == "Feria Inteligente de China"
    assert cfg.glossary.fixed("SCO", "en") == "Shanghai Cooperation Organisation"  # the venue's is untouched
    assert "Smart China Expo" not in cfg.for_room("hall").glossary.terms


def test_a_room_not_in_the_file_gets_the_venue_defaults(tmp_path):
    cfg = load_config(write(tmp_path, VENUE, name="venue.toml"))
    room = cfg.room("annex")
    assert room == RoomConfig("annex") and room.title == "annex" and room.input == "remote"
    annex = cfg.for_room("annex")
    assert annex.asr.language == "zh" and annex.translate.targets == ["en", "ru"]
    assert annex.audio.input == "remote" and annex.glossary == cfg.glossary
    assert "annex" not in cfg.rooms  # asking adds nothing
    # a config with no rooms at all: `subtitler serve --rooms a,b`
    a = Config().for_room("a")
    assert a.audio.input == "remote" and replace(a, audio=Config().audio, rooms={}) == Config()
    with pytest.raises(ConfigError) as e:
        Config().room("Main Hall", where="--rooms")
    assert str(e.value).startswith("--rooms: [rooms.Main Hall]: room name 'Main Hall' is not allowed")
    assert "lower-case letters" in str(e.value)


def test_rooms_from_the_command_line():
    cfg = Config().with_overrides({"rooms.hall.title": "Main hall", "rooms.hall.targets": "en,zh",
                                   "rooms.hall.language": "es", "rooms.forum.glossary.terms": "SCO, Chongqing",
                                   "rooms.hall.realtime": "yes", "rooms.booth.input": "mic",
                                   "rooms.booth.device": "3"})
    assert list(cfg.rooms) == ["hall", "forum", "booth"]
    hall = cfg.rooms["hall"]
    assert (hall.title, hall.targets, hall.language, hall.realtime) == ("Main hall", ["en", "zh"], "es", True)
    assert cfg.rooms["forum"].glossary.terms == ["SCO", "Chongqing"]
    assert cfg.for_room("booth").audio.device == "3"
    # '' is "no translation" for the room, not "unset"; an empty title is the name again
    cfg = cfg.with_overrides({"rooms.hall.targets": "", "rooms.hall.title": ""})
    assert cfg.rooms["hall"].targets == [] and cfg.for_room("hall").translate.targets == []
    assert cfg.rooms["hall"].title == "hall"


def room_error(tmp_path, toml: str) -> str:
    msg, path = config_error(tmp_path, toml)
    assert msg.startswith(f"{path}: "), msg
    return msg


@pytest.mark.parametrize("toml, needles", [
    # a name that cannot be part of a URL
    ('[rooms.Hall]\ntitle = "x"\n', ["[rooms.Hall]", "room name 'Hall' is not allowed",
                                     "1 to 32 lower-case letters, digits, '-' or '_'"]),
    ('[rooms."main hall"]\n', ["room name 'main hall' is not allowed"]),
    ('[rooms."-x"]\n', ["room name '-x' is not allowed"]),
    ('[rooms.hall]\ntitel = "x"\n', ["unknown key 'titel' in [rooms.hall]", "allowed keys: title, token, "
                                     "language, targets, input, device, realtime, glossary"]),
    ('[rooms.hall]\nlanguage = "english"\n', ["[rooms.hall] language = 'english'", "not a language code",
                                              "allowed: auto or a language code"]),
    ('[rooms.hall]\nlanguage = 3\n', ["[rooms.hall] language = 3", "expected text"]),
    ('[rooms.hall]\ntargets = ["en", "Russian!"]\n', ["[rooms.hall] targets", "unknown: Russian!",
                                                      "a list of language codes"]),
    ('[rooms.hall]\ninput = 3\n', ["[rooms.hall] input = 3", "expected text", "allowed: text"]),
    ('[rooms.hall]\ninput = ["mic"]\n', ["[rooms.hall] input", "expected text"]),
    ('[rooms.hall]\ninput = " "\n', ["[rooms.hall] input = ' '", "empty", "'remote', 'mic' or a file path"]),
    ('[rooms.hall]\ndevice = "USB"\n', ["[rooms.hall] device = 'USB'", "only with input = \"mic\"",
                                        "this room's input is 'remote'"]),
    ('[rooms.hall]\nrealtime = "fast"\n', ["[rooms.hall] realtime", "expected true or false"]),
    ('[rooms.hall]\ntitle = 3\n', ["[rooms.hall] title = 3", "expected text"]),
    ('[rooms.hall]\nglossary = "SCO"\n', ["'rooms.hall.glossary' must be a table",
                                          "write it as [rooms.hall.glossary]"]),
    ('[rooms.hall.glossary]\nterms = [1]\n', ["[rooms.hall.glossary]", "rooms.hall.glossary.terms must be a list"]),
    ('[rooms.hall.glossary.es]\nSCO = 1\n', ["[rooms.hall.glossary]", "rooms.hall.glossary.es must be a table"]),
    ("rooms = 3\n", ["'rooms' must be a table of rooms", "[rooms.NAME]"]),
    ("[rooms]\nhall = 3\n", ["'rooms.hall' must be a table", "write it as [rooms.hall]"]),
])
def test_room_mistakes_name_the_file_the_room_and_what_is_allowed(tmp_path, toml, needles):
    msg = room_error(tmp_path, toml)
    for needle in needles:
        assert needle in msg, msg


@pytest.mark.parametrize("dotted, text, needle", [
    ("rooms.Hall.title", "x", "room name 'Hall' is not allowed"),
    ("rooms.hall.titel", "x", "unknown key 'titel' in [rooms.hall]"),
    ("rooms.hall.language", "klingon", "[rooms.hall] language = 'klingon': not a language code"),
    ("rooms.hall.device", "2", "a device is read only with input = \"mic\""),
    ("rooms.hall.glossary.es", "x", "only rooms.hall.glossary.terms can be set here"),
    ("rooms.hall", "x", "write a room's setting as rooms.NAME.KEY"),
])
def test_room_override_errors(dotted, text, needle):
    with pytest.raises(ConfigError) as e:
        Config().with_overrides({dotted: text})
    assert str(e.value).startswith("command line: ") and needle in str(e.value), str(e.value)


def test_a_device_and_mic_input_set_together_on_the_command_line_are_checked_together():
    cfg = Config().with_overrides({"rooms.booth.device": "2", "rooms.booth.input": "mic"})
    assert cfg.for_room("booth").audio.device == "2"
