"""Shared fixtures for tests that use real models and real audio (no mocks of faster-whisper).

Session-scoped, so the expensive things happen once per test run:

* ``repo_root``: the checkout (``Path``).
* ``base_model_path``: the packaged multilingual ``base`` model, resolved with
  ``resolve_model("base", models_dir=<repo>/models)``; the first run joins the two
  package parts into the repository's git-ignored ``models/base/``.
* ``asr_base``: one ``WhisperASR`` on that model (CPU, int8) shared by every test
  that decodes, since loading costs seconds.
* ``english_stream``: a 16 kHz English stream from Debian's Asterisk prompts built
  with ``bench/corpus.build_stream`` (12 prompts, a 20 s silence after the 6th,
  -60 dBFS white noise so silence is not digital zero); its truth dict, whose
  ``"wav"`` is the stream's path and ``"utterances"``/``"silences"`` the reference.

``bench/`` is put on ``sys.path`` so tests can ``import corpus``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
for _p in (REPO_ROOT / "bench", REPO_ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def base_model_path(repo_root: Path) -> Path:
    from subtitler.models import resolve_model

    return resolve_model("base", models_dir=repo_root / "models", download=False, progress=False)


@pytest.fixture(scope="session")
def asr_base(base_model_path: Path):
    from subtitler.asr import WhisperASR

    return WhisperASR(base_model_path, device="cpu", compute_type="int8")


@pytest.fixture(scope="session")
def asr_tiny_en(repo_root: Path):
    from subtitler.asr import WhisperASR
    from subtitler.models import resolve_model

    path = resolve_model("tiny.en", models_dir=repo_root / "models", download=False, progress=False)
    return WhisperASR(path, device="cpu", compute_type="int8")


@pytest.fixture(scope="session")
def english_stream(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import corpus

    out = tmp_path_factory.mktemp("english_stream") / "en.wav"
    return corpus.build_stream(out, lang="en", count=12, seed=0, long_silence_after=5,
                               long_silence=20.0, noise_db=-60.0)
