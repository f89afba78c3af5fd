#!/usr/bin/env python3
"""Time that translation adds to a caption, per backend, for 1, 2 and 4 targets; BLEU/chrF on
the Asterisk parallel prompts (English prompts and their Spanish versions).

    python bench/translate_latency.py                   # everything this machine can run
    python bench/translate_latency.py --count 20 --skip-whisper
    python bench/translate_latency.py --ct2-model models/nllb-200-distilled-600M   # a real model

"Time added" is one ``TranslationStage.translate`` call for a final caption — what the
translation worker spends before the ``translation`` caption follows the final (no queueing:
captions arrive seconds apart). Sentences: English Asterisk prompts of 3+ words.

Backends:
  * apertium: the installed pairs from English (one pair per target; targets beyond the
    installed pairs are reported as n/a).
  * ctranslate2: without a real model (none can be downloaded here) a random-weight model with
    the exact dimensions of NLLB-200-distilled-600M (12+12 layers, d 1024, 16 heads, FFN
    4096, 256,206-token vocabulary, int8), built once into bench/out/. Its output length is
    forced to 1.15 × the source's tokens (a real en → es translation's length), with a
    sentencepiece model trained on the prompts so tokens ≈ NLLB's. So the figures time the real
    model's computation; with --ct2-model a real model is timed and scored instead.
  * ctranslate2_pairs: one OPUS-MT-shaped Marian pair model per target (en-es, en-fr, en-de,
    en-zh; 6+6 layers, d 512, 8 heads, FFN 2048, 65,001 tokens, int8; random weights, lengths
    forced the same way), the targets of a caption translated one model after the other.
  * whisper: the packaged multilingual ``base`` translating Spanish prompts' audio to English
    (target en only); also the encoder's share, which reusing the transcription's encoder
    pass would save.

Prints JSON; also writes it to --out. Target: 4 targets add ≤ 0.3 s p50 on CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import corpus  # noqa: E402

TARGET_SETS = {1: ["es"], 2: ["es", "fr"], 4: ["es", "fr", "de", "zh"]}
TARGET_P50_S = 0.3


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(times: list[float]) -> dict:
    return {"p50_ms": round(1000 * pct(times, 0.5), 1), "p90_ms": round(1000 * pct(times, 0.9), 1),
            "n": len(times)}


def english_sentences(count: int, seed: int = 0) -> list[str]:
    en = corpus.load_prompts("en")
    pool = sorted(t for t in en.values() if len(corpus.normalize(t, "en").split()) >= 3)
    return random.Random(seed).sample(pool, min(count, len(pool)))


def parallel(src: str, tgt: str) -> list[tuple[str, str]]:
    a, b = corpus.load_prompts(src), corpus.load_prompts(tgt)
    names = sorted(n for n in set(a) & set(b) if len(corpus.normalize(a[n], src).split()) >= 3)
    return [(a[n], b[n]) for n in names]


def score(hyps: list[str], refs: list[str], lang: str) -> dict:
    import sacrebleu

    h = [corpus.normalize(x, lang) for x in hyps]
    r = [corpus.normalize(x, lang) for x in refs]
    return {"bleu": round(sacrebleu.corpus_bleu(h, [r]).score, 1),
            "chrf": round(sacrebleu.corpus_chrf(h, [r]).score, 1), "n": len(h)}


def time_stage(stage, sentences: list[str], source: str = "en", before=None) -> list[float]:
    stage.translate(sentences[0], source)  # warm
    times = []
    for s in sentences:
        if before:
            before(s)
        t0 = time.perf_counter()
        result = stage.translate(s, source)
        times.append(time.perf_counter() - t0)
        if result.errors:
            raise RuntimeError(f"translation failed: {result.errors}")
    return times


# -- backends ----------------------------------------------------------------------------------

def bench_apertium(sentences: list[str]) -> dict:
    from subtitler.translate import TranslationStage
    from subtitler.translate import apertium as ap

    if not ap.available():
        return {"skipped": "apertium is not installed"}
    tr = ap.ApertiumTranslator()
    targets = sorted({t for s, t in tr.languages if s == "en"})
    out: dict = {"pairs": list(tr.pairs), "targets_from_en": targets}
    try:
        for n in (1, 2, 4):
            if n > len(targets):
                out[f"{n}_targets"] = f"n/a: {len(targets)} pair(s) from English installed"
                continue
            stage = TranslationStage(targets[:n], [tr], source="en")
            stage.warmup()
            out[f"{n}_targets"] = summary(time_stage(stage, sentences))
        for src, tgt in (("en", "es"), ("es", "en")):
            if tr.supports(src, tgt):
                pairs = parallel(src, tgt)
                hyps = [tr.translate(s, src, [tgt])[tgt] for s, _ in pairs]
                out[f"quality_{src}_{tgt}"] = score(hyps, [r for _, r in pairs], tgt)
    finally:
        tr.close()
    return out


def random_ct2(out_dir: Path, shape: str, vocab_size: int | None, family: str = "nllb") -> Path:
    """A random-weight model of a real model's shape (NLLB-600M: built once, ~2 min, ~0.6 GB)."""
    from subtitler.translate.testing import VOCAB_SIZES, random_model, train_sentencepiece

    vocab_size = vocab_size or VOCAB_SIZES[shape]
    folder = out_dir / f"ct2-random-{shape}-v{vocab_size}" if family == "nllb" else \
        out_dir / f"ct2-random-{family}-{shape}-v{vocab_size}"
    if (folder / "model.bin").is_file():
        return folder
    tmp = out_dir / "spm-prompts.model"
    texts = list(corpus.load_prompts("en").values()) + list(corpus.load_prompts("es").values())
    train_sentencepiece(tmp, texts, vocab_size=1500)
    print(f"building a random-weight model shaped like {shape} (vocabulary {vocab_size}) …", file=sys.stderr)
    random_model(folder, family, shape, spm_file=tmp, vocab_size=vocab_size, quantization="int8")
    tmp.unlink()
    return folder


def _time_ct2(tr, beam: int, sentences: list[str], real: bool) -> dict:
    from subtitler.translate import TranslationStage

    out: dict = {}

    models = getattr(tr, "translators", [tr])  # one model, or several (pairs)

    def force_length(sentence: str) -> None:
        if not real:  # EOS is suppressed in the random model: decode exactly this many tokens
            n = len(models[0]._spm[0].encode(sentence))
            for m in models:
                m.max_decoding_length = max(1, round(1.15 * (n + 1)))

    if not real:
        out["source_tokens_mean"] = round(statistics.mean(len(models[0]._spm[0].encode(s)) + 2
                                                          for s in sentences), 1)
    for n, targets in TARGET_SETS.items():
        targets = [t for t in targets if tr.can_target(t)]
        if len(targets) < n:
            out[f"beam{beam}_{n}_targets"] = "n/a: the model lacks a target"
            continue
        stage = TranslationStage(targets, [tr], source="en")
        out[f"beam{beam}_{n}_targets"] = summary(time_stage(stage, sentences, before=force_length))
    return out


def bench_ct2(sentences: list[str], model: str | None, beams: list[int], threads: int,
              shape: str = "nllb-200-distilled-600M", vocab_size: int | None = None) -> dict:
    from subtitler.translate.ct2 import CTranslate2Translator

    real = model is not None
    folder = Path(model) if real else random_ct2(ROOT / "bench" / "out", shape, vocab_size)
    out: dict = {"model": str(folder.name), "real_weights": real}
    for beam in beams:
        tr = CTranslate2Translator(folder, device="cpu", compute_type="int8", beam_size=beam, cpu_threads=threads)
        out.setdefault("family", tr.family)
        out.update(_time_ct2(tr, beam, sentences, real))
        if real and beam == beams[0] and tr.supports("en", "es"):
            pairs = parallel("en", "es")
            hyps = [h for i in range(0, len(pairs), 16)
                    for h in tr.translate_rows([(s, "es") for s, _ in pairs[i:i + 16]], "en")]
            out[f"quality_en_es_beam{beam}"] = score(hyps, [r for _, r in pairs], "es")
    return out


def bench_ct2_pairs(sentences: list[str], beams: list[int], threads: int) -> dict:
    """One OPUS-MT-shaped Marian pair model per target (random weights, the real dimensions:
    6+6 layers, d 512, 65,001 tokens), each loaded on its own as a user's pairs would be."""
    from subtitler.translate.ct2 import CTranslate2Models, CTranslate2Translator

    out_dir = ROOT / "bench" / "out"
    base = random_ct2(out_dir, "opus-mt", None, family="marian")
    folders = []
    for target in TARGET_SETS[4]:
        folder = out_dir / "ct2-random-pairs" / f"opus-mt-en-{target}"  # the name tells the pair
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for item in base.iterdir():
                (folder / item.name).symlink_to(item.resolve())
        folders.append(folder)
    out: dict = {"models": [f.name for f in folders], "real_weights": False, "family": "marian"}
    for beam in beams:
        models = CTranslate2Models([CTranslate2Translator(f, device="cpu", compute_type="int8", beam_size=beam,
                                                          cpu_threads=threads) for f in folders])
        out.update(_time_ct2(models, beam, sentences, real=False))
    return out


def bench_whisper(count: int) -> dict:
    import numpy as np

    from subtitler.asr import WhisperASR
    from subtitler.models import resolve_model
    from subtitler.translate import TranslationStage
    from subtitler.translate.whisper_en import WhisperTranslator

    asr = WhisperASR(resolve_model("base", ROOT / "models", download=False, progress=False), device="cpu",
                     compute_type="int8")
    en = corpus.load_prompts("en")
    pool = corpus.parallel_names(4, "es", duration=(1.0, 8.0))
    names = random.Random(0).sample(pool, min(count, len(pool)))
    stage = TranslationStage(["en"], [WhisperTranslator(asr)], source="es")
    audio = {n: corpus.load_16k(corpus.prompt_path(n, "es")) for n in names}
    stage.translate("x", "es", audio=audio[names[0]])  # warm
    times, encode, hyps = [], [], []
    fe = asr.model.feature_extractor
    for n in names:
        t0 = time.perf_counter()
        result = stage.translate("(transcript)", "es", audio=audio[n])
        times.append(time.perf_counter() - t0)
        hyps.append(result.translations.get("en", ""))
        features = fe(audio[n].astype(np.float32) / 32768.0)
        features = np.pad(features, ((0, 0), (0, max(0, fe.nb_max_frames - features.shape[-1]))))
        t0 = time.perf_counter()
        asr.model.encode(features[:, :fe.nb_max_frames])
        encode.append(time.perf_counter() - t0)
    generation = [t - e for t, e in zip(times, encode)]
    return {"model": f"base (int8 decoder, {asr.encoder} encoder)", "1_target": summary(times),
            "encoder_pass": summary(encode),
            "1_target_reusing_encoder": summary(generation),
            "quality_es_en": score(hyps, [en[n] for n in names], "en")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=30, help="captions timed per configuration")
    p.add_argument("--ct2-model", help="a real CTranslate2 model folder (default: NLLB-600M-shaped random)")
    p.add_argument("--ct2-shape", default="nllb-200-distilled-600M",
                   help="dimensions of the random model: nllb-200-distilled-600M, m2m100_418M, opus-mt")
    p.add_argument("--ct2-vocab", type=int, help="vocabulary size of the random model (default: the real one's)")
    p.add_argument("--beams", default="1,2", help="beam sizes for CTranslate2")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CTranslate2 CPU threads")
    p.add_argument("--whisper-count", type=int, default=12)
    p.add_argument("--skip-ct2", action="store_true")
    p.add_argument("--skip-pairs", action="store_true", help="skip the OPUS-MT pair models (one per target)")
    p.add_argument("--skip-whisper", action="store_true")
    p.add_argument("--skip-apertium", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "translate_latency.json")
    a = p.parse_args(argv)

    sentences = english_sentences(a.count)
    report: dict = {"cpu_count": os.cpu_count(), "captions": len(sentences), "target_sets": TARGET_SETS}
    if not a.skip_apertium:
        report["apertium"] = bench_apertium(sentences)
    if not a.skip_ct2:
        report["ctranslate2"] = bench_ct2(sentences, a.ct2_model, [int(b) for b in a.beams.split(",")], a.threads,
                                          a.ct2_shape, a.ct2_vocab)
    if not a.skip_pairs:
        report["ctranslate2_pairs"] = bench_ct2_pairs(sentences, [int(b) for b in a.beams.split(",")], a.threads)
    if not a.skip_whisper:
        report["whisper"] = bench_whisper(a.whisper_count)
    checks = {}
    for backend, key in (("apertium", "4_targets"), ("ctranslate2", "beam1_4_targets"),
                         ("ctranslate2", "beam2_4_targets"), ("ctranslate2_pairs", "beam1_4_targets"),
                         ("ctranslate2_pairs", "beam2_4_targets")):
        figure = report.get(backend, {}).get(key)
        if isinstance(figure, dict):
            checks[f"{backend} {key}"] = figure["p50_ms"] <= 1000 * TARGET_P50_S
    report["target_4_targets_p50_le_0.3s"] = checks
    text = json.dumps(report, indent=2, ensure_ascii=False)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
