"""Does the Simplified, punctuated initial prompt help Whisper on Mandarin? (chinese.INITIAL_PROMPT)

No recorded Mandarin speech ships with Debian, so espeak-ng's Mandarin voice (``cmn``) reads
conference sentences (voice ``cmn-latn-pinyin``: Debian's plain ``cmn`` reads the pinyin it
makes of each character as English); the packaged Whisper ``base`` transcribes each with ``language="zh"``,
once per prompt variant. Printed per variant (JSON):

* ``traditional_chars``: share of the Han characters written in a Traditional-only form (a
  character OpenCC's t2s changes): what a mainland audience should not see before conversion;
* ``punctuated``: share of outputs with full-width punctuation (，。！？); ``ascii_punct``: outputs
  with half-width , . ? ! in Chinese text;
* ``cer``: character error rate after OpenCC t2s and without punctuation or spaces (so it
  measures recognition, not script or punctuation), against the text espeak-ng read.

What it cannot show: espeak-ng's Mandarin is synthetic, flat-toned speech, far from a speaker in
a hall; the figures compare prompts on the same audio, not the absolute accuracy on real talks.

    python3 bench/chinese_prompt.py [--model base] [--count 24]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SENTENCES = [
    "各位来宾，女士们，先生们，大家上午好！",
    "欢迎来到第七届中国国际智能产业博览会。",
    "今天我们在重庆相聚，共同讨论人工智能的未来。",
    "本次大会共有来自四十多个国家和地区的代表参加。",
    "首先，请允许我代表组委会向大家表示热烈的欢迎。",
    "过去一年，我们在软件和网络建设方面取得了很大的进步。",
    "数字经济已经成为推动经济发展的重要力量。",
    "我们要加强国际合作，共同应对新的挑战。",
    "下面请市长先生致辞，大家欢迎。",
    "会议将在下午两点继续进行。",
    "请各位代表准时回到会场。",
    "午餐安排在二楼的宴会厅。",
    "这个项目的投资总额超过五百亿元。",
    "我们希望与更多的企业开展合作。",
    "感谢大家的支持和参与，谢谢！",
    "请问这个问题您怎么看？",
    "我认为教育和科技是发展的关键。",
    "年轻人应该勇于创新，敢于尝试。",
    "这次展览吸引了很多观众前来参观。",
    "新的机场将于明年正式投入使用。",
    "我们的产品已经出口到一百多个国家。",
    "环境保护是每个人的责任。",
    "这座城市的交通越来越方便了。",
    "最后，祝大家身体健康，工作顺利！",
]
VARIANTS = {
    "none": "",
    "plain (以下是普通话的句子。)": "以下是普通话的句子。",
    "subtitler (INITIAL_PROMPT)": None,  # filled in from chinese.INITIAL_PROMPT
}
# Debian's espeak-ng reads Han characters as pinyin; the plain "cmn" voice then reads that pinyin
# as English words ("ge four"), "cmn-latn-pinyin" as Mandarin syllables.
VOICE = "cmn-latn-pinyin"
_HAN = re.compile(r"[\u4e00-\u9fff]")
_STRIP = re.compile(r"[\s，。！？、；：,.!?;:\"'“”‘’（）()《》]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="base")
    ap.add_argument("--count", type=int, default=len(SENTENCES))
    ap.add_argument("--speed", type=int, default=150, help="espeak-ng words a minute")
    args = ap.parse_args()

    import jiwer
    import opencc

    from subtitler.asr import WhisperASR
    from subtitler.chinese import INITIAL_PROMPT
    from subtitler.models import resolve_model

    sys.path.insert(0, str(REPO / "bench"))
    import corpus

    VARIANTS["subtitler (INITIAL_PROMPT)"] = INITIAL_PROMPT
    t2s = opencc.OpenCC("t2s.json")
    asr = WhisperASR(resolve_model(args.model, models_dir=REPO / "models", download=False, progress=False),
                     device="cpu", compute_type="int8")
    sentences = SENTENCES[:args.count]
    audio = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, s in enumerate(sentences):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", VOICE, "-s", str(args.speed), "-w", str(wav), s], check=True)
            audio.append(corpus.load_16k(wav))
    report = {"model": args.model, "sentences": len(sentences), "voice": "espeak-ng " + VOICE, "variants": {}}
    for name, prompt in VARIANTS.items():
        outs, t0 = [], time.perf_counter()
        for a in audio:
            outs.append(asr.decode(a, language="zh", prompt=prompt, beam_size=5).text.strip())
        han = [c for o in outs for c in _HAN.findall(o)]
        trad = sum(1 for c in han if t2s.convert(c) != c)
        hyp = [_STRIP.sub("", t2s.convert(o)) for o in outs]
        ref = [_STRIP.sub("", s) for s in sentences]
        report["variants"][name] = {
            "prompt": prompt,
            "traditional_chars": round(trad / max(1, len(han)), 3),
            "punctuated": round(sum(bool(re.search("[，。！？]", o)) for o in outs) / len(outs), 3),
            "ascii_punct": round(sum(bool(re.search(r"[,.?!]", o)) for o in outs) / len(outs), 3),
            "cer": round(jiwer.cer(ref, [h or "-" for h in hyp]), 3),
            "seconds": round(time.perf_counter() - t0, 1),
            "examples": outs[:4],
        }
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
