"""A venue on the real model: rooms built through ``Host``/``Room``/``Venue``, and the real
``subtitler serve`` process fed by two real ``subtitler send`` clients at once.

* ``subtitler serve --rooms hall,forum``: two rooms from one model on one port; each room's
  screen gets only its own speech (WER against its own prompts, none of the other's words),
  both rooms see partials and finals (the decoder is shared fairly), each room's transcripts
  land in ``OUT/NAME/<date_time>/``, a room's token feeds only its room.
* A room whose decodes fail (the model raises on its audio) stops with its error; the other
  room on the same host goes on and finishes its captions.
* A room closed at run time: its screens are closed, the other room keeps captioning.
* Capacity: a room beyond ``server.max_rooms`` is refused with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

import corpus
from subtitler.audio import FileSource, PushSource
from subtitler.config import Config
from subtitler.host import CapacityError, Host
from subtitler.room import Room
from subtitler.transcripts import load_jsonl

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def env() -> dict[str, str]:
    e = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    e.pop("PULSE_SERVER", None)
    return e


@pytest.fixture(scope="module")
def talks(tmp_path_factory) -> list[dict]:
    """Two different English streams of 5 prompts each (different prompts per room)."""
    d = tmp_path_factory.mktemp("venue")
    a = corpus.build_stream(d / "hall.wav", count=5, seed=11, gaps=(0.8, 1.5))
    names = {u["name"] for u in a["utterances"]}
    for seed in range(12, 40):  # a stream sharing no prompt with the first
        b = corpus.build_stream(d / "forum.wav", count=5, seed=seed, gaps=(0.8, 1.5))
        if not names & {u["name"] for u in b["utterances"]}:
            return [a, b]
    raise AssertionError("no disjoint prompt selection")


def words(truth: dict) -> set[str]:
    return set(corpus.normalize(" ".join(u["text"] for u in truth["utterances"])).split())


async def screen(url: str, got: list, stop: asyncio.Event) -> None:
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "hello", "langs": ["source"]}))
        while not stop.is_set():
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.3))
            except asyncio.TimeoutError:
                continue
            if msg.get("type") == "caption":
                got.append(msg)


def test_serve_two_rooms_from_one_model_fed_at_once(tmp_path, talks):
    out = tmp_path / "out"
    # tiny.en: two rooms of base outrun a 2-core CPU without AVX-512 (a base decode 1.1-1.5 s
    # there), where the host rightly drops partials first; this test is about two rooms, not capacity
    proc = subprocess.Popen([sys.executable, "-m", "subtitler", "serve", "--rooms", "hall,forum", "--port", "0",
                             "--token", "venue-token-1", "--out", str(out), "--model", "tiny.en",
                             "--set", f"asr.models_dir={ROOT / 'models'}"],
                            cwd=tmp_path, env=env(), stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("Captioning"):
                ready.set()
    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(120), "".join(lines)
        text = "".join(lines)
        assert text.count("Loading Whisper model") == 1  # one model for both rooms
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", text).group(1))
        tokens = dict(re.findall(r"room (\w+) \(.*?\n.*?token (\S+)", text))
        assert set(tokens) == {"hall", "forum"} and len(set(tokens.values())) == 2
        server = f"ws://127.0.0.1:{port}"

        # hall's token does not feed forum
        wrong = subprocess.run([sys.executable, "-m", "subtitler", "send", talks[1]["wav"], "--server", server,
                                "--room", "forum", "--token", tokens["hall"]],
                               env=env(), capture_output=True, text=True, timeout=60)
        assert wrong.returncode != 0 and "token" in wrong.stderr.lower()

        got = {"hall": [], "forum": []}
        stop = asyncio.Event()

        async def main() -> None:
            screens = [asyncio.ensure_future(screen(f"{server}/rooms/{n}/ws/view", got[n], stop)) for n in got]
            await asyncio.sleep(0.5)
            senders = [await asyncio.create_subprocess_exec(
                sys.executable, "-m", "subtitler", "send", t["wav"], "--realtime", "--server", server,
                "--room", n, "--token", tokens[n], env=env(),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
                for n, t in zip(("hall", "forum"), talks)]
            codes = await asyncio.wait_for(asyncio.gather(*(s.wait() for s in senders)), 120)
            assert codes == [0, 0], [(await s.stderr.read()).decode() for s in senders]
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*screens)
        asyncio.run(main())

        for (name, captions), truth, other in zip(got.items(), talks, reversed(talks)):
            finals = [c for c in captions if c["kind"] == "final" and c["text"]]
            assert any(c["kind"] == "partial" for c in captions), f"{name} saw no partial"
            said = " ".join(c["text"] for c in finals)
            refs = [" ".join(u["text"] for u in truth["utterances"])]
            assert corpus.wer(refs, [said]) <= 0.15, (name, said)
            foreign = set(corpus.normalize(said).split()) & (words(other) - words(truth))
            assert len(foreign) <= 1, f"{name} shows the other room's words: {foreign}"
            folder = next((out / name).iterdir())  # OUT/NAME/<date_time>/
            saved = load_jsonl(folder / "captions.jsonl")
            assert [c["text"] for c in saved] == [c["text"] for c in finals]
    finally:
        proc.send_signal(2)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, "".join(lines[-20:])


class CrashingASR:
    """The real model, except that it raises on the audio of rooms whose prompt says CRASH."""

    def __init__(self, asr):
        self.asr = asr

    def __getattr__(self, name):
        return getattr(self.asr, name)

    def decode(self, audio, **kw):
        if "CRASH" in kw.get("prompt", ""):
            raise RuntimeError("the model failed on this audio")
        return self.asr.decode(audio, **kw)


class Collect:
    def __init__(self):
        self.captions = []

    def on_caption(self, c):
        self.captions.append(c)


def test_a_crashing_room_does_not_disturb_the_other(asr_base, talks):
    host = Host(CrashingASR(asr_base))
    good_sink, bad_sink = Collect(), Collect()
    good = Room(host, "good", FileSource(talks[0]["wav"], realtime=True), [good_sink], Config())
    bad_config = Config().with_overrides({"asr.initial_prompt": "CRASH"})
    bad = Room(host, "bad", FileSource(talks[1]["wav"], realtime=True), [bad_sink], bad_config)
    errors = {}

    def run_bad() -> None:
        try:
            bad.run()
        except RuntimeError as e:
            errors["bad"] = str(e)
    t = threading.Thread(target=run_bad)
    t.start()
    result = good.run()
    t.join(30)
    host.stop()
    assert errors == {"bad": "the model failed on this audio"}
    assert not bad_sink.captions
    finals = [c for c in good_sink.captions if c.is_final and c.text]
    assert result.finals == len(finals) == len(talks[0]["utterances"])
    refs = [" ".join(u["text"] for u in talks[0]["utterances"])]
    assert corpus.wer(refs, [" ".join(c.text for c in finals)]) <= 0.15


def test_rooms_share_the_decoder_finals_first(asr_tiny_en, talks):
    """Two live rooms on one host: both get every final and partials (timing is bench/rooms.py's).
    tiny.en: two base rooms outrun a 2-core CPU without AVX-512, where partials rightly go first."""
    host = Host(asr_tiny_en)
    sinks = [Collect(), Collect()]
    rooms = [Room(host, f"r{i}", FileSource(t["wav"], realtime=True), [s], Config())
             for i, (t, s) in enumerate(zip(talks, sinks))]
    threads = [threading.Thread(target=r.run) for r in rooms]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    host.stop()
    for room, sink, truth in zip(rooms, sinks, talks):
        finals = [c for c in sink.captions if c.is_final and c.text]
        assert len(finals) == len(truth["utterances"]), room.name
        assert any(c.kind == "partial" for c in sink.captions), room.name
        refs = [" ".join(u["text"] for u in truth["utterances"])]
        assert corpus.wer(refs, [" ".join(c.text for c in finals)]) <= 0.15, room.name
    assert host.scheduler.chosen[0] + host.scheduler.chosen[1] >= sum(len(t["utterances"]) for t in talks)


def test_capacity_is_refused_with_what_to_do(asr_base):
    host = Host(asr_base, max_rooms=2)
    host.check_room_for(1)
    with pytest.raises(CapacityError, match=r"at capacity: 2 rooms open, at most 2 .*close a room"):
        host.check_room_for(2)
    auto = Host(asr_base)
    assert 1 <= auto.max_rooms <= 64 and auto.final_decode_s > 0


def test_a_room_stopped_at_run_time_leaves_the_other_running(asr_base, talks):
    host = Host(asr_base)
    sink_a, sink_b = Collect(), Collect()
    a = Room(host, "a", FileSource(talks[0]["wav"], realtime=True), [sink_a], Config())
    push = PushSource()
    b = Room(host, "b", push, [sink_b], Config())
    tb = threading.Thread(target=b.run)
    tb.start()
    ta = threading.Thread(target=a.run)
    ta.start()
    time.sleep(2.0)
    b.stop()  # the operator closes room b
    tb.join(10)
    assert not tb.is_alive()
    ta.join(120)
    host.stop()
    finals = [c for c in sink_a.captions if c.is_final and c.text]
    assert len(finals) == len(talks[0]["utterances"])


# -- reliability (issue 11): a full disk, skipped speech, a vanished sender, a slow sink ------------

import contextlib  # noqa: E402
import http.client  # noqa: E402

import numpy as np  # noqa: E402
from websockets.sync.client import connect as connect_sync  # noqa: E402

import fulldisk  # noqa: E402
from subtitler.server import Server  # noqa: E402
from subtitler.venue import Venue  # noqa: E402

TOKEN = "reliability-token-1"


@contextlib.contextmanager
def remote_room(asr, out_dir: Path, **overrides):
    """`subtitler run --input remote` in this process: the server, and a venue of one remote room
    (sessions repeat: the transcript folder is made at the first caption) on the shared model."""
    config = Config().with_overrides({"audio.input": "remote", "server.host": "127.0.0.1", "server.port": 0,
                                      "server.token": TOKEN, **overrides})
    server = Server(config.server, live=True).start()
    venue = Venue(Host(asr, config=config), server, config, out_dir=out_dir, rooms_in_folders=False)
    runner = venue.declare("main", config, default=True, token=TOKEN)
    venue.prepare(runner)
    runner.start()
    try:
        yield server, runner
    finally:
        venue.stop()
        server.stop()
        venue.host.stop()


class Listener:
    """A screen (/ws/view) or console (/ws/control) in a thread of its own, keeping what it got."""

    def __init__(self, server: Server, path: str, first: dict):
        self.ws = connect_sync(f"ws://127.0.0.1:{server.port}{path}").__enter__()  # closed by close()
        self.ws.send(json.dumps(first))
        self.messages: list[dict] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for m in self.ws:
                self.messages.append(json.loads(m))

    def finals(self) -> list[str]:
        return [m["text"] for m in list(self.messages)
                if m.get("type") == "caption" and m.get("kind") == "final" and m.get("text")]

    def statuses(self) -> list[dict]:
        return [m for m in list(self.messages) if m.get("type") == "status"]

    def close(self) -> None:
        self.ws.close()


def screen_of(server: Server) -> Listener:
    return Listener(server, "/ws/view", {"type": "hello", "langs": ["source"]})


def console_of(server: Server) -> Listener:
    return Listener(server, "/ws/control", {"type": "auth", "token": TOKEN})


def get(server: Server, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path)
    return conn.getresponse().read().decode()


def metric(server: Server, name: str, room: str = "main") -> float | None:
    for line in get(server, "/metrics").splitlines():
        if line.startswith(f'{name}{{room="{room}"}} '):
            return float(line.split()[-1])
    return None


def until(what: str, predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pcm(truth: dict) -> np.ndarray:
    x, rate = corpus._read_wav_int16(Path(truth["wav"]))
    assert rate == 16000
    return x


def push_paced(source: PushSource, audio: np.ndarray, speed: float, stop: threading.Event | None = None) -> None:
    """Push 20 ms blocks at ``speed`` × real time."""
    t0 = time.monotonic()
    for i in range(0, audio.size, 320):
        if stop is not None and stop.is_set():
            return
        source.push(audio[i:i + 320])
        due = t0 + (i + 320) / 16000 / speed
        if due > time.monotonic():
            time.sleep(max(0.0, due - time.monotonic()))


def test_a_full_disk_mid_session_screens_go_on_and_the_transcript_catches_up(asr_base, talks, tmp_path, monkeypatch):
    disk = fulldisk.full_disk(tmp_path / "disk", monkeypatch)
    try:
        with remote_room(asr_base, disk.path) as (server, runner):
            until("the room to run", lambda: runner.room is not None and runner.link.controls is not None)
            screen, console = screen_of(server), console_of(server)
            disk.fill()  # full before the session's folder and files are even made
            source = runner.source
            feeder = threading.Thread(target=push_paced, args=(source, pcm(talks[0]), 2.0))
            feeder.start()
            health = until("/healthz to say the transcripts fail",
                           lambda: (h := json.loads(get(server, "/healthz")))["status"] == "degraded" and h)
            assert any("No space left on device" in p for p in health["problems"]), health
            until("two finals on the screen while the disk is full", lambda: len(screen.finals()) >= 2)
            assert metric(server, "subtitler_transcripts_ok") == 0
            assert metric(server, "subtitler_transcript_write_errors_total") >= 1
            assert metric(server, "subtitler_transcript_captions_pending") >= 1
            failing = until("the console to show it", lambda: [s for s in console.statuses()
                                                                if s.get("transcripts") and not s["transcripts"]["ok"]])
            assert "No space left on device" in failing[-1]["transcripts"]["error"]
            disk.free()
            feeder.join()
            source.end()
            until("the session to end", lambda: runner.results, timeout=120)
            assert json.loads(get(server, "/healthz"))["status"] == "ok"
            assert metric(server, "subtitler_transcripts_ok") == 1
            assert metric(server, "subtitler_transcript_captions_lost_total") == 0
            time.sleep(0.5)
            shown = screen.finals()
            screen.close()
            console.close()
        folders = [p for p in disk.path.iterdir() if p.is_dir()]
        assert len(folders) == 1
        saved = load_jsonl(folders[0] / "captions.jsonl")
        assert [c["text"] for c in saved if c["text"]] == shown and len(shown) == len(talks[0]["utterances"])
        lines = (folders[0] / "captions.jsonl").read_bytes().split(b"\n")
        assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])  # not one broken line
    finally:
        disk.close()


def test_skipped_speech_shows_in_metrics_and_status_as_it_happens(asr_base, talks, tmp_path):
    audio = np.concatenate([pcm(talks[0]), pcm(talks[1]), pcm(talks[0])])
    with remote_room(asr_base, tmp_path / "out", **{"asr.max_lag_s": 5.0, "audio.queue_seconds": 300.0}) \
            as (server, runner):
        until("the room to run", lambda: runner.room is not None and runner.link.controls is not None)
        console = console_of(server)
        push_paced(runner.source, audio, speed=50.0)  # far faster than it can be decoded, as if live
        skipped = until("skips in /metrics while the session runs",
                        lambda: metric(server, "subtitler_skipped_utterances_total"), timeout=60)
        assert not runner.results  # still running: shown as it happens, not in a summary at the end
        assert metric(server, "subtitler_skipped_audio_seconds_total") > 0
        status = until("skips in the console's status", lambda: [s for s in console.statuses()
                                                                 if s.get("skipped_utterances")])
        assert status[-1]["skipped_seconds"] > 0
        runner.source.end()
        result = until("the session to end", lambda: runner.results, timeout=180)[0]
        assert result.skipped_utterances >= skipped and result.skipped_seconds > 0
        until("the last count in /metrics",
              lambda: metric(server, "subtitler_skipped_utterances_total") == result.skipped_utterances)
        console.close()
        # ... and in the transcript, where it lies: a JSONL line and a TXT line per skipped stretch
        folder, = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]  # the session that ended
        marks = [r for r in load_jsonl(folder / "captions.jsonl", raw=True) if r.get("kind") == "skipped"]
        assert marks and sum(m["seconds"] for m in marks) == pytest.approx(result.skipped_seconds, abs=0.01)
        assert all(m["start"] < m["end"] for m in marks)
        skipped_lines = [line for line in (folder / "captions.txt").read_text("utf-8").splitlines()
                         if "[not transcribed:" in line]
        assert len(skipped_lines) == len(marks)
        assert all("kind" not in r for r in load_jsonl(folder / "captions.jsonl"))  # captions only


def test_a_vanished_sender_leaves_a_true_status_and_its_last_words_are_captioned(asr_base, talks, tmp_path):
    truth = talks[0]
    second = truth["utterances"][1]
    audio = pcm(truth)[: int((second["start"] + 0.7 * (second["end"] - second["start"])) * 16000)]
    with remote_room(asr_base, tmp_path / "out") as (server, runner):
        until("the room to run", lambda: runner.room is not None and runner.link.controls is not None)
        screen, console = screen_of(server), console_of(server)
        sender = connect_sync(f"ws://127.0.0.1:{server.port}/ws/audio").__enter__()
        sender.send(json.dumps({"type": "auth", "token": TOKEN, "realtime": True}))
        assert json.loads(sender.recv(5))["type"] == "ok"
        for i in range(0, audio.size, 1600):
            sender.send(audio[i:i + 1600].tobytes())
        until("the speech to be heard", lambda: runner.room.stats().in_speech and
              runner.room.stats().audio_seconds >= audio.size / 16000 - 0.1)
        sender.socket.close()  # the network goes: no end, no close frame
        gone = time.monotonic()
        until("the cut utterance's final", lambda: len(screen.finals()) >= 2, timeout=30)
        settled = until("a status that is true again", lambda: [
            s for s in console.statuses() if s["sender"] is False and not s["in_speech"] and s["lag"] <= 0.5
            and (s.get("audio_idle_s") or 0) >= 2.0], timeout=30)
        assert time.monotonic() - gone < 20
        time.sleep(2.5)
        later = console.statuses()[-1]
        assert later["audio_idle_s"] > settled[-1]["audio_idle_s"]  # the status goes on, not frozen
        assert metric(server, "subtitler_audio_idle_seconds") >= 2
        said = corpus.normalize(screen.finals()[1])
        assert set(said.split()) & set(corpus.normalize(second["text"]).split()), said
        screen.close()
        console.close()


class Gate:
    """A sink that stops at the first final it is handed until ``release`` is set."""

    accepts_translations = True

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()
        self.captions = []

    def on_caption(self, c):
        if c.is_final and c.text and not self.entered.is_set():
            self.entered.set()
            self.release.wait(60)
        self.captions.append(c)


def test_a_stuck_sink_holds_up_neither_capture_nor_decoding(asr_base, talks):
    host = Host(asr_base)
    gate, after = Gate(), Collect()
    source = PushSource(queue_seconds=120)
    room = Room(host, "stuck", source, [gate, after], Config())
    runner = threading.Thread(target=room.run)
    runner.start()
    feeder = threading.Thread(target=push_paced, args=(source, pcm(talks[0]), 3.0))
    feeder.start()
    try:
        assert gate.entered.wait(60), "no final reached the sinks"
        stats_took = []
        for _ in range(3):
            t0 = time.monotonic()
            result = {}
            t = threading.Thread(target=lambda: result.setdefault("s", room.stats()))
            t.start()
            t.join(2.0)
            assert "s" in result, "stats() waited for the stuck sink (the room's lock is held)"
            stats_took.append(time.monotonic() - t0)
            time.sleep(0.3)
        heard, decodes = room.stats().audio_seconds, room.decodes
        time.sleep(3.0)
        assert room.stats().audio_seconds > heard + 2.0  # capture goes on
        assert room.decodes > decodes  # and so does decoding
        assert max(stats_took) < 0.5
    finally:
        gate.release.set()
        feeder.join()
        source.end()
        runner.join(120)
        host.stop()
    finals = [c for c in after.captions if c.is_final and c.text]
    assert len(finals) == len(talks[0]["utterances"])
    seqs = [c.seq for c in after.captions]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # in order, once each
    assert [c.seq for c in gate.captions] == seqs
