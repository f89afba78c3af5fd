"""Settings: the shipped config.toml, every kind of mistake, CLI overrides, and the CLI's
refusal to start on a bad config (exit status 2, one clear line, nothing created)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from subtitler.config import SECTIONS, Config, ConfigError, load_config, parse_set_option

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
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in text
        for f in fields(cls):
            assert f"\n{f.name} = " in text, f"[{section}] {f.name} missing from config.toml"


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
    from subtitler.engine import translate_settings

    assert translate_settings(cfg).overrides == {"en": "whisper", "es": "apertium"}


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
    from subtitler.engine import streaming_options

    assert streaming_options(cfg, live=True).prompt == "Chongqing, SCO."
    both = cfg.with_overrides({"asr.hotwords": "Anna Smith"})
    assert streaming_options(both, live=True).prompt == "Anna Smith Chongqing, SCO."


def test_unknown_section_lists_glossary_too(tmp_path):
    msg, _ = config_error(tmp_path, "[glosary]\nterms = []\n")
    assert "audio, vad, asr, output, server, translate, glossary" in msg


def test_cli_with_a_bad_target_exits_2_before_loading_the_model(tmp_path):
    write(tmp_path, '[translate]\ntargets = ["es", "e s"]\n')
    result = run_cli(tmp_path, "run", "--config", "bad.toml")
    assert_refused(result, tmp_path, "bad.toml", "[translate] targets", "unknown: e s")
