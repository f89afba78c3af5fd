"""Audio sources on real files: decoding through PyAV/ffmpeg, pacing, errors, resampling, devices.

Test files are made from a real Asterisk prompt with sox and ffmpeg (both installed).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import corpus
from subtitler import audio
from subtitler.audio import AudioSourceError, FileSource, Resampler, find_input_device
from subtitler.captions import SAMPLE_RATE

PROMPT = "vm-tooshort"  # "your message is too short", 1.78 s at 8 kHz


@pytest.fixture(scope="module")
def prompt() -> tuple[Path, int]:
    """The prompt's WAV and its length in 8 kHz samples."""
    path = corpus.prompt_path(PROMPT)
    x, rate = corpus._read_wav_int16(path)
    assert rate == 8000
    return path, x.size


def _run(cmd: list[str]) -> None:
    # Never a skip: CI installs both (scripts/install.sh --test); a machine without them fails here.
    assert shutil.which(cmd[0]) is not None, f"{cmd[0]} is not installed: run bash scripts/install.sh --test"
    subprocess.run(cmd, check=True, capture_output=True)


def _sox(src: Path, dst: Path, *effects: str, rate: int | None = None, channels: int | None = None) -> Path:
    opts = (["-r", str(rate)] if rate else []) + (["-c", str(channels)] if channels else [])
    _run(["sox", "-D", str(src), *opts, str(dst), *effects])
    return dst


def _ffmpeg(src: Path, dst: Path, *opts: str) -> Path:
    _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *opts, str(dst)])
    return dst


def read_all(source: FileSource) -> tuple[np.ndarray, list[np.ndarray]]:
    blocks = list(source)
    return (np.concatenate(blocks) if blocks else np.zeros(0, np.int16)), blocks


# -- decoding --------------------------------------------------------------------------------

FORMATS = {
    "wav-8k-mono": lambda src, d: _sox(src, d / "a.wav", rate=8000),
    "flac-44k-stereo": lambda src, d: _sox(src, d / "a.flac", rate=44100, channels=2),
    "ogg-44k-stereo": lambda src, d: _ffmpeg(src, d / "a.ogg", "-ar", "44100", "-ac", "2", "-c:a", "libvorbis"),
    "mp3-22k-mono": lambda src, d: _ffmpeg(src, d / "a.mp3", "-ar", "22050", "-c:a", "libmp3lame", "-b:a", "64k"),
    "mp3-48k-stereo": lambda src, d: _ffmpeg(src, d / "b.mp3", "-ar", "48000", "-ac", "2", "-c:a", "libmp3lame"),
}


@pytest.mark.parametrize("kind", list(FORMATS))
def test_file_source_decodes_to_16k_mono_int16(kind, prompt, tmp_path):
    src, frames_8k = prompt
    path = FORMATS[kind](src, tmp_path)
    expected = frames_8k / 8000

    source = FileSource(path)
    assert source.realtime is False
    assert source.duration == pytest.approx(expected, abs=0.02)
    samples, blocks = read_all(source)

    assert all(b.dtype == np.int16 and b.ndim == 1 for b in blocks)
    assert all(b.size == SAMPLE_RATE * 20 // 1000 for b in blocks[:-1]), "20 ms blocks"
    assert 0 < blocks[-1].size <= 320
    assert samples.size / SAMPLE_RATE == pytest.approx(expected, abs=0.02)
    assert source.fed_seconds == pytest.approx(samples.size / SAMPLE_RATE)
    # The speech is there, where it was: aligned with sox's own 16 kHz conversion.
    reference = corpus.load_16k(src)
    lag, similarity = _alignment(samples, reference)
    assert abs(lag) <= 0.02 * SAMPLE_RATE, f"shifted by {lag / SAMPLE_RATE * 1000:.1f} ms"
    assert similarity > 0.9, f"waveform correlation {similarity:.2f}"


def _alignment(x: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    """(lag of x behind ref in samples, normalised correlation at that lag)."""
    a, b = x.astype(np.float64), ref.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(a.size + b.size)))
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    corr = np.concatenate([corr[-(b.size - 1):], corr[:a.size]])  # lags -(len b - 1) .. len a - 1
    best = int(np.argmax(corr))
    return best - (b.size - 1), float(corr[best] / np.sqrt((a ** 2).sum() * (b ** 2).sum()))


def test_file_source_reads_audio_of_a_video_file(prompt, tmp_path):
    src, frames_8k = prompt
    path = tmp_path / "clip.mp4"
    _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=blue:s=64x48:r=10",
          "-i", str(src), "-shortest", "-c:v", "mpeg4", "-c:a", "aac", "-ar", "44100", str(path)])
    samples, _ = read_all(FileSource(path))
    # AAC pads with a 1024-sample priming frame and frame rounding: allow one AAC frame each way
    assert samples.size / SAMPLE_RATE == pytest.approx(frames_8k / 8000, abs=0.05)
    assert corpus.speech_bounds(samples, SAMPLE_RATE) is not None


@pytest.mark.parametrize("ext,opts", [("flac", []), ("aac", ["-c:a", "aac"])], ids=["flac", "adts-aac"])
def test_truncated_recording_decodes_up_to_the_damage(ext, opts, tmp_path):
    """A recording cut off mid-write (a recorder that crashed, a partial copy)."""
    src = corpus.prompt_path("vm-newuser")  # 6.07 s
    whole = _ffmpeg(src, tmp_path / f"whole.{ext}", *opts)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: int(len(data) * 0.77)])
    source = FileSource(cut)
    samples, _ = read_all(source)  # must not raise: the audio before the cut is good
    assert 0.6 * 6.07 <= samples.size / SAMPLE_RATE <= 6.1
    assert source.bad_packets >= 1


# -- pacing ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def three_seconds(tmp_path_factory) -> Path:
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    x = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    path = tmp_path_factory.mktemp("pacing") / "three.wav"
    corpus.write_wav(path, x)
    return path


def test_realtime_pacing_follows_the_audio_clock(three_seconds):
    source = FileSource(three_seconds, realtime=True)
    assert source.realtime and "real time" in source.description
    t0 = time.monotonic()
    early = 0.0  # how far ahead of its own time a block was handed out (never, ideally)
    fed = 0
    for block in source:
        fed += block.size
        early = max(early, fed / SAMPLE_RATE - (time.monotonic() - t0))
    elapsed = time.monotonic() - t0
    assert fed == 3 * SAMPLE_RATE
    assert 0.9 <= elapsed / 3.0 <= 1.3, f"3 s of audio took {elapsed:.2f} s"
    assert early <= 0.03, f"a block came {early:.3f} s before its time"

    t0 = time.monotonic()
    samples, _ = read_all(FileSource(three_seconds))
    fast = time.monotonic() - t0
    assert samples.size == 3 * SAMPLE_RATE
    assert fast < 0.25 * elapsed, f"fast mode took {fast:.2f} s"


def test_stop_ends_a_realtime_source_promptly(three_seconds):
    source = FileSource(three_seconds, realtime=True)
    timer = threading.Timer(0.5, source.stop)
    t0 = time.monotonic()
    timer.start()
    try:
        samples, _ = read_all(source)
    finally:
        timer.cancel()
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5, f"stop() took effect after {elapsed:.2f} s"
    assert samples.size < 2 * SAMPLE_RATE


# -- errors ----------------------------------------------------------------------------------

def _png(width: int = 4, height: int = 4) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_missing_file_is_a_clear_error(tmp_path):
    path = tmp_path / "nowhere.wav"
    with pytest.raises(AudioSourceError, match="does not exist") as info:
        FileSource(path)
    assert str(path) in str(info.value)


def test_text_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are meeting notes, not a recording\n" * 20)
    with pytest.raises(AudioSourceError) as info:
        FileSource(path)
    message = str(info.value)
    assert "notes.txt" in message
    assert "cannot decode" in message or "no audio stream" in message
    assert "Traceback" not in message


def test_image_file_has_no_audio_stream(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(_png())
    with pytest.raises(AudioSourceError, match="no audio stream") as info:
        FileSource(path)
    assert "picture.png" in str(info.value)


def test_video_without_sound_has_no_audio_stream(tmp_path):
    path = tmp_path / "silent.mp4"
    _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=32x32:r=5",
          "-t", "1", "-c:v", "mpeg4", str(path)])
    with pytest.raises(AudioSourceError, match="no audio stream"):
        FileSource(path)


# -- resampling ------------------------------------------------------------------------------

def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate,channels", [(48000, 2), (44100, 1), (8000, 1), (48000, 6), (16000, 1)])
def test_resampler_keeps_frequency_and_duration(rate, channels):
    seconds, freq = 2.0, 1000.0
    t = np.arange(int(rate * seconds)) / rate
    mono = (10000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    interleaved = np.repeat(mono[:, None], channels, axis=1)  # (frames, channels)
    resample = Resampler(rate, channels)
    block = rate // 50  # 20 ms, as a sound card would deliver
    out = [resample(interleaved[i:i + block]) for i in range(0, len(interleaved), block)]
    out.append(resample(None))
    y = np.concatenate(out)
    assert y.dtype == np.int16 and y.ndim == 1
    assert y.size / SAMPLE_RATE == pytest.approx(seconds, abs=0.02)
    assert _peak_hz(y, SAMPLE_RATE) == pytest.approx(freq, abs=2.0)
    middle = y[SAMPLE_RATE // 2: -SAMPLE_RATE // 2].astype(np.float64)
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(10000 / np.sqrt(2), rel=0.05), "level kept"


def test_resampler_mixes_stereo_channels_down():
    rate, seconds = 48000, 1.0
    t = np.arange(int(rate * seconds)) / rate
    left = (8000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
    right = (8000 * np.sin(2 * np.pi * 3000 * t)).astype(np.int16)
    y = np.concatenate([Resampler(rate, 2)(np.stack([left, right], axis=1)), Resampler(rate, 2)(None)])
    spectrum = np.abs(np.fft.rfft(y.astype(np.float64) * np.hanning(y.size)))
    freqs = np.fft.rfftfreq(y.size, 1 / SAMPLE_RATE)
    top2 = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert top2 == pytest.approx([500, 3000], abs=2.0), "both channels are heard"
    level = {f: spectrum[np.argmin(np.abs(freqs - f))] for f in (500, 3000)}
    assert 0.8 < level[500] / level[3000] < 1.25, "mixed with equal weight"


# -- devices ---------------------------------------------------------------------------------

FAKE_DEVICES = [
    {"index": 0, "name": "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "channels": 2, "rate": 44100, "default": True},
    {"index": 4, "name": "USB PnP Sound Device: Audio (hw:2,0)", "channels": 1, "rate": 48000, "default": False},
    {"index": 7, "name": "pulse", "channels": 32, "rate": 44100, "default": False},
]


def test_unknown_device_name_lists_available_inputs(monkeypatch):
    monkeypatch.setattr(audio, "list_input_devices", lambda: [dict(d) for d in FAKE_DEVICES])
    with pytest.raises(AudioSourceError) as info:
        find_input_device("Blue Yeti")
    message = str(info.value)
    assert "Blue Yeti" in message
    for d in FAKE_DEVICES:
        assert f"{d['index']}: {d['name']}" in message
    # and the ways that do work
    assert find_input_device("") is None
    assert find_input_device("usb pnp") == 4
    assert find_input_device("pulse") == 7
    assert find_input_device("7") == 7
    with pytest.raises(AudioSourceError, match="not an input device.*0: HDA"):
        find_input_device("5")


def test_no_input_devices_at_all(monkeypatch):
    monkeypatch.setattr(audio, "list_input_devices", lambda: [])
    with pytest.raises(AudioSourceError, match="no audio input device"):
        find_input_device("Blue Yeti")
    with pytest.raises(AudioSourceError, match="no audio input device"):
        find_input_device("")


def test_unknown_device_on_this_machine():
    """Whatever this machine has (often nothing), an unknown name is a clear AudioSourceError."""
    with pytest.raises(AudioSourceError) as info:
        find_input_device("no-such-device-7f3a")
    message = str(info.value)
    assert ("available inputs" in message or "no audio input device" in message
            or "cannot list audio devices" in message), message
