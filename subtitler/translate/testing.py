"""Tiny but real CTranslate2 translation models, for tests and benchmarks without downloads.

``random_model`` writes a Transformer with random weights through ``ctranslate2.specs`` in the
layout of an NLLB-200 / M2M-100 / Marian conversion (vocabulary with the family's language
tokens, sentencepiece model beside it); ``train_sentencepiece`` trains the sentencepiece model
on a few sentences. The translations are nonsense, but every step the backend takes — tokens,
language prefixes, one batched call, decoding limits, detokenisation — is the real one. With
the dimensions of NLLB-200-distilled-600M it also times that model on this machine.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .languages import M2M100_LANGUAGES, NLLB_LANGUAGES

SAMPLE_TEXT = [
    "Press one to listen to your messages.", "The conference is now unmuted.",
    "Please enter your password followed by the pound key.", "Your call is important to us.",
    "The delegation arrived in Chongqing on Monday.", "Thank you for calling, goodbye.",
    "Marque uno para escuchar sus mensajes.", "La conferencia ya no está silenciada.",
    "Por favor ingrese su contraseña.", "Gracias por llamar, adiós.",
    "Appuyez sur un pour écouter vos messages.", "Drücken Sie eins, um Ihre Nachrichten zu hören.",
    "请按一键收听留言。", "会议现在已取消静音。",
]

# Dimensions of real models, for benchmarks: (encoder layers, decoder layers, d_model, heads, ffn).
SHAPES = {
    "tiny": (2, 2, 32, 2, 64),
    "nllb-200-distilled-600M": (12, 12, 1024, 16, 4096),
    "m2m100_418M": (12, 12, 1024, 16, 4096),
    "opus-mt": (6, 6, 512, 8, 2048),
}
VOCAB_SIZES = {"nllb-200-distilled-600M": 256206, "m2m100_418M": 128112, "opus-mt": 65001}


def train_sentencepiece(path: str | Path, texts: list[str] | None = None, vocab_size: int = 120) -> Path:
    """Train a small BPE sentencepiece model on ``texts`` into ``path``."""
    import sentencepiece as spm

    texts = texts or SAMPLE_TEXT
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts * 4), model_writer=model, vocab_size=vocab_size,
                                   model_type="bpe", character_coverage=1.0, hard_vocab_limit=False,
                                   minloglevel=2)
    path = Path(path)
    path.write_bytes(model.getvalue())
    return path


def _pieces(spm_file: Path) -> list[str]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def vocabulary(family: str, pieces: list[str], size: int | None = None) -> list[str]:
    """A vocabulary laid out like the family's conversion, padded to ``size`` tokens."""
    words = [p for p in pieces if p not in ("<unk>", "<s>", "</s>", "<pad>")]
    vocab = ["<s>", "<pad>", "</s>", "<unk>", *words]
    if family == "nllb":
        vocab += [*NLLB_LANGUAGES, "<mask>"]
    elif family == "m2m100":
        vocab += [f"__{c}__" for c in M2M100_LANGUAGES]
    if size is not None:
        vocab += [f"<extra_{i}>" for i in range(max(0, size - len(vocab)))]
    return vocab


def random_model(out_dir: str | Path, family: str = "nllb", shape: str = "tiny", *,
                 spm_file: str | Path | None = None, vocab_size: int | None = None,
                 quantization: str | None = None, seed: int = 0) -> Path:
    """Write a random-weight CTranslate2 model of ``family`` (nllb, m2m100, marian) into
    ``out_dir``, with its sentencepiece model(s). Returns the folder."""
    from ctranslate2.specs import TransformerSpec, common_spec, model_spec

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spm_name = "source.spm" if family == "marian" else "sentencepiece.bpe.model"
    if spm_file is None:
        train_sentencepiece(out_dir / spm_name)
    elif Path(spm_file) != out_dir / spm_name:
        (out_dir / spm_name).write_bytes(Path(spm_file).read_bytes())
    if family == "marian":
        (out_dir / "target.spm").write_bytes((out_dir / "source.spm").read_bytes())
    size = vocab_size if vocab_size is not None else VOCAB_SIZES.get(shape)
    vocab = vocabulary(family, _pieces(out_dir / spm_name), size)
    language_tokens = set(vocabulary(family, [])) - set(vocabulary("marian", []))

    enc_layers, dec_layers, d, heads, ffn = SHAPES[shape]
    spec = TransformerSpec.from_config((enc_layers, dec_layers), heads, pre_norm=True,
                                       activation=common_spec.Activation.RELU)
    rng = np.random.default_rng(seed)
    v = len(vocab)
    shared: list[np.ndarray] = []

    def fill(layer, name, value):
        if value is not None:
            return
        scope, attr = name.rsplit("/", 1) if "/" in name else ("", name)
        parts = scope.split("/")
        if attr == "gamma":
            array = np.ones(d, np.float32)
        elif attr == "beta":
            array = np.zeros(d, np.float32)
        elif "embeddings" in parts[-1] or scope.endswith("projection"):
            if not shared:  # one matrix for both embeddings and the output, as NLLB and M2M-100 do
                shared.append(rng.standard_normal((v, d), dtype=np.float32) * 0.02)
            array = shared[0]
        elif parts[-1].startswith("linear"):
            index = int(parts[-1].split("_")[-1])
            if parts[-2] == "ffn":
                rows, cols = (ffn, d) if index == 0 else (d, ffn)
            elif parts[-2] == "self_attention":
                rows, cols = (3 * d, d) if index == 0 else (d, d)
            else:  # encoder-decoder attention: query, fused key+value, output
                rows, cols = ((2 * d, d) if index == 1 else (d, d))
            array = rng.standard_normal((rows, cols), dtype=np.float32) * (1 / np.sqrt(cols))
        else:
            raise AssertionError(f"unexpected weight {name}")
        setattr(layer, attr, array)

    model_spec.visit_spec(spec, fill)
    # Random weights would mostly pick special and language tokens; make the model "speak":
    # ordinary pieces only, until the backend's length guard stops it.
    bias = np.zeros(v, np.float32)
    for i, token in enumerate(vocab):
        if token.startswith("<") or token in language_tokens:
            bias[i] = -1e4
    spec.decoder.projection.bias = bias
    spec.register_source_vocabulary(vocab)
    spec.register_target_vocabulary(vocab)
    spec.config.decoder_start_token = "</s>" if family != "marian" else "<pad>"
    spec.validate()
    spec.optimize(quantization=quantization)  # also stores the shared matrix once
    spec.save(str(out_dir))
    return out_dir
