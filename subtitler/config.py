"""Settings: config.toml + CLI overrides → typed, validated dataclasses.

Every setting is a dataclass field declared with ``settings.setting``: its metadata says what
it accepts, so one validator serves the file, ``--set section.key=value`` and the CLI
shortcuts, and every mistake is reported with the file, the key and the allowed values.
Each stage owns its section's class (``vad.VadOptions`` is ``[vad]``, ``translate.TranslateConfig``
is ``[translate]``) and takes it as it is: a new setting is added in one place.

A venue (one host, many rooms) adds ``[rooms.NAME]`` tables: each room's own title, token,
language, targets, input and glossary, every unset key falling back to the venue-wide setting.
``Config.for_room(name)`` is the whole config a room runs with.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .chinese import SCRIPTS
from .cues import LINE_CHARS, READING_CPS, CueStyle
from .encoder import ENCODERS
from .langcodes import LANGUAGE_CODE, canonical, is_language_code
from .protocol import check_room_name
from .settings import COMPUTE_TYPES, is_setting, setting
from .translate import TranslateConfig, TranslationConfigError, parse_overrides
from .translate.glossary import Glossary
from .vad import VadOptions

DEFAULT_CONFIG_NAME = "config.toml"
LANGUAGE_NUMBER = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}\s*=\s*[0-9]+(?:\.[0-9]+)?$")
ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


class ConfigError(ValueError):
    """A setting is wrong; the message names where, which key and what is allowed."""


@dataclass(frozen=True)
class AudioConfig:
    """``[audio]``: where the sound comes from (one room's input in a venue: see RoomConfig)."""

    input: str = setting("mic", "'mic' for the microphone, 'remote' for audio sent to /ws/audio, or a file path")
    device: str = setting("", "input device index or (part of its) name; '' = system default")
    sample_rate: int = setting(0, "capture rate in Hz; 0 = the device's native rate", lo=0, hi=384000)
    channels: int = setting(0, "capture channels (mixed down to mono); 0 = up to 2", lo=0, hi=32)
    queue_seconds: float = setting(10.0, "capture buffer; audio beyond it is dropped and counted", lo=1.0, hi=300.0)
    realtime: bool = setting(False, "pace a file input to real time (rehearsals, demos, benchmarks)")


@dataclass(frozen=True)
class AsrConfig:
    """``[asr]``: speech recognition with Whisper; ``StreamingOptions.from_config`` takes it."""

    model: str = setting("base", "model name (tiny, tiny.en, base, small, large-v3, …) or a model folder")
    partial_model: str = setting("", "a smaller Whisper model for partials only (tiny, tiny.en, or a folder), so "
                                     "words reach the screens sooner while finals stay on asr.model; an English-"
                                     "only one is used while the language is en; '' = asr.model for both")
    models_dir: str = setting("models", "local model store, searched before packages and the hub")
    device: str = setting("auto", "where Whisper runs", choices=["auto", "cpu", "cuda"])
    compute_type: str = setting("auto", "auto = float16 on CUDA, int8 on CPU", choices=COMPUTE_TYPES)
    encoder: str = setting("auto", "Whisper's audio encoder on the CPU: torch = PyTorch (bfloat16 on CPUs "
                                   "with AMX/AVX512-BF16, ~2x faster; float32 on AVX2 CPUs without AVX-512); "
                                   "auto = torch there when PyTorch is installed, else ctranslate2", choices=ENCODERS)
    cpu_threads: int = setting(0, "CPU threads for Whisper; 0 = all cores", lo=0, hi=256)
    language: str = setting("auto", "the spoken language, or 'auto' to detect it per utterance",
                            kind="language")
    task: str = setting("transcribe", "transcribe, or translate speech to English",
                        choices=["transcribe", "translate"])
    beam_size: int = setting(5, "beam width of the final decode (partials are greedy)", lo=1, hi=16)
    partial_interval: float = setting(1.0, "seconds the decoder rests between partial decodes while speaking; "
                                           "0 = finals only", lo=0.0, hi=30.0)
    first_partial_s: float = setting(0.8, "speech needed before the first partial decode", lo=0.1, hi=30.0)
    hotwords: str = setting("", "names and terms to hear right, e.g. 'Chongqing, SCO'")
    initial_prompt: str = setting("", "text that sets the style and context of the transcript")
    condition_on_previous: bool = setting(True, "give the previous final caption as context")
    no_speech_threshold: float = setting(0.6, "drop output whose no-speech probability is above this…",
                                         lo=0.0, hi=1.0)
    logprob_threshold: float = setting(-1.0, "…or whose average token log-probability is below this",
                                       lo=-10.0, hi=0.0)
    compression_ratio_threshold: float = setting(2.4, "drop repetitive output above this gzip ratio", lo=1.0, hi=10.0)
    max_lag_s: float = setting(30.0, "audio waiting for decoding beyond this is skipped (and counted)",
                               lo=5.0, hi=600.0)


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``: transcript files."""

    dir: str = setting("transcripts", "each session writes into a new folder below this one")
    formats: list = setting(["srt", "vtt", "txt", "jsonl"], "transcript files to write",
                            choices=["srt", "vtt", "txt", "jsonl"], kind="list")
    max_line_chars: int = setting(42, "subtitle line length in characters, for languages written with spaces "
                                      "(Latin, Cyrillic, …) and any not in max_line_chars_by_language",
                                  lo=10, hi=200)
    max_line_chars_by_language: list = setting(
        ["zh=16", "yue=16", "ja=13", "ko=16"], "line length by language, in its own characters (a CJK character "
        "is two columns wide), e.g. [\"zh=16\", \"ja=13\"] or [output.max_line_chars_by_language] zh = 16",
        kind="list", pattern=LANGUAGE_NUMBER, empty_ok=True)
    max_lines: int = setting(2, "lines per subtitle cue", lo=1, hi=5)
    chars_per_second: float = setting(17.0, "reading speed, characters a second, for languages not in "
                                            "chars_per_second_by_language: a caption shorter than its reading "
                                            "time is held longer, into the silence before the next "
                                            "(subtitler subtitles)", lo=1.0, hi=100.0)
    chars_per_second_by_language: list = setting(["zh=9", "yue=9", "ja=4", "ko=12"], "reading speed by language",
                                                 kind="list", pattern=LANGUAGE_NUMBER, empty_ok=True)
    min_cue_s: float = setting(0.8, "shortest time a cue is held on screen, where the next caption leaves room",
                               lo=0.0, hi=10.0)
    chinese: str = setting("simplified", "script of Chinese (zh) captions, files and translations: simplified "
                                         "(mainland), traditional (Taiwan, Hong Kong) or as-is (as Whisper writes "
                                         "it); zh-Hans / zh-Hant targets always get their own script",
                           choices=list(SCRIPTS))

    def cue_style(self) -> CueStyle:
        """How captions are cut into cues, for every language."""
        # A language set here replaces only its own entry: ["zh=20"] keeps Japanese at 13.
        line_chars = {**LINE_CHARS, **{k: int(v) for k, v in per_language(self.max_line_chars_by_language).items()}}
        return CueStyle(max_line_chars=self.max_line_chars, max_lines=self.max_lines, line_chars=line_chars,
                        chars_per_second=self.chars_per_second,
                        reading_cps={**READING_CPS, **per_language(self.chars_per_second_by_language)},
                        min_cue_s=self.min_cue_s)


def per_language(items: list[str]) -> dict[str, float]:
    """["zh=16", "ja=13"] → {"zh": 16.0, "ja": 13.0}."""
    return {k.strip(): float(v) for k, _, v in (i.partition("=") for i in items)}


# per-language numbers in [output]: their bounds (the list's pattern checks the form)
PER_LANGUAGE_BOUNDS = {"max_line_chars_by_language": (4, 200), "chars_per_second_by_language": (1, 100)}


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: the one port every room's pages and sockets are served on."""

    host: str = setting("127.0.0.1", "address to serve the rooms on; 0.0.0.0 for screens on the network")
    port: int = setting(8765, "one port for the pages, the WebSocket endpoints, /healthz and /metrics",
                        lo=0, hi=65535)
    token: str = setting("", "the venue's operator token: controls and feeds every room, opens and closes "
                             "rooms; '' = a random one, printed at start")
    history: int = setting(50, "final captions a screen gets when it connects", lo=0, hi=10000)
    client_queue: int = setting(256, "events queued for one screen before it counts as stuck", lo=8, hi=100000)
    client_timeout_s: float = setting(10.0, "a screen that reads nothing this long is disconnected",
                                      lo=0.5, hi=600.0)
    max_message_bytes: int = setting(1 << 20, "largest WebSocket message accepted", lo=1024, hi=1 << 26)
    # Beyond capacity every room would fall behind; opening one more is refused instead.
    max_rooms: int = setting(0, "rooms the host captions at once; 0 = auto: measured from the model's decode "
                                "speed on this machine at start", lo=0, hi=1000)
    venue_title: str = setting("", "the venue page's title; '' = \"subtitler\"")
    # Connection caps (docs/protocol.md, "Limits"): far below the open-file limit; screens, consoles
    # and senders each have their own places, so a flood of one never locks out the others.
    max_viewers: int = setting(4000, "screens (/ws/view) connected at once, every room together; more are "
                                     "refused with 503", lo=1, hi=100000)
    max_viewers_per_address: int = setting(64, "screens connected at once from one network address", lo=1, hi=100000)
    max_consoles: int = setting(64, "consoles and venue operators connected at once", lo=1, hi=10000)
    max_consoles_per_address: int = setting(8, "consoles connected at once from one network address", lo=1, hi=10000)
    max_senders: int = setting(64, "audio senders connected at once (one streams per room)", lo=1, hi=10000)
    max_senders_per_address: int = setting(4, "audio senders connected at once from one network address",
                                           lo=1, hi=10000)
    allowed_origins: list = setting([], "web origins besides this server's own addresses whose pages may open "
                                        "the console, e.g. [\"https://subs.example.org\"] (behind a proxy)",
                                    kind="list", pattern=ORIGIN, empty_ok=True)
    tls_cert: str = setting("", "TLS certificate (PEM) to serve https:// and wss:// with tls_key; '' = plain "
                                "http")
    tls_key: str = setting("", "the TLS certificate's private key (PEM); '' = plain http")
    redis: str = setting("", "publish every room's captions to Redis for `subtitler edge` servers, e.g. "
                             "redis://127.0.0.1:6379/0 (redis://:PASSWORD@HOST:PORT/0, rediss:// for TLS); "
                             "'' = no Redis")


@dataclass(frozen=True)
class RoomConfig:
    """One ``[rooms.NAME]`` table: a meeting room of the venue.

    A setting left unset (None) is the venue-wide one; ``Config.for_room`` resolves them.
    ``input`` does not fall back to ``[audio] input``: a venue's rooms are fed over the network
    (``subtitler send --room NAME``) unless a room says otherwise."""

    name: str  # checked by protocol.check_room_name: it is part of the room's URLs and folder
    title: str = setting("", "shown on the venue page and the room's screens; '' = the room's name")
    token: str = setting("", "this room's control and audio token (opens nothing of another room); "
                             "'' = a random one, printed at start")
    language: str | None = setting(None, "the room's spoken language, or 'auto'; unset = [asr] language",
                                   kind="language")
    targets: list | None = setting(None, "this room's translation targets, e.g. [\"en\", \"zh\"]; "
                                         "unset = [translate] targets", kind="list", pattern=LANGUAGE_CODE,
                                   empty_ok=True)
    input: str = setting("remote", "'remote' for audio sent to /rooms/NAME/ws/audio, 'mic' for a local input "
                                   "device (see device), or a file path (rehearsals)")
    device: str | None = setting(None, "with input = 'mic': the device index or (part of its) name; "
                                       "unset = [audio] device", kind="text")
    realtime: bool | None = setting(None, "pace a file input to real time; unset = [audio] realtime", kind="bool")
    # [rooms.NAME.glossary] (terms, and [rooms.NAME.glossary.LANG] tables): merged over [glossary]
    glossary: Glossary | None = None

    def __post_init__(self):
        check_room_name(self.name)
        if not self.title:
            object.__setattr__(self, "title", self.name)


@dataclass(frozen=True)
class Config:
    """Every setting of a venue (or of one room: see ``for_room``)."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadOptions = field(default_factory=VadOptions)
    asr: AsrConfig = field(default_factory=AsrConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    # [glossary]: names and terms, free per-language tables; not a section of typed keys
    glossary: Glossary = field(default_factory=Glossary)
    # [rooms.NAME] tables, in the order of the file
    rooms: dict[str, RoomConfig] = field(default_factory=dict)
    source: str = "built-in defaults"  # where the settings came from, for messages

    def with_overrides(self, overrides: dict[str, Any], where: str = "command line") -> "Config":
        """Return a copy with ``{"section.key": value}`` (or ``"rooms.NAME.key"``) applied and
        validated. A room named here and not in the file is added."""
        cfg = self
        touched: list[str] = []
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            if section == GLOSSARY:
                cfg = replace(cfg, glossary=_glossary_override(cfg.glossary, key, value, where))
                continue
            if section == ROOMS:
                name, room = _room_override(cfg, key, value, where)
                cfg = replace(cfg, rooms={**cfg.rooms, name: room})
                touched.append(name)
                continue
            sec_cls = _section_class(section, where)
            spec = _field(sec_cls, section, key, where)
            checked = _check(spec, section, key, value, where)
            if section == "translate" and key == "overrides":
                _check_overrides(checked, value, where)
            if section == "output" and key in PER_LANGUAGE_BOUNDS:
                _check_per_language(checked, key, value, where)
            cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{key: checked})})
        for name in dict.fromkeys(touched):  # after all of them: a room's keys are checked together
            _check_room(cfg.rooms[name], where)
        return cfg

    def room(self, name: str, where: str = "command line") -> RoomConfig:
        """The ``[rooms.NAME]`` settings; a room the file does not name gets a default RoomConfig
        (every setting venue-wide, input 'remote'), so ``--rooms a,b`` needs no table."""
        found = self.rooms.get(name)
        if found is not None:
            return found
        return RoomConfig(_room_name(name, where))

    def for_room(self, name: str, where: str = "command line") -> "Config":
        """The whole config the room ``name`` runs with: its language, targets, input and
        glossary over the venue-wide settings (``rooms`` then holds that room alone)."""
        r = self.room(name, where)
        asr = self.asr if r.language is None else replace(self.asr, language=r.language)
        translate = self.translate
        if r.targets is not None:
            # a per-target backend of the venue only for the targets this room has
            mine = {canonical(t) for t in r.targets}
            kept = [o for o in translate.overrides if canonical(o.partition("=")[0].strip()) in mine]
            translate = replace(translate, targets=list(r.targets), overrides=kept)
        audio = replace(self.audio, input=r.input,
                        device=self.audio.device if r.device is None else r.device,
                        realtime=self.audio.realtime if r.realtime is None else r.realtime)
        return replace(self, asr=asr, translate=translate, audio=audio,
                       glossary=merge_glossaries(self.glossary, r.glossary), rooms={r.name: r})


SECTIONS = {"audio": AudioConfig, "vad": VadOptions, "asr": AsrConfig, "output": OutputConfig,
            "server": ServerConfig, "translate": TranslateConfig}
GLOSSARY = "glossary"
ROOMS = "rooms"
ROOM_INPUTS = "'remote', 'mic' or a file path"


def _section_class(section: str, where: str):
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section [{section}]; allowed sections: "
                          f"{', '.join([*SECTIONS, GLOSSARY, ROOMS])}")
    return SECTIONS[section]


def load_glossary(table: Any, where: str, section: str = GLOSSARY) -> Glossary:
    """A ``[glossary]`` table (or a room's ``[rooms.NAME.glossary]``) → a Glossary, or
    ConfigError naming the file and the key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: '{section}' must be a table: write it as [{section}]")
    try:
        return Glossary.from_config(table)
    except ValueError as e:
        message = str(e)
        if section != GLOSSARY:  # the glossary names its keys glossary.X; here they are rooms.NAME.glossary.X
            message = message.replace(f"{GLOSSARY}.", f"{section}.")
        raise ConfigError(f"{where}: [{section}] {message}") from None


def merge_glossaries(venue: Glossary, room: Glossary | None) -> Glossary:
    """A room's glossary over the venue's: the terms of both; where both fix a term's
    translation into one language, the room's wins."""
    if room is None:
        return venue
    translations: dict[str, dict[str, str]] = {}
    for lang in dict.fromkeys([*venue.translations, *room.translations]):
        own = room.translations.get(lang, {})
        mine = {" ".join(term.casefold().split()) for term in own}
        kept = {t: v for t, v in venue.translations.get(lang, {}).items()
                if " ".join(t.casefold().split()) not in mine}
        translations[lang] = {**kept, **own}
    return Glossary(terms=[*venue.terms, *room.terms], translations=translations)


# "key=value" lists that may be written as a table: [translate.overrides] en = "whisper"
TABLE_LISTS = {("translate", "overrides"), *(("output", k) for k in PER_LANGUAGE_BOUNDS)}


def _check_per_language(items: list[str], key: str, value: Any, where: str) -> None:
    lo, hi = PER_LANGUAGE_BOUNDS[key]
    bad = [i for i in items if not lo <= float(i.partition("=")[2]) <= hi]
    if bad:
        raise ConfigError(f"{where}: [output] {key} = {value!r}: {', '.join(bad)} out of range; allowed: "
                          f"language=number, the number from {lo} to {hi}")


def _check_overrides(items: list[str], value: Any, where: str) -> None:
    try:
        parse_overrides(items)
    except TranslationConfigError as e:
        raise ConfigError(f"{where}: [translate] overrides = {value!r}: "
                          f"{str(e).removeprefix('translate.overrides: ')}") from None


def _glossary_override(glossary: Glossary, key: str, value: Any, where: str, section: str = GLOSSARY) -> Glossary:
    """``--set glossary.terms=Chongqing,SCO`` replaces the terms (fixed translations stay)."""
    if key != "terms":
        raise ConfigError(f"{where}: [{section}] {key}: only {section}.terms can be set here "
                          f"(e.g. --set {section}.terms=Chongqing,SCO); fixed translations go in the "
                          f"config file's [{section}.LANG] tables")
    table: dict[str, Any] = {lang: dict(fixed) for lang, fixed in glossary.translations.items()}
    table["terms"] = value
    # Terms that only had a fixed translation stay in the glossary through their tables.
    return load_glossary(table, where, section)


# -- rooms --------------------------------------------------------------------------------------

def _room_name(name: Any, where: str) -> str:
    try:
        return check_room_name(name)
    except ValueError as e:
        raise ConfigError(f"{where}: [rooms.{name}]: {e}") from None


def _room_override(cfg: Config, key: str, value: Any, where: str) -> tuple[str, RoomConfig]:
    """``rooms.NAME.key = value`` (or ``rooms.NAME.glossary.terms``) → (NAME, the room with it)."""
    name, _, key = key.partition(".")
    if not key:
        raise ConfigError(f"{where}: rooms.{name}: write a room's setting as rooms.NAME.KEY, "
                          f"e.g. rooms.hall.title=Main hall")
    name = _room_name(name, where)
    room = cfg.rooms.get(name) or RoomConfig(name)
    section = f"{ROOMS}.{name}"
    if key.partition(".")[0] == GLOSSARY:
        own = _glossary_override(room.glossary or Glossary(), key.partition(".")[2], value, where,
                                 section=f"{section}.{GLOSSARY}")
        return name, replace(room, glossary=own)
    spec = _field(RoomConfig, section, key, where, also=[GLOSSARY])
    return name, replace(room, **{key: _check(spec, section, key, value, where)})


def _check_room(room: RoomConfig, where: str) -> None:
    """What no single key shows: an input that names nothing, a device for no device input."""
    section = f"[{ROOMS}.{room.name}]"
    if not room.input.strip():
        raise ConfigError(f"{where}: {section} input = {room.input!r}: empty; allowed: {ROOM_INPUTS}")
    if room.device is not None and room.input != "mic":
        raise ConfigError(f"{where}: {section} device = {room.device!r}: a device is read only with "
                          f"input = \"mic\" (this room's input is {room.input!r}); allowed: set input = \"mic\" "
                          f"too, or leave device out")


def _load_rooms(table: Any, where: str) -> tuple[dict[str, RoomConfig], dict[str, Any]]:
    """The ``[rooms.NAME]`` tables → (rooms with their glossaries, their other keys as overrides)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: '{ROOMS}' must be a table of rooms: write each room as [rooms.NAME], "
                          f"e.g. [rooms.hall]")
    rooms: dict[str, RoomConfig] = {}
    overrides: dict[str, Any] = {}
    for name, room_table in table.items():
        name = _room_name(name, where)
        if not isinstance(room_table, dict):
            raise ConfigError(f"{where}: 'rooms.{name}' must be a table: write it as [rooms.{name}]")
        glossary = None
        for key, value in room_table.items():
            if key == GLOSSARY:
                glossary = load_glossary(value, where, section=f"{ROOMS}.{name}.{GLOSSARY}")
            else:
                overrides[f"{ROOMS}.{name}.{key}"] = value
        rooms[name] = RoomConfig(name, glossary=glossary)
    return rooms, overrides


# -- one validator for every setting ------------------------------------------------------------

def _field(sec_cls, section: str, key: str, where: str, also: list[str] = ()):
    by_name = {f.name: f for f in fields(sec_cls) if is_setting(f)}
    if key not in by_name:
        raise ConfigError(f"{where}: unknown key '{key}' in [{section}]; allowed keys: "
                          f"{', '.join([*by_name, *also])}")
    return by_name[key]


def _default(spec) -> Any:
    return spec.default if spec.default is not MISSING else spec.default_factory()


def _kind(spec) -> str:
    """bool, int, float, text, list or language: the metadata's kind, else the default's type."""
    return spec.metadata["kind"] or {bool: "bool", int: "int", float: "float", str: "text"}[type(_default(spec))]


def describe_allowed(spec) -> str:
    m = spec.metadata
    kind = _kind(spec)
    if m["choices"]:
        return "one of " + ", ".join(map(str, m["choices"])) + (" (a list)" if kind == "list" else "")
    if kind == "list":
        what = {id(LANGUAGE_CODE): "language codes", id(LANGUAGE_NUMBER): "language=number entries"}.get(
            id(m["pattern"]), "texts")
        return f"a list of {what}" + (", may be empty" if m["empty_ok"] else "")
    if kind == "language":
        return "auto or a language code such as en, zh-Hant, pt-BR"
    what = {"bool": "true or false", "int": "a whole number", "float": "a number", "text": "text"}[kind]
    if m["lo"] is not None:
        return f"{what} from {m['lo']} to {m['hi']}"
    return what


def _check(spec, section: str, key: str, value: Any, where: str) -> Any:
    """Coerce a value from TOML or the CLI to the field's kind, or raise ConfigError."""
    m = spec.metadata
    kind = _kind(spec)

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{where}: [{section}] {key} = {value!r}: {problem}; allowed: {describe_allowed(spec)}")

    if kind == "list":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise bad("expected a list of names")
        items = [i.strip() for i in items if i.strip()]
        unknown = [i for i in items if m["choices"] and i not in m["choices"]]
        unknown += [i for i in items if m["pattern"] is not None and not m["pattern"].fullmatch(i)]
        if unknown or (not items and not m["empty_ok"]):
            raise bad(f"unknown: {', '.join(unknown)}" if unknown else "empty list")
        return list(dict.fromkeys(items))
    if kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise bad("expected true or false")
        return value
    if kind in ("int", "float"):
        if isinstance(value, str):
            try:
                value = int(value) if kind == "int" else float(value)
            except ValueError:
                raise bad("not a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("expected a number")
        if kind == "int" and not float(value).is_integer():
            raise bad("expected a whole number")
        value = int(value) if kind == "int" else float(value)
        if m["lo"] is not None and not (m["lo"] <= value <= m["hi"]):
            raise bad("out of range")
        if m["choices"] and value not in m["choices"]:
            raise bad("not an allowed value")
        return value
    if isinstance(value, int) and not isinstance(value, bool) and key == "device":
        value = str(value)  # device = 3 is a natural way to name an index
    if not isinstance(value, str):
        raise bad("expected text")
    if kind == "language":
        value = value.strip()
        if value != "auto" and not is_language_code(value):
            raise bad("not a language code")
        return value
    if m["choices"] and value not in m["choices"]:
        raise bad("not an allowed value")
    return value


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
    rooms: dict[str, RoomConfig] = {}
    for section, table in data.items():
        if section == GLOSSARY:
            glossary = load_glossary(table, str(path))
            continue
        if section == ROOMS:
            rooms, room_keys = _load_rooms(table, str(path))
            overrides.update(room_keys)
            continue
        _section_class(section, str(path))
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{section}' must be a table: write it as [{section}]")
        for key, value in table.items():
            if (section, key) in TABLE_LISTS and isinstance(value, dict):
                # the table form, [translate.overrides] en = "whisper", is the list's equal
                value = [f"{k}={v}" for k, v in value.items()]
            overrides[f"{section}.{key}"] = value
    cfg = replace(Config(), source=str(path), glossary=glossary, rooms=rooms).with_overrides(overrides, where=str(path))
    for room in cfg.rooms.values():  # a table with no key at all is checked too
        _check_room(room, str(path))
    return cfg


def parse_set_option(text: str) -> tuple[str, str]:
    """``--set asr.beam_size=1`` → ("asr.beam_size", "1")."""
    key, eq, value = text.partition("=")
    if not eq or "." not in key:
        raise ConfigError(f"--set {text!r}: write it as section.key=value, e.g. --set asr.beam_size=1")
    return key.strip(), value.strip()
