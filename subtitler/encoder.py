"""Whisper's audio encoder in PyTorch bfloat16, for CPUs with bfloat16 matrix instructions.

On a CPU the encoder over Whisper's fixed 30 s window is the cost of every decode, and in
CTranslate2 int8 most of it is the float32 self-attention over 1500 positions. PyTorch runs
the same layers in bfloat16 on AMX / AVX512-BF16 (and fused attention): measured here with
base, 0.23–0.29 s instead of 0.55–0.65 s, and closer to float32 (3 % vs 12 % mean deviation).
The weights come from the CTranslate2 ``model.bin`` already on disk, so nothing else is
downloaded; the output is handed to CTranslate2, which keeps the decoder and beam search.

Only the encoder lives here: ``WhisperASR`` swaps it in for faster-whisper's own when
``asr.encoder`` says so (``auto``: on a CPU that has bfloat16 instructions, when PyTorch is
installed).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np

ENCODERS = ["auto", "ctranslate2", "torch"]
BF16_FLAGS = {"amx_bf16", "avx512_bf16"}
# Where ``auto`` also takes torch, in float32: an AVX2 CPU without AVX-512 (laptops, AMD EPYC
# before Zen 4). Measured on a 2-core AMD EPYC (AVX2): the float32 encoder 0.75 s against
# CTranslate2 int8's 0.85–1.3 s for base, the same words; and a partial's pass stops between
# layers for a final, where CTranslate2's runs to its end (bench/rooms.py, 1 room: final p90
# 3.1 s with CTranslate2's encoder). AVX-512 CPUs without bfloat16 keep CTranslate2's int8,
# whose VNNI kernels were not measured against it.
FLOAT32_FLAGS = {"avx2"}
# CTranslate2's DataType enum, as model.bin stores it.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


class EncoderError(ValueError):
    """The torch encoder cannot be used; the message says why and what to do."""


class EncoderStopped(Exception):
    """An encoder pass given up between two layers: its decode was no longer wanted."""


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def choose_encoder(setting: str, device: str, flags: set[str] | None = None,
                   have_torch: bool | None = None) -> str:
    """``ctranslate2`` or ``torch`` for ``asr.encoder`` on ``device`` ("cpu"/"cuda").

    ``auto`` takes torch only where it wins: on the CPU, torch installed, with bfloat16
    instructions (run in bfloat16) or AVX2 without AVX-512 (run in float32: ``encoder_dtype``).
    An explicit ``torch`` that cannot run is an error, never a silent fallback."""
    if setting not in ENCODERS:
        raise EncoderError(f"asr.encoder = {setting!r}; allowed: {', '.join(ENCODERS)}")
    if setting == "ctranslate2":
        return setting
    have_torch = torch_available() if have_torch is None else have_torch
    if setting == "torch":
        if device != "cpu":
            raise EncoderError("asr.encoder = 'torch' runs on the CPU only; on CUDA use 'auto' or "
                               "'ctranslate2' (CTranslate2's float16 encoder is the fast one there)")
        if not have_torch:
            raise EncoderError("asr.encoder = 'torch' needs PyTorch: pip install torch "
                               "(the CPU build: --index-url https://download.pytorch.org/whl/cpu), "
                               "or set asr.encoder = 'auto'")
        return "torch"
    flags = cpu_flags() if flags is None else flags
    wins = flags & BF16_FLAGS or (flags & FLOAT32_FLAGS and "avx512f" not in flags)
    return "torch" if device == "cpu" and have_torch and wins else "ctranslate2"


def encoder_dtype(flags: set[str] | None = None) -> str:
    """bfloat16 where the CPU has instructions for it; float32 elsewhere (bfloat16 emulated
    on an AVX2 CPU took 5.3 s a pass for base, float32 0.75 s)."""
    flags = cpu_flags() if flags is None else flags
    return "bfloat16" if flags & BF16_FLAGS else "float32"


MODEL_FORMATS = range(4, 7)  # CTranslate2 model.bin versions this reader knows (4.x writes 6)


def read_variables(model_bin: str | Path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``model.bin`` whose names start with ``prefix`` (the
    prefix removed), as float32 arrays: int8/int16 weights dequantized with their ``_scale``,
    aliases followed. Read through mmap, so the decoder's weights are never loaded."""
    path = Path(model_bin)
    fix = "fetch the model again, or set asr.encoder = 'ctranslate2'"
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        off = 0

        def take(fmt: str):
            nonlocal off
            value = struct.unpack_from(fmt, data, off)
            off += struct.calcsize(fmt)
            return value[0]

        def text() -> str:
            nonlocal off
            n = take("<H")
            value = bytes(data[off:off + n]).rstrip(b"\0").decode()
            off += n
            return value

        entries: dict[str, tuple] = {}  # name → (dtype, dims, offset, size): headers only
        aliases: dict[str, str] = {}
        try:
            version = take("<I")
            if version not in MODEL_FORMATS:
                raise EncoderError(f"{path}: CTranslate2 model format {version} is not one the torch encoder "
                                   f"reads ({MODEL_FORMATS.start}–{MODEL_FORMATS.stop - 1}); set "
                                   "asr.encoder = 'ctranslate2'")
            text(), take("<I")  # spec name, revision
            for _ in range(take("<I")):
                name = text()
                dims = [take("<I") for _ in range(take("<B"))]
                code, size = take("<B"), take("<I")
                if off + size > len(data):
                    raise struct.error("variable past the end of the file")
                entries[name] = (_DTYPES.get(code), dims, off, size)
                off += size
            for _ in range(take("<I")):
                alias = text()
                aliases[alias] = text()
        except struct.error:
            raise EncoderError(f"{path} is truncated or not a CTranslate2 model; {fix}") from None

        def entry(name: str):
            return entries.get(name) or entries.get(aliases.get(name, ""))

        def load(name: str) -> np.ndarray:
            dtype, dims, start, size = entry(name)
            buf = bytes(data[start:start + size])
            if dtype == "bfloat16":
                array = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype is None:
                raise EncoderError(f"{path}: variable {name} has a data type this reader does not know; "
                                   "set asr.encoder = 'ctranslate2'")
            else:
                array = np.frombuffer(buf, dtype)
            if array.size != int(np.prod(dims)):
                raise EncoderError(f"{path}: variable {name} does not hold its declared shape; {fix}")
            return array.reshape(dims)

        out: dict[str, np.ndarray] = {}
        for name in [*entries, *aliases]:
            if not name.startswith(prefix) or name.endswith("_scale") or name[len(prefix):] in out:
                continue
            array = load(name)
            if array.ndim and array.dtype.kind == "i":  # quantized: CTranslate2 stores round(w * scale)
                # an aliased weight's scale is its target's (CTranslate2 aliases the pair)
                scale_name = next((n for n in (name + "_scale", aliases.get(name, "") + "_scale")
                                   if entry(n)), None)
                if scale_name is None:
                    raise EncoderError(f"{path}: the integer weight {name} has no scale; {fix}")
                scale = load(scale_name).astype(np.float32)
                scale = scale.reshape(-1, *([1] * (array.ndim - 1))) if scale.ndim else scale
                array = array.astype(np.float32) / scale
            elif array.dtype != np.float32 and array.dtype.kind == "f":
                array = array.astype(np.float32)
            out[name[len(prefix):]] = array
    return out


GLOBAL_WEIGHTS = ("conv1/weight", "conv1/bias", "conv2/weight", "conv2/bias", "position_encodings/encodings",
                  "layer_norm/gamma", "layer_norm/beta")
LAYER_WEIGHTS = tuple(f"{block}/{w}" for block, names in (
    ("self_attention", ("layer_norm/gamma", "layer_norm/beta", "linear_0/weight", "linear_0/bias",
                        "linear_1/weight", "linear_1/bias")),
    ("ffn", ("layer_norm/gamma", "layer_norm/beta", "linear_0/weight", "linear_0/bias",
             "linear_1/weight", "linear_1/bias"))) for w in names)


class TorchEncoder:
    """The Whisper encoder of a CTranslate2 model folder, in PyTorch (bfloat16 by default)."""

    def __init__(self, model_dir: str | Path, threads: int = 0, dtype: str = "bfloat16"):
        model_bin = Path(model_dir) / "model.bin"
        if not model_bin.is_file():
            raise EncoderError(f"{model_bin} not found: the torch encoder reads the CTranslate2 model file")
        v = read_variables(model_bin)
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.dtype = getattr(torch, dtype)
        self.layers = sum(1 for name in v if name.endswith("self_attention/linear_0/weight"))
        missing = [name for name in ("num_heads", *GLOBAL_WEIGHTS,
                                     *(f"layer_{i}/{w}" for i in range(self.layers) for w in LAYER_WEIGHTS))
                   if name not in v]
        if missing or not self.layers:
            raise EncoderError(f"{model_bin} is not a Whisper model as this encoder knows it (no encoder "
                               f"{(missing or ['layers'])[0]}); set asr.encoder = 'ctranslate2'")
        self.heads = int(v.pop("num_heads"))
        self.w = {name: torch.from_numpy(np.array(a, np.float32)).to(self.dtype) for name, a in v.items()}
        self.n_mels = self.w["conv1/weight"].shape[1]

    def __call__(self, features: np.ndarray, stop=None) -> np.ndarray:
        """Log-mel features [n_mels, frames] or [batch, n_mels, frames] → float32 [batch, frames/2, d].

        ``stop()``, asked between layers, may give the pass up (EncoderStopped): a partial
        that a room's final has overtaken then holds the CPU one layer longer, not a pass."""
        torch = self._torch
        F = torch.nn.functional
        w = self.w
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(features, np.float32))
            if x.ndim == 2:
                x = x[None]
            x = F.gelu(F.conv1d(x.to(self.dtype), w["conv1/weight"], w["conv1/bias"], padding=1))
            x = F.gelu(F.conv1d(x, w["conv2/weight"], w["conv2/bias"], stride=2, padding=1))
            x = x.transpose(1, 2)
            batch, frames, dim = x.shape
            x = x + w["position_encodings/encodings"][:frames]
            for i in range(self.layers):
                if stop is not None and stop():
                    raise EncoderStopped(f"stopped before layer {i}")
                p = f"layer_{i}/"
                h = F.layer_norm(x, (dim,), w[p + "self_attention/layer_norm/gamma"],
                                 w[p + "self_attention/layer_norm/beta"])
                qkv = F.linear(h, w[p + "self_attention/linear_0/weight"], w[p + "self_attention/linear_0/bias"])
                q, k, v = qkv.view(batch, frames, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
                a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, frames, dim)
                x = x + F.linear(a, w[p + "self_attention/linear_1/weight"], w[p + "self_attention/linear_1/bias"])
                h = F.layer_norm(x, (dim,), w[p + "ffn/layer_norm/gamma"], w[p + "ffn/layer_norm/beta"])
                h = F.gelu(F.linear(h, w[p + "ffn/linear_0/weight"], w[p + "ffn/linear_0/bias"]))
                x = x + F.linear(h, w[p + "ffn/linear_1/weight"], w[p + "ffn/linear_1/bias"])
            x = F.layer_norm(x, (dim,), w["layer_norm/gamma"], w["layer_norm/beta"])
            return np.ascontiguousarray(x.float().numpy())

    def install(self, model) -> None:
        """Make a faster-whisper ``WhisperModel`` encode with this encoder: its own
        ``transcribe`` and ``detect_language`` use it too, so files and live speech agree."""
        import ctranslate2

        def encode(features: np.ndarray):
            # from_array shares the memory and keeps the array alive
            return ctranslate2.StorageView.from_array(self(features))

        model.encode = encode
