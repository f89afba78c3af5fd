"""`subtitler send` against the real server on loopback: nothing lost, nothing doubled, and a
summary that says what the server confirmed (issue 11, point 1).

The sender is the real command in a subprocess (or ``send_audio`` in a thread where the test
reaches into the connection); the server is the real ``Server`` in this process, its room's
``PushSource`` drained by a thread that plays the decoder at a fixed pace (N× real time), as
the session would. The server's keepalive is short here (``client_timeout_s = 1``: a ping a
second, given up after 6 s), so a sender held back longer than that shows whether its
connection stays alive.

Measured on the 2-core dev box, for the bounds below:
  * 60 s of audio sent unpaced into a decoder at 3× real time: held back ~20 s, no reconnect,
    every sample in order; the server never held more than the 4 s window unread.
  * the same with the connection cut 3 times: 3 resumes, every sample exactly once.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from subtitler.audio import AudioSource, FileSource, PushSource
from subtitler.ingest import WINDOW_S
from subtitler.send import send_audio

from test_server import TOKEN, Controls, recv_json, room, running, wait_until, ws_url

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def write_wav(path: Path, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    audio = (np.sin(np.arange(n) * 0.03) * 6000 + rng.normal(0, 800, n)).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(audio.tobytes())
    return audio


class Decoder(threading.Thread):
    """The session's place: takes the room's audio at ``speed``× real time and reports it."""

    def __init__(self, server, speed: float, queue_seconds: float = 30.0):
        super().__init__(daemon=True)
        self.source, self.controls, self.speed = PushSource(queue_seconds), Controls(), speed
        self.blocks: list[np.ndarray] = []
        self.max_unread = 0  # bytes the server had read from the sender but not yet taken
        self.ingest = room(server).ingest
        room(server).attach_ingest(self.source, queue_seconds)
        room(server).attach(self.controls)

    def run(self):
        for block in self.source:
            self.blocks.append(block)
            self.controls.audio_seconds += len(block) / SR
            self.max_unread = max(self.max_unread, len(self.ingest._pending))
            time.sleep(len(block) / SR / self.speed)

    def audio(self) -> np.ndarray:
        return np.concatenate(self.blocks)


def finish(server, decoder: Decoder) -> None:
    """What the session does at the sender's end: drain the source, flush, answer ``end``."""
    wait_until(lambda: room(server).ingest.ended, timeout=120, what="the end of the stream")
    decoder.join(60)
    room(server).finish_ingest()


def send_command(wav: Path, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "subtitler", "send", str(wav), "--server",
                             f"ws://127.0.0.1:{port}", "--token", TOKEN, *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_unpaced_send_held_back_past_the_keepalive_loses_nothing(tmp_path):
    """Issue 11.1: the server held the sender back past its ping timeout, the connection died
    (1011), in-flight audio was lost without a word, and the summary claimed all was sent."""
    wav = tmp_path / "talk.wav"
    audio = write_wav(wav, 60.0)
    with running(client_timeout_s=1.0) as server:
        decoder = Decoder(server, speed=3.0)
        decoder.start()
        t0 = time.monotonic()
        sender = send_command(wav, server.port)
        finish(server, decoder)
        out, _ = sender.communicate(timeout=60)
        took = time.monotonic() - t0
        print(out)
        assert sender.returncode == 0, out
        assert "reconnect" not in out and room(server).ingest.resumes == 0, out  # the connection held
        assert "Sent 60.0 s of audio" in out and "all of it received by the server" in out, out
        received = decoder.audio()
        assert len(received) == len(audio) and np.array_equal(received, audio)  # every sample, in order
        assert took > 60.0 / 3.0 * 0.8  # it was held back to the decoder's pace…
        assert decoder.max_unread <= (WINDOW_S + 0.1) * SR * 2  # …by the window, not by TCP
        print(f"held back {took:.1f} s; at most {decoder.max_unread / 2 / SR:.2f} s read and not yet taken")


def test_a_sender_cut_off_three_times_resends_exactly_what_the_server_had_not_taken(tmp_path):
    wav = tmp_path / "talk.wav"
    audio = write_wav(wav, 30.0, seed=1)
    with running(client_timeout_s=1.0) as server:
        decoder = Decoder(server, speed=3.0)
        decoder.start()
        out, result = io.StringIO(), {}

        def send():
            result["rc"] = send_audio(FileSource(wav), ws_url(server, "/ws/audio"), TOKEN, out=out)

        sender = threading.Thread(target=send)
        sender.start()
        for k in range(3):  # the network goes away (no close frame), three times mid-stream
            wait_until(lambda: room(server).ingest.sender is not None and
                       room(server).ingest.pushed_seconds > 5.0 + 6.0 * k, timeout=30, what="audio to arrive")
            server.call(lambda: room(server).ingest.sender.transport.abort())
            wait_until(lambda: room(server).ingest.resumes == k + 1, timeout=30, what="the sender to come back")
        finish(server, decoder)
        sender.join(60)
        text = out.getvalue()
        assert result.get("rc") == 0, text
        assert text.count("reconnected; the server has") == 3 and "resent after reconnecting" in text, text
        assert "all of it received by the server" in text, text
        received = decoder.audio()
        assert len(received) == len(audio) and np.array_equal(received, audio)  # nothing lost, nothing twice


class OverflowingMicrophone(AudioSource):
    """A live source whose capture queue overflowed once (as ``MicrophoneSource`` counts it in
    ``dropped_blocks`` when the sender could not keep up): 1 s lost after 2 s of audio."""

    realtime, block, rate = True, SR // 50, SR

    def __init__(self, audio: np.ndarray):
        super().__init__()
        self.audio, self.description = audio, "test microphone"

    def __iter__(self):
        for i in range(0, len(self.audio), self.block):
            if i == 2 * SR:
                self.dropped_blocks += 50
            yield self.audio[i:i + self.block]


def test_audio_lost_before_sending_is_a_gap_counted_shown_and_handed_to_the_room(tmp_path):
    audio = (np.random.default_rng(2).normal(0, 1000, 4 * SR)).astype(np.int16)
    with running() as server:
        decoder = Decoder(server, speed=50.0)
        decoder.start()
        gaps: list[tuple] = []
        room(server).on_audio_gap(lambda at, seconds, reason: gaps.append((at, seconds, reason)))
        out, result = io.StringIO(), {}

        def send():
            result["rc"] = send_audio(OverflowingMicrophone(audio), ws_url(server, "/ws/audio"), TOKEN, out=out)

        sender = threading.Thread(target=send)
        sender.start()
        wait_until(lambda: room(server).ingest.gaps == 1, what="the gap")
        status = room(server).status()
        assert status["audio_gaps"] == 1 and status["audio_gap_seconds"] == 1.0 and status["dropped_audio"] >= 50
        finish(server, decoder)
        sender.join(30)
        assert result.get("rc") == 0, out.getvalue()
        assert "1.0 s of audio were lost before they could be sent (1 gap" in out.getvalue(), out.getvalue()
        (at, seconds, reason), = gaps
        assert at == pytest.approx(2.0, abs=0.05) and seconds == 1.0 and "overflowed" in reason
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        assert 'subtitler_audio_gaps_total{room="main"} 1' in metrics
        assert 'subtitler_audio_gap_seconds_total{room="main"} 1' in metrics


def test_gap_and_ack_messages_on_the_wire():
    with running() as server:
        decoder = Decoder(server, speed=100.0)
        decoder.start()

        async def main():
            async with connect(ws_url(server, "/ws/audio")) as ws:
                await ws.send(json.dumps({"type": "auth", "token": TOKEN, "realtime": False}))
                ok = await recv_json(ws)
                assert ok == {"type": "ok", "command": "auth", "session": room(server).session_id, "received": 0,
                              "window": WINDOW_S}
                await ws.send(np.zeros(SR, np.int16).tobytes())  # 1 s
                acks = []
                while not acks or acks[-1] < SR:
                    msg = await recv_json(ws)
                    assert msg["type"] == "ack", msg
                    acks.append(msg["received"])
                assert acks == sorted(acks) and acks[-1] == SR  # acknowledged as it was taken
                for bad in ({"type": "gap"}, {"type": "gap", "seconds": -1}, {"type": "gap", "seconds": "x"},
                            {"type": "gap", "seconds": float("inf")}):
                    await ws.send(json.dumps(bad))
                    assert (await recv_json(ws))["code"] == "bad_message", bad
                await ws.send(json.dumps({"type": "gap", "seconds": 0.5}))
                await ws.send(np.zeros(SR // 2 + 7, np.int16).tobytes())  # not a whole block at the end
                await ws.send(json.dumps({"type": "end"}))
                await asyncio.to_thread(finish, server, decoder)
                while (msg := await recv_json(ws))["type"] == "ack":
                    pass
                assert msg == {"type": "ok", "command": "end", "received": SR + SR // 2 + 7}
        asyncio.run(main())
        assert room(server).ingest.gaps == 1 and room(server).ingest.gap_seconds == 0.5


def test_abort_after_a_flushed_close_is_harmless():
    """The crash in websockets' ``transport.abort`` (``'NoneType' object has no attribute
    'call_soon'``): CPython's transport forgets its loop once a close() that had to flush
    completes; ``guard_abort`` makes a later abort a no-op."""
    from subtitler.protocol import guard_abort

    async def main():
        reading = asyncio.Event()

        async def peer(reader, writer):
            await reading.wait()
            while await reader.read(1 << 20):
                pass
            writer.close()

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        lost = loop.create_future()

        class Protocol(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set_result(None)

        transport, _ = await loop.create_connection(Protocol, "127.0.0.1", port)

        class Connection:  # what guard_abort needs of a websockets connection
            pass

        conn = Connection()
        conn.transport, conn.connection_lost_waiter = transport, lost
        guard_abort(conn)
        transport.write(b"x" * (32 << 20))  # more than the kernel takes: the rest waits in the transport
        transport.close()  # closes once flushed
        reading.set()
        await asyncio.wait_for(lost, 30)
        transport.abort()  # unguarded, this raises AttributeError on CPython 3.11
        server.close()
        await server.wait_closed()
    asyncio.run(main())
