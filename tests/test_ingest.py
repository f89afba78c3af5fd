"""Audio ingest end to end: ``subtitler send`` into ``subtitler run --input remote``, both the real
commands in subprocesses, with the real ``base`` model and real speech (4 Asterisk prompts, 15.2 s,
``bench/corpus.build_stream``). A real WebSocket viewer and console watch the session on loopback.

Measured on the 2-core dev box (base, int8, CPU), for the bounds below:
  * --realtime: the sender takes 16 s for the 15.2 s stream; all 4 captions reach the viewer
    and the files (WER 0.00, bound 0.15); the server exits ~1 s after the sender's end.
  * as fast as the server decodes: ~6-8 s for the same stream; nothing dropped or skipped.
  * a wrong token is refused in ~1 s (exit 2).
  * `send --mic` in a virtual room (PulseAudio null sink, tests/pulse.py): the 4 prompts reach
    the files; Ctrl-C on the sender ends the session within ~2 s.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from corpus import build_stream, wer
from pulse import VirtualRoom, pulse_available

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ingest-test-token"
START_TIMEOUT = 180.0  # model load on a busy 2-core box
WER_BOUND = 0.15

pytestmark = pytest.mark.slow


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["HF_HUB_OFFLINE"] = "1"
    e["PYTHONUNBUFFERED"] = "1"
    e.pop("SUBTITLER_TOKEN", None)
    return e


def subtitler(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "subtitler", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout)


class Run:
    """``subtitler run --input remote`` in the background, on a free loopback port."""

    def __init__(self, cwd: Path, environ: dict | None = None):
        self.cwd, self.err = cwd, cwd / "run.err"
        with open(cwd / "run.out", "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "subtitler", "run", "--input", "remote", "--host", "127.0.0.1",
                 "--port", "0", "--token", TOKEN, "--out", "out", "--set", f"asr.models_dir={ROOT / 'models'}",
                 "--set", "asr.language=en"],
                cwd=cwd, env=environ or env(), stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        self.wait_for("Listening to remote audio")
        m = re.search(r"screens:  http://127\.0\.0\.1:(\d+)/overlay\.html", self.stderr())
        assert m, self.stderr()
        self.port = int(m.group(1))
        assert f"console:  http://127.0.0.1:{self.port}/console.html#token={TOKEN}" in self.stderr()
        assert f"token:    {TOKEN}" in self.stderr()

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if self.proc.poll() is not None:
                pytest.fail(f"subtitler run exited ({self.proc.returncode}) before {text!r}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} within {timeout} s:\n{self.stderr()}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Viewer(threading.Thread):
    """A screen: records every event until the server closes the connection."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.events, self.close_code = port, [], None
        self.ready = threading.Event()

    def run(self) -> None:
        with connect(f"ws://127.0.0.1:{self.port}/ws/view", open_timeout=10) as ws:
            ws.send(json.dumps({"type": "hello", "langs": ["*"]}))
            try:
                for message in ws:
                    self.events.append((time.monotonic(), json.loads(message)))
                    self.ready.set()
            except ConnectionClosed:
                pass
            self.close_code = ws.close_code

    def finals(self) -> list[dict]:
        return [e for _, e in self.events if e["type"] == "caption" and e["kind"] == "final" and e["text"]]


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> dict:
    """4 prompts, 15.2 s: 'To leave the conference', 'You are now muted', …"""
    return build_stream(tmp_path_factory.mktemp("ingest") / "short.wav", count=4, seed=1)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def finish(run: Run, sent: subprocess.CompletedProcess, viewer: Viewer, stream: dict) -> list[dict]:
    """The session ends by itself after the sender's end; transcripts and viewer agree with the truth."""
    assert sent.returncode == 0, sent.stderr
    assert "the server finished the last caption" in sent.stderr, sent.stderr
    rc = run.proc.wait(timeout=60)
    stderr = run.stderr()
    assert rc == 0 and "Traceback" not in stderr, stderr
    m = re.search(r"Stopped after ([\d.]+) s of audio: (\d+) captions; .* (\d+) audio blocks dropped, "
                  r"(\d+) utterances skipped", stderr)
    assert m, stderr
    assert abs(float(m.group(1)) - stream["duration"]) < 0.1, (m.group(1), stream["duration"])
    assert m.group(3) == "0" and m.group(4) == "0", stderr  # nothing lost on the way
    folder = next((run.cwd / "out").iterdir())
    records = read_jsonl(folder / "captions.jsonl")
    truth = [u["text"] for u in stream["utterances"]]
    assert len(records) == len(truth) == int(m.group(2)), records
    assert wer([" ".join(truth)], [" ".join(r["text"] for r in records)]) <= WER_BOUND, records
    assert (folder / "captions.srt").read_text().count(" --> ") >= len(records)
    viewer.join(30)
    assert not viewer.is_alive()
    assert [e["text"] for e in viewer.finals()] == [r["text"] for r in records]  # the screen saw them all
    assert viewer.close_code == 1001  # "session ended"
    return records


def test_send_realtime_into_run_remote_reaches_viewer_and_files(stream, tmp_path):
    run = Run(tmp_path)
    try:
        viewer = Viewer(run.port)
        viewer.start()
        assert viewer.ready.wait(10)
        welcome = viewer.events[0][1]
        assert welcome["type"] == "welcome" and welcome["protocol"] == 1

        # The console can reach the session, and only with the token.
        with connect(f"ws://127.0.0.1:{run.port}/ws/control") as ws:
            ws.send(json.dumps({"type": "auth", "token": TOKEN}))
            ok = json.loads(ws.recv(10))
            assert ok["command"] == "auth" and "en" in ok["source_languages"] and "zh" in ok["source_languages"]
            ws.send(json.dumps({"type": "set_language", "language": "xx"}))
            reply = json.loads(ws.recv(10))
            while reply["type"] == "status":
                reply = json.loads(ws.recv(10))
            assert reply["code"] == "bad_language" and "'xx' is not a language" in reply["message"]

        # A wrong token is refused: one clear error, exit 2, no audio reaches the session.
        t0 = time.monotonic()
        bad = subtitler("send", stream["wav"], "--server", f"ws://127.0.0.1:{run.port}", "--token", "wrong",
                        cwd=tmp_path, timeout=60)
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.count("subtitler: error:") == 1 and "Traceback" not in bad.stderr
        assert "the server refused the stream: wrong or missing token" in bad.stderr
        assert time.monotonic() - t0 < 30

        # The real stream, paced as if spoken; metrics are scraped while it plays.
        metrics: dict = {}

        def scrape():
            while not viewer.finals() and viewer.is_alive():
                time.sleep(0.05)
            conn = http.client.HTTPConnection("127.0.0.1", run.port, timeout=10)
            conn.request("GET", "/metrics")
            metrics["text"] = conn.getresponse().read().decode()

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        t0 = time.monotonic()
        sent = subtitler("send", stream["wav"], "--realtime", "--server", f"ws://127.0.0.1:{run.port}",
                         "--token", TOKEN, cwd=tmp_path, timeout=300)
        took = time.monotonic() - t0
        assert took >= stream["duration"] - 0.5, took  # it really was paced
        finish(run, sent, viewer, stream)
        scraper.join(10)
        text = metrics.get("text", "")
        room = r'\{room="[a-z0-9_-]+"'  # every per-room metric is labelled with its room
        assert re.search(rf'^subtitler_captions_total{room},kind="final"\}} [1-9]', text, re.M), text
        assert re.search(rf"^subtitler_final_latency_seconds_count{room}\}} [1-9]", text, re.M), text
        assert re.search(rf"^subtitler_audio_received_seconds_total{room}\}} [1-9]", text, re.M), text
        assert re.search(rf"^subtitler_viewers{room}\}} 1$", text, re.M), text
        statuses = [e for _, e in viewer.events if e["type"] == "status"]
        assert statuses and any(s["sender"] is True for s in statuses)
        latencies = [s["final_latency_p50"] for s in statuses if s["final_latency_p50"] is not None]
        assert latencies and 0 < latencies[-1] < 10, latencies  # end of speech → final, on 2 CPU cores
    finally:
        run.close()


def test_send_as_fast_as_the_server_decodes_loses_nothing(stream, tmp_path):
    run = Run(tmp_path)
    try:
        viewer = Viewer(run.port)
        viewer.start()
        assert viewer.ready.wait(10)
        sent = subtitler("send", stream["wav"], "--server", f"127.0.0.1:{run.port}", "--token", TOKEN,
                         cwd=tmp_path, timeout=300)
        records = finish(run, sent, viewer, stream)
        assert records
    finally:
        run.close()


def test_send_mic_into_run_remote(stream, tmp_path):
    reason = pulse_available()
    if reason:
        pytest.skip(f"no virtual microphone: {reason}")
    truth = stream["utterances"]
    with VirtualRoom() as room:
        room_env = {**env(), **room.env}
        run = Run(tmp_path, room_env)
        viewer = Viewer(run.port)
        viewer.start()
        err = tmp_path / "send.err"
        with open(err, "wb") as e:
            sender = subprocess.Popen([sys.executable, "-m", "subtitler", "send", "--mic", "pulse", "--server",
                                       f"ws://127.0.0.1:{run.port}", "--token", TOKEN],
                                      cwd=tmp_path, env=room_env, stdout=subprocess.DEVNULL, stderr=e,
                                      stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while "Sending microphone 'pulse'" not in err.read_text() and time.monotonic() < deadline:
                assert sender.poll() is None, err.read_text()
                time.sleep(0.05)
            time.sleep(0.5)  # room tone first, and the sender's first frames on their way
            room.play(stream["wav"])
            deadline = time.monotonic() + 90
            while len(viewer.finals()) < len(truth) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sender.poll() is None, err.read_text()
            t_sig = time.monotonic()
            sender.send_signal(signal.SIGINT)  # Ctrl-C: end of stream, the server finishes and confirms
            assert sender.wait(timeout=60) == 0, err.read_text()
            stop_took = time.monotonic() - t_sig
            rc = run.proc.wait(timeout=60)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
            run.close()
    sent = err.read_text()
    assert "stopping: sending the end of the stream" in sent and "the server finished the last caption" in sent
    assert stop_took < 30, stop_took
    assert rc == 0, run.stderr()
    folder = next((tmp_path / "out").iterdir())
    records = read_jsonl(folder / "captions.jsonl")
    assert len(records) == len(truth), records
    assert wer([" ".join(u["text"] for u in truth)], [" ".join(r["text"] for r in records)]) <= WER_BOUND
    viewer.join(30)
    assert [e["text"] for e in viewer.finals()] == [r["text"] for r in records]
