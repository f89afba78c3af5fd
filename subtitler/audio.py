"""Audio sources: microphone (sounddevice) and files (PyAV), as 16 kHz mono int16 blocks.

A source is iterable: it yields numpy int16 arrays until the input ends or
``stop()`` is called. The sound card's callback thread only copies into a
bounded queue; resampling happens on the consuming thread.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from .captions import SAMPLE_RATE


class AudioSourceError(RuntimeError):
    """The input cannot be opened; the message says what to do instead."""


class Resampler:
    """Streaming conversion of interleaved int16 at any rate/channels to 16 kHz mono."""

    def __init__(self, rate: int, channels: int):
        import av

        self.rate, self.channels = rate, channels
        self._passthrough = rate == SAMPLE_RATE and channels == 1
        layout = "mono" if channels == 1 else "stereo" if channels == 2 else None
        self._mix = layout is None  # more than 2 channels: average in numpy first
        self._layout = layout or "mono"
        self._resampler = None if self._passthrough else av.AudioResampler(format="s16", layout="mono",
                                                                          rate=SAMPLE_RATE)

    def __call__(self, block: np.ndarray | None) -> np.ndarray:
        """block: (frames, channels) int16, or None to flush the filter's tail."""
        import av

        if self._passthrough:
            return np.zeros(0, np.int16) if block is None else block.reshape(-1).copy()
        if block is None:
            frames = self._resampler.resample(None)
        else:
            if self._mix:
                block = block.astype(np.int32).mean(axis=1).astype(np.int16)[:, None]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block).reshape(1, -1),
                                               format="s16", layout=self._layout)
            frame.sample_rate = self.rate
            frames = self._resampler.resample(frame)
        out = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(out) if out else np.zeros(0, np.int16)


class AudioSource:
    """Base: an iterable of 16 kHz mono int16 blocks with a drop counter."""

    realtime = True  # blocks arrive at the pace of speech (a file may be faster)

    def __init__(self):
        self._stop = threading.Event()
        self.dropped_blocks = 0
        self.description = ""

    def stop(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError


def list_input_devices() -> list[dict]:
    """Input devices as sounddevice reports them: index, name, channels, native rate, default."""
    import sounddevice as sd

    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except Exception as e:  # PortAudio missing or broken
        raise AudioSourceError(f"cannot list audio devices ({e}); install PortAudio "
                               f"(Debian: apt-get install libportaudio2)") from None
    out = []
    for i, d in enumerate(devices):
        if d["max_input_channels"] > 0:
            out.append({"index": i, "name": d["name"], "channels": d["max_input_channels"],
                        "rate": int(d["default_samplerate"]), "default": i == default_in})
    return out


def find_input_device(spec: str) -> int | None:
    """'' → None (system default); '3' → index 3; 'pulse' → the first input whose name contains it."""
    devices = list_input_devices()
    if not devices:
        raise AudioSourceError("no audio input device found; connect a microphone, or use "
                               "--input FILE to caption a recording (`subtitler devices` lists inputs)")
    if spec == "":
        return None
    names = "; ".join(f"{d['index']}: {d['name']}" for d in devices)
    if spec.isdigit():
        if any(d["index"] == int(spec) for d in devices):
            return int(spec)
        raise AudioSourceError(f"audio device {spec} is not an input device; available inputs: {names}")
    matches = [d for d in devices if d["name"] == spec] or \
              [d for d in devices if spec.lower() in d["name"].lower()]
    if not matches:
        raise AudioSourceError(f"no input device named '{spec}'; available inputs: {names} "
                               f"(set audio.device to an index or part of a name)")
    return matches[0]["index"]


class MicrophoneSource(AudioSource):
    """Live capture through sounddevice at the device's native rate, converted to 16 kHz mono."""

    def __init__(self, device: str = "", sample_rate: int = 0, channels: int = 0,
                 queue_seconds: float = 10.0, block_ms: int = 20):
        super().__init__()
        import sounddevice as sd

        self._index = find_input_device(device)
        info = sd.query_devices(self._index, "input")
        self.rate = sample_rate or int(info["default_samplerate"])
        self.channels = channels or min(2, int(info["max_input_channels"]))
        self.block = max(1, self.rate * block_ms // 1000)
        self._queue: queue.Queue = queue.Queue(maxsize=max(4, int(queue_seconds * 1000 / block_ms)))
        self.overflows = 0  # PortAudio's own input overflow flags
        self.description = f"microphone '{info['name']}' ({self.rate} Hz, {self.channels} ch)"
        try:
            self._stream = sd.InputStream(device=self._index, samplerate=self.rate, channels=self.channels,
                                          dtype="int16", blocksize=self.block, callback=self._callback)
        except Exception as e:
            raise AudioSourceError(f"cannot open {self.description}: {e}. Check audio.sample_rate and "
                                   f"audio.channels (0 = the device's own), or pick another device "
                                   f"(`subtitler devices`)") from None

    def _callback(self, indata, frames, time_info, status) -> None:
        # Runs on PortAudio's thread: copy, enqueue, return; never block.
        if status.input_overflow:
            self.overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.dropped_blocks += 1

    def __iter__(self) -> Iterator[np.ndarray]:
        resample = Resampler(self.rate, self.channels)
        self._stream.start()
        try:
            while not self._stop.is_set():
                try:
                    block = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                out = resample(block)
                if out.size:
                    yield out
        finally:
            self._stream.stop()
            self._stream.close()


class FileSource(AudioSource):
    """Any file ffmpeg can decode, as fast as possible or paced to real time."""

    def __init__(self, path: str | Path, realtime: bool = False, block_ms: int = 20):
        super().__init__()
        import av

        self.path = Path(path)
        self.realtime = realtime
        self.block = SAMPLE_RATE * block_ms // 1000
        if self.path.is_dir():
            raise AudioSourceError(f"input {self.path} is a folder; give the path of an audio or video file")
        if not self.path.is_file():
            raise AudioSourceError(f"input file {self.path} does not exist; give the path of an audio "
                                   f"or video file, or 'mic' for the microphone")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.audio:
                    raise AudioSourceError(f"{self.path} has no audio stream; give a file with sound")
                stream = container.streams.audio[0]
                self.duration = float(container.duration / 1e6) if container.duration else None
                if self.duration is None and stream.duration and stream.time_base:
                    self.duration = float(stream.duration * stream.time_base)
        except AudioSourceError:
            raise
        except Exception as e:
            raise AudioSourceError(f"cannot decode {self.path}: {e}; use a format ffmpeg reads "
                                   f"(wav, flac, mp3, ogg, m4a, mp4, …)") from None
        self.description = f"file {self.path.name}" + (" (real time)" if realtime else "")
        self.fed_seconds = 0.0  # audio handed out so far
        self.bad_packets = 0

    def _decoded(self) -> Iterator[np.ndarray]:
        import av

        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        with av.open(str(self.path)) as container:
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    # a damaged packet (often a cut-off last one): skip it as ffmpeg does
                    self.bad_packets += 1
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        yield out.to_ndarray().reshape(-1)
                if self._stop.is_set():
                    return
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)

    def __iter__(self) -> Iterator[np.ndarray]:
        t0 = time.monotonic()
        pending = np.zeros(0, np.int16)
        for decoded in self._decoded():
            pending = np.concatenate([pending, decoded])
            while pending.size >= self.block:
                yield from self._emit(pending[: self.block], t0)
                pending = pending[self.block:]
                if self._stop.is_set():
                    return
        if pending.size:
            yield from self._emit(pending, t0)

    def _emit(self, block: np.ndarray, t0: float) -> Iterator[np.ndarray]:
        if self.realtime:  # hand a block out once its last sample would have been spoken
            due = t0 + self.fed_seconds + block.size / SAMPLE_RATE
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
        self.fed_seconds += block.size / SAMPLE_RATE
        yield block


class PushSource(AudioSource):
    """Audio pushed by someone else (the server's /ws/audio ingest): 16 kHz mono int16 blocks.

    ``push`` never blocks (a full queue drops the block and counts it); ``end()`` lets the
    session finish the last utterance and stop.
    """

    def __init__(self, queue_seconds: float = 10.0, description: str = "remote audio"):
        super().__init__()
        self._queue: queue.Queue = queue.Queue(maxsize=max(4, int(queue_seconds * 50)))
        self._ended = threading.Event()
        self.description = description

    def push(self, samples: np.ndarray) -> None:
        try:
            self._queue.put_nowait(np.asarray(samples, dtype=np.int16).reshape(-1))
        except queue.Full:
            self.dropped_blocks += 1

    def end(self) -> None:
        self._ended.set()

    def __iter__(self) -> Iterator[np.ndarray]:
        while not self._stop.is_set():
            try:
                yield self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._ended.is_set():
                    return


def open_source(input_spec: str, *, device: str = "", sample_rate: int = 0, channels: int = 0,
                queue_seconds: float = 10.0, realtime: bool = False) -> AudioSource:
    if input_spec in ("", "mic"):
        return MicrophoneSource(device, sample_rate, channels, queue_seconds)
    if input_spec == "remote":
        return PushSource(queue_seconds)
    return FileSource(input_spec, realtime=realtime)
