"""Whisper decoding of utterances (faster-whisper's model on CTranslate2), with guards.

One decode = one encoder pass: the encoder output serves language detection, the
decode and any temperature fallback, since on a CPU the encoder over Whisper's
fixed 30 s window is the cost that matters. The encoder side (which encoder, which
window, the last outputs kept so a second decode of the same audio skips the pass) is
``encoding.AudioEncoder``; this module turns its outputs into text.
``decode_batch`` decodes several rooms' utterances in one encoder call and as few text
generations as CTranslate2 allows, each with the result ``decode`` would give it alone.
The guards (silence, low confidence, known hallucinations, repetition loops) are pure
functions tested on their own.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .captions import SAMPLE_RATE
from .encoder import EncoderStopped, cpu_flags
from .encoding import AudioEncoder


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

# decode_batch beats one-by-one decodes on the CPU too: bench/batch_decode.py on a 2-core Xeon
# (AMX), 2–4 requests of 2.5–6 s, base and tiny.en, finals and partials: 0.64–0.84 of the time
# with the torch encoder, 0.75–0.98 with CTranslate2's. The text generations batch well; the
# encoder windows (one at a time on the CPU) cost what they cost.
CPU_BATCHING = True
CPU_BATCH = 4  # the largest batch measured there
# On CUDA a batch as large as the venue (16 rooms with base); not yet measured on a GPU.
CUDA_BATCH = 16


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
    echo_retried: bool = False  # the first output only repeated the context: decoded again without it
    tokens: int = 0  # tokens generated

    @property
    def logprob(self) -> float:
        """Log-probability of the whole text given the audio (avg_logprob is per token)."""
        return self.avg_logprob * (self.tokens + 1)

    @property
    def ok(self) -> bool:
        return self.rejected is None and bool(self.text.strip())


class Prompt(str):
    """A decode's prompt: the fixed text (initial prompt, hotwords, glossary terms) and the
    previous captions as ``context``, spoken in ``language``. As a ``str`` it is both, so any
    caller may pass it on as text; the decoder reads the parts: the context is dropped when the
    utterance turns out to be in another language (a Spanish utterance must not be conditioned
    on English text, Whisper would lean towards translating it)."""

    fixed: str
    context: str
    language: str | None

    def __new__(cls, fixed: str = "", context: str = "", language: str | None = None) -> "Prompt":
        fixed, context = fixed.strip(), context.strip()
        prompt = super().__new__(cls, " ".join(p for p in (fixed, context) if p))
        prompt.fixed, prompt.context, prompt.language = fixed, context, language
        return prompt

    def for_language(self, language: str) -> str:
        """The prompt text for an utterance in ``language``."""
        if self.context and self.language is not None and language != self.language:
            return self.fixed
        return str(self)


def prompt_text(prompt: str, language: str) -> str:
    """What a ``prompt`` (a plain str or a ``Prompt``) gives an utterance in ``language``."""
    return prompt.for_language(language) if isinstance(prompt, Prompt) else prompt


def without_context(prompt: str) -> str:
    return prompt.fixed if isinstance(prompt, Prompt) else prompt


def echoes(text: str, context: str, share: float = 0.8) -> bool:
    """The output is made of the previous captions' words (Whisper copying its prompt, once or
    twice, pieces of several sentences, typically over noise or a language it did not expect):
    a short one appears in the context as it is, a longer one has ``share`` of its word
    triples there."""
    said, before = normalize_for_match(text).split(), normalize_for_match(context).split()
    if not said or not before:
        return False
    if len(said) < 3:
        return f" {' '.join(said)} " in f" {' '.join(before)} "
    known = {tuple(before[i:i + 3]) for i in range(len(before) - 2)}
    triples = [tuple(said[i:i + 3]) for i in range(len(said) - 2)]
    return sum(t in known for t in triples) >= share * len(triples)


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


def spelled(text: str) -> bool:
    """Has the text any letters (of any script), i.e. words spelled in some language, not
    only digits and signs?"""
    return any(c.isalpha() for c in text)


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


# Whisper base's detection is unsure on short or telephone speech (Spanish Asterisk prompts: the
# top language wrong in 38 of 70 without a prior, Italian or English up to 0.86), but decoding
# in the right language gives clearly likelier text (average log-probability per token -0.3 to
# -0.6, against -0.5 to -1.1 in a wrong one). So where the language is not clear, the utterance is
# decoded in its likely languages and the likeliest text kept (``WhisperASR._try_rivals``).
SURE_LANGUAGE = 0.5  # a final's detection this sure, agreeing with the prior, is taken as it is
RIVAL_MIN = 0.02  # detected languages less likely than this are not tried
RIVALS = 2  # at most this many other languages
RIVAL_MARGIN = 0.2  # another language must score above the chosen one by this (nats)


def rivals(probs: dict[str, float], chosen: str, probability: float, prior: str | None,
           thorough: bool) -> list[str]:
    """The other languages worth decoding an utterance in, likeliest first: when the prior and
    the detected language disagree (whichever won), or (``thorough``: a final) when the
    detection was unsure (the first Spanish sentence after English can be detected as English).
    The prior is among them when it was not chosen."""
    top = max(probs, key=probs.get)
    disagree = top != chosen or (prior is not None and prior != chosen)
    if not (disagree or (thorough and probability < SURE_LANGUAGE)):
        return []
    ranked = [lang for lang in sorted(probs, key=probs.get, reverse=True) if lang != chosen]
    others = [lang for lang in ranked if probs[lang] >= RIVAL_MIN][:RIVALS]
    if prior is not None and prior != chosen and prior not in others and prior in probs:
        others.append(prior)
    return others


def prior_weight(duration: float) -> float:
    """How much more the session's recent language counts than another: 20 for an utterance of
    ≤ 1.5 s, falling to 2 at ≥ 10 s."""
    return 20.0 if duration <= 1.5 else max(2.0, 20.0 - (duration - 1.5) * (18.0 / 8.5))


def choose_language(probs: dict[str, float], prior: str | None, duration: float) -> tuple[str, float]:
    """Pick the utterance's language, giving the session's recent language the benefit of the doubt.

    A short utterance carries little evidence, so the prior counts for a factor of 20 at
    ≤ 1.5 s, falling to 2 at ≥ 10 s: "OK." in an English meeting stays English.
    """
    top = max(probs, key=probs.get)
    if prior is None or prior == top or prior not in probs:
        return top, probs[top]
    if probs[prior] * prior_weight(duration) >= probs[top]:
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


@dataclass
class DecodeRequest:
    """One utterance for ``WhisperASR.decode_batch``: exactly what ``decode`` takes (see there)."""

    audio: np.ndarray  # 16 kHz mono, int16 or float32, ≤ 30 s (longer is cut)
    language: str | None = None  # None: detect it, giving ``prior`` the benefit of the doubt
    prior: str | None = None
    task: str = "transcribe"  # or "translate" (speech → English)
    beam_size: int = 5
    prefix: str = ""  # text forced at the start of the output
    prompt: str = ""  # earlier text, as context
    fallback: bool = True  # retry at higher temperatures when the output fails the guards
    # asked once the encoder pass is done, and between the torch encoder's layers for a lone request
    abandon: Callable[[], bool] | None = None
    known_speech: bool = False  # already accepted as speech: skip the silence/credit guards


@dataclass
class _Work:
    """One request on its way through ``decode_batch``."""

    request: DecodeRequest
    audio: np.ndarray  # float32, cut to 30 s
    key: bytes  # digest of the audio and the window: the encoder cache's key
    frames: int = 3000  # the encoder's input: Whisper's 30 s window, or less for a quick decode
    encoded: np.ndarray | None = None  # encoder output [frames, width], on the host
    reused: bool = False
    language: str = ""
    probability: float = 1.0
    languages: dict[str, float] = field(default_factory=dict)
    tokenizer: object = None
    prompt: str = ""  # the prompt text for the chosen language
    tokens: list[int] = field(default_factory=list)  # the decoder's prompt
    max_length: int = 0
    best: tuple | None = None  # (avg_logprob, temperature, text, ratio, no_speech_prob, tokens)
    settled: bool = False  # the guards need no temperature fallback
    result: Decoding | None = None
    seconds: float = 0.0  # its share of the batch's time
    rivals: list[str] = field(default_factory=list)  # other likely languages to decode in

    @property
    def duration(self) -> float:
        return self.audio.size / SAMPLE_RATE


def _share(works: list[_Work], since: float) -> float:
    """Charge the time since ``since`` to ``works`` in equal parts; returns now. The parts of a
    batch's decodings add up to its wall time, so per-room decode seconds stay true."""
    now = time.perf_counter()
    for w in works:
        w.seconds += (now - since) / len(works)
    return now


class WhisperASR:
    """A Whisper model loaded once; ``decode`` and ``decode_batch`` are thread-safe (one at a
    time)."""

    def __init__(self, model_path: str | Path, device: str = "auto", compute_type: str = "auto",
                 cpu_threads: int = 0, thresholds: Thresholds = Thresholds(), encoder: str = "auto",
                 quick_window: bool = False):
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
        self.encoding = AudioEncoder(self.model, model_path, self.device, threads, encoder, quick_window)
        self.multilingual = self.model.model.is_multilingual
        self.thresholds = thresholds
        self._tokenizers: dict = {}
        self._lock = threading.Lock()

    @property
    def encoder(self) -> str:
        """The encoder that runs: "torch" or "ctranslate2"."""
        return self.encoding.kind

    @property
    def encoder_passes(self) -> int:
        return self.encoding.passes

    @property
    def languages(self) -> list[str]:
        return self.model.supported_languages

    @property
    def batch_benefit(self) -> bool:
        """Whether several rooms' requests should go to ``decode_batch`` together on this device
        rather than one by one: on CUDA one call fills a GPU one utterance leaves mostly idle;
        on the CPU where it measured faster (CPU_BATCHING), for requests of one ``batch_key``.
        A batch's results all come at its end: its first request waits for the others' text
        generation, its last one for less than their whole decodes."""
        return self.device == "cuda" or CPU_BATCHING

    @property
    def batch_size(self) -> int:
        """The most requests one ``decode_batch`` should hold here (1: no batching)."""
        if not self.batch_benefit:
            return 1
        return CUDA_BATCH if self.device == "cuda" else CPU_BATCH

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
        return self.decode_batch([DecodeRequest(audio, language=language, prior=prior, task=task,
                                                beam_size=beam_size, prefix=prefix, prompt=prompt,
                                                fallback=fallback, abandon=abandon,
                                                known_speech=known_speech)])[0]

    def decode_batch(self, requests: list[DecodeRequest]) -> list[Decoding]:
        """Decode several utterances (several rooms') together; each result is what ``decode``
        would give for its request alone.

        One encoder pass for every audio not in the cache (one call on CUDA; window by window
        on the CPU, where a larger call is no faster), one language detection for those that
        need it, and one text generation per group of requests whose prompts CTranslate2 can
        batch (same beam size, same number of context tokens before the start-of-transcript,
        all with or all without a forced prefix). Temperature fallbacks run one by one.
        ``Decoding.elapsed`` is each request's share of the time, so the shares add up to the
        batch's wall time.
        """
        if not requests:
            return []
        start = time.perf_counter()
        works = [self._work(r) for r in requests]
        with self._lock:
            try:
                # A lone request's torch encoder pass stops between layers once it is abandoned
                # (a partial giving way to a final): the final waits one layer, not a pass.
                self.encoding.stop = requests[0].abandon if len(requests) == 1 else None
                self.encoding.encode_all(works)
            except EncoderStopped:
                self.encoding.stops += 1
                return [Decoding(text="", language=requests[0].language or "", rejected="abandoned",
                                 elapsed=time.perf_counter() - start)]
            finally:
                self.encoding.stop = None
            start = _share(works, start)
            live = []
            for w in works:
                abandon = w.request.abandon
                if abandon is not None and abandon():
                    w.result = Decoding(text="", language=w.request.language or "", rejected="abandoned",
                                        encoder_reused=w.reused)
                else:
                    live.append(w)
            start = self._choose_languages(live, start)
            for w in live:
                w.tokenizer = self._tokenizer(w.request.task, w.language)
                w.prompt = prompt_text(w.request.prompt, w.language)
                self._set_tokens(w, w.prompt)
            groups: dict[tuple, list[_Work]] = {}
            for w in live:
                groups.setdefault((w.frames, self._shape(w.tokens, w.tokenizer, w.request.beam_size)), []).append(w)
            for group in groups.values():
                results = self._generate(group, 0.0)
                start = _share(group, start)
                for w, result in zip(group, results):
                    if len(group) > 1 and self._cut_differently(w, result, group):
                        result = self._generate([w], 0.0)[0]
                    w.settled = self._consider(w, result, 0.0)
                    start = _share([w], start)
            for w in live:
                self._fall_back(w)
                w.result = self._verdict(w)
                context = w.prompt[len(without_context(w.request.prompt)):]
                if w.result.ok and not w.request.prefix and echoes(w.result.text, context):
                    # It only repeats the previous captions: hear it again without them. What was
                    # really said again comes out again; an echo of the prompt does not.
                    self._redecode(w, w.language, without_context(w.request.prompt))
                    w.result.echo_retried = True
                if w.rivals and not w.request.prefix:
                    self._try_rivals(w)
                start = _share([w], start)
        for w in works:
            w.result.elapsed = w.seconds
        return [w.result for w in works]

    # -- the stages of decode_batch ---------------------------------------------------------------

    def _set_tokens(self, w: _Work, prompt: str) -> None:
        w.tokens = self._prompt(w.tokenizer, prompt, w.request.prefix)
        # Loops are cut short: speech rarely needs more than ~12 tokens a second.
        w.max_length = min(self.model.max_length, len(w.tokens) + int(12 * w.duration) + 16)

    def _redecode(self, w: _Work, language: str, prompt: str) -> None:
        """Decode ``w`` again (its encoder output kept) in ``language`` with ``prompt``."""
        w.language = language
        w.tokenizer = self._tokenizer(w.request.task, language)
        w.prompt = prompt
        self._set_tokens(w, prompt)
        w.best = None
        w.settled = self._consider(w, self._generate([w], 0.0)[0], 0.0)
        self._fall_back(w)
        w.result = self._verdict(w)

    def _try_rivals(self, w: _Work) -> None:
        """The language was not clear (the prior and the detection disagree, or the detection
        was unsure): Whisper told to write one language over speech in another translates it
        ("Usted se unirá…" → "You will join…") or writes it in a neighbour's spelling
        ("Per favore intente di nuovo."). Decode in the other likely languages too and keep the
        likeliest text: a forced translation costs the decoder probability, the right
        transcription does not. Each language is scored by its detected probability (the
        session's language weighted as in ``choose_language``) times its whole text's
        probability (the same audio for each; per token, scripts written in many tokens a
        character look sure), whether or not the guards pass the text: the likeliest language's
        verdict stands, so a doubtful utterance in the session's language shows nothing rather
        than a confident line in another script."""
        def score(language: str) -> float:
            text, tokens = w.best[2], w.best[5]
            if not normalize_for_match(text):
                return float("-inf")
            # log P(language | audio, session) + log P(text | audio, language)
            weight = prior_weight(w.duration) if language == w.request.prior else 1.0
            return math.log(max(w.languages.get(language, 0.0), 1e-4) * weight) + w.best[0] * (tokens + 1)

        def heard() -> tuple[str, float]:
            return normalize_for_match(w.best[2]), w.best[0] * (w.best[5] + 1)

        best = (score(w.language), w.result, w.language, w.probability, w.prompt, heard())
        for language in w.rivals:
            self._redecode(w, language, prompt_text(w.request.prompt, language))
            text, logprob = heard()
            if text and text == best[5][0]:
                # the same words in both: the text says which language it is in, and the decoder
                # finds it likelier under that language's token
                better = spelled(text) and logprob > best[5][1]
            else:
                better = score(language) > best[0] + RIVAL_MARGIN
            if better and not spelled(text):
                # Digits belong to no language: a Spanish "veintisiete" is "27" under Italian's
                # token, likelier than under Spanish's ("veinticete"). The likelier text, but
                # the language chosen on the detection and the session's prior stays its label.
                w.result.language, w.result.language_probability = best[2], best[3]
                best = (score(language), w.result, best[2], best[3], best[4], (text, logprob))
            elif better:
                w.probability = w.languages.get(language, 0.0)
                w.result.language_probability = w.probability
                best = (score(language), w.result, w.language, w.probability, w.prompt, (text, logprob))
        _, w.result, w.language, w.probability, w.prompt, _ = best

    def _fall_back(self, w: _Work) -> None:
        for temperature in (0.2, 0.4, 0.6) if w.request.fallback else ():
            if w.settled:
                break
            w.settled = self._consider(w, self._generate([w], temperature)[0], temperature)

    def _work(self, request: DecodeRequest) -> _Work:
        audio, key, frames = self.encoding.window(request.audio, quick=not request.fallback)
        return _Work(request, audio, key, frames=frames)

    @staticmethod
    def _stack(works: list[_Work]):
        import ctranslate2

        encoded = works[0].encoded[None] if len(works) == 1 else np.stack([w.encoded for w in works])
        return ctranslate2.StorageView.from_array(encoded)

    def _choose_languages(self, works: list[_Work], start: float) -> float:
        detect = []
        for w in works:
            if not self.multilingual:
                w.language = "en"
            elif w.request.language is None:
                detect.append(w)
            else:
                w.language = w.request.language
        by_window: dict[int, list[_Work]] = {}
        for w in detect:
            by_window.setdefault(w.frames, []).append(w)
        for same in by_window.values():
            for w, ranked in zip(same, self.model.model.detect_language(self._stack(same))):
                w.languages = {tok[2:-2]: p for tok, p in ranked[:10]}
                w.language, w.probability = choose_language(w.languages, w.request.prior, w.duration)
                w.rivals = rivals(w.languages, w.language, w.probability, w.request.prior,
                                  thorough=w.request.fallback)
        if detect:
            start = _share(detect, start)
        return start

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

    def batch_key(self, request: DecodeRequest) -> tuple:
        """Requests with equal keys share one text generation in ``decode_batch``; the others
        are generated apart. On the CPU that sharing is all a batch gains (its encoder windows
        go one at a time), so batch there only requests of one key: rooms whose context has as
        many tokens, finals with finals, partials with partials. On CUDA the encoder call is
        shared by any batch."""
        language = request.language or "en"  # any language: its token takes one place
        tokenizer = self._tokenizer(request.task, language if self.multilingual else "en")
        return self._shape(self._prompt(tokenizer, prompt_text(request.prompt, language), request.prefix),
                           tokenizer, request.beam_size)

    @staticmethod
    def _shape(tokens: list[int], tokenizer, beam_size: int) -> tuple:
        """What CTranslate2 generates in one call, each prompt as it would alone: its
        Whisper.generate wants the start-of-transcript at the same place in every prompt (as
        many context tokens before it), and a forced prefix in some prompts changes the first
        step of the others' beam search (an end-of-text in a secondary beam is penalised), so a
        batch is all with or all without one."""
        transcript = tokens.index(tokenizer.no_timestamps) + 1
        return beam_size, tokens.index(tokenizer.sot), len(tokens) > transcript

    def _generate(self, works: list[_Work], temperature: float) -> list:
        if temperature > 0:
            kwargs = {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
        else:
            beam = works[0].request.beam_size
            # all finished hypotheses of a batch: _cut_differently reads how long the search ran
            kwargs = {"beam_size": beam, "num_hypotheses": beam if len(works) > 1 else 1}
        return self.model.model.generate(self._stack(works), [w.tokens for w in works],
                                         max_length=max(w.max_length for w in works), return_scores=True,
                                         return_no_speech_prob=True, suppress_blank=True,
                                         suppress_tokens=[-1], **kwargs)

    @staticmethod
    def _cut_differently(w: _Work, result, group: list[_Work]) -> bool:
        """Whether the batch's longer length limit may have changed this request's output.

        A batch runs to its longest request's limit; CTranslate2 generates at most
        min(limit // 2, limit - tokens before the transcript) steps. The search of a request
        that ended before its own last step went exactly as alone. It ended no earlier than
        its longest returned hypothesis (the last step's hypotheses are among those returned:
        fewer than beam-size finished before it), so a hypothesis that reaches its own last
        step means: decode it alone (a rare loop)."""
        forwarded = w.tokens.index(w.tokenizer.no_timestamps)

        def steps(limit: int) -> int:
            return min(limit // 2, limit - forwarded)

        own = steps(w.max_length)
        if own >= steps(max(g.max_length for g in group)):
            return False
        return max(len(ids) for ids in result.sequences_ids) >= own - 1

    def _consider(self, w: _Work, result, temperature: float) -> bool:
        """Keep this output if it is the best so far; True when it needs no hotter retry."""
        t = self.thresholds
        ids = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(ids) / (len(ids) + 1)
        new_text = w.tokenizer.decode(ids)
        ratio = compression_ratio(new_text)
        candidate = (avg_logprob, temperature, new_text, ratio, result.no_speech_prob, len(ids))
        if w.best is None or (ratio <= t.compression_ratio and avg_logprob > w.best[0]):
            w.best = candidate
        silent = result.no_speech_prob > t.no_speech and avg_logprob < t.logprob
        if silent or (ratio <= t.compression_ratio and avg_logprob >= t.logprob):
            w.best = candidate
            return True
        return False

    def _verdict(self, w: _Work) -> Decoding:
        avg_logprob, temperature, new_text, ratio, no_speech_prob, tokens = w.best
        # CTranslate2 returns the forced prefix as part of the sequence: the text is complete.
        text, _ = collapse_repetitions(new_text.strip())
        rejected = judge(text, avg_logprob, no_speech_prob, compression_ratio(text), self.thresholds,
                         w.request.known_speech)
        return Decoding(text=text if rejected is None else "", language=w.language,
                        language_probability=w.probability, avg_logprob=avg_logprob,
                        no_speech_prob=no_speech_prob, compression_ratio=ratio, rejected=rejected,
                        temperature=temperature, languages=w.languages, encoder_reused=w.reused,
                        tokens=tokens)
