"""CTranslate2 translation models: NLLB-200, M2M-100 (multilingual) and OPUS-MT (Marian pairs).

One model is loaded once (GPU when there is one) and one caption is one ``translate_batch``
call with one row per target: for NLLB and M2M-100 every row is the same source with the
target's language token as its ``target_prefix``; a Marian pair model has no prefix (a
multi-target OPUS-MT model gets its ``>>spa<<`` token at the head of the source instead).
Text is cut into pieces with the model's own sentencepiece model.

A model folder holds CTranslate2's ``model.bin``, ``config.json``, the vocabulary
(``shared_vocabulary.json|txt`` or ``source_``/``target_vocabulary``) and the sentencepiece
model: ``sentencepiece.bpe.model`` (NLLB, M2M-100) or ``source.spm`` + ``target.spm``
(Marian). The family is told by the vocabulary (``eng_Latn`` → NLLB, ``__en__`` → M2M-100)
or the sentencepiece files; ``translate.json``, written by ``pull_model``, says it outright.

``pull_model`` brings a known model into ``models/``: a ready CTranslate2 conversion from the
Hugging Face hub, else a conversion with CTranslate2's converter where ``transformers`` is
installed; offline it says which files to put where.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..asr import pick_device  # importing asr first also picks CTranslate2's CPU kernels
from ..models import ModelNotFoundError
from .base import TranslationConfigError, TranslationError
from .languages import apertium_codes, to_m2m100, to_nllb

FAMILIES = ("nllb", "m2m100", "marian")
META_FILE = "translate.json"
VOCABULARY_FILES = ("shared_vocabulary.json", "shared_vocabulary.txt",
                    "target_vocabulary.json", "target_vocabulary.txt")
SPM_FILES = {"nllb": ("sentencepiece.bpe.model",), "m2m100": ("sentencepiece.bpe.model",),
             "marian": ("source.spm", "target.spm")}
EOS = "</s>"


def _read_vocabulary(path: Path) -> list[str]:
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    return path.read_text(encoding="utf-8").splitlines()


def model_files(model_dir: Path) -> tuple[Path | None, dict]:
    """(the vocabulary file, translate.json's content) of a model folder."""
    vocab = next((model_dir / f for f in VOCABULARY_FILES if (model_dir / f).is_file()), None)
    meta = {}
    if (model_dir / META_FILE).is_file():
        try:
            meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
        except ValueError:
            meta = {}
    return vocab, meta


def detect_family(model_dir: Path, vocabulary: set[str], meta: dict | None = None) -> str:
    """'nllb', 'm2m100' or 'marian' for a model folder, or TranslationConfigError."""
    if meta and meta.get("family") in FAMILIES:
        return meta["family"]
    if "eng_Latn" in vocabulary or "spa_Latn" in vocabulary:
        return "nllb"
    if "__en__" in vocabulary or "__es__" in vocabulary:
        return "m2m100"
    if (model_dir / "source.spm").is_file() and (model_dir / "target.spm").is_file():
        return "marian"
    raise TranslationConfigError(
        f"cannot tell which kind of translation model {model_dir} is: its vocabulary has no NLLB "
        f"(eng_Latn) or M2M-100 (__en__) language token and there is no source.spm/target.spm "
        f"pair of a Marian model; set the family explicitly (nllb, m2m100, marian)")


def _marian_pair(model_dir: Path, meta: dict) -> tuple[str, str] | None:
    if meta.get("source") and meta.get("target"):
        return meta["source"], meta["target"]
    m = re.search(r"opus-mt-([a-z]{2,3})-([a-z]{2,3})(?![a-z])", model_dir.name) or \
        re.search(r"(?:^|[-_])([a-z]{2,3})-([a-z]{2,3})$", model_dir.name)
    return (m.group(1), m.group(2)) if m else None


class CTranslate2Translator:
    """A CTranslate2 translation model, loaded once. Calls are serialised (one at a time)."""

    name = "ctranslate2"
    glossary_style = "inline"

    def __init__(self, model_dir: str | Path, family: str = "auto", *, device: str = "auto",
                 compute_type: str = "auto", beam_size: int = 2, cpu_threads: int = 0,
                 max_input_tokens: int = 256, max_decoding_length: int = 256,
                 pair: tuple[str, str] | None = None):
        model_dir = Path(model_dir).expanduser()
        if not (model_dir / "model.bin").is_file():
            raise TranslationConfigError(
                f"{model_dir} is not a CTranslate2 translation model folder (no model.bin); "
                f"get one with `subtitler models pull nllb-200-distilled-600M` or point "
                f"translate.model to a folder with model.bin, config.json, the vocabulary and "
                f"the sentencepiece model")
        vocab_file, meta = model_files(model_dir)
        if vocab_file is None:
            raise TranslationConfigError(f"{model_dir} has no vocabulary file (one of {', '.join(VOCABULARY_FILES)})")
        try:
            vocabulary = _read_vocabulary(vocab_file)
        except (OSError, ValueError) as e:
            raise TranslationConfigError(f"cannot read the vocabulary {vocab_file}: {e}") from None
        self.vocabulary = set(vocabulary)
        self.model_dir = model_dir
        self.family = detect_family(model_dir, self.vocabulary, meta) if family == "auto" else family
        if self.family not in FAMILIES:
            raise TranslationConfigError(f"unknown translation model family '{family}'; "
                                         f"choose auto, {', '.join(FAMILIES)}")
        self.pair = None
        self.marian_tokens: dict[str, str] = {}
        if self.family == "marian":
            self.pair = pair or _marian_pair(model_dir, meta)
            self.marian_tokens = {t[2:-2]: t for t in self.vocabulary if re.fullmatch(r">>\w+<<", t)}
            if self.pair is None and not self.marian_tokens:
                raise TranslationConfigError(
                    f"cannot tell the language pair of the Marian model {model_dir}: name the folder "
                    f"like opus-mt-en-es or write {META_FILE} with {{\"source\": \"en\", \"target\": \"es\"}}")
        self._spm = self._load_sentencepiece()
        # int8 weights with float16 compute: the decoder's big output layer stays fast on a GPU
        self.device, self.compute_type = pick_device(device, compute_type, setting="translate.device",
                                                     gpu_compute="int8_float16", error=TranslationConfigError)
        import ctranslate2

        try:
            self.model = ctranslate2.Translator(str(model_dir), device=self.device, compute_type=self.compute_type,
                                                inter_threads=1, intra_threads=cpu_threads or (os.cpu_count() or 1))
        except Exception as e:
            raise TranslationConfigError(f"cannot load the translation model {model_dir} on {self.device} "
                                         f"({self.compute_type}): {e}") from None
        self.beam_size = max(1, beam_size)
        self.max_input_tokens = max_input_tokens
        self.max_decoding_length = max_decoding_length
        self._lock = threading.Lock()

    def _load_sentencepiece(self):
        try:
            import sentencepiece as spm
        except ImportError:
            raise TranslationConfigError("the CTranslate2 translation backend needs sentencepiece: "
                                         "pip install sentencepiece") from None
        files = SPM_FILES[self.family]
        missing = [f for f in files if not (self.model_dir / f).is_file()]
        if missing and self.family != "marian":
            found = sorted(self.model_dir.glob("*.model")) + sorted(self.model_dir.glob("*.spm"))
            if found:
                files, missing = (found[0].name,), []
        if missing:
            raise TranslationConfigError(
                f"the {self.family} model {self.model_dir} lacks its sentencepiece model "
                f"({', '.join(missing)}); copy it from the original model's repository into that folder")
        try:
            models = [spm.SentencePieceProcessor(model_file=str(self.model_dir / f)) for f in files]
        except Exception as e:
            raise TranslationConfigError(f"cannot load the sentencepiece model in {self.model_dir}: {e}") from None
        return models[0], models[-1]  # (source, target)

    # -- languages ------------------------------------------------------------------------
    def _token(self, code: str) -> str | None:
        """The model's language token for a code (None: the model does not have it)."""
        if self.family == "nllb":
            tok = to_nllb(code)
        elif self.family == "m2m100":
            tok = to_m2m100(code)
        else:
            tok = next((self.marian_tokens[c] for c in (code, *apertium_codes(code)) if c in self.marian_tokens),
                       None)
        return tok if tok in self.vocabulary else None

    def _is(self, code: str, pair_code: str) -> bool:
        return code == pair_code or pair_code in apertium_codes(code)

    def can_target(self, target: str) -> bool:
        if self.family == "marian":
            if self.marian_tokens:
                return self._token(target) is not None
            return self._is(target, self.pair[1])
        return self._token(target) is not None

    def supports(self, source: str, target: str) -> bool:
        if self.family == "marian":
            return (self.pair is None or self._is(source, self.pair[0])) and self.can_target(target)
        return self._token(source) is not None and self._token(target) is not None

    def describe(self) -> str:
        if self.family == "marian":
            what = f"{self.pair[0]} → {self.pair[1]}" if self.pair else f"→ {', '.join(sorted(self.marian_tokens))}"
        else:
            n = sum(1 for t in self.vocabulary if (t.startswith("__") and t.endswith("__")) or
                    re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", t))
            what = f"{n} languages"
        return f"ctranslate2: {self.family} model {self.model_dir.name} ({what}, {self.device}/{self.compute_type})"

    # -- translation ----------------------------------------------------------------------
    def translate(self, text: str, source: str, targets: list[str], *, audio=None) -> dict[str, str]:
        return dict(zip(targets, self.translate_rows([(text, t) for t in targets], source)))

    def encode(self, text: str, source: str, target: str) -> tuple[list[str], list[str] | None]:
        """The source tokens and target prefix of one row (exposed for tests and tools)."""
        if not self.supports(source, target):
            raise TranslationError(f"{self.model_dir.name} cannot translate {source} → {target}")
        pieces = self._spm[0].encode(" ".join(text.split()), out_type=str)[: self.max_input_tokens]
        if self.family == "marian":
            head = [self._token(target)] if self.marian_tokens else []
            return head + pieces + [EOS], None
        return [self._token(source), *pieces, EOS], [self._token(target)]

    def translate_rows(self, rows: list[tuple[str, str]], source: str) -> list[str]:
        """One ``translate_batch`` call for rows of (text, target); the translations in order."""
        if not rows:
            return []
        batch, prefixes = [], []
        for text, target in rows:
            tokens, prefix = self.encode(text, source, target)
            batch.append(tokens)
            prefixes.append(prefix)
        longest = max(len(t) for t in batch)
        # A guard against a model that loops: translations rarely run past twice the source.
        limit = min(self.max_decoding_length, 2 * longest + 10) + 1
        kwargs = {"target_prefix": prefixes} if any(p is not None for p in prefixes) else {}
        try:
            with self._lock:
                results = self.model.translate_batch(batch, beam_size=self.beam_size, max_decoding_length=limit,
                                                     max_input_length=self.max_input_tokens + 2, **kwargs)
        except Exception as e:
            raise TranslationError(f"CTranslate2 failed: {type(e).__name__}: {e}") from None
        out = []
        for result, prefix in zip(results, prefixes):
            tokens = list(result.hypotheses[0])
            if prefix and tokens[:len(prefix)] == prefix:
                tokens = tokens[len(prefix):]
            tokens = [t for t in tokens if t not in (EOS, "<s>", "<unk>", "<pad>") and not
                      (t.startswith("__") and t.endswith("__") and len(t) <= 9) and not
                      re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", t)]
            out.append(" ".join(self._spm[1].decode(tokens).split()))
        return out


class CTranslate2Models:
    """Several CTranslate2 models as one backend, e.g. OPUS-MT pair models, one per target.

    On a CPU batch-1 decoding is bound by reading the weights at every step: a 600M-parameter
    multilingual model with its 256k-token output layer costs ~35 ms a token, an OPUS-MT pair
    (~75M parameters, 65k tokens) a few ms. So N pair models, called one after the other, beat
    one multilingual model there. Each target goes to the first model (in the order given)
    that translates source → target; the targets a model gets go in one ``translate_batch``.
    """

    name = "ctranslate2"
    glossary_style = "inline"

    def __init__(self, translators: list[CTranslate2Translator]):
        if not translators:
            raise TranslationConfigError("translate.model: no model given")
        self.translators = list(translators)

    def _for(self, source: str, target: str) -> CTranslate2Translator | None:
        return next((t for t in self.translators if t.supports(source, target)), None)

    def can_target(self, target: str) -> bool:
        return any(t.can_target(target) for t in self.translators)

    def supports(self, source: str, target: str) -> bool:
        return self._for(source, target) is not None

    def describe(self) -> str:
        return "; ".join(t.describe() for t in self.translators)

    def translate(self, text: str, source: str, targets: list[str], *, audio=None) -> dict[str, str]:
        return dict(zip(targets, self.translate_rows([(text, t) for t in targets], source)))

    def translate_rows(self, rows: list[tuple[str, str]], source: str) -> list[str]:
        """Rows of (text, target), each to its model, one call per model; results in row order
        (the glossary gives each target its own text)."""
        groups: dict[int, list[int]] = {}
        for i, (_, target) in enumerate(rows):
            model = self._for(source, target)
            if model is None:
                raise TranslationError(f"no translation model translates {source} → {target}")
            groups.setdefault(self.translators.index(model), []).append(i)
        out = [""] * len(rows)
        for m, indexes in groups.items():
            for i, text in zip(indexes, self.translators[m].translate_rows([rows[i] for i in indexes], source)):
                out[i] = text
        return out


# -- getting models ----------------------------------------------------------------------------

@dataclass(frozen=True)
class KnownModel:
    name: str
    family: str
    original: str  # the Hugging Face repository of the original model (for conversion)
    ready: str | None  # a repository holding a ready CTranslate2 conversion
    spm: tuple[str, ...]  # sentencepiece files the folder needs, from the original

    def files(self) -> str:
        return "model.bin, config.json, shared_vocabulary.json (or .txt), " + ", ".join(self.spm)


KNOWN_MODELS = {m.name: m for m in (
    KnownModel("nllb-200-distilled-600M", "nllb", "facebook/nllb-200-distilled-600M",
               "entai2965/nllb-200-distilled-600M-ctranslate2", ("sentencepiece.bpe.model",)),
    KnownModel("nllb-200-distilled-1.3B", "nllb", "facebook/nllb-200-distilled-1.3B",
               "entai2965/nllb-200-distilled-1.3B-ctranslate2", ("sentencepiece.bpe.model",)),
    KnownModel("m2m100_418M", "m2m100", "facebook/m2m100_418M",
               "michaelfeil/ct2fast-m2m100_418M", ("sentencepiece.bpe.model",)),
    KnownModel("m2m100_1.2B", "m2m100", "facebook/m2m100_1.2B",
               "michaelfeil/ct2fast-m2m100_1.2B", ("sentencepiece.bpe.model",)),
)}
ALIASES = {"nllb-600m": "nllb-200-distilled-600M", "nllb-1.3b": "nllb-200-distilled-1.3B",
           "m2m100-418m": "m2m100_418M", "m2m100-1.2b": "m2m100_1.2B"}
_OPUS = re.compile(r"^(?:Helsinki-NLP/)?opus-mt-([a-z]{2,3})-([a-z]{2,3})$")


def known_model(name: str) -> KnownModel | None:
    name = ALIASES.get(name.lower(), name)
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    lowered = {k.lower(): v for k, v in KNOWN_MODELS.items()}
    if name.lower() in lowered:
        return lowered[name.lower()]
    m = _OPUS.match(name)
    if m:
        return KnownModel(f"opus-mt-{m.group(1)}-{m.group(2)}", "marian",
                          f"Helsinki-NLP/opus-mt-{m.group(1)}-{m.group(2)}", None, ("source.spm", "target.spm"))
    return None


def is_translation_model_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file() and \
        model_files(path)[0] is not None


def resolve_translation_model(name: str, models_dir: str | Path = "models") -> Path:
    """A folder for the ``translate.model`` setting: a path, or a name in the model store."""
    candidate = Path(name).expanduser()
    if is_translation_model_dir(candidate):
        return candidate
    known = known_model(name)
    local = Path(models_dir).expanduser() / (known.name if known else name)
    if is_translation_model_dir(local):
        return local
    raise ModelNotFoundError(
        f"translation model '{name}' is not in {local}/. Fetch it with `subtitler models pull "
        f"{known.name if known else name}`" + (f" (or put {known.files()} there)" if known else "") + ".")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached (answers fast offline, unlike a download)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_message(model: KnownModel, target: Path, reason: str) -> str:
    how = (f"download them from the Hugging Face repository {model.ready}, or convert it"
           if model.ready else "convert it")
    return (f"translation model '{model.name}' could not be fetched ({reason}).\n"
            f"Put these files in {target}/:\n"
            f"  model.bin, config.json, shared_vocabulary.json (or .txt): a CTranslate2 conversion of "
            f"{model.original}; {how} on a machine with transformers (pip install "
            f"'subtitler[translate-convert]'):\n"
            f"      ct2-transformers-converter --model {model.original} --output_dir {target} "
            f"--quantization int8 --copy_files {' '.join(model.spm)}\n"
            f"  {', '.join(model.spm)}: from the repository {model.original}")


def pull_model(name: str, models_dir: str | Path = "models", progress: bool = True,
               offline: bool | None = None) -> Path:
    """Fetch a translation model, ready in CTranslate2 format, into ``models_dir/<name>/``."""
    model = known_model(name)
    if model is None:
        known = ", ".join([*KNOWN_MODELS, "opus-mt-SRC-TGT"])
        raise ModelNotFoundError(f"unknown translation model '{name}'; known: {known}")
    target = Path(models_dir).expanduser() / model.name
    if is_translation_model_dir(target) and all((target / f).is_file() for f in model.spm):
        return target
    if offline is None:
        offline = not hub_reachable()
    if offline:
        raise ModelNotFoundError(_offline_message(model, target, "the Hugging Face hub cannot be reached"))
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    reasons = []
    try:
        if model.ready:
            try:
                _download_ready(model, partial, progress)
            except Exception as e:
                reasons.append(f"download of {model.ready}: {_first_line(e)}")
        if not is_translation_model_dir(partial):
            try:
                _convert(model, partial)
            except Exception as e:
                reasons.append(f"conversion of {model.original}: {_first_line(e)}")
        if not is_translation_model_dir(partial):
            raise ModelNotFoundError(_offline_message(model, target, "; ".join(reasons) or "nothing fetched"))
        meta = {"family": model.family, "repository": model.ready or model.original, "original": model.original}
        if model.family == "marian":
            m = _OPUS.match(model.name)
            meta.update(source=m.group(1), target=m.group(2))
        (partial / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(partial, target)  # a half-fetched folder is never taken for a model
        return target
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _download_ready(model: KnownModel, folder: Path, progress: bool) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    if not progress:
        disable_progress_bars()
    try:
        snapshot_download(model.ready, local_dir=str(folder),
                          allow_patterns=["model.bin", "config.json", "*vocabulary*", "*.model", "*.spm"])
        for f in model.spm:  # some conversions leave the sentencepiece model out
            if not (folder / f).is_file():
                hf_hub_download(model.original, f, local_dir=str(folder))
    finally:
        if not progress:
            enable_progress_bars()
    shutil.rmtree(folder / ".cache", ignore_errors=True)


def _convert(model: KnownModel, folder: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise RuntimeError("transformers is not installed (pip install transformers torch)")
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(model.original, copy_files=list(model.spm), low_cpu_mem_usage=True).convert(
        str(folder), quantization="int8", force=True)
