"""The PyTorch Whisper encoder (subtitler/encoder.py) against CTranslate2's own.

The float32 torch encoder must reproduce CTranslate2's float32 encoder on the real base
model, and on a random-weight model whose weights are stored as int8 (dequantization,
128 mels, other depths and widths); the bfloat16 one must stay closer to float32 than
CTranslate2's int8 and transcribe real speech as well. The choice of encoder and every
way it can fail are checked as pure functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from subtitler.encoder import EncoderError, TorchEncoder, choose_encoder, encoder_dtype, read_variables



def relative_deviation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean() / np.abs(b).mean())


@pytest.fixture(scope="module")
def speech_features(base_model_path):
    """Log-mel features of a real English prompt, padded to Whisper's 30 s window."""
    import corpus
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = corpus.load_16k(corpus.prompt_path("conf-getpin")).astype(np.float32) / 32768.0
    features = FeatureExtractor()(audio)
    return np.pad(features, ((0, 0), (0, 3000 - features.shape[-1])))[:, :3000].astype(np.float32)


@pytest.fixture(scope="module")
def ct2_base_float32(base_model_path):
    import ctranslate2

    return ctranslate2.models.Whisper(str(base_model_path), device="cpu", compute_type="float32")


def ct2_encode(model, features: np.ndarray) -> np.ndarray:
    import ctranslate2

    return np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None]))))[0]


def test_reader_finds_the_base_encoder(base_model_path):
    v = read_variables(base_model_path / "model.bin")
    assert int(v["num_heads"]) == 8
    assert v["conv1/weight"].shape == (512, 80, 3)
    assert v["position_encodings/encodings"].shape == (1500, 512)
    assert sum(name.endswith("self_attention/linear_0/weight") for name in v) == 6
    assert not any(name.startswith("decoder") or name.endswith("_scale") for name in v)


def test_float32_torch_encoder_reproduces_ctranslate2(base_model_path, ct2_base_float32, speech_features):
    out = TorchEncoder(base_model_path, dtype="float32")(speech_features)
    assert out.shape == (1, 1500, 512) and out.dtype == np.float32
    assert relative_deviation(out[0], ct2_encode(ct2_base_float32, speech_features)) < 1e-4


def test_bfloat16_encoder_is_closer_to_float32_than_ctranslate2_int8(base_model_path, ct2_base_float32,
                                                                     speech_features):
    import ctranslate2

    exact = ct2_encode(ct2_base_float32, speech_features)
    int8 = ct2_encode(ctranslate2.models.Whisper(str(base_model_path), device="cpu", compute_type="int8"),
                      speech_features)
    bf16 = TorchEncoder(base_model_path)(speech_features)[0]
    assert relative_deviation(bf16, exact) < 0.06
    assert relative_deviation(bf16, exact) < relative_deviation(int8, exact)


def tiny_whisper(out_dir: Path, n_mels: int = 128, layers: int = 2, heads: int = 4, d: int = 64,
                 quantization: str | None = "int8") -> Path:
    """A random-weight Whisper saved through CTranslate2's spec API (weights int8 on disk)."""
    from ctranslate2.specs import model_spec
    from ctranslate2.specs.whisper_spec import WhisperSpec

    spec = WhisperSpec(layers, heads, 1, heads)
    rng = np.random.default_rng(0)
    vocab = [f"t{i}" for i in range(40)]

    def fill(layer, name, value):
        scope, attr = name.rsplit("/", 1)
        optional = isinstance(value, str) and value == model_spec.OPTIONAL
        if value is not None and not (optional and attr in ("bias", "encodings", "gamma", "beta")):
            return
        parts = scope.split("/")
        if attr in ("gamma", "beta"):
            array = (np.ones(d) if attr == "gamma" else np.zeros(d)) + rng.normal(0, 0.1, d)
        elif parts[-1] == "conv1":
            array = rng.normal(0, 0.2, (d, n_mels, 3) if attr == "weight" else d)
        elif parts[-1] == "conv2":
            array = rng.normal(0, 0.1, (d, d, 3) if attr == "weight" else d)
        elif attr == "encodings":
            array = rng.normal(0, 0.5, (1500 if parts[0] == "encoder" else 448, d))
        elif parts[-1] == "embeddings" or parts[-1] == "projection":
            array = rng.normal(0, 0.1, (len(vocab), d) if attr == "weight" else len(vocab))
        elif parts[-1].startswith("linear"):
            index = int(parts[-1].split("_")[-1])
            if parts[-2] == "ffn":
                rows, cols = (4 * d, d) if index == 0 else (d, 4 * d)
            elif parts[-2] == "self_attention":
                rows, cols = (3 * d, d) if index == 0 else (d, d)
            else:  # cross-attention: query, fused key+value, output
                rows, cols = (2 * d, d) if index == 1 else (d, d)
            array = rng.normal(0, cols ** -0.5, (rows, cols) if attr == "weight" else rows)
        else:
            raise AssertionError(f"unexpected weight {name}")
        setattr(layer, attr, np.asarray(array, np.float32))

    model_spec.visit_spec(spec, fill)
    # two identical weights: CTranslate2 stores the second as an alias of the first
    spec.encoder.layer[1].ffn.linear_0.weight = spec.encoder.layer[0].ffn.linear_0.weight
    spec.register_vocabulary(vocab)
    spec.validate()
    spec.optimize(quantization=quantization)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    return out_dir


@pytest.mark.parametrize("quantization", ["int8", "int16", "float16"])
def test_stored_weights_are_read_like_ctranslate2(tmp_path, quantization):
    """Quantized weights dequantized, aliases followed, 128 mels, 2 layers of width 64."""
    import ctranslate2

    model = tiny_whisper(tmp_path / "tiny", quantization=quantization)
    stored = read_variables(model / "model.bin")
    assert stored["layer_0/ffn/linear_0/weight"].dtype == np.float32
    assert np.array_equal(stored["layer_1/ffn/linear_0/weight"], stored["layer_0/ffn/linear_0/weight"])
    features = np.random.default_rng(1).normal(0, 1, (128, 3000)).astype(np.float32)
    exact = ct2_encode(ctranslate2.models.Whisper(str(model), device="cpu", compute_type="float32"), features)
    out = TorchEncoder(model, dtype="float32")(features)[0]
    assert out.shape == (1500, 64)
    assert relative_deviation(out, exact) < 1e-4


def test_torch_encoder_transcribes_real_speech(base_model_path):
    """WhisperASR with the torch encoder (bfloat16 where the CPU has it, float32 elsewhere):
    real speech transcribed as well as CTranslate2's."""
    import corpus
    from subtitler.asr import WhisperASR

    prompts = corpus.load_prompts("en")
    names = [n for n in sorted(prompts) if len(prompts[n].split()) >= 4][:8]
    fast = WhisperASR(base_model_path, device="cpu", compute_type="int8", encoder="torch")
    assert fast.encoder == "torch"
    refs, hyps = [], []
    for name in names:
        audio = corpus.load_16k(corpus.prompt_path(name))
        d = fast.decode(audio, language="en")
        refs.append(prompts[name])
        hyps.append(d.text)
    assert corpus.wer(refs, hyps, lang="en") <= 0.10, list(zip(refs, hyps))
    assert fast.encoder_passes == len(names)


# -- choosing the encoder ----------------------------------------------------------------------

def test_auto_takes_torch_only_where_it_wins():
    amx = {"avx512f", "amx_bf16", "avx512_bf16"}
    assert choose_encoder("auto", "cpu", flags=amx, have_torch=True) == "torch"
    assert choose_encoder("auto", "cpu", flags={"avx2", "fma"}, have_torch=True) == "torch"  # float32
    assert choose_encoder("auto", "cpu", flags={"avx512f", "avx2"}, have_torch=True) == "ctranslate2"
    assert choose_encoder("auto", "cpu", flags={"sse4_2"}, have_torch=True) == "ctranslate2"
    assert choose_encoder("auto", "cpu", flags=amx, have_torch=False) == "ctranslate2"
    assert choose_encoder("auto", "cuda", flags=amx, have_torch=True) == "ctranslate2"
    assert choose_encoder("ctranslate2", "cpu", flags=amx, have_torch=True) == "ctranslate2"
    # an explicit choice is honoured even without bf16 instructions (slower, but asked for)
    assert choose_encoder("torch", "cpu", flags=set(), have_torch=True) == "torch"


def test_bfloat16_only_where_the_cpu_has_instructions_for_it():
    # emulated bfloat16 on an AVX2 CPU took 5.3 s a pass for base; float32 0.75 s
    assert encoder_dtype({"avx512f", "amx_bf16", "avx512_bf16"}) == "bfloat16"
    assert encoder_dtype({"avx512f", "avx512_bf16"}) == "bfloat16"
    assert encoder_dtype({"avx2", "fma"}) == "float32"


@pytest.mark.parametrize("setting, device, have_torch, says", [
    ("torch", "cpu", False, "pip install torch"),
    ("torch", "cuda", True, "CPU only"),
    ("tensorflow", "cpu", True, "allowed: auto, ctranslate2, torch"),
])
def test_an_encoder_that_cannot_run_is_one_clear_error(setting, device, have_torch, says):
    with pytest.raises(EncoderError, match=says):
        choose_encoder(setting, device, flags={"amx_bf16"}, have_torch=have_torch)


def test_a_broken_model_file_is_one_clear_error(tmp_path, base_model_path):
    with pytest.raises(EncoderError, match="model.bin not found"):
        TorchEncoder(tmp_path)
    whole = (base_model_path / "model.bin").read_bytes()
    for cut in (100_000, int(len(whole) * 0.95)):  # in the decoder's weights, in the encoder's
        (tmp_path / "model.bin").write_bytes(whole[:cut])
        with pytest.raises(EncoderError, match="truncated or not a CTranslate2 model"):
            TorchEncoder(tmp_path)
    (tmp_path / "model.bin").write_bytes((99).to_bytes(4, "little") + whole[4:])
    with pytest.raises(EncoderError, match="model format 99 is not one the torch encoder reads"):
        TorchEncoder(tmp_path)


def test_auto_falls_back_to_ctranslate2_when_torch_breaks(base_model_path, monkeypatch, caplog):
    """A broken PyTorch install: auto still captions (CTranslate2's encoder, with a warning);
    an explicit 'torch' is one clear error."""
    import subtitler.encoder
    from subtitler.asr import WhisperASR

    def broken(self, *a, **k):
        raise ImportError("libtorch_cpu.so: cannot open shared object file")

    monkeypatch.setattr(subtitler.encoder.TorchEncoder, "__init__", broken)
    monkeypatch.setattr(subtitler.encoder, "cpu_flags", lambda: {"amx_bf16"})
    monkeypatch.setattr(subtitler.encoder, "torch_available", lambda: True)
    asr = WhisperASR(base_model_path, device="cpu", compute_type="int8", encoder="auto")
    assert asr.encoder == "ctranslate2" and "torch encoder unavailable" in caplog.text
    with pytest.raises(EncoderError, match="asr.encoder = 'torch' cannot run: libtorch_cpu.so"):
        WhisperASR(base_model_path, device="cpu", compute_type="int8", encoder="torch")
