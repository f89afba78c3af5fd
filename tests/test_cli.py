"""The command line as a user meets it: the real ``python -m subtitler`` in a subprocess.

Every command runs from an empty temporary folder (no ./config.toml), finds the
packaged ``base`` model through ``--set asr.models_dir=<repo>/models`` or
``--model <folder>``, and is fed real speech: Debian's Asterisk prompts glued by
``bench/corpus.build_stream`` with their known texts. Files are read back with the
real ``srt`` and ``webvtt-py`` parsers.

Measured on the 2-core dev box (base, int8, CPU), for the bounds below:
  * transcribe of the 4-prompt stream (seed 1, 15.2 s): 4 captions, WER 0.00
    (bound 0.15); ~5 s per run, model load included.
  * Ctrl-C 2 s into a 5.3 s prompt: exit 0 in 1.8-2.7 s, the last caption is
    "That password does not meet the minimum..." (12.30-14.61 s) (bound: 30 s to stop).
  * kill -9 after the 2nd caption: 2 whole captions in all four files.
  * missing model with HF_HUB_OFFLINE=1: exit 2 in ~0.6 s ('tiny', which goes
    through the hub code, in ~1.0 s); bound 60 s.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import srt
import webvtt

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "bench", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from corpus import build_stream, normalize, wer  # noqa: E402

from subtitler.transcripts import split_cues  # noqa: E402

MODELS = f"asr.models_dir={ROOT / 'models'}"
NO_PORT = "server.port=0"  # `run` serves the room's pages: any free port, never a clash
FORMATS = ("srt", "vtt", "txt", "jsonl")
WER_BOUND = 0.15  # measured 0.00 on the transcribe stream
START_TIMEOUT = 180.0  # model load on a busy 2-core box
ERROR_TIMEOUT = 60.0  # an error must come back, not hang on the network


# -- helpers --------------------------------------------------------------------------------

def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"  # a hub look-up must fail at once, never wait on the network
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PULSE_SERVER", None)  # no leftover room from another test
    return env


def command(args: tuple[str, ...]) -> list[str]:
    extra = ["--set", NO_PORT] if args[:1] == ("run",) and "--help" not in args else []
    return [sys.executable, "-m", "subtitler", *args, *extra]


def subtitler(*args: str, cwd: Path, timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run(command(args), cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def start(*args: str, cwd: Path) -> tuple[subprocess.Popen, Path, Path]:
    """Start ``subtitler`` in the background with stdout/stderr going to files (never a
    full pipe that could stall it); returns the process and the two file paths."""
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out, "wb") as o, open(err, "wb") as e:
        p = subprocess.Popen(command(args), cwd=cwd, env=cli_env(),
                             stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    return p, out, err


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float = START_TIMEOUT) -> float:
    """Poll ``path`` until it holds ``text``; returns the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return time.monotonic()
        if proc.poll() is not None:
            pytest.fail(f"subtitler exited ({proc.returncode}) before printing {text!r}:\n"
                        f"{path.read_text(errors='replace')}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {text!r} within {timeout} s:\n{path.read_text(errors='replace')}")


def only_session_folder(out: Path) -> Path:
    folders = [p for p in out.iterdir()]
    assert len(folders) == 1 and folders[0].is_dir(), folders
    return folders[0]


def read_srt(path: Path) -> list[srt.Subtitle]:
    text = path.read_text("utf-8")
    # A cut-off tail parses quietly, so check the file ends on a cue boundary and
    # re-composes byte for byte: that is what a strict player sees.
    assert text == "" or text.endswith("\n\n"), repr(text[-80:])
    subs = list(srt.parse(text))
    assert srt.compose(subs, reindex=False) == text
    return subs


def read_vtt(path: Path) -> list:
    text = path.read_text("utf-8")
    assert text.startswith("WEBVTT\n\n") and text.endswith("\n\n"), repr(text[-80:])
    return webvtt.read(str(path)).captions


def read_jsonl(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), data[-80:]
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def read_txt(path: Path) -> list[str]:
    text = path.read_text("utf-8")
    assert text == "" or text.endswith("\n")
    return text.splitlines()


def check_consistent(folder: Path, basename: str = "captions") -> list[dict]:
    """All four files parse cleanly and hold the same captions; returns the JSONL records."""
    records = read_jsonl(folder / f"{basename}.jsonl")
    subs = read_srt(folder / f"{basename}.srt")
    cues = read_vtt(folder / f"{basename}.vtt")
    lines = read_txt(folder / f"{basename}.txt")
    for r in records:
        assert set(r) >= {"id", "seq", "start", "end", "emitted", "lang", "text"}, r
        assert r["text"].strip() and 0 <= r["start"] < r["end"], r
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    # One TXT line per caption, one or more SRT/VTT cues per caption (long ones are split).
    assert len(lines) == len(records)
    for line, r in zip(lines, records):
        assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] .+", line), line
        assert line.split("] ", 1)[1] == " ".join(r["text"].split())
    expected = [" ".join(c.lines) for r in records for c in split_cues(r["text"], r["start"], r["end"])]
    assert [" ".join(s.content.split("\n")) for s in subs] == expected
    assert [html.unescape(" ".join(c.text.split("\n"))) for c in cues] == expected
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    ends = [s.end.total_seconds() for s in subs]
    starts = [s.start.total_seconds() for s in subs]
    assert all(a < b for a, b in zip(starts, ends)) and all(b <= a for a, b in zip(starts[1:], ends))
    return records


def one_error(stderr: str) -> str:
    """The stderr of a refused command: exactly one 'subtitler: error:' message, no traceback."""
    assert "Traceback" not in stderr, stderr
    assert stderr.count("subtitler: error:") == 1, stderr
    return stderr[stderr.index("subtitler: error:"):]


# -- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_stream(tmp_path_factory) -> dict:
    """4 prompts, 15.2 s: 'To leave the conference', 'You are now muted', …"""
    return build_stream(tmp_path_factory.mktemp("short") / "short.wav", count=4, seed=1)


@pytest.fixture(scope="module")
def long_stream(tmp_path_factory) -> dict:
    """8 prompts, 32.2 s; the 4th (12.6-17.9 s) is a 5.3 s sentence to interrupt."""
    return build_stream(tmp_path_factory.mktemp("long") / "long.wav", count=8, seed=4,
                        gaps=(0.8, 1.6))


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    d = tmp_path / "cwd"
    d.mkdir()
    return d


# -- transcribe -----------------------------------------------------------------------------

@pytest.mark.slow
def test_transcribe_writes_all_formats_that_parse_back(short_stream, base_model_path, cwd):
    wav = Path(short_stream["wav"])
    r = subtitler("transcribe", str(wav), "--out", "subs", "--model", str(base_model_path), cwd=cwd)
    assert r.returncode == 0, r.stderr
    from subtitler.encoder import choose_encoder, encoder_dtype

    expected = {"torch": f"PyTorch {encoder_dtype()} encoder", "ctranslate2": "CTranslate2 encoder"}
    assert f"(int8, {expected[choose_encoder('auto', 'cpu')]})." in r.stderr  # says which encoder runs
    out = cwd / "subs"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{wav.stem}.{f}" for f in FORMATS)
    for f in FORMATS:  # stdout lists the files written
        assert f"  {Path('subs') / wav.stem}.{f}\n" in r.stdout, r.stdout
    records = check_consistent(out, basename=wav.stem)
    truth = short_stream["utterances"]
    assert len(records) == len(truth), records
    refs = [u["text"] for u in truth]
    assert wer([" ".join(refs)], [" ".join(rec["text"] for rec in records)]) <= WER_BOUND, records
    for rec, u in zip(records, truth):  # each caption spans its prompt (pre-roll, end silence)
        assert rec["start"] <= u["start"] + 0.3 and rec["end"] >= u["end"] - 0.3, (rec, u)
        assert rec["start"] >= u["start"] - 1.0 and rec["end"] <= u["end"] + 1.0, (rec, u)
    assert f"{len(records)} captions from" in r.stderr


@pytest.mark.slow
def test_transcribe_formats_option_writes_only_those(short_stream, base_model_path, cwd):
    wav = Path(short_stream["wav"])
    r = subtitler("transcribe", str(wav), "--out", "subs", "--formats", "srt,txt",
                  "--model", str(base_model_path), "--language", "en", cwd=cwd)
    assert r.returncode == 0, r.stderr
    out = cwd / "subs"
    assert sorted(p.name for p in out.iterdir()) == [f"{wav.stem}.srt", f"{wav.stem}.txt"]
    subs = read_srt(out / f"{wav.stem}.srt")
    lines = read_txt(out / f"{wav.stem}.txt")
    assert len(lines) == len(short_stream["utterances"])
    hyp = " ".join(s.content.replace("\n", " ") for s in subs)
    assert wer([" ".join(u["text"] for u in short_stream["utterances"])], [hyp]) <= WER_BOUND, hyp


# -- run on a file ------------------------------------------------------------------------

@pytest.mark.slow
def test_run_file_makes_one_session_folder(short_stream, cwd):
    r = subtitler("run", "--input", short_stream["wav"], "--out", "out", "--set", MODELS, cwd=cwd)
    assert r.returncode == 0, r.stderr
    folder = only_session_folder(cwd / "out")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(-\d+)?", folder.name), folder.name
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"captions.{f}" for f in FORMATS)
    records = check_consistent(folder)
    assert len(records) == len(short_stream["utterances"])
    assert wer([" ".join(u["text"] for u in short_stream["utterances"])],
               [" ".join(rec["text"] for rec in records)]) <= WER_BOUND
    # It says where the transcripts are, up front and in the summary.
    assert f"Transcripts go to {Path('out') / folder.name}/" in r.stderr, r.stderr
    summary = r.stderr[r.stderr.index("Stopped after"):]
    assert f"{len(records)} captions" in summary
    for f in FORMATS:
        assert str(Path("out") / folder.name / f"captions.{f}") in summary
    # The finals are shown on stdout too (not a terminal: no escape codes).
    assert "\x1b" not in r.stdout
    shown = [line.split("] ", 1)[1] for line in r.stdout.splitlines() if line.startswith("[")]
    assert shown == [rec["text"] for rec in records]


# -- refused before anything starts ---------------------------------------------------------

def test_missing_model_lists_the_three_ways(short_stream, cwd):
    empty = cwd / "empty-store"
    empty.mkdir()
    t0 = time.monotonic()
    r = subtitler("run", "--input", short_stream["wav"], "--out", "out", "--model", "definitely-not-a-model",
                  "--set", f"asr.models_dir={empty}", cwd=cwd, timeout=ERROR_TIMEOUT)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    msg = one_error(r.stderr)
    assert "definitely-not-a-model" in msg and "three ways" in msg
    for way in ("1. put a CTranslate2 model folder", "2. install the packaged models",
                "pip install 'subtitler[models]'", "3. go online once"):
        assert way in msg, msg
    assert str(empty / "definitely-not-a-model") in msg
    assert not (cwd / "out").exists(), "a session folder was created for a refused run"
    assert list(empty.iterdir()) == [], "the failed look-up left something in the model store"
    assert took < ERROR_TIMEOUT  # measured ~0.6 s


def test_a_broken_pytorch_is_one_error_when_asked_for_and_skipped_on_auto(short_stream, base_model_path, cwd):
    """A PyTorch that is installed but will not import: ``asr.encoder = "torch"`` refuses to
    start with one message (exit 2); ``auto`` captions anyway with CTranslate2's encoder."""
    fake = cwd / "broken-site"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text('raise ImportError("libtorch_cpu.so: undefined symbol")\n')
    env = {**cli_env(), "PYTHONPATH": os.pathsep.join([str(fake), *filter(None, [os.environ.get("PYTHONPATH")])])}
    base = ["transcribe", short_stream["wav"], "--out", "subs", "--model", str(base_model_path)]
    r = subprocess.run(command((*base, "--set", "asr.encoder=torch")), cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    msg = one_error(r.stderr)
    assert "asr.encoder = 'torch' cannot run" in msg and "libtorch_cpu.so" in msg
    assert not (cwd / "subs").exists()
    r = subprocess.run(command(tuple(base)), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "(int8, CTranslate2 encoder)." in r.stderr
    assert "You are now muted" in (cwd / "subs" / f"{Path(short_stream['wav']).stem}.txt").read_text()


def test_missing_hub_model_offline_fails_fast(short_stream, cwd):
    """A real hub name ('tiny') takes the download path; offline it must fail at once."""
    empty = cwd / "empty-store"
    empty.mkdir()
    r = subtitler("transcribe", short_stream["wav"], "--out", "out", "--model", "tiny",
                  "--set", f"asr.models_dir={empty}", cwd=cwd, timeout=ERROR_TIMEOUT)
    assert r.returncode == 2, r.stderr
    msg = one_error(r.stderr)
    assert "Whisper model 'tiny' was not found" in msg and "3. go online once" in msg
    assert not (cwd / "out").exists()


@pytest.mark.parametrize("command", ["run", "transcribe"])
def test_missing_input_file(command, cwd):
    args = ["--input", "no-such-file.wav"] if command == "run" else ["no-such-file.wav"]
    r = subtitler(command, *args, "--out", "out", "--set", MODELS, cwd=cwd, timeout=ERROR_TIMEOUT)
    assert r.returncode == 2, r.stderr
    msg = one_error(r.stderr)
    assert "no-such-file.wav does not exist" in msg
    assert "Loading Whisper model" not in r.stderr  # refused before the model is loaded
    assert not (cwd / "out").exists()


def test_missing_audio_device(cwd):
    r = subtitler("run", "--device", "no-such-device", "--out", "out", "--set", MODELS, cwd=cwd,
                  timeout=ERROR_TIMEOUT)
    assert r.returncode == 2, r.stderr
    msg = one_error(r.stderr)
    # No sound server here: no inputs at all; on a desktop: the named one is missing.
    assert ("no input device named 'no-such-device'" in msg and "available inputs" in msg) or \
           ("no audio input device found" in msg and "--input FILE" in msg), msg
    assert "Loading Whisper model" not in r.stderr
    assert not (cwd / "out").exists()


@pytest.mark.parametrize("option, expected", [
    ("asr.no_such_key=1", "unknown key 'no_such_key' in [asr]; allowed keys: model,"),
    ("nosection.key=1", "unknown section [nosection]; allowed sections: audio, vad, asr, output"),
    ("vad.end_silence_ms=lots", "[vad] end_silence_ms = 'lots': not a number"),
    ("asr.beam_size", "write it as section.key=value"),
])
def test_bad_set_option(option, expected, short_stream, cwd):
    r = subtitler("run", "--input", short_stream["wav"], "--out", "out", "--set", MODELS,
                  "--set", option, cwd=cwd, timeout=ERROR_TIMEOUT)
    assert r.returncode == 2, r.stderr
    assert expected in one_error(r.stderr)
    assert "Loading Whisper model" not in r.stderr
    assert not (cwd / "out").exists()


def test_bad_formats_option(short_stream, cwd):
    r = subtitler("transcribe", short_stream["wav"], "--out", "out", "--formats", "srt,docx",
                  "--set", MODELS, cwd=cwd, timeout=ERROR_TIMEOUT)
    assert r.returncode == 2, r.stderr
    msg = one_error(r.stderr)
    assert "[output] formats = 'srt,docx': unknown: docx; allowed: one of srt, vtt, txt, jsonl" in msg
    assert not (cwd / "out").exists()


@pytest.mark.slow
def test_unknown_language_refused_before_the_session(short_stream, cwd):
    # Only the model knows its languages, so this is checked after loading it, but still
    # before a session folder or any transcript exists.
    r = subtitler("run", "--input", short_stream["wav"], "--out", "out", "--language", "xx",
                  "--set", MODELS, cwd=cwd, timeout=ERROR_TIMEOUT)
    assert r.returncode == 2, r.stderr
    msg = one_error(r.stderr)
    assert "asr.language = 'xx' is not a language of model 'base'; allowed: auto, " in msg and " en," in msg
    assert not (cwd / "out").exists()


def test_config_value_out_of_range(short_stream, cwd):
    (cwd / "settings.toml").write_text("[vad]\nend_silence_ms = 50\n\n[asr]\nbeam_size = 3\n")
    r = subtitler("run", "--config", "settings.toml", "--input", short_stream["wav"], "--out", "out",
                  "--set", MODELS, cwd=cwd, timeout=ERROR_TIMEOUT)
    assert r.returncode == 2, r.stderr
    msg = one_error(r.stderr)
    assert "settings.toml" in msg and "[vad] end_silence_ms = 50: out of range" in msg
    assert "from 100 to 5000" in msg
    assert not (cwd / "out").exists()
    # ./config.toml is read by default, and refused the same way.
    (cwd / "settings.toml").rename(cwd / "config.toml")
    r = subtitler("run", "--input", short_stream["wav"], "--out", "out", "--set", MODELS, cwd=cwd,
                  timeout=ERROR_TIMEOUT)
    assert r.returncode == 2 and "config.toml: [vad] end_silence_ms = 50" in one_error(r.stderr)
    assert not (cwd / "out").exists()


# -- a session that dies or is stopped ------------------------------------------------------

@pytest.mark.slow
def test_kill_9_leaves_whole_captions_in_every_file(long_stream, cwd):
    p, _, err = start("run", "--input", long_stream["wav"], "--realtime", "--out", "out",
                      "--set", MODELS, cwd=cwd)
    try:
        wait_for_text(err, "Listening", p)
        folder = only_session_folder(cwd / "out")
        jsonl = folder / "captions.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.05)
        assert p.poll() is None, f"the session ended before it could be killed:\n{err.read_text()}"
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert sorted(q.name for q in folder.iterdir()) == sorted(f"captions.{f}" for f in FORMATS)
    records = check_consistent(folder)
    print(f"kill -9: {len(records)} captions survive: {[r['text'] for r in records]}")
    assert 2 <= len(records) < len(long_stream["utterances"])
    truth = long_stream["utterances"][: len(records)]
    assert wer([" ".join(u["text"] for u in truth)], [" ".join(r["text"] for r in records)]) <= 0.3
    assert "Stopped after" not in err.read_text()  # no chance to say goodbye


@pytest.mark.slow
def test_ctrl_c_finishes_the_caption_being_spoken(long_stream, cwd):
    target = long_stream["utterances"][3]  # "That password does not meet the minimum …", 5.3 s
    interrupt_at = target["start"] + 2.0  # well inside it
    p, out, err = start("run", "--input", long_stream["wav"], "--realtime", "--out", "out",
                        "--set", MODELS, cwd=cwd)
    try:
        t0 = wait_for_text(err, "Listening", p)
        while time.monotonic() < t0 + interrupt_at:
            time.sleep(0.01)
        assert p.poll() is None, err.read_text()
        t_sig = time.monotonic()
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=120)
        stop_took = time.monotonic() - t_sig
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    stderr = err.read_text()
    assert rc == 0, stderr
    assert "Traceback" not in stderr and "subtitler: error" not in stderr, stderr
    assert stop_took < 30, f"took {stop_took:.1f} s to stop"  # measured 1.8-2.5 s
    assert "stopping: finishing the last utterance" in stderr

    folder = only_session_folder(cwd / "out")
    m = re.search(r"Stopped after ([\d.]+) s of audio: (\d+) captions\b[^\n]*Transcripts:\n((?:  .*\n?)+)", stderr)
    assert m, stderr
    audio_s, finals = float(m.group(1)), int(m.group(2))
    listed = [line.strip() for line in m.group(3).splitlines()]
    assert listed == [str(Path("out") / folder.name / f"captions.{f}") for f in FORMATS]
    assert all((cwd / path).is_file() for path in listed)
    # Audio stopped near the interrupt: inside the target utterance, well before the stream's end.
    assert target["start"] < audio_s < target["end"] + 1.5, (audio_s, target)

    records = check_consistent(folder)
    print(f"ctrl-c: stopped in {stop_took:.2f} s after {audio_s} s of audio; last caption {records[-1]}")
    assert len(records) == finals == 4, records
    last = records[-1]
    # The caption being spoken was finished and written: it starts at the target's
    # speech and ends where the audio stopped, with the sentence's opening words.
    assert abs(last["start"] - target["start"]) < 1.0, (last, target)
    assert target["start"] < last["end"] <= audio_s + 0.05, (last, audio_s)
    said, ref = normalize(last["text"]).split(), normalize(target["text"]).split()
    assert said and said[0] == ref[0] and len(set(said) & set(ref[:8])) >= 2, last["text"]
    earlier = long_stream["utterances"][:3]
    assert wer([" ".join(u["text"] for u in earlier)], [" ".join(r["text"] for r in records[:3])]) <= 0.3
    shown = [line for line in out.read_text().splitlines() if line.startswith("[")]
    assert shown[-1].endswith("] " + last["text"])  # shown on screen too


# ``subtitler`` whose model loading takes a minute (a large model on a slow disk), so that a
# Ctrl-C lands inside it every time, not only when the test wins a race against a 1 s load.
SLOW_LOAD = """
import runpy, signal, sys, time
# As in a terminal: Ctrl-C raises KeyboardInterrupt even when the tests were started as a
# background job, whose children inherit SIGINT ignored (a clean-clone run timed out so).
signal.signal(signal.SIGINT, signal.default_int_handler)
from subtitler import host
load = host.Host.load.__func__
def slow(cls, *args, **kwargs):
    time.sleep(60)
    return load(cls, *args, **kwargs)
host.Host.load = classmethod(slow)
sys.argv[0] = "subtitler"
runpy.run_module("subtitler", run_name="__main__")
"""


def test_ctrl_c_while_the_model_loads_exits_quietly(short_stream, cwd):
    args = ("run", "--input", short_stream["wav"], "--realtime", "--out", "out", "--set", MODELS)
    err = cwd / "stderr.txt"
    with open(err, "wb") as e:
        p = subprocess.Popen([sys.executable, "-c", SLOW_LOAD, *command(args)[3:]], cwd=cwd, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=e, stdin=subprocess.DEVNULL)
    try:
        wait_for_text(err, "Loading Whisper model", p)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    stderr = err.read_text()
    assert "Listening" not in stderr and "Model ready" not in stderr, stderr  # it was still loading
    assert "Traceback" not in stderr, stderr
    assert rc in (0, 130), (rc, stderr)
    assert not (cwd / "out").exists()  # no session began: no empty transcript folder left behind


# -- the small commands ---------------------------------------------------------------------

def test_devices_lists_inputs_or_says_why_not(cwd):
    r = subtitler("devices", cwd=cwd, timeout=ERROR_TIMEOUT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip("\n").splitlines()  # keep the first line's indent (not the default)
    if lines[0].startswith("no audio input devices found"):
        assert "PulseAudio" in lines[0] and len(lines) == 1
    else:
        assert lines[-1].startswith("* = default input")
        assert all(re.fullmatch(r"[* ] +\d+  .+  \(\d+ ch, \d+ Hz\)", line) for line in lines[:-1]), lines


def test_models_lists_the_packaged_base(cwd):
    r = subtitler("models", cwd=cwd, timeout=ERROR_TIMEOUT)  # no ./models here: packages only
    assert r.returncode == 0, r.stderr
    assert "Whisper models available without a download" in r.stdout
    assert re.search(r"^  base +package \(joined", r.stdout, re.M), r.stdout
    assert "Hugging Face hub" in r.stdout
    (cwd / "config.toml").write_text(f"[asr]\nmodels_dir = '{ROOT / 'models'}'\n")
    r = subtitler("models", cwd=cwd, timeout=ERROR_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"^  base +local +{re.escape(str(ROOT / 'models' / 'base'))}$", r.stdout, re.M), r.stdout


@pytest.mark.parametrize("command", [[], ["run"], ["transcribe"], ["devices"], ["models"]])
def test_help(command, cwd):
    r = subtitler(*command, "--help", cwd=cwd, timeout=ERROR_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: subtitler {' '.join(command)}".rstrip()), r.stdout
    expected = {(): ["run", "transcribe", "devices", "models"],
                ("run",): ["--input", "--device", "--realtime", "--out", "--model", "--set", "Ctrl-C"],
                ("transcribe",): ["file", "--formats", "--out", "--language", "--model"],
                ("devices",): [], ("models",): ["--config"]}[tuple(command)]
    for word in expected:
        assert word in r.stdout, (word, r.stdout)


def test_no_command_is_a_usage_error(cwd):
    r = subtitler(cwd=cwd, timeout=ERROR_TIMEOUT)
    assert r.returncode == 2 and "usage: subtitler" in r.stderr
