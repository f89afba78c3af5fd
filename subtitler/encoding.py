"""One loaded Whisper model's encoder passes: which encoder runs, what window it hears, and
the last outputs kept.

On a CPU the encoder pass is the cost of every decode, so ``WhisperASR`` asks this object
for each request's encoder output and never runs the encoder itself:

* the encoder is CTranslate2's own or ``encoder.TorchEncoder`` (``asr.encoder``; ``auto``
  picks by the CPU, ``encoder.choose_encoder``), installed into faster-whisper's model so
  its own ``transcribe`` hears the same encoder;
* the last few outputs are kept, keyed by a digest of the audio and its window: a second
  decode of the same audio (Whisper's speech → English of a final just transcribed, a
  re-decode in another language) skips the pass;
* a pass over one request can stop between the torch encoder's layers (``stop``), so a
  partial that a final overtook holds the CPU one layer longer, not a whole pass.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .captions import SAMPLE_RATE
from .encoder import EncoderError, TorchEncoder, choose_encoder, encoder_dtype

MAX_AUDIO_S = 30.0  # Whisper's window; the segmenter keeps utterances shorter
# Encoder outputs kept for a second decode of the same audio (3 MB each for base, 7.7 MB for
# large-v3 in float32): the final, and partials of the next utterance decoded meanwhile.
ENCODER_CACHE = 4
# A quick window holds the audio and this much silence after it (Whisper wants to hear the end).
QUICK_PAD_S = 1.0


class AudioEncoder:
    """The encoder side of a loaded ``faster_whisper.WhisperModel`` (``model``)."""

    def __init__(self, model, model_path: str | Path, device: str, threads: int, setting: str = "auto",
                 quick_window: bool = False):
        self.model = model
        self.device = device
        self.kind = choose_encoder(setting, device)  # "torch" or "ctranslate2"
        # asked between the torch encoder's layers while a lone request's pass runs
        self.stop: Callable[[], bool] | None = None
        self._torch: TorchEncoder | None = None
        self.cache: OrderedDict[bytes, np.ndarray] = OrderedDict()  # audio digest → encoder output
        self.passes = 0  # audio windows encoded
        self.stops = 0  # passes given up midway (their decode abandoned)
        # decodes without fallback (partials) encode only their audio: with the torch encoder
        self.quick_window = quick_window
        if self.kind == "torch":
            self._install_torch(model_path, threads, setting)

    def _install_torch(self, model_path: str | Path, threads: int, setting: str) -> None:
        try:
            torch_encoder = TorchEncoder(model_path, threads, dtype=encoder_dtype())
            # faster-whisper's own transcribe() and detect_language() use it too
            torch_encoder.install(self.model)
            self._torch = torch_encoder
            # one pass now: it proves the encoder runs, and the first caption does not pay
            # for PyTorch's kernel setup (~0.4 s)
            self.call(np.zeros((1, torch_encoder.n_mels, self.model.feature_extractor.nb_max_frames), np.float32))
        except Exception as e:  # a broken PyTorch install can fail in many ways
            if setting == "torch":
                raise EncoderError(f"asr.encoder = 'torch' cannot run: {e}") from None
            # auto: CTranslate2's own encoder works wherever the model loaded
            logging.getLogger("subtitler.asr").warning("torch encoder unavailable (%s); using CTranslate2's", e)
            self.model.__dict__.pop("encode", None)
            self._torch = None
            self.kind = "ctranslate2"

    @property
    def dtype(self) -> str:
        """What the encoder computes in, for the start-up line."""
        return str(self._torch.dtype).removeprefix("torch.") if self._torch is not None else "CTranslate2"

    def window(self, audio: np.ndarray, quick: bool) -> tuple[np.ndarray, bytes, int]:
        """The audio as the encoder hears it (float32, at most 30 s), its cache key and the
        encoder's input length in frames: Whisper's 30 s window, or for a ``quick`` decode
        (a partial) with ``quick_window`` on, the audio and a little silence."""
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768.0
        audio = np.ascontiguousarray(audio[: int(MAX_AUDIO_S * SAMPLE_RATE)], np.float32)
        frames = self.model.feature_extractor.nb_max_frames
        if self.quick_window and quick and self._torch is not None:
            # the encoder's cost falls with its input (bench/quick_window.py)
            frames = min(frames, 2 * -(-int((audio.size / SAMPLE_RATE + QUICK_PAD_S) * 100) // 2))
        key = hashlib.blake2b(audio.tobytes(), digest_size=16).digest() + frames.to_bytes(2, "little")
        return audio, key, frames

    def encode_all(self, works: list) -> None:
        """Every work's encoder output (``.encoded``; ``.reused`` when it came from the cache or
        from another work of the batch with the same audio): the new ones encoded together."""
        new: dict[bytes, list] = {}
        for w in works:
            cached = self.cache.get(w.key)
            if cached is not None:
                self.cache.move_to_end(w.key)
                w.encoded, w.reused = cached, True
            elif w.key in new:
                new[w.key].append(w)
                w.reused = True
            else:
                new[w.key] = [w]
        if not new:
            return
        features = []
        for same in new.values():
            f = self.model.feature_extractor(same[0].audio)
            frames = same[0].frames
            features.append(np.pad(f, ((0, 0), (0, max(0, frames - f.shape[-1]))))[:, :frames].astype(
                np.float32, copy=False))
        encoded = self.encode(features)
        self.passes += len(new)
        for out, (key, same) in zip(encoded, new.items()):
            for w in same:
                w.encoded = out
            self.cache[key] = out
            while len(self.cache) > ENCODER_CACHE:
                self.cache.popitem(last=False)

    def encode(self, features: list[np.ndarray]) -> list[np.ndarray]:
        """Log-mel features, each [n_mels, frames] → one encoder output [frames/2, width] each, on
        the host: detection, generation and the cache take them from there; on CUDA that costs a copy
        to and from the GPU (~1.5 MB each for base), little beside a decode, and it lets any
        subset of a batch be stacked again.

        On CUDA the whole batch is one call. On the CPU the windows go one at a time: a batch
        is no faster there (bench/batch_decode.py: CTranslate2's int8 encoder 5–18 % slower for
        3–4 windows), and oneDNN's bfloat16 kernels round
        differently for another batch size (up to 0.9 apart in base's output), enough to change
        a borderline decode; one window at a time, a batch decodes to the same bits as alone."""
        if self.device == "cpu":
            return [self.call(f[None])[0] for f in features]
        out = self.call(np.stack(features))
        # copies: a cached output must not keep the whole batch's buffer alive
        return [out[0]] if len(out) == 1 else [o.copy() for o in out]

    def call(self, features: np.ndarray) -> np.ndarray:
        """One encoder call over [batch, n_mels, frames]."""
        import ctranslate2

        if self._torch is not None:
            return self._torch(features, stop=self.stop)
        out = self.model.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True)
        if out.dtype == ctranslate2.DataType.bfloat16:  # no NumPy type for it
            out = out.to(ctranslate2.DataType.float32)
        return np.asarray(out)
