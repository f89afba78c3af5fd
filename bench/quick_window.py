#!/usr/bin/env python3
"""Partials on a short encoder input: time, agreement and loops against Whisper's 30 s window.

    python bench/quick_window.py --count 30

A partial decode is greedy and its audio is what has been heard so far. With the torch encoder
(``asr.encoder = torch``) ``WhisperASR(quick_window=True)`` encodes only that audio and 1 s of
silence instead of Whisper's fixed 30 s window. This bench decodes the growing audio of real
utterances (Asterisk prompts of the *tuning* half, ``corpus.in_split``, English and Spanish;
every 0.5 s of each, then the whole) both ways and prints per language:

  time_p50        seconds per decode (encoder + greedy text), on this machine now
  wer_whole       WER of the whole utterances' greedy decodes against the references
  same_text       share of the decodes whose words equal the 30 s window's
  loops           decodes whose output repeats itself (gzip ratio > 2.4 or a cut loop)
  rejected        decodes the guards dropped (no speech, low confidence, repetition)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import corpus  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="base")
    p.add_argument("--count", type=int, default=30, help="utterances per language")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()

    from subtitler.asr import WhisperASR, collapse_repetitions
    from subtitler.models import resolve_model

    asr = WhisperASR(resolve_model(args.model, str(HERE.parent / "models"), progress=False), device="cpu",
                     compute_type="int8", encoder="torch")
    rng = random.Random(args.seed)
    out = {"model": args.model, "encoder": asr.encoder}
    for lang in ("en", "es"):
        prompts = corpus.load_prompts(lang)
        durations = dict(corpus._speech_durations(lang))
        names = [n for n in sorted(prompts) if corpus.in_split(n, "tune") and 1.5 <= durations.get(n, 0) <= 8]
        stats = {mode: {"time": [], "text": [], "loops": 0, "rejected": 0, "whole": []} for mode in ("full", "quick")}
        refs = []
        for name in rng.sample(names, args.count):
            x = corpus.load_16k(corpus.prompt_path(name, lang))
            on, off = corpus.speech_bounds(x, corpus.SAMPLE_RATE)
            x = x[max(0, on - 4800): off + 3200]
            refs.append(prompts[name])
            cuts = list(range(8000, x.size, 8000)) + [x.size]
            for cut in cuts:
                for mode in ("full", "quick"):
                    asr.encoding.quick_window = mode == "quick"
                    asr.encoding.cache.clear()
                    t = time.perf_counter()
                    d = asr.decode(x[:cut], language=lang, beam_size=1, fallback=False)
                    s = stats[mode]
                    s["time"].append(time.perf_counter() - t)
                    s["text"].append(corpus.normalize(d.text, lang))
                    s["rejected"] += d.rejected is not None
                    s["loops"] += d.rejected == "repetition" or collapse_repetitions(d.text)[1] \
                        or d.compression_ratio > 2.4
                    if cut == x.size:
                        s["whole"].append(d.text)
        full, quick = stats["full"], stats["quick"]
        out[lang] = {mode: {"time_p50": round(float(np.median(s["time"])), 3),
                            "wer_whole": round(corpus.wer(refs, s["whole"], lang=lang), 4),
                            "loops": int(s["loops"]), "rejected": s["rejected"], "decodes": len(s["time"])}
                     for mode, s in stats.items()}
        out[lang]["same_text"] = round(sum(a == b for a, b in zip(full["text"], quick["text"])) / len(full["text"]), 3)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
