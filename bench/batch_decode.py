"""Is one batched decode of several rooms' utterances faster than decoding them one by one?

    python bench/batch_decode.py [--models base,tiny.en] [--max-n 4] [--repeats 3]
                                 [--encoder auto] [--device cpu]

For each model and N = 1…max-n, N different real utterances (Debian's Asterisk prompts, 2.5–6 s
of speech, one per room) are decoded one request at a time (what ``WhisperASR.decode`` does),
and as one ``WhisperASR.decode_batch``; the encoder cache is emptied before each so every audio pays its
encoder pass. Two kinds of request, as the streaming policy makes them:

  final     beam 5, temperature fallback allowed, no prefix
  partial   greedy, the first two words forced as the prefix

It prints the fastest seconds of each (of ``--repeats`` interleaved runs, after a warm-up) and
the ratio batch / one-by-one (below 1: the batch is faster), plus the same ratio for the encoder alone
when its windows go in one call (``decode_batch`` does that on CUDA only: see ``WhisperASR._encode``).
The texts of the batch are checked to equal the single decodes'.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import corpus  # noqa: E402
from subtitler.asr import DecodeRequest, WhisperASR  # noqa: E402
from subtitler.models import resolve_model  # noqa: E402


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.machine())
    except OSError:
        return platform.machine()


def utterances(count: int) -> list[tuple[str, np.ndarray]]:
    """``count`` different English prompts of 2.5–6 s of speech (text, 16 kHz int16)."""
    prompts = corpus.load_prompts("en")
    names = corpus.parallel_names(min_words=5, lang="en", duration=(2.5, 6.0))[:count]
    if len(names) < count:
        raise SystemExit(f"only {len(names)} suitable prompts found; install asterisk-core-sounds-en-wav")
    return [(prompts[n], corpus.load_16k(corpus.prompt_path(n))) for n in names]


def requests(kind: str, speech: list[tuple[str, np.ndarray]], multilingual: bool) -> list[DecodeRequest]:
    language = "en" if multilingual else None
    if kind == "final":
        return [DecodeRequest(audio, language=language, beam_size=5) for _, audio in speech]
    return [DecodeRequest(audio, language=language, beam_size=1, fallback=False,
                          prefix=" ".join(text.split()[:2])) for text, audio in speech]


def fastest(runs: dict, repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` timings of each run, the runs interleaved (after one warm-up
    round), so load from other processes on a shared machine weighs on all of them alike."""
    best = {name: float("inf") for name in runs}
    for round_ in range(repeats + 1):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            if round_:  # round 0 warms up: first-call allocations are not what a venue pays
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_model(name: str, args) -> None:
    path = resolve_model(name, models_dir=Path(__file__).resolve().parent.parent / "models",
                         download=False, progress=False)
    asr = WhisperASR(path, device=args.device, compute_type="auto", encoder=args.encoder)
    print(f"\n{name} on {asr.device} ({asr.compute_type}), encoder {asr.encoder}, "
          f"batch_benefit={asr.batch_benefit}")
    print(f"{'kind':8} {'N':>2} {'one by one s':>13} {'batch s':>8} {'ratio':>6} {'one-call encoder ratio':>23}")
    speech = utterances(args.max_n)
    frames = asr.model.feature_extractor.nb_max_frames

    def features(n: int) -> np.ndarray:
        out = []
        for _, audio in speech[:n]:
            f = asr.model.feature_extractor(audio.astype(np.float32) / 32768.0)
            out.append(np.pad(f, ((0, 0), (0, max(0, frames - f.shape[-1]))))[:, :frames])
        return np.stack(out).astype(np.float32)

    for kind in ("final", "partial"):
        for n in range(1, args.max_n + 1):
            reqs = requests(kind, speech[:n], asr.multilingual)

            def one_by_one():
                asr.encoding.cache.clear()
                return [asr.decode_batch([r])[0] for r in reqs]

            def batch():
                asr.encoding.cache.clear()
                return asr.decode_batch(reqs)

            singles, together = one_by_one(), batch()
            if [d.text for d in singles] != [d.text for d in together]:
                raise SystemExit(f"{name} {kind} N={n}: the batch's texts differ from the single decodes'")
            f = features(n)
            t = fastest({"seq": one_by_one, "batch": batch,
                         "enc_seq": lambda: [asr.encoding.call(f[i:i + 1]) for i in range(n)],
                         "enc_batch": lambda: asr.encoding.call(f)}, args.repeats)
            print(f"{kind:8} {n:>2} {t['seq']:>13.3f} {t['batch']:>8.3f} {t['batch'] / t['seq']:>6.2f} "
                  f"{t['enc_batch'] / t['enc_seq']:>23.2f}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="base,tiny.en")
    p.add_argument("--max-n", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--encoder", default="auto", help="asr.encoder: auto, ctranslate2, torch")
    p.add_argument("--device", default="cpu", help="asr.device: cpu, cuda, auto")
    args = p.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    for name in args.models.split(","):
        bench_model(name.strip(), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
