"""Whisper decoding of one utterance (faster-whisper's model on CTranslate2), with guards.

One call = one encoder pass: the encoder output serves language detection, the
decode and any temperature fallback, since on a CPU the encoder over Whisper's
fixed 30 s window is the cost that matters. The last few encoder outputs are kept,
keyed by a digest of the audio, so a second decode of the same audio (Whisper's
speech → English translation of a final just transcribed) skips the encoder. The guards (silence, low confidence,
known hallucinations, repetition loops) are pure functions tested on their own.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .captions import SAMPLE_RATE
from .encoder import EncoderError, TorchEncoder, choose_encoder, cpu_flags


def _prefer_avx512() -> None:
    """CTranslate2 picks AVX2 even where AVX-512 exists; its own kernels run ~8 % faster
    with AVX-512 here. Only when every needed flag is present, and never over the user's
    own CT2_FORCE_CPU_ISA. Must run before ctranslate2 is first imported."""
    import os

    if "CT2_FORCE_CPU_ISA" in os.environ or "ctranslate2" in sys.modules:
        return
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= cpu_flags():
        os.environ["CT2_FORCE_CPU_ISA"] = "AVX512"


_prefer_avx512()

MAX_AUDIO_S = 30.0  # Whisper's window; the segmenter keeps utterances shorter
# Encoder outputs kept for a second decode of the same audio (3 MB each for base, 7.7 MB for
# large-v3 in float32): the final, and partials of the next utterance decoded meanwhile.
ENCODER_CACHE = 4


@dataclass(frozen=True)
class Thresholds:
    no_speech: float = 0.6
    logprob: float = -1.0
    compression_ratio: float = 2.4


@dataclass
class Decoding:
    """What one decode of an utterance's audio produced."""

    text: str  # prefix + new text, cleaned; "" when rejected
    language: str
    language_probability: float = 1.0
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0
    rejected: str | None = None  # why nothing should be shown: no_speech, low_confidence, …
    elapsed: float = 0.0  # seconds the decode took
    temperature: float = 0.0
    languages: dict[str, float] = field(default_factory=dict)
    encoder_reused: bool = False  # the audio's encoder output came from an earlier decode

    @property
    def ok(self) -> bool:
        return self.rejected is None and bool(self.text.strip())


# -- guards ----------------------------------------------------------------------------------

# Whole outputs Whisper produces from silence or noise (subtitle credits learned from its
# training data). Compared after normalisation; a real "thank you" survives when confident.
KNOWN_HALLUCINATIONS = {
    "thank you", "thank you very much", "thanks for watching", "thank you for watching",
    "thanks for watching and see you next time", "please subscribe", "subscribe",
    "subtitles by the amaraorg community", "subtitles by", "subtitles", "you", "bye", "so",
    "ご視聴ありがとうございました", "字幕by", "請不吝點贊訂閱轉發打賞支持明鏡與點點欄目",
    "продолжение следует", "субтитры сделал dimatorzok", "редактор субтитров асинкретова",
    "untertitel im auftrag des zdf 2017", "sous-titrage société radio-canada", "amaraorg",
}
# The credit-style ones are never real speech in a meeting: drop them whatever the confidence.
ALWAYS_HALLUCINATED = {"subtitles by the amaraorg community", "subtitles by", "amaraorg",
                       "ご視聴ありがとうございました", "字幕by", "субтитры сделал dimatorzok",
                       "请不吝点赞订阅转发打赏支持明镜与点点栏目", "請不吝點贊訂閱轉發打賞支持明鏡與點點欄目",
                       "untertitel im auftrag des zdf 2017", "редактор субтитров асинкретова"}


def normalize_for_match(text: str) -> str:
    text = re.sub(r"[^\w\s]", "", text.lower())
    return re.sub(r"\s+", " ", text).strip()


def is_known_hallucination(text: str, confident: bool) -> bool:
    key = normalize_for_match(text)
    if not key:
        return True
    if key in ALWAYS_HALLUCINATED:
        return True
    return key in KNOWN_HALLUCINATIONS and not confident


_CJK = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]"


def collapse_repetitions(text: str, min_repeats: int = 3, max_ngram: int = 12) -> tuple[str, bool]:
    """Cut a run of the same word n-gram repeated ``min_repeats``+ times down to one.

    Returns (text, cut?). "no no" stays; "the number the number the number …" becomes
    "the number". Runs of characters in unspaced scripts are cut the same way.
    """
    words = text.split()
    cut = False
    n = 1
    while n <= min(max_ngram, len(words) // min_repeats):
        i = 0
        out: list[str] = []
        changed = False
        while i < len(words):
            gram = [normalize_for_match(w) for w in words[i:i + n]]
            reps = 1
            while words[i + reps * n:i + (reps + 1) * n] and \
                    [normalize_for_match(w) for w in words[i + reps * n:i + (reps + 1) * n]] == gram:
                reps += 1
            if reps >= min_repeats and len(gram) == n:
                out.extend(words[i:i + n])
                i += reps * n
                changed = True
            else:
                out.append(words[i])
                i += 1
        if changed:
            words, cut = out, True
        else:
            n += 1
    result = " ".join(words)
    # Unspaced scripts (Chinese, Japanese, Korean): a run of characters repeated back to back.
    # Only those scripts: "1000000" or "hahaha" are not loops.
    result, n = re.subn(r"((?:%s){2,20}?)\1{%d,}" % (_CJK, min_repeats - 1), r"\1", result)
    return result, cut or n > 0


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def judge(text: str, avg_logprob: float, no_speech_prob: float, ratio: float, t: Thresholds,
          known_speech: bool = False) -> str | None:
    """Why this output must not be shown, or None when it may. ``known_speech``: the audio was
    already accepted as speech (its transcript was shown), so only confidence and repetition
    count: "Gracias." translated is "Thank you.", not a subtitle credit heard in noise."""
    if not known_speech and no_speech_prob > t.no_speech and avg_logprob < t.logprob:
        return "no_speech"
    if avg_logprob < t.logprob:
        return "low_confidence"
    if ratio > t.compression_ratio:
        return "repetition"
    if known_speech:
        return None if normalize_for_match(text) else "empty"
    confident = avg_logprob > -0.4 and no_speech_prob < 0.2
    if is_known_hallucination(text, confident):
        return "hallucination"
    return None


def choose_language(probs: dict[str, float], prior: str | None, duration: float) -> tuple[str, float]:
    """Pick the utterance's language, giving the session's recent language the benefit of the doubt.

    A short utterance carries little evidence, so the prior counts for a factor of 20 at
    ≤ 1.5 s, falling to 2 at ≥ 10 s: "OK." in an English meeting stays English.
    """
    top = max(probs, key=probs.get)
    if prior is None or prior == top or prior not in probs:
        return top, probs[top]
    weight = 20.0 if duration <= 1.5 else max(2.0, 20.0 - (duration - 1.5) * (18.0 / 8.5))
    if probs[prior] * weight >= probs[top]:
        return prior, probs[prior]
    return top, probs[top]


# -- the model -------------------------------------------------------------------------------

def pick_device(device: str, compute_type: str, *, setting: str = "asr.device",
                gpu_compute: str = "float16", error: type[Exception] = RuntimeError) -> tuple[str, str]:
    """'auto' → CUDA with ``gpu_compute`` when CTranslate2 sees a GPU, else CPU with int8.
    Shared by every CTranslate2 model (Whisper here, translation models in translate/ct2.py)."""
    import ctranslate2

    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    elif device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise error(f"{setting} = 'cuda' but CTranslate2 sees no CUDA GPU; "
                    "use device = 'auto' or 'cpu', or install the CUDA 12 runtime and cuDNN 9")
    if compute_type == "auto":
        compute_type = gpu_compute if device == "cuda" else "int8"
    return device, compute_type


class WhisperASR:
    """A Whisper model loaded once; ``decode`` is thread-safe (one decode at a time)."""

    def __init__(self, model_path: str | Path, device: str = "auto", compute_type: str = "auto",
                 cpu_threads: int = 0, thresholds: Thresholds = Thresholds(), encoder: str = "auto"):
        import os

        from faster_whisper import WhisperModel

        self.device, self.compute_type = pick_device(device, compute_type)
        self.model_path = Path(model_path)
        threads = cpu_threads or (os.cpu_count() or 1)
        try:
            self.model = WhisperModel(str(model_path), device=self.device, compute_type=self.compute_type,
                                      cpu_threads=threads)
        except Exception as e:
            raise RuntimeError(f"cannot load the Whisper model from {model_path} on {self.device} "
                               f"({self.compute_type}): {e}") from None
        self.encoder = choose_encoder(encoder, self.device)
        if self.encoder == "torch":
            try:
                torch_encoder = TorchEncoder(model_path, threads)
                torch_encoder.install(self.model)
                # one pass now: it proves the encoder runs, and the first caption does not pay
                # for PyTorch's kernel setup (~0.4 s)
                self.model.encode(np.zeros((torch_encoder.n_mels, self.model.feature_extractor.nb_max_frames),
                                           np.float32))
            except Exception as e:  # a broken PyTorch install can fail in many ways
                if encoder == "torch":
                    raise EncoderError(f"asr.encoder = 'torch' cannot run: {e}") from None
                # auto: CTranslate2's own encoder works wherever the model loaded
                logging.getLogger("subtitler.asr").warning("torch encoder unavailable (%s); using "
                                                           "CTranslate2's", e)
                self.model.__dict__.pop("encode", None)
                self.encoder = "ctranslate2"
        self.multilingual = self.model.model.is_multilingual
        self.thresholds = thresholds
        self._tokenizers: dict = {}
        self._lock = threading.Lock()
        self._encoded: OrderedDict[bytes, object] = OrderedDict()  # audio digest → encoder output
        self.encoder_passes = 0

    @property
    def languages(self) -> list[str]:
        return self.model.supported_languages

    def _tokenizer(self, task: str, language: str):
        from faster_whisper.tokenizer import Tokenizer

        key = (task, language)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(self.model.hf_tokenizer, self.multilingual,
                                              task=task, language=language)
        return self._tokenizers[key]

    def decode(self, audio: np.ndarray, *, language: str | None = None, prior: str | None = None,
               task: str = "transcribe", beam_size: int = 5, prefix: str = "", prompt: str = "",
               fallback: bool = True, abandon=None, known_speech: bool = False) -> Decoding:
        """Transcribe one utterance (≤ 30 s). ``language=None`` detects it (with ``prior``).

        ``abandon()``, asked once the encoder pass is done, may say the result is no longer
        wanted (a partial overtaken by the end of speech): the text generation is skipped
        and the decoder is free for the final that much sooner.

        Audio decoded moments ago (``task="translate"`` of the final just transcribed) reuses
        that decode's encoder output: only the text generation runs. ``known_speech``: the
        audio was already accepted as speech; the silence and hallucination guards are skipped.
        """
        t0 = time.perf_counter()
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768.0
        audio = audio[: int(MAX_AUDIO_S * SAMPLE_RATE)]
        duration = audio.size / SAMPLE_RATE
        key = hashlib.blake2b(np.ascontiguousarray(audio, np.float32).tobytes(), digest_size=16).digest()
        with self._lock:
            encoder_output = self._encoded.get(key)
            reused = encoder_output is not None
            if reused:
                self._encoded.move_to_end(key)
            else:
                features = self.model.feature_extractor(audio)
                frames = self.model.feature_extractor.nb_max_frames
                features = np.pad(features, ((0, 0), (0, max(0, frames - features.shape[-1]))))[:, :frames]
                encoder_output = self.model.encode(features)
                self.encoder_passes += 1
                self._encoded[key] = encoder_output
                while len(self._encoded) > ENCODER_CACHE:
                    self._encoded.popitem(last=False)
            if abandon is not None and abandon():
                return Decoding(text="", language=language or "", rejected="abandoned",
                                elapsed=time.perf_counter() - t0, encoder_reused=reused)
            languages: dict[str, float] = {}
            if not self.multilingual:
                language, probability = "en", 1.0
            elif language is None:
                ranked = self.model.model.detect_language(encoder_output)[0]
                languages = {tok[2:-2]: p for tok, p in ranked[:10]}
                language, probability = choose_language(languages, prior, duration)
            else:
                probability = 1.0
            tokenizer = self._tokenizer(task, language)
            tokens = self._prompt(tokenizer, prompt, prefix)
            # Loops are cut short: speech rarely needs more than ~12 tokens a second.
            max_length = min(self.model.max_length, len(tokens) + int(12 * duration) + 16)
            temperatures = (0.0, 0.2, 0.4, 0.6) if fallback else (0.0,)
            best = None
            for temperature in temperatures:
                result = self._generate(encoder_output, tokens, max_length, beam_size, temperature)
                ids = result.sequences_ids[0]
                avg_logprob = result.scores[0] * len(ids) / (len(ids) + 1)
                new_text = tokenizer.decode(ids)
                ratio = compression_ratio(new_text)
                candidate = (avg_logprob, temperature, new_text, ratio, result.no_speech_prob)
                if best is None or (ratio <= self.thresholds.compression_ratio and avg_logprob > best[0]):
                    best = candidate
                silent = result.no_speech_prob > self.thresholds.no_speech and \
                    avg_logprob < self.thresholds.logprob
                if silent or (ratio <= self.thresholds.compression_ratio and
                              avg_logprob >= self.thresholds.logprob):
                    best = candidate
                    break
        avg_logprob, temperature, new_text, ratio, no_speech_prob = best
        # CTranslate2 returns the forced prefix as part of the sequence: the text is complete.
        text, _ = collapse_repetitions(new_text.strip())
        rejected = judge(text, avg_logprob, no_speech_prob, compression_ratio(text), self.thresholds,
                         known_speech)
        return Decoding(text=text if rejected is None else "", language=language,
                        language_probability=probability, avg_logprob=avg_logprob,
                        no_speech_prob=no_speech_prob, compression_ratio=ratio, rejected=rejected,
                        elapsed=time.perf_counter() - t0, temperature=temperature, languages=languages,
                        encoder_reused=reused)

    def _prompt(self, tokenizer, prompt: str, prefix: str) -> list[int]:
        tokens: list[int] = []
        if prompt.strip():
            context = tokenizer.encode(" " + prompt.strip())[-(self.model.max_length // 2 - 1):]
            tokens = [tokenizer.sot_prev, *context]
        tokens.extend(tokenizer.sot_sequence)
        tokens.append(tokenizer.no_timestamps)
        if prefix.strip():
            tokens.extend(tokenizer.encode(" " + prefix.strip())[: self.model.max_length // 2 - 1])
        return tokens

    def _generate(self, encoder_output, tokens, max_length, beam_size, temperature):
        if temperature > 0:
            kwargs = {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
        else:
            kwargs = {"beam_size": beam_size}
        return self.model.model.generate(encoder_output, [tokens], max_length=max_length,
                                         return_scores=True, return_no_speech_prob=True,
                                         suppress_blank=True, suppress_tokens=[-1], **kwargs)[0]

