"""Soak: an hour of real speech through remote audio, 200 screens with churn, a sender that
loses its connection every 10 minutes; memory, lag and captions lost, checked loudly.

    python bench/soak.py                       # 60 minutes of speech (about an hour or more)
    python bench/soak.py --minutes 10          # a short run
    python bench/soak.py --minutes 10 --mark-every 1 --warmup 2

What it does, all on loopback:

* builds ``--minutes`` of real speech with pauses (Debian's asterisk prompts, bench/corpus.py:
  segments of 40 prompts with 0.8–3 s gaps and one 20 s pause each, -60 dBFS noise);
* starts ``subtitler run --input remote`` (a real process) and sends the recording with
  ``subtitler send``'s client, paced at up to ``--speed`` (4) × real time and held back by the
  server where decoding is slower (the live policy never has to skip it); the sender goes
  through a TCP relay that cuts its connection every ``--reconnect-every`` (10) minutes, so it
  reconnects and resends what the server had not acknowledged;
* keeps ``--screens`` (200) screens on /ws/view, one of them steady, the others churning
  (one leaves and comes back, resuming from its last ``seq``, every ``--churn`` seconds), and a
  console on /ws/control for the status;
* prints the server's RSS, lag and captions at every ``--mark-every`` (5) minute mark; RSS growth
  is the peak of the last mark interval over the peak of the first one after ``--warmup``;
* then transcribes the same recording with ``subtitler transcribe`` (the offline baseline) and
  compares: a baseline caption with no live caption over its time is a caption lost.

Fails (exit 1, ``FAIL: …``) when RSS grows by more than ``--max-growth`` (5 %) from the
``--warmup`` (10) minute mark on, when any caption is lost (transcript or steady screen), or
when the lag goes past ``--max-lag`` (10 s). The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import corpus  # noqa: E402

from subtitler.audio import FileSource  # noqa: E402
from subtitler.captions import SAMPLE_RATE  # noqa: E402
from subtitler.send import send_audio  # noqa: E402
from subtitler.transcripts import load_jsonl  # noqa: E402

ROOT = HERE.parent


# -- the recording --------------------------------------------------------------------------------

def build_speech(out: Path, minutes: float) -> float:
    """``minutes`` of real speech with pauses as one 16 kHz WAV; returns its length in seconds."""
    pieces, total, seed = [], 0.0, 100
    while total < minutes * 60:
        seg = corpus.build_stream(out.parent / f"seg{seed}.wav", count=40, seed=seed, gaps=(0.8, 3.0),
                                  long_silence_after=20, long_silence=20.0, noise_db=-60.0)
        x, _ = corpus._read_wav_int16(Path(seg["wav"]))
        pieces.append(x)
        total += x.size / SAMPLE_RATE
        Path(seg["wav"]).unlink()
        seed += 1
    audio = np.concatenate(pieces)[: int(minutes * 60 * SAMPLE_RATE)]
    corpus.write_wav(out, audio)
    return audio.size / SAMPLE_RATE


class PacedFile(FileSource):
    """A recording sent at up to ``speed`` × real time, and otherwise as fast as the server takes it
    (``realtime`` is False: the server holds it back to the decoder's pace instead of skipping)."""

    def __init__(self, path: Path, speed: float):
        super().__init__(path, realtime=False)
        self.speed = speed
        self.t0: float | None = None

    def _emit(self, block, t0):
        if self.t0 is None:
            self.t0 = time.monotonic()
        due = self.t0 + (self.fed_seconds + block.size / SAMPLE_RATE) / self.speed
        if due > time.monotonic():
            self._stop.wait(due - time.monotonic())
        self.fed_seconds += block.size / SAMPLE_RATE
        yield block


# -- the network between sender and server -----------------------------------------------------------

class Relay:
    """A TCP relay in front of the server; ``cut()`` drops every connection through it at once."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        async def main():
            self.loop = asyncio.get_running_loop()
            server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await asyncio.Event().wait()
        asyncio.run(main())

    async def _client(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        def abort():
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()
        self.cuts += 1
        self.loop.call_soon_threadsafe(abort)


# -- screens and the console -------------------------------------------------------------------------

class Audience:
    """``n`` screens (the first steady, the others churning) and a console, in one asyncio thread."""

    def __init__(self, port: int, token: str, n: int, churn_s: float):
        self.port, self.token, self.n, self.churn_s = port, token, n, churn_s
        self.steady_finals: list[dict] = []
        self.lags: list[float] = []
        self.statuses: list[dict] = []
        self.connects = self.reconnects = self.failures = self.slow_closes = 0
        self.connected = 0
        self.errors: dict[str, int] = {}  # why screens failed, by kind
        self.session_ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()

    async def _main(self) -> None:
        tasks = [asyncio.ensure_future(self._console())]
        tasks.append(asyncio.ensure_future(self._screen(0, steady=True)))
        for i in range(1, self.n):
            tasks.append(asyncio.ensure_future(self._screen(i, steady=False)))
            if i % 20 == 0:
                await asyncio.sleep(0.05)  # a room of screens switched on, not one burst
        while not self._stop.is_set():
            await asyncio.sleep(0.2)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _screen(self, i: int, steady: bool) -> None:
        from websockets.asyncio.client import connect

        since, session, rng = 0, None, random.Random(i)
        while not self._stop.is_set():
            life = None if steady else rng.uniform(self.churn_s * (self.n - 1) * 0.5, self.churn_s * (self.n - 1) * 1.5)
            try:
                async with connect(f"ws://127.0.0.1:{self.port}/ws/view", max_queue=None) as ws:
                    hello = {"type": "hello", "langs": ["source"], "since": since}
                    if session:
                        hello["session"] = session
                    await ws.send(json.dumps(hello))
                    self.connects += 1
                    self.reconnects += since > 0
                    self.connected += 1
                    try:
                        t_end = None if life is None else time.monotonic() + life
                        while not self._stop.is_set() and (t_end is None or time.monotonic() < t_end):
                            try:
                                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                            except asyncio.TimeoutError:
                                continue
                            kind = msg.get("type")
                            if kind == "welcome":
                                if msg.get("reset") and steady and since:
                                    self.failures += 1  # the steady screen should never need a reset
                                session = msg["session"]
                            if "seq" in msg and kind != "welcome":
                                since = max(since, msg["seq"])
                            if steady and kind == "caption" and msg.get("kind") == "final" and msg.get("text") \
                                    and not msg.get("history"):
                                self.steady_finals.append(msg)
                    finally:
                        self.connected -= 1
            except asyncio.CancelledError:
                return
            except Exception as e:  # refused or dropped: count it, come back
                code = getattr(getattr(e, "rcvd", None), "code", None)
                if code == 1013:
                    self.slow_closes += 1
                elif code == 1001 or self.session_ended:  # the stream's end: `run` finishes and exits
                    self.session_ended = True
                else:
                    self.failures += 1
                    why = f"{type(e).__name__}: {str(e)[:80]}"
                    self.errors[why] = self.errors.get(why, 0) + 1
                await asyncio.sleep(0.5)

    async def _console(self) -> None:
        from websockets.asyncio.client import connect

        while not self._stop.is_set():
            try:
                async with connect(f"ws://127.0.0.1:{self.port}/ws/control") as ws:
                    await ws.send(json.dumps({"type": "auth", "token": self.token}))
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg.get("type") == "status":
                            self.statuses.append(msg)
                            self.lags.append(float(msg.get("lag") or 0.0))
            except asyncio.CancelledError:
                return
            except Exception:
                await asyncio.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


# -- the server process ---------------------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def http_get(port: int, path: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    return conn.getresponse().read().decode()


def metric(text: str, name: str) -> float:
    m = re.search(rf'^{name}(?:{{room="main"}})? (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def env() -> dict:
    e = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), e.get("PYTHONPATH")]))
    return e


def start_server(out: Path, token: str, model: str, screens: int) -> tuple[subprocess.Popen, int, list[str]]:
    from subtitler.config import ServerConfig

    sets = [f"asr.models_dir={ROOT / 'models'}"]
    if hasattr(ServerConfig, "max_viewers_per_address"):  # every screen comes from this one address
        sets.append(f"server.max_viewers_per_address={screens + 10}")
    proc = subprocess.Popen([sys.executable, "-m", "subtitler", "run", "--input", "remote", "--port", "0",
                             "--token", token, "--out", str(out), "--model", model,
                             *[a for kv in sets for a in ("--set", kv)]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line.rstrip())
            if line.startswith("Listening"):
                ready.set()
    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(300):
        proc.kill()
        raise SystemExit("the server did not start:\n" + "\n".join(lines[-20:]))
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", "\n".join(lines)).group(1))
    return proc, port, lines


def transcribe(wav: Path, out: Path, model: str) -> tuple[list[dict], float]:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "subtitler", "transcribe", str(wav), "--out", str(out), "--model", model,
                    "--formats", "jsonl", "--set", f"asr.models_dir={ROOT / 'models'}"],
                   check=True, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return load_jsonl(out / f"{wav.stem}.jsonl"), time.monotonic() - t0


def lost_captions(reference: list[dict], live: list[dict], slack: float = 0.3) -> list[dict]:
    """Baseline captions that no live caption covers in time (the same audio clock: nothing is
    dropped on the way, so the session's seconds are the file's)."""
    spans = sorted((c["start"] - slack, c["end"] + slack) for c in live if c.get("text"))
    out = []
    for c in reference:
        if not c.get("text"):
            continue
        if not any(a < c["end"] and c["start"] < b for a, b in spans):
            out.append(c)
    return out


# -- the run ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="minutes of speech to send (default 60)")
    p.add_argument("--speed", type=float, default=4.0, help="send at up to this × real time (default 4)")
    p.add_argument("--screens", type=int, default=200)
    p.add_argument("--churn", type=float, default=0.5, help="seconds between two screens' reconnects")
    p.add_argument("--reconnect-every", type=float, default=10.0, help="minutes between the sender's drops")
    p.add_argument("--mark-every", type=float, default=5.0, help="minutes between RSS marks")
    p.add_argument("--warmup", type=float, default=10.0, help="minutes before RSS must stay flat")
    p.add_argument("--max-growth", type=float, default=5.0, help="percent RSS may grow after the warm-up")
    p.add_argument("--max-lag", type=float, default=10.0, help="seconds of lag allowed")
    p.add_argument("--model", default="base")
    p.add_argument("--work", type=Path, default=None, help="folder for the recording and transcripts")
    args = p.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="subtitler-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    for old in ("live", "reference"):  # a reused --work folder: this run's sessions only
        shutil.rmtree(work / old, ignore_errors=True)
    wav = work / "soak.wav"
    duration = build_speech(wav, args.minutes)
    print(f"recording: {duration / 60:.1f} min of speech with pauses ({wav}); sending at up to {args.speed:g}× "
          f"real time, {args.screens} screens, a dropped connection every {args.reconnect_every:g} min", flush=True)

    token = secrets.token_urlsafe(12)
    proc, port, server_lines = start_server(work / "live", token, args.model, args.screens)
    relay = Relay(port)
    audience = Audience(port, token, args.screens, args.churn)
    sent = {}

    def sender():
        out = io.StringIO()
        try:
            sent["code"] = send_audio(PacedFile(wav, args.speed), f"ws://127.0.0.1:{relay.port}", token, out=out)
        except Exception as e:  # said in the verdict
            sent["code"] = f"{type(e).__name__}: {e}"
        sent["out"] = out.getvalue()
    t_start = time.monotonic()
    feeder = threading.Thread(target=sender, daemon=True)
    feeder.start()

    marks: list[dict] = []
    rss_samples: list[tuple[float, float]] = []
    next_mark, next_cut, next_poll = 0.0, args.reconnect_every * 60, 0.0
    metrics_text, health = "", {}
    print(f"{'min':>6} {'RSS MB':>8} {'lag':>6} {'lag max':>8} {'audio s':>8} {'finals':>7} {'screens':>8} "
          f"{'reconn':>7}", flush=True)
    while feeder.is_alive():
        elapsed = time.monotonic() - t_start
        rss = rss_mb(proc.pid)
        rss_samples.append((elapsed, rss))
        if elapsed >= next_poll:  # the run ends with the sender's stream: keep the latest figures
            try:
                metrics_text, health = http_get(port, "/metrics"), json.loads(http_get(port, "/healthz"))
            except OSError:
                pass
            next_poll = elapsed + 5.0
        if elapsed >= next_cut:
            relay.cut()
            next_cut += args.reconnect_every * 60
        if elapsed >= next_mark:
            st = audience.statuses[-1] if audience.statuses else {}
            mark = {"minute": round(elapsed / 60, 1), "rss_mb": round(rss, 1), "lag": st.get("lag"),
                    "lag_max": max(audience.lags, default=0.0), "audio_s": st.get("audio_seconds"),
                    "finals": len(audience.steady_finals), "screens": audience.connected,
                    "reconnects": audience.reconnects}
            marks.append(mark)
            print(f"{mark['minute']:6.1f} {mark['rss_mb']:8.1f} {mark['lag'] or 0:6.2f} {mark['lag_max']:8.2f} "
                  f"{mark['audio_s'] or 0:8.1f} {mark['finals']:7d} {mark['screens']:8d} {mark['reconnects']:7d}",
                  flush=True)
            next_mark += args.mark_every * 60
        time.sleep(1.0)
    wall = time.monotonic() - t_start
    final_rss = rss_samples[-1][1]
    screen_failures = audience.failures  # while the session ran (the server ends with the stream)
    try:  # `run` ends once the sender's stream is finished and flushed
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    audience.stop()
    ended = next((line for line in server_lines if line.startswith("Stopped after")), "")
    skipped = re.search(r"(\d+) utterances skipped", ended)
    dropped = re.search(r"(\d+) audio blocks dropped", ended)
    folders = sorted(d for d in (work / "live").iterdir() if d.is_dir())
    live = [c for f in folders for c in load_jsonl(f / "captions.jsonl")]

    print("transcribing the same recording offline (the baseline)…", flush=True)
    reference, ref_s = transcribe(wav, work / "reference", args.model)
    lost = lost_captions(reference, live)
    live_finals = [c for c in live if c.get("text")]
    screen_lost = len(live_finals) - len(audience.steady_finals)
    ref_words = " ".join(c["text"] for c in reference)
    live_words = " ".join(c["text"] for c in live_finals)
    wer_vs_baseline = corpus.wer([ref_words], [live_words]) if ref_words else None

    # RSS moves by a few percent with the allocator from second to second: growth is the peak of
    # the last mark interval over the peak of the first one after the warm-up, not one sample's.
    window = args.mark_every * 60
    warm = [r for t, r in rss_samples if t >= args.warmup * 60]
    first = [r for t, r in rss_samples if args.warmup * 60 <= t < args.warmup * 60 + window]
    last = [r for t, r in rss_samples if t >= wall - window]
    base = max(first) if first else None
    growth = (max(last) - base) / base * 100 if first and last and wall - window > args.warmup * 60 else None
    lag_max = max(audience.lags, default=0.0)
    summary = {
        "minutes_of_speech": round(duration / 60, 2), "wall_minutes": round(wall / 60, 2),
        "speed": round(duration / wall, 2), "sender_exit": sent.get("code"), "relay_cuts": relay.cuts,
        "rss_mb": {"start": round(rss_samples[0][1], 1), "peak_first_interval_after_warmup": round(base, 1) if base else None,
                   "peak_last_interval": round(max(last), 1) if last else None,
                   "max_after_warmup": round(max(warm), 1) if warm else None, "end": round(final_rss, 1)},
        "rss_growth_pct": round(growth, 2) if growth is not None else None,
        "lag_max": round(lag_max, 2),
        "lag_p95": round(sorted(audience.lags)[int(0.95 * (len(audience.lags) - 1))], 2) if audience.lags else None,
        "captions_live": len(live_finals), "captions_baseline": sum(1 for c in reference if c.get("text")),
        "captions_lost": len(lost), "steady_screen_missed": screen_lost, "wer_vs_baseline": wer_vs_baseline,
        "screens": args.screens, "screen_connects": audience.connects, "screen_failures": screen_failures,
        "screen_errors": dict(sorted(audience.errors.items(), key=lambda kv: -kv[1])[:5]),
        "slow_closes": audience.slow_closes,
        "skipped_utterances": int(skipped.group(1)) if skipped else metric(metrics_text, "subtitler_skipped_utterances_total"),
        "dropped_blocks": int(dropped.group(1)) if dropped else metric(metrics_text, "subtitler_audio_dropped_blocks_total"),
        "server_summary": ended,
        "transcript_lost": metric(metrics_text, "subtitler_transcript_captions_lost_total"),
        "health": health.get("status"), "baseline_seconds": round(ref_s, 1), "marks": marks,
    }
    failures = []
    if growth is not None and growth > args.max_growth:
        failures.append(f"RSS grew {growth:.1f} % after the {args.warmup:g}-minute mark (limit {args.max_growth:g} %)")
    if growth is None:
        failures.append(f"the run was shorter than the {args.warmup:g}-minute warm-up and two mark intervals: "
                        f"no RSS verdict")
    if lost:
        failures.append(f"{len(lost)} caption(s) of the baseline missing from the live transcript, e.g. "
                        f"{lost[0]['start']:.1f}–{lost[0]['end']:.1f} s {lost[0]['text'][:60]!r}")
    if screen_lost:
        failures.append(f"the steady screen missed {screen_lost} final(s) that the transcript has")
    if lag_max > args.max_lag:
        failures.append(f"lag reached {lag_max:.1f} s (limit {args.max_lag:g} s)")
    if sent.get("code") != 0:
        failures.append(f"the sender ended with {sent.get('code')}: {sent.get('out', '')[-300:]}")
    if summary["skipped_utterances"] or summary["dropped_blocks"] or summary["transcript_lost"]:
        failures.append("audio or captions were skipped, dropped or not written (see the summary)")
    print(f"\nRSS {summary['rss_mb']}, growth after warm-up {summary['rss_growth_pct']} %; lag max {lag_max:.2f} s; "
          f"{len(live_finals)} live captions vs {summary['captions_baseline']} offline, {len(lost)} lost; "
          f"steady screen missed {screen_lost}; {audience.connects} screen connections, {screen_failures} failed; "
          f"relay cuts {relay.cuts}")
    (work / "rss.json").write_text(json.dumps([[round(t, 1), round(r, 1)] for t, r in rss_samples]))
    print("FAIL: " + "; ".join(failures) if failures else "PASS")
    print(json.dumps(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
