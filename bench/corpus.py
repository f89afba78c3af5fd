#!/usr/bin/env python3
"""Real-speech test streams with known truth, built from Asterisk's prompts.

Debian's ``asterisk-core-sounds-{en,es}-wav`` packages ship hundreds of
studio-recorded 8 kHz prompts (one speaker, "Allison") together with their
transcripts.  That is real human speech we can install from apt, so benches
and tests can measure WER and segmentation without downloading a data set.

``build_stream`` glues a seeded selection of prompts into one 16 kHz mono
int16 WAV with silences between them and writes a JSON "truth" file next to
it: the text of every utterance and the second at which its speech starts
and ends in the stream, plus any long silent stretch that was inserted.

Usage as a script::

    python bench/corpus.py OUT.wav [--lang en] [--count N] [--seed S]
                           [--long-silence-after K] [--noise-db D]

prints the path of the JSON file written next to OUT.wav.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import shutil
import subprocess
import unicodedata
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
SOUNDS_ROOT = Path("/usr/share/asterisk/sounds")
DOC_ROOT = Path("/usr/share/doc")

# Speech onset/offset detection: RMS of 10 ms frames above this level counts
# as speech.  The prompts' digital background sits near -95 dBFS and speech
# peaks around -10 dBFS, so -45 dBFS separates them with a wide margin.
FRAME_S = 0.010
THRESHOLD_DBFS = -45.0
# Audio kept around the measured speech so soft onsets (breaths, fricatives
# under the threshold) are not chopped; the truth still reports the measured
# onset/offset, not the padded edges.
PAD_S = 0.10

# Prompts whose transcript does not say what the audio says (checked by ear
# in the upstream notes): "H.323" is read digit by digit, "IAX (note: ...)".
_DENYLIST = {"spy-h323", "spy-iax2"}


# --------------------------------------------------------------------------
# Prompt catalogue
# --------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile of ``values`` (linear between ranks, rounded to ms); None when empty:
    the latency figures every bench prints."""
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return round(values[lo] + (values[hi] - values[lo]) * (k - lo), 3)


def _sounds_dir(lang: str) -> Path:
    """The folder of one language's prompts (e.g. en_US_f_Allison)."""
    candidates = sorted(p for p in SOUNDS_ROOT.glob(f"{lang}_*") if p.is_dir() and not p.is_symlink())
    candidates += [SOUNDS_ROOT / lang]  # alternatives symlink, as a fallback
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        f"no Asterisk prompts for {lang!r} under {SOUNDS_ROOT} "
        f"(apt-get install asterisk-core-sounds-{lang}-wav)")


def _transcript_file(lang: str) -> Path:
    base = DOC_ROOT / f"asterisk-core-sounds-{lang}"
    for name in (f"core-sounds-{lang}.txt.gz", f"core-sounds-{lang}.txt"):
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(f"no transcript for {lang!r} in {base}")


def _is_speech(text: str) -> bool:
    """False for empty texts and for any text with an annotation in brackets:
    '[beep tone]', '<beep ascending>', '(10 seconds of silence)', or speech
    mixed with a tone ('... (simple tone sound plays)') -- the audio of those
    does not match the words, so they make bad truth."""
    if not text.strip():
        return False
    if re.search(r"[\[\]<>(){}]", text):
        return False
    return bool(re.search(r"\w", text))


@lru_cache(maxsize=None)
def _load_prompts_cached(lang: str) -> tuple[tuple[str, str], ...]:
    sounds = _sounds_dir(lang)
    path = _transcript_file(lang)
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[str, str] = {}  # a dict: some transcripts list a name twice
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            name, text = name.strip(), " ".join(text.split())
            if name in _DENYLIST or not _is_speech(text):
                continue
            if (sounds / f"{name}.wav").is_file():  # names may hold subfolders: digits/1
                out.setdefault(name, text)
    return tuple(sorted(out.items()))


def parallel_names(min_words: int = 0, lang: str = "en",
                   duration: tuple[float, float] | None = None) -> list[str]:
    """Prompts recorded in both English and Spanish (a parallel corpus), sorted: at least
    ``min_words`` normalised words in ``lang``'s text and, if given, ``lang``'s speech lasting
    within ``duration`` seconds."""
    en, es = load_prompts("en"), load_prompts("es")
    texts = en if lang == "en" else es
    durations = dict(_speech_durations(lang)) if duration else {}
    return sorted(n for n in set(en) & set(es)
                  if len(normalize(texts[n], lang).split()) >= min_words
                  and (duration is None or duration[0] <= durations.get(n, 0) <= duration[1]))


def load_prompts(lang: str = "en") -> dict[str, str]:
    """name -> reference text, for prompts whose WAV exists and whose text is
    real speech.  Names keep their subfolder, e.g. 'digits/1'."""
    return dict(_load_prompts_cached(lang))


def prompt_path(name: str, lang: str = "en") -> Path:
    return _sounds_dir(lang) / f"{name}.wav"


# --------------------------------------------------------------------------
# Audio helpers
# --------------------------------------------------------------------------

def _frame_dbfs(x: np.ndarray, sr: int) -> np.ndarray:
    n = max(1, int(round(FRAME_S * sr)))
    m = len(x) // n
    if m == 0:
        return np.full(1, -200.0)
    f = x[: m * n].astype(np.float64).reshape(m, n)
    rms = np.sqrt((f * f).mean(axis=1))
    return 20.0 * np.log10(rms / 32768.0 + 1e-12)


def speech_bounds(x: np.ndarray, sr: int, threshold_dbfs: float = THRESHOLD_DBFS) -> tuple[int, int] | None:
    """(onset, offset) in samples: start of the first and end of the last
    10 ms frame whose RMS exceeds the threshold; None when nothing does."""
    db = _frame_dbfs(x, sr)
    loud = np.flatnonzero(db > threshold_dbfs)
    if loud.size == 0:
        return None
    n = max(1, int(round(FRAME_S * sr)))
    return int(loud[0] * n), int(min(len(x), (loud[-1] + 1) * n))


def _read_wav_int16(path: Path) -> tuple[np.ndarray, int]:
    """Plain PCM WAV via the stdlib (fast: used to pre-measure all prompts)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: not 16-bit PCM")
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() > 1:
            x = x.reshape(-1, w.getnchannels()).mean(axis=1).astype(np.int16)
        return x, w.getframerate()


def _resample_sox(path: Path, sr: int) -> np.ndarray:
    # 'rate -v' is SoX's very-high-quality linear-phase resampler (no delay,
    # so boundaries stay put); -D disables dither so the output is repeatable.
    cmd = ["sox", "-D", str(path), "-t", "raw", "-e", "signed-integer", "-b", "16",
           "-c", "1", "-L", "-", "rate", "-v", str(sr)]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    return np.frombuffer(out, dtype="<i2").copy()


def _resample_av(path: Path, sr: int) -> np.ndarray:
    # Fallback when sox is missing: libswresample through PyAV.
    import av

    chunks = []
    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="s16", layout="mono", rate=sr)
        for frame in c.decode(audio=0):
            for f in rs.resample(frame):
                chunks.append(f.to_ndarray().reshape(-1))
        for f in rs.resample(None):
            chunks.append(f.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)


def load_16k(path: Path) -> np.ndarray:
    """A prompt as 16 kHz mono int16 (sox if installed, else PyAV)."""
    if shutil.which("sox"):
        return _resample_sox(path, SAMPLE_RATE)
    return _resample_av(path, SAMPLE_RATE)


@lru_cache(maxsize=None)
def _speech_durations(lang: str) -> tuple[tuple[str, float], ...]:
    """Speech duration of every prompt, measured on the original 8 kHz file
    (cheap, stdlib only) so selection by duration needs no resampling."""
    out = []
    for name, _ in _load_prompts_cached(lang):
        try:
            x, sr = _read_wav_int16(prompt_path(name, lang))
        except (wave.Error, ValueError, EOFError):
            continue
        b = speech_bounds(x, sr)
        if b is not None:
            out.append((name, (b[1] - b[0]) / sr))
    return tuple(out)


def write_wav(path: Path, x: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(np.asarray(x, dtype="<i2").tobytes())


# --------------------------------------------------------------------------
# Stream builder
# --------------------------------------------------------------------------

def build_stream(out_wav: Path, lang: str = "en", count: int = 12, seed: int = 0,
                 gaps: tuple[float, float] = (0.8, 2.0),
                 long_silence_after: int | None = None, long_silence: float = 20.0,
                 min_duration: float = 1.0, max_duration: float = 8.0,
                 noise_db: float | None = None) -> dict:
    """Write a 16 kHz mono int16 WAV of `count` prompts and its truth JSON.

    Prompts are picked with `seed` among those whose speech lasts between
    `min_duration` and `max_duration` seconds.  The stream starts with a gap,
    each prompt is followed by a gap drawn uniformly from `gaps`; after prompt
    index `long_silence_after` (0-based: 5 means after the 6th prompt) the gap
    is `long_silence` seconds instead.  `noise_db` adds white noise of that
    RMS level (dBFS) over everything, so silence is not digital zero.

    Returns (and writes to out_wav.with_suffix('.json')) the truth dict:
    utterances[i].start/end are the speech onset/offset in stream seconds;
    silences lists the long silent stretch(es) from the offset of the speech
    before to the onset of the speech after (or the stream's end).
    """
    out_wav = Path(out_wav)
    prompts = load_prompts(lang)
    pool = sorted(n for n, d in _speech_durations(lang) if min_duration <= d <= max_duration)
    if count > len(pool):
        raise ValueError(f"only {len(pool)} {lang} prompts last {min_duration}-{max_duration} s, asked {count}")
    if long_silence_after is not None and not 0 <= long_silence_after < count:
        raise ValueError(f"long_silence_after must be in [0, {count - 1}]")
    rng = random.Random(seed)
    names = rng.sample(pool, count)

    sr = SAMPLE_RATE
    pad = int(round(PAD_S * sr))
    pieces: list[np.ndarray] = []
    pos = 0  # samples written so far
    utterances, silences = [], []

    def silence(seconds: float) -> None:
        nonlocal pos
        n = int(round(seconds * sr))
        pieces.append(np.zeros(n, np.int16))
        pos += n

    silence(rng.uniform(*gaps))
    for i, name in enumerate(names):
        x = load_16k(prompt_path(name, lang))
        on, off = speech_bounds(x, sr)  # re-measured at 16 kHz, after resampling
        a, b = max(0, on - pad), min(len(x), off + pad)
        utterances.append({"name": name, "text": prompts[name],
                           "start": round((pos + on - a) / sr, 3),
                           "end": round((pos + off - a) / sr, 3)})
        pieces.append(x[a:b])
        pos += b - a
        if i == long_silence_after:
            silence(long_silence)
            silences.append({"start": utterances[-1]["end"], "end": None})
        else:
            silence(rng.uniform(*gaps))

    y = np.concatenate(pieces).astype(np.float64)
    if noise_db is not None:
        nrng = np.random.default_rng(seed)
        y += nrng.standard_normal(len(y)) * (32768.0 * 10 ** (noise_db / 20.0))
    y = np.clip(np.round(y), -32768, 32767).astype(np.int16)
    duration = round(len(y) / sr, 3)
    for s in silences:  # close each long silence at the next speech onset
        nxt = [u["start"] for u in utterances if u["start"] > s["start"]]
        s["end"] = nxt[0] if nxt else duration

    out_wav.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out_wav, y, sr)
    truth = {"wav": str(out_wav), "sample_rate": sr, "duration": duration,
             "lang": lang, "seed": seed, "noise_db": noise_db,
             "utterances": utterances, "silences": silences}
    out_wav.with_suffix(".json").write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n")
    return truth


# --------------------------------------------------------------------------
# Mixed streams: several speakers, short utterances, noise, language changes
# --------------------------------------------------------------------------

# Two disjoint halves of each language's prompts (by a digest of the name), so a stream one
# tunes on and a stream one reports never share a recording or a sentence.
SPLITS = ("tune", "report")
# espeak-ng voices per split: the report's speakers are not the tuning's either. Synthetic,
# but other voices, rates and accents than Asterisk's one recorded speaker.
ESPEAK_VOICES = {
    ("en", "tune"): ("en-gb+m3", "en-029+f2"),
    ("en", "report"): ("en-us+f3", "en-gb-scotland+m2", "en-gb-x-rp+f4"),
    ("es", "tune"): ("es+m3", "es-419+f2"),
    ("es", "report"): ("es-419+m2", "es+f3", "es+m6"),
}


def in_split(name: str, split: str | None) -> bool:
    if split is None:
        return True
    import zlib

    return (zlib.crc32(name.encode()) % 2 == 0) == (split == SPLITS[0])


def espeak_16k(text: str, voice: str, speed: int = 165) -> np.ndarray:
    """``text`` spoken by espeak-ng's ``voice`` as 16 kHz mono int16."""
    if not shutil.which("espeak-ng"):
        raise FileNotFoundError("espeak-ng is needed for mixed streams (apt-get install espeak-ng)")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
                       check=True, capture_output=True)
        return load_16k(path)


def _noise(n: int, rng: np.random.Generator, dbfs: float) -> np.ndarray:
    """Brownish noise (a fan, a street) at ``dbfs`` RMS: white noise through a one-pole low-pass."""
    from itertools import accumulate

    white = rng.standard_normal(n)
    y = np.fromiter(accumulate(white, lambda a, x: 0.97 * a + x), float, n)
    y -= y.mean()
    y *= (32768.0 * 10 ** (dbfs / 20.0)) / (np.sqrt(np.mean(y * y)) + 1e-12)
    return y


def build_mixed_stream(out_wav: Path, plan: list[tuple[str, int]] | None = None, lang: str = "en",
                       count: int = 38, seed: int = 0, split: str | None = "report",
                       short_share: float = 0.2, espeak_share: float = 0.3,
                       gaps: tuple[float, float] = (0.7, 2.2), long_silence_after: int | None = 12,
                       long_silence: float = 20.0, noise_after: int | None = 24, noise_s: float = 10.0,
                       noise_db: float = -35.0, background_db: float | None = -62.0,
                       picks: list[tuple[str, str]] | None = None) -> dict:
    """A long stream as a meeting sounds: Asterisk's recorded prompts and espeak-ng voices
    reading other prompts' transcripts, utterances of one to three words among longer ones,
    a long silence, a stretch of loud noise, a quiet background throughout.

    ``plan``: [(language, utterances), …] for speakers who change language (English, then
    Spanish, then English); default [(lang, count)]. ``split`` picks the half of the prompts
    and the espeak voices (``SPLITS``): tune on one, report the other. Writes the WAV and its
    truth JSON (as ``build_stream``, plus each utterance's ``lang``, ``source`` and ``words``:
    the end second of each reference word, interpolated by characters within its speech, and
    ``silences`` entries with ``kind`` "silence" or "noise"). ``picks``: [(language, prompt
    name), …] to say exactly which Asterisk recordings, in order (no espeak, no choice).
    """
    out_wav = Path(out_wav)
    if picks is not None:
        plan = [(lg, 1) for lg, _ in picks]
        espeak_share = 0.0
    plan = plan or [(lang, count)]
    rng = random.Random(seed)
    sr = SAMPLE_RATE
    pad = int(round(PAD_S * sr))
    pieces: list[np.ndarray] = []
    pos = 0
    utterances, silences = [], []
    total = sum(n for _, n in plan)

    def add(x: np.ndarray) -> None:
        nonlocal pos
        pieces.append(x.astype(np.float64))
        pos += len(x)

    def gap(seconds: float) -> None:
        add(np.zeros(int(round(seconds * sr))))

    chosen: dict[str, set] = {}
    gap(rng.uniform(*gaps))
    index = 0
    for lang_i, n_i in plan:
        prompts = load_prompts(lang_i)
        durations = dict(_speech_durations(lang_i))
        names = [n for n in sorted(prompts) if in_split(n, split) and n not in chosen.get(lang_i, ())]
        short = [n for n in names if len(normalize(prompts[n], lang_i).split()) <= 3 and durations.get(n, 0) >= 0.3]
        long = [n for n in names if 1.0 <= durations.get(n, 0) <= 8.0 and len(normalize(prompts[n], lang_i).split()) > 3]
        voices = ESPEAK_VOICES.get((lang_i, split or "report"), ())
        for _ in range(n_i):
            is_short = rng.random() < short_share
            pool = short if is_short else long
            if picks is not None:
                name = picks[index][1]
            else:
                name = rng.choice([n for n in pool if n not in chosen.setdefault(lang_i, set())])
            chosen.setdefault(lang_i, set())
            chosen[lang_i].add(name)
            text = prompts[name]
            if voices and rng.random() < espeak_share:
                voice = rng.choice(voices)
                x = espeak_16k(text, voice, speed=rng.randint(150, 185))
                source = f"espeak:{voice}"
            else:
                x = load_16k(prompt_path(name, lang_i))
                source = "asterisk"
            bounds = speech_bounds(x, sr)
            if bounds is None:
                continue
            on, off = bounds
            a, b = max(0, on - pad), min(len(x), off + pad)
            start, end = (pos + on - a) / sr, (pos + off - a) / sr
            ref_words = text.split()
            # each word's end, interpolated by characters (a word's share of the speech)
            lengths = np.cumsum([len(w) + 1 for w in ref_words])
            ends = [round(start + (end - start) * c / lengths[-1], 3) for c in lengths]
            utterances.append({"name": name, "text": text, "lang": lang_i, "source": source,
                               "start": round(start, 3), "end": round(end, 3),
                               "words": [[w, e] for w, e in zip(ref_words, ends)]})
            add(x[a:b])
            if index == long_silence_after and index < total - 1:
                silences.append({"start": utterances[-1]["end"], "end": None, "kind": "silence"})
                gap(long_silence)
            elif index == noise_after and index < total - 1:
                gap(1.0)
                nrng = np.random.default_rng(seed + 1)
                silences.append({"start": utterances[-1]["end"], "end": None, "kind": "noise"})
                add(_noise(int(noise_s * sr), nrng, noise_db))
                gap(1.0)
            else:
                gap(rng.uniform(*gaps))
            index += 1

    y = np.concatenate(pieces)
    if background_db is not None:
        y += np.random.default_rng(seed).standard_normal(len(y)) * (32768.0 * 10 ** (background_db / 20.0))
    y = np.clip(np.round(y), -32768, 32767).astype(np.int16)
    duration = round(len(y) / sr, 3)
    for s in silences:
        nxt = [u["start"] for u in utterances if u["start"] > s["start"]]
        s["end"] = nxt[0] if nxt else duration
    langs = list(dict.fromkeys(lg for lg, _ in plan))
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out_wav, y, sr)
    truth = {"wav": str(out_wav), "sample_rate": sr, "duration": duration,
             "lang": langs[0] if len(langs) == 1 else "+".join(langs), "seed": seed, "split": split,
             "plan": plan, "utterances": utterances, "silences": silences}
    out_wav.with_suffix(".json").write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n")
    return truth


# --------------------------------------------------------------------------
# Text normalisation and WER
# --------------------------------------------------------------------------

_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_EN_ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth",
           "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}

_ES_ONES = ("cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce "
            "quince dieciseis diecisiete dieciocho diecinueve veinte veintiuno veintidos "
            "veintitres veinticuatro veinticinco veintiseis veintisiete veintiocho veintinueve").split()
_ES_TENS = "_ _ _ treinta cuarenta cincuenta sesenta setenta ochenta noventa".split()
_ES_HUNDREDS = ("_ ciento doscientos trescientos cuatrocientos quinientos seiscientos "
                "setecientos ochocientos novecientos").split()


def _en_number(n: int) -> str:
    if n < 20:
        return _EN_ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return _EN_TENS[t] + ("" if o == 0 else " " + _EN_ONES[o])
    if n < 1000:
        h, r = divmod(n, 100)
        return _EN_ONES[h] + " hundred" + ("" if r == 0 else " " + _en_number(r))
    for size, word in ((10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand")):
        if n >= size:
            q, r = divmod(n, size)
            return _en_number(q) + " " + word + ("" if r == 0 else " " + _en_number(r))
    raise AssertionError


def _es_number(n: int) -> str:
    if n < 30:
        return _ES_ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return _ES_TENS[t] + ("" if o == 0 else " y " + _ES_ONES[o])
    if n == 100:
        return "cien"
    if n < 1000:
        h, r = divmod(n, 100)
        return _ES_HUNDREDS[h] + ("" if r == 0 else " " + _es_number(r))
    if n < 1_000_000:
        q, r = divmod(n, 1000)
        return ("mil" if q == 1 else _es_number(q) + " mil") + ("" if r == 0 else " " + _es_number(r))
    return " ".join(_ES_ONES[int(d)] for d in str(n))


def _spell(digits: str, lang: str) -> str:
    n = int(digits)
    if lang == "es":
        return _es_number(n)
    if len(digits) > 1 and digits.startswith("0") or n >= 10 ** 12:
        return " ".join(_EN_ONES[int(d)] for d in digits)  # codes: "007"
    return _en_number(n)


def _en_ordinal(digits: str) -> str:
    words = _en_number(int(digits)).split()
    last = words[-1]
    if last in _EN_ORD:
        last = _EN_ORD[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(words[:-1] + [last])


# Symbol equivalences, applied before punctuation is dropped.
_SYMBOLS = {
    "en": {"%": " percent ", "&": " and ", "#": " pound ", "*": " star ", "+": " plus ", "@": " at "},
    "es": {"%": " por ciento ", "&": " y ", "+": " mas ", "@": " arroba "},
}
# Word equivalences after punctuation is gone (both spellings -> one form).
_WORDS = {
    "en": {"ok": "okay", "mr": "mister", "mrs": "missus", "vs": "versus"},
    "es": {},
}


def normalize(text: str, lang: str = "en") -> str:
    """Lowercase, no accents, no punctuation, single spaces, numbers spelled
    out (English words for en, Spanish for es), plus a few equivalences, so
    'Press 1, 24%' == 'press one twenty four percent'."""
    lang = "es" if lang.startswith("es") else "en"
    t = unicodedata.normalize("NFKD", text.lower())
    t = "".join(ch for ch in t if not unicodedata.combining(ch))  # número -> numero
    t = re.sub(r"(?<=\d)[,](?=\d{3}\b)", "", t)  # 1,000 -> 1000
    t = re.sub(r"(?<=\d)\.(?=\d)", " point " if lang == "en" else " punto ", t)
    t = re.sub(r"o['’]\s*clock|o\s+clock", "oclock", t)  # o'clock / o clock
    for sym, word in _SYMBOLS[lang].items():
        t = t.replace(sym, word)
    t = re.sub(r"['’]", "", t)  # don't -> dont, party's -> partys
    if lang == "en":
        t = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: " " + _en_ordinal(m.group(1)) + " ", t)
    t = re.sub(r"\d+", lambda m: " " + _spell(m.group(0), lang) + " ", t)
    t = re.sub(r"[^\w\s]|_", " ", t)  # hyphens, dots, commas ... -> space
    words = [_WORDS[lang].get(w, w) for w in t.split()]
    return " ".join(words)


def wer(references: list[str], hypotheses: list[str], lang: str = "en") -> float:
    """Corpus-level WER: (S + D + I) summed over all pairs / reference words,
    after `normalize`.  A pair whose reference normalises to nothing counts
    its hypothesis words as insertions (jiwer refuses empty references)."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in length")
    refs = [normalize(r, lang) for r in references]
    hyps = [normalize(h, lang) for h in hypotheses]
    errors = words = 0
    keep = [(r, h) for r, h in zip(refs, hyps) if r]
    for r, h in zip(refs, hyps):
        if not r:
            errors += len(h.split())
    if keep:
        o = jiwer.process_words([r for r, _ in keep], [h for _, h in keep])
        errors += o.substitutions + o.deletions + o.insertions
        words += o.substitutions + o.deletions + o.hits
    if words == 0:
        return 0.0 if errors == 0 else float(errors)
    return errors / words


# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output WAV (truth JSON goes next to it)")
    p.add_argument("--lang", default="en")
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--long-silence-after", type=int, default=None,
                   help="0-based prompt index followed by the long silence")
    p.add_argument("--long-silence", type=float, default=20.0)
    p.add_argument("--noise-db", type=float, default=None)
    p.add_argument("--min-duration", type=float, default=1.0)
    p.add_argument("--max-duration", type=float, default=8.0)
    p.add_argument("--mixed", action="store_true",
                   help="a mixed stream (build_mixed_stream): espeak voices, short utterances, noise")
    p.add_argument("--split", choices=SPLITS, default="report", help="with --mixed: which half of the prompts")
    p.add_argument("--plan", help="with --mixed: languages in turn, e.g. en:8,es:8,en:8")
    a = p.parse_args(argv)
    if a.mixed:
        plan = [(lg, int(n)) for lg, n in (x.split(":") for x in a.plan.split(","))] if a.plan else None
        build_mixed_stream(a.out, plan=plan, lang=a.lang, count=a.count, seed=a.seed, split=a.split,
                           long_silence_after=a.long_silence_after if a.long_silence_after is not None else
                           (12 if a.count > 14 else None),
                           noise_after=24 if a.count > 26 and not a.plan else None)
        print(a.out.with_suffix(".json"))
        return 0
    build_stream(a.out, lang=a.lang, count=a.count, seed=a.seed,
                 long_silence_after=a.long_silence_after, long_silence=a.long_silence,
                 min_duration=a.min_duration, max_duration=a.max_duration, noise_db=a.noise_db)
    print(a.out.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
