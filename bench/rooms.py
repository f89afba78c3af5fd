"""One host, N rooms: how many rooms one loaded model captions in real time.

    python bench/rooms.py --model base --rooms 1,2,3,4
    python bench/rooms.py --model tiny.en --rooms 1,3,5,6 --count 14

For each N, starts `subtitler serve --rooms r1,…,rN` (a real process on loopback), feeds every
room its own real-time stream of real speech (Debian's asterisk prompts, a different
selection per room: bench/corpus.py) through /rooms/NAME/ws/audio with `subtitler send`'s
client, and reads /rooms/NAME/ws/view as a screen does. Prints per room:

  final p50/p90   caption received by the screen − wall time the utterance's last voiced
                  sample was sent (the reference's speech end)
  wer             the room's finals against its reference texts
  alone           the same stream's WER through the same engine with the decoder to itself
                  (its file read whole, before the venue runs): the one-room figure
  lag max         the largest `lag` the room's status reported (audio waiting for decoding)

and, last, the largest N that kept every room at final p90 ≤ --p90-target (default 1.5 s), as
JSON lines (one per N) and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from corpus import build_stream, percentile, wer  # noqa: E402

from subtitler.audio import FileSource  # noqa: E402
from subtitler.send import send_audio  # noqa: E402


class LoggedFile(FileSource):
    """A real-time file whose blocks are logged with the wall time they were handed on."""

    def __init__(self, path: Path):
        super().__init__(path, realtime=True)
        self.log: list[tuple[float, float]] = []  # (audio seconds handed on, wall time)

    def __iter__(self):
        for block in super().__iter__():
            yield block
            self.log.append((self.fed_seconds, time.monotonic()))

    def sent_at(self, audio_t: float) -> float | None:
        i = bisect.bisect_left(self.log, (audio_t, -1.0))
        return self.log[i][1] if i < len(self.log) else None


async def watch(url: str, captions: list, lags: list, done: threading.Event) -> None:
    """A screen: every caption with the wall time it arrived, and the room's lag."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "hello", "langs": ["source"]}))
        while not done.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except asyncio.TimeoutError:
                continue
            msg = json.loads(raw)
            if msg.get("type") == "caption":
                captions.append((time.monotonic(), msg))
            elif msg.get("type") == "status":
                lags.append(msg.get("lag") or 0.0)


def wer_alone(model: str, streams: list[dict]) -> list[float]:
    """Each stream's WER through the same engine in one room with the decoder to itself (the
    file read whole, every final decoded as it would be with no other room): the one-room
    figure each room's WER in the venue is compared with."""
    from subtitler.asr import WhisperASR
    from subtitler.config import Config
    from subtitler.engine import Session
    from subtitler.models import resolve_model

    asr = WhisperASR(resolve_model(model, HERE.parent / "models", progress=False), "cpu", "auto")
    out = []
    for s in streams:
        finals = []

        class Finals:
            def on_caption(self, caption) -> None:
                if caption.is_final and caption.text:
                    finals.append(caption.text)
        Session(asr, FileSource(Path(s["wav"])), [Finals()], Config()).run()
        out.append(round(wer([" ".join(u["text"] for u in s["utterances"])], [" ".join(finals)],
                             lang=s.get("lang", "en")), 4))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_venue(n: int, streams: list[dict], model: str, extra: list[str], timeout: float,
              log_path: Path | None = None) -> dict:
    names = [f"r{i + 1}" for i in range(n)]
    port, token = free_port(), secrets.token_urlsafe(12)
    out = tempfile.mkdtemp(prefix="bench-rooms-")
    cmd = [sys.executable, "-m", "subtitler", *(["-v"] if log_path else []), "serve", "--rooms", ",".join(names), "--port", str(port),
           "--token", token, "--out", out, "--model", model, "--set", f"server.max_rooms={max(n, 1)}", *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=HERE.parent)
    log_lines: list[str] = []
    ready = threading.Event()

    def read_stderr() -> None:
        for line in proc.stderr:
            log_lines.append(f"{time.monotonic():.3f} {line}")
            if line.startswith("Captioning"):
                ready.set()
    threading.Thread(target=read_stderr, daemon=True).start()
    if not ready.wait(180):
        proc.kill()
        raise SystemExit("the venue did not start:\n" + "".join(log_lines[-20:]))

    captions = {name: [] for name in names}
    lags = {name: [] for name in names}
    done = threading.Event()
    async def watch_all() -> None:
        await asyncio.gather(*(watch(f"ws://127.0.0.1:{port}/rooms/{name}/ws/view", captions[name], lags[name], done)
                               for name in names))
    watchers = threading.Thread(target=asyncio.run, args=(watch_all(),), daemon=True)
    watchers.start()
    time.sleep(0.5)
    sources = {name: LoggedFile(Path(s["wav"])) for name, s in zip(names, streams)}
    codes: dict[str, int] = {}

    def send(name: str) -> None:
        with open(os.devnull, "w") as quiet:
            codes[name] = send_audio(sources[name], f"ws://127.0.0.1:{port}", token, out=quiet, room=name)
    senders = [threading.Thread(target=send, args=(name,), daemon=True) for name in names]
    for t in senders:
        t.start()
    deadline = time.monotonic() + timeout
    for t in senders:
        t.join(max(1.0, deadline - time.monotonic()))
    time.sleep(1.0)
    done.set()
    watchers.join(5)
    proc.send_signal(2)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()

    rooms = {}
    timeline: list[dict] = []  # every final, for reading a verbose run's server log beside it
    for name, truth in zip(names, streams):
        src = sources[name]
        finals = [(t, m) for t, m in captions[name] if m.get("kind") == "final" and m.get("text")]
        latencies = []
        for t, m in finals:
            u = max(truth["utterances"], key=lambda u: min(m["end"], u["end"]) - max(m["start"], u["start"]))
            if min(m["end"], u["end"]) - max(m["start"], u["start"]) <= 0:
                continue
            sent = src.sent_at(u["end"])
            if sent is not None:
                latencies.append(t - sent)
                timeline.append({"room": name, "speech_end_sent": round(sent, 3), "received": round(t, 3),
                                 "latency": round(t - sent, 3), "text": m["text"]})
        refs = [" ".join(u["text"] for u in truth["utterances"])]
        hyp = [" ".join(m["text"] for _, m in finals)]
        rooms[name] = {"finals": len(finals), "utterances": len(truth["utterances"]),
                       "final_p50": percentile(latencies, 0.5), "final_p90": percentile(latencies, 0.9),
                       "wer": round(wer(refs, hyp, lang=truth.get("lang", "en")), 4),
                       "lag_max": round(max(lags[name], default=0.0), 2), "sender_exit": codes.get(name)}
    if log_path is not None:
        log_path.write_text("".join(log_lines))
        log_path.with_suffix(".finals.json").write_text(json.dumps(sorted(timeline, key=lambda f: f["received"]),
                                                                   indent=1))
    return {"rooms": n, "model": model, "per_room": rooms,
            "worst_p90": max((r["final_p90"] or 99.0) for r in rooms.values()),
            "mean_wer": round(sum(r["wer"] for r in rooms.values()) / n, 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="base")
    p.add_argument("--rooms", default="1,2,3", help="room counts to try, e.g. 1,2,3,4")
    p.add_argument("--count", type=int, default=12, help="prompts per room's stream")
    p.add_argument("--seed", type=int, default=100, help="first corpus seed (room i gets seed+i); the "
                   "latency benches tune on seed 0, so the default stays apart from it")
    p.add_argument("--p90-target", type=float, default=1.5)
    p.add_argument("--set", action="append", default=[], help="section.key=value for the server")
    p.add_argument("--verbose", action="store_true", help="the server logs every decode; its log is saved "
                   "in --out as serve-N.log")
    p.add_argument("--out", type=Path, default=HERE / "out" / "rooms")
    args = p.parse_args()

    counts = [int(x) for x in args.rooms.split(",")]
    streams = []
    for i in range(max(counts)):
        wav = args.out / f"room{i + 1}.wav"
        streams.append(build_stream(wav, lang="en", count=args.count, seed=args.seed + i, gaps=(0.8, 2.0)))
    extra = [x for s in args.set for x in ("--set", s)]
    alone = wer_alone(args.model, streams)
    print(json.dumps({"wer_alone": alone}), flush=True)
    results = []
    for n in counts:
        duration = max(s["duration"] for s in streams[:n])
        r = run_venue(n, streams[:n], args.model, extra, timeout=duration + 120,
                      log_path=args.out / f"serve-{n}.log" if args.verbose else None)
        results.append(r)
        print(json.dumps(r), flush=True)

    print(f"\nmodel {args.model}, {os.cpu_count()} CPUs, {args.count} prompts a room")
    print(f"{'rooms':>5} {'room':>5} {'finals':>7} {'p50 s':>6} {'p90 s':>6} {'WER':>6} {'alone':>6} {'lag max':>7}")
    for r in results:
        for i, (name, room) in enumerate(r["per_room"].items()):
            print(f"{r['rooms']:>5} {name:>5} {room['finals']:>3}/{room['utterances']:<3} "
                  f"{room['final_p50'] or 0:>6.2f} {room['final_p90'] or 0:>6.2f} {room['wer']:>6.1%} "
                  f"{alone[i]:>6.1%} {room['lag_max']:>7.2f}")
    ok = [r["rooms"] for r in results if r["worst_p90"] <= args.p90_target]
    best = max(ok, default=0)
    print(f"largest N with every room's final p90 ≤ {args.p90_target} s: {best}")
    for r in results:
        n = r["rooms"]
        base = sum(alone[:n]) / n
        print(f"N={n}: mean WER {r['mean_wer']:.2%}, the same streams alone {base:.2%} "
              f"(ratio {r['mean_wer'] / base:.2f})" if base else
              f"N={n}: mean WER {r['mean_wer']:.2%}, the same streams alone 0%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
