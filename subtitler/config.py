"""Settings: config.toml + CLI overrides → typed, validated dataclasses.

Every setting is a dataclass field whose metadata says what it accepts, so one
validator serves the file, ``--set section.key=value`` and the CLI shortcuts, and
every mistake is reported with the file, the key and the allowed values.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .encoder import ENCODERS
from .translate.glossary import Glossary

DEFAULT_CONFIG_NAME = "config.toml"
# A language code as the translation settings take it: Whisper's (es, zh, yue), a regional or
# script variant (zh-Hant, pt-BR) or a model family's own code (zho_Hant, epo).
LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


class ConfigError(ValueError):
    """A setting is wrong; the message names where, which key and what is allowed."""


def _opt(default, help: str, *, choices=None, lo=None, hi=None, kind=None, pattern=None, empty_ok=False):
    # pattern: what every item of a list must look like (when there are no choices);
    # empty_ok: an empty list is a valid value (e.g. no translation targets)
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi, "kind": kind, "pattern": pattern,
            "empty_ok": empty_ok}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


COMPUTE_TYPES = ["auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
                 "int16", "float16", "bfloat16", "float32"]  # CTranslate2's


@dataclass(frozen=True)
class AudioConfig:
    input: str = _opt("mic", "'mic' for the microphone, 'remote' for audio sent to /ws/audio, or a file path")
    device: str = _opt("", "input device index or (part of its) name; '' = system default")
    sample_rate: int = _opt(0, "capture rate in Hz; 0 = the device's native rate", lo=0, hi=384000)
    channels: int = _opt(0, "capture channels (mixed down to mono); 0 = up to 2", lo=0, hi=32)
    queue_seconds: float = _opt(10.0, "capture buffer; audio beyond it is dropped and counted", lo=1.0, hi=300.0)
    realtime: bool = _opt(False, "pace a file input to real time (rehearsals, demos, benchmarks)")


@dataclass(frozen=True)
class VadConfig:
    frame_ms: int = _opt(30, "webrtcvad frame length", choices=[10, 20, 30])
    aggressiveness: int = _opt(2, "0 = keeps most audio as speech … 3 = strictest", lo=0, hi=3)
    start_ms: int = _opt(90, "voiced audio (within a 150 ms window) that starts an utterance", lo=10, hi=1000)
    pre_roll_ms: int = _opt(300, "audio kept before the detected start, so the first syllable is not cut", lo=0, hi=2000)
    pause_ms: int = _opt(60, "trailing silence after which a decode may start speculatively", lo=10, hi=2000)
    end_silence_ms: int = _opt(500, "trailing silence that ends an utterance", lo=100, hi=5000)
    min_speech_ms: int = _opt(200, "utterances with less voiced audio are ignored", lo=0, hi=5000)
    max_utterance_s: float = _opt(15.0, "longer speech is cut at its quietest recent point", lo=2.0, hi=28.0)
    tail_db: float = _opt(35.0, "voiced frames this many dB below the utterance's loudest count as silence, "
                                "so a fading word ends sooner; 0 = off", lo=0.0, hi=90.0)


@dataclass(frozen=True)
class AsrConfig:
    model: str = _opt("base", "model name (tiny, tiny.en, base, small, large-v3, …) or a model folder")
    models_dir: str = _opt("models", "local model store, searched before packages and the hub")
    device: str = _opt("auto", "where Whisper runs", choices=["auto", "cpu", "cuda"])
    compute_type: str = _opt("auto", "auto = float16 on CUDA, int8 on CPU",
                             choices=COMPUTE_TYPES)
    encoder: str = _opt("auto", "Whisper's audio encoder on the CPU: torch = PyTorch bfloat16, ~2x faster on "
                                "CPUs with AMX/AVX512-BF16; auto = torch there when PyTorch is installed, "
                                "else ctranslate2", choices=ENCODERS)
    cpu_threads: int = _opt(0, "CPU threads for Whisper; 0 = all cores", lo=0, hi=256)
    language: str = _opt("auto", "spoken language code (en, es, zh, …) or 'auto' to detect per utterance")
    task: str = _opt("transcribe", "transcribe, or translate speech to English", choices=["transcribe", "translate"])
    beam_size: int = _opt(5, "beam width of the final decode (partials are greedy)", lo=1, hi=16)
    partial_interval: float = _opt(1.0, "seconds the decoder rests between partial decodes while speaking; 0 = finals only", lo=0.0, hi=30.0)
    first_partial_s: float = _opt(0.8, "speech needed before the first partial decode", lo=0.1, hi=30.0)
    hotwords: str = _opt("", "names and terms to hear right, e.g. 'Chongqing, SCO'")
    initial_prompt: str = _opt("", "text that sets the style and context of the transcript")
    condition_on_previous: bool = _opt(True, "give the previous final caption as context")
    no_speech_threshold: float = _opt(0.6, "drop output whose no-speech probability is above this…", lo=0.0, hi=1.0)
    logprob_threshold: float = _opt(-1.0, "…or whose average token log-probability is below this", lo=-10.0, hi=0.0)
    compression_ratio_threshold: float = _opt(2.4, "drop repetitive output above this gzip ratio", lo=1.0, hi=10.0)
    max_lag_s: float = _opt(30.0, "audio waiting for decoding beyond this is skipped (and counted)", lo=5.0, hi=600.0)


@dataclass(frozen=True)
class OutputConfig:
    dir: str = _opt("transcripts", "each session writes into a new folder below this one")
    formats: list = _opt(["srt", "vtt", "txt", "jsonl"], "transcript files to write",
                         choices=["srt", "vtt", "txt", "jsonl"], kind="list")
    max_line_chars: int = _opt(42, "subtitle line length", lo=10, hi=200)
    max_lines: int = _opt(2, "lines per subtitle cue", lo=1, hi=5)


@dataclass(frozen=True)
class ServerConfig:
    host: str = _opt("127.0.0.1", "address to serve the room on; 0.0.0.0 for screens on the network")
    port: int = _opt(8765, "one port for the pages, the WebSocket endpoints, /healthz and /metrics", lo=0, hi=65535)
    token: str = _opt("", "control and audio-ingest token; '' = a random one, printed at start")
    history: int = _opt(50, "final captions a screen gets when it connects", lo=0, hi=10000)
    client_queue: int = _opt(256, "events queued for one screen before it counts as stuck", lo=8, hi=100000)
    client_timeout_s: float = _opt(10.0, "a screen that reads nothing this long is disconnected", lo=0.5, hi=600.0)
    max_message_bytes: int = _opt(1 << 20, "largest WebSocket message accepted", lo=1024, hi=1 << 26)


TRANSLATE_BACKENDS = ["auto", "ctranslate2", "apertium", "whisper"]


@dataclass(frozen=True)
class TranslateConfig:
    targets: list = _opt([], "languages every final caption is translated into, e.g. [\"en\", \"zh\", \"es\"]; "
                             "[] = no translation", kind="list", pattern=LANGUAGE_CODE, empty_ok=True)
    backend: str = _opt("auto", "auto = the CTranslate2 model when set, else Whisper for en, else Apertium",
                        choices=TRANSLATE_BACKENDS)
    overrides: list = _opt([], "per-target backends, e.g. [\"en=whisper\", \"es=apertium\"]",
                           kind="list", pattern=re.compile(r"^[^=\s]+\s*=\s*[a-z0-9]+$"), empty_ok=True)
    model: str = _opt("", "CTranslate2 model: a name in models_dir (nllb-200-distilled-600M, m2m100_418M, "
                          "opus-mt-en-es, …; `subtitler models pull NAME`) or a folder; several separated by "
                          "commas, each target taken by the first that has it (on a CPU an OPUS-MT pair "
                          "takes ~0.1 s a caption, NLLB-600M ~0.6 s); '' = none")
    models_dir: str = _opt("models", "where `subtitler models pull` puts translation models")
    device: str = _opt("auto", "where the CTranslate2 model runs", choices=["auto", "cpu", "cuda"])
    compute_type: str = _opt("auto", "auto = int8_float16 on CUDA, int8 on CPU",
                             choices=COMPUTE_TYPES)
    beam_size: int = _opt(2, "beam width of the CTranslate2 model", lo=1, hi=16)
    cpu_threads: int = _opt(0, "CPU threads for the CTranslate2 model; 0 = all cores", lo=0, hi=256)
    max_pending: int = _opt(8, "live: finals waiting for translation beyond this are skipped (and marked)",
                            lo=1, hi=10000)
    slow_s: float = _opt(2.0, "a backend call slower than this is logged", lo=0.1, hi=600.0)
    partials: bool = _opt(False, "translate partial captions too (text backends only; a translated line "
                                 "changes only when its source sentence changed)")
    partial_interval: float = _opt(1.0, "seconds between partial translations, at least", lo=0.1, hi=60.0)


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    # [glossary]: names and terms, free per-language tables; not a section of typed keys
    glossary: Glossary = field(default_factory=Glossary)
    source: str = "built-in defaults"  # where the settings came from, for messages

    def with_overrides(self, overrides: dict[str, Any], where: str = "command line") -> "Config":
        """Return a copy with ``{"section.key": value}`` applied and validated."""
        cfg = self
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            if section == GLOSSARY:
                cfg = replace(cfg, glossary=_glossary_override(cfg.glossary, key, value, where))
                continue
            sec_cls = _section_class(section, where)
            spec = _field(sec_cls, section, key, where)
            checked = _check(spec, section, key, value, where)
            if section == "translate" and key == "overrides":
                _check_overrides(checked, value, where)
            cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{key: checked})})
        return cfg


SECTIONS = {"audio": AudioConfig, "vad": VadConfig, "asr": AsrConfig, "output": OutputConfig,
            "server": ServerConfig, "translate": TranslateConfig}
GLOSSARY = "glossary"


def _section_class(section: str, where: str):
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section [{section}]; allowed sections: "
                          f"{', '.join([*SECTIONS, GLOSSARY])}")
    return SECTIONS[section]


def load_glossary(table: Any, where: str) -> Glossary:
    """The ``[glossary]`` table → a Glossary, or ConfigError naming the file and the key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: 'glossary' must be a table: write it as [glossary]")
    try:
        return Glossary.from_config(table)
    except ValueError as e:
        raise ConfigError(f"{where}: [glossary] {e}") from None


def _check_overrides(items: list[str], value: Any, where: str) -> None:
    from .translate import TranslationConfigError, parse_overrides

    try:
        parse_overrides(items)
    except TranslationConfigError as e:
        raise ConfigError(f"{where}: [translate] overrides = {value!r}: "
                          f"{str(e).removeprefix('translate.overrides: ')}") from None


def _glossary_override(glossary: Glossary, key: str, value: Any, where: str) -> Glossary:
    """``--set glossary.terms=Chongqing,SCO`` replaces the terms (fixed translations stay)."""
    if key != "terms":
        raise ConfigError(f"{where}: [glossary] {key}: only glossary.terms can be set here "
                          f"(e.g. --set glossary.terms=Chongqing,SCO); fixed translations go in the "
                          f"config file's [glossary.LANG] tables")
    table: dict[str, Any] = {lang: dict(fixed) for lang, fixed in glossary.translations.items()}
    table["terms"] = value
    # Terms that only had a fixed translation stay in the glossary through their tables.
    return load_glossary(table, where)


def _field(sec_cls, section: str, key: str, where: str):
    by_name = {f.name: f for f in fields(sec_cls)}
    if key not in by_name:
        raise ConfigError(f"{where}: unknown key '{key}' in [{section}]; allowed keys: {', '.join(by_name)}")
    return by_name[key]


def describe_allowed(spec) -> str:
    m = spec.metadata
    if m["choices"]:
        return "one of " + ", ".join(map(str, m["choices"])) + (" (a list)" if m["kind"] == "list" else "")
    if m["kind"] == "list":
        what = "language codes" if m["pattern"] is LANGUAGE_CODE else "texts"
        return f"a list of {what}" + (", may be empty" if m["empty_ok"] else "")
    default = spec.default if spec.default is not MISSING else spec.default_factory()
    kind = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(type(default), "a value")
    if m["lo"] is not None:
        return f"{kind} from {m['lo']} to {m['hi']}"
    return kind


def _check(spec, section: str, key: str, value: Any, where: str) -> Any:
    """Coerce a value from TOML or the CLI to the field's type, or raise ConfigError."""
    default = spec.default if spec.default is not MISSING else spec.default_factory()
    m = spec.metadata

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{where}: [{section}] {key} = {value!r}: {problem}; allowed: {describe_allowed(spec)}")

    if m["kind"] == "list":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise bad("expected a list of names")
        items = [i.strip() for i in items if i.strip()]
        unknown = [i for i in items if m["choices"] and i not in m["choices"]]
        unknown += [i for i in items if m["pattern"] is not None and not m["pattern"].fullmatch(i)]
        if unknown or (not items and not m["empty_ok"]):
            raise bad(f"unknown: {', '.join(unknown)}" if unknown else "empty list")
        return list(dict.fromkeys(items))
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise bad("expected true or false")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, str):
            try:
                value = int(value) if isinstance(default, int) else float(value)
            except ValueError:
                raise bad("not a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("expected a number")
        if isinstance(default, int) and not float(value).is_integer():
            raise bad("expected a whole number")
        value = type(default)(value)
        if m["lo"] is not None and not (m["lo"] <= value <= m["hi"]):
            raise bad("out of range")
        if m["choices"] and value not in m["choices"]:
            raise bad("not an allowed value")
        return value
    if isinstance(default, str):
        if isinstance(value, int) and not isinstance(value, bool) and key == "device":
            value = str(value)  # device = 3 is a natural way to name an index
        if not isinstance(value, str):
            raise bad("expected text")
        if m["choices"] and value not in m["choices"]:
            raise bad("not an allowed value")
        return value
    raise bad("unsupported")


def load_config(path: str | Path | None = None) -> Config:
    """Read a config file (or ./config.toml if present, else built-in defaults)."""
    if path is None:
        path = Path(DEFAULT_CONFIG_NAME)
        if not path.is_file():
            return Config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing file to --config "
                          f"(the documented default is config.toml at the project root)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    overrides: dict[str, Any] = {}
    glossary = Glossary()
    for section, table in data.items():
        if section == GLOSSARY:
            glossary = load_glossary(table, str(path))
            continue
        _section_class(section, str(path))
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{section}' must be a table: write it as [{section}]")
        for key, value in table.items():
            if section == "translate" and key == "overrides" and isinstance(value, dict):
                # the table form, [translate.overrides] en = "whisper", is the list's equal
                value = [f"{k}={v}" for k, v in value.items()]
            overrides[f"{section}.{key}"] = value
    return replace(Config(), source=str(path), glossary=glossary).with_overrides(overrides, where=str(path))


def parse_set_option(text: str) -> tuple[str, str]:
    """``--set asr.beam_size=1`` → ("asr.beam_size", "1")."""
    key, eq, value = text.partition("=")
    if not eq or "." not in key:
        raise ConfigError(f"--set {text!r}: write it as section.key=value, e.g. --set asr.beam_size=1")
    return key.strip(), value.strip()
