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
    proc = subprocess.Popen([sys.executable, "-m", "subtitler", "serve", "--rooms", "hall,forum", "--port", "0",
                             "--token", "venue-token-1", "--out", str(out),
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


def test_rooms_share_the_decoder_finals_first(asr_base, talks):
    """Two live rooms on one host: both get every final and partials (timing is bench/rooms.py's)."""
    host = Host(asr_base)
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
