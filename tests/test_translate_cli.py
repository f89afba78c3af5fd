"""Translation from the command line, as a host meets it: the real ``python -m subtitler`` in a
subprocess, run from an empty folder, on real speech (Debian's Asterisk prompts).

* ``subtitler run --to es,ca``: a screen that joins with ``langs: ["es"]`` gets the captions
  and their Spanish translations live; the session folder gets ``captions.es.*``.
* ``subtitler transcribe FILE --to es`` writes ``<stem>.es.srt/.vtt/.txt`` next to the others.
* A target nothing can produce, a malformed code, a backend without its model: exit status 2
  with one clear line, before any audio is captioned and before any file is created.
* ``subtitler models`` lists translation models apart from Whisper's; ``models pull`` offline
  says which files to put where.

Measured on the 2-core dev box: run ~8 s, transcribe ~6 s, each refusal ~2–3 s (model load).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import srt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import corpus
from subtitler.translate import apertium as ap

ROOT = Path(__file__).resolve().parents[1]
MODELS = f"asr.models_dir={ROOT / 'models'}"
NEEDS_APERTIUM = pytest.mark.skipif(
    not ap.available() or not {"eng-spa", "eng-cat"} <= set(ap.installed_pairs()),
    reason="needs apt-get install apertium apertium-eng-spa apertium-eng-cat")


def env() -> dict[str, str]:
    e = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    e.pop("PULSE_SERVER", None)
    return e


def subtitler(*args: str, cwd: Path, timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "subtitler", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> dict:
    """4 English prompts, 15.2 s."""
    return corpus.build_stream(tmp_path_factory.mktemp("cli_tr") / "talk.wav", count=4, seed=1)


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    d = tmp_path / "cwd"
    d.mkdir()
    return d


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [line for line in r.stderr.splitlines() if line.startswith("subtitler: error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return lines[0]


# -- run: a screen with lang=es ----------------------------------------------------------------

@pytest.mark.slow
@NEEDS_APERTIUM
def test_run_to_es_ca_reaches_a_spanish_screen_and_the_files(four, cwd):
    err = cwd / "stderr.txt"
    with open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "subtitler", "run", "--input", four["wav"], "--out", "out",
                                 "--language", "en", "--to", "es,ca", "--set", MODELS, "--set", "server.port=0"],
                                cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=e, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (m := re.search(r"Serving the room on http://127\.0\.0\.1:(\d+)/", err.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.02)
        port = int(m.group(1))

        async def screen() -> list[dict]:
            events = []
            async with connect(f"ws://127.0.0.1:{port}/ws/view") as ws:
                await ws.send(json.dumps({"type": "hello", "langs": ["es"]}))
                try:
                    async for message in ws:
                        events.append(json.loads(message))
                except ConnectionClosed:
                    pass
            return events

        events = asyncio.run(asyncio.wait_for(screen(), 180))
        assert proc.wait(60) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = err.read_text()
    assert "Translation ready: es ← apertium, ca ← apertium." in stderr, stderr
    assert events[0]["type"] == "welcome" and {"es", "ca"} <= set(events[0]["languages"])
    finals = [e for e in events if e["type"] == "caption" and e["kind"] == "final" and e["text"]]
    translations = [e for e in events if e["type"] == "translation"]
    assert len(finals) == 4 and [t["id"] for t in translations] == [f["id"] for f in finals], events
    assert all(t["lang"] == "es" and t["text"] for t in translations)  # only what this screen asked for
    folder = next((cwd / "out").iterdir())
    es = (folder / "captions.es.txt").read_text("utf-8").splitlines()
    assert [line.split("] ", 1)[1] for line in es] == [t["text"] for t in translations]
    assert len((folder / "captions.ca.txt").read_text("utf-8").splitlines()) == 4
    for name in ("captions.es.srt", "captions.es.vtt", "captions.ca.srt", "captions.ca.vtt"):
        assert f"  {folder.relative_to(cwd) / name}\n" in stderr  # the summary lists every file
    assert "4 translated (0 translations missing)" in stderr


# -- transcribe --to ------------------------------------------------------------------------------

@pytest.mark.slow
@NEEDS_APERTIUM
def test_transcribe_to_es_writes_the_spanish_files(four, base_model_path, cwd):
    wav = Path(four["wav"])
    r = subtitler("transcribe", str(wav), "--out", "subs", "--model", str(base_model_path), "--language", "en",
                  "--to", "es", cwd=cwd)
    assert r.returncode == 0, r.stderr
    out = cwd / "subs"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{wav.stem}.{f}" for f in ("srt", "vtt", "txt", "jsonl")] + [f"{wav.stem}.es.{f}" for f in ("srt", "vtt", "txt")])
    for f in ("srt", "vtt", "txt"):
        assert f"  {Path('subs') / wav.stem}.es.{f}\n" in r.stdout, r.stdout
    subs = list(srt.parse((out / f"{wav.stem}.es.srt").read_text("utf-8")))
    spanish = " ".join(s.content.replace("\n", " ") for s in subs).lower()
    assert "conferencia" in spanish, spanish  # 'To leave the conference…'
    from subtitler.transcripts import load_jsonl

    rows = load_jsonl(out / f"{wav.stem}.jsonl")
    assert len(rows) == 4 and all(r_["translations"].get("es") for r_ in rows), rows
    assert "translated into es (0 translations missing)" in r.stderr


# -- refusals: exit status 2, one line, nothing created ---------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("command", ["transcribe", "run"])
def test_a_target_nothing_can_produce_is_refused_at_start(command, four, cwd):
    args = ["transcribe", four["wav"]] if command == "transcribe" else ["run", "--input", four["wav"],
                                                                         "--set", "server.port=0"]
    r = subtitler(*args, "--out", "out", "--set", MODELS, "--language", "en", "--to", "es,la", cwd=cwd)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r)
    assert "nothing can translate en → la" in line and "available:" in line, line
    assert not (cwd / "out").exists()


@pytest.mark.parametrize("args, needle", [
    (["--to", "es,e s"], "[translate] targets = 'es,e s': unknown: e s"),
    (["--to", "es", "--set", "translate.backend=ctranslate2"], "needs a model"),
    (["--to", "es", "--set", "translate.overrides=es=deepl"], "unknown backend 'deepl'"),
    (["--to", "es", "--set", "translate.model=nllb-200-distilled-600M"], "subtitler models pull nllb-200-distilled-600M"),
])
def test_bad_translation_settings_exit_2(args, needle, four, cwd):
    r = subtitler("transcribe", four["wav"], "--out", "out", "--set", MODELS, *args, cwd=cwd)
    assert r.returncode == 2, r.stderr
    assert needle in one_error_line(r)
    assert not (cwd / "out").exists()


def test_glossary_mistake_names_the_file_and_key(four, cwd):
    (cwd / "config.toml").write_text('[glossary]\nterms = ["SCO"]\n[glossary.es]\nSCO = 1\n')
    r = subtitler("transcribe", four["wav"], cwd=cwd)
    assert r.returncode == 2
    line = one_error_line(r)
    assert "config.toml" in line and "glossary.es" in line, line


# -- models ------------------------------------------------------------------------------------------

def test_models_lists_translation_models_apart(cwd):
    from subtitler.translate.testing import random_model

    random_model(cwd / "models" / "tiny-nllb", "nllb")
    r = subtitler("models", cwd=cwd, timeout=60)
    assert r.returncode == 0, r.stderr
    whisper, _, translation = r.stdout.partition("Translation models")
    assert "tiny-nllb" not in whisper, r.stdout
    assert re.search(r"^  tiny-nllb +nllb ", translation, re.M), r.stdout
    assert "subtitler models pull NAME" in translation and "Apertium language pairs:" in translation


def test_models_pull_offline_says_which_files_to_put_where(cwd):
    r = subtitler("models", "pull", "nllb-200-distilled-600M", "--models-dir", "store", cwd=cwd, timeout=60)
    assert r.returncode == 2
    assert "Put these files in store/nllb-200-distilled-600M/" in r.stderr
    assert "sentencepiece.bpe.model" in r.stderr and "ct2-transformers-converter" in r.stderr
    assert not (cwd / "store" / "nllb-200-distilled-600M").exists()
    r = subtitler("models", "pull", "gpt-5", cwd=cwd, timeout=60)
    assert r.returncode == 2 and "unknown translation model 'gpt-5'" in one_error_line(r)
