"""The translation stage: which backend translates which target, one call per backend, and a
worker thread so the source caption is never held up by its translations.

``TranslationStage`` is pure routing over ``Translator`` objects (tested with fakes):

* per target, the backend named in ``overrides``, else ``backend``; ``auto`` tries, in order,
  the CTranslate2 model, then Apertium (when the pair is installed); for ``en`` Whisper's own
  speech → English comes before Apertium (it hears the speech, not a transcript that may hold
  errors, and reuses the transcription's encoder pass);
* a target in the caption's own language is the caption's text; so is one in another script of
  it (``zh`` → ``zh-Hant``: ``langcodes.same_words``), which the room then writes in that
  script (``chinese.ScriptConverter``): no backend, no model;
* a target that no allowed backend can produce is a ``TranslationConfigError`` at start;
* at run time each caption's source language picks, per target, the first allowed backend
  that supports source → target; the targets of one backend go in one call (one batched
  ``translate_batch`` for CTranslate2);
* a backend that raises, or returns nothing for a target, is logged and the target is marked
  in ``TranslationResult.errors``; the other backends' targets are unaffected.

``TranslationWorker`` runs the stage on its own thread behind a bounded queue: the engine
publishes the final at once and submits it; the result arrives through a callback. When
translation falls behind, the oldest waiting captions are skipped (and marked as such).

Partials (optional): the worker holds one slot for the newest partial, translated only when no
final waits and at most once every ``partial_interval`` seconds, by the text backends only.
Text is then translated sentence by sentence through a ``SentenceCache``, finals included, so
a sentence that did not change keeps the very translation the screens already show: a
translated line changes only when its source sentence changed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from ..langcodes import base_language, same_language, same_words
from .base import TranslationConfigError, TranslationError, Translator
from .glossary import Glossary

log = logging.getLogger("subtitler.translate")

# The order ``auto`` tries backends in: a loaded multilingual model first, then the
# rule-based pairs, then Whisper's own speech → English.
AUTO_ORDER = ("ctranslate2", "apertium", "whisper")
# For English, Whisper translates the speech itself: ahead of the rule-based pairs.
AUTO_ORDER_EN = ("ctranslate2", "whisper", "apertium")
BACKEND_NAMES = ("auto", *AUTO_ORDER)

# Scripts written without spaces between sentences.
_UNSPACED = re.compile(r"^(zh|ja|yue|th|lo|km|my|zho|jpn|cmn|tha|lao|khm|mya)([-_].*)?$", re.IGNORECASE)
# A sentence ends at . ! ? … (then a space and no lower-case letter: "e.g. this" stays one) or
# right after a full-width 。！？.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?![a-z])|(?<=[。！？])\s*")


def split_sentences(text: str) -> list[str]:
    """'Hello there. How are you?' → ['Hello there.', 'How are you?']."""
    return [p for p in (x.strip() for x in _SENTENCE_END.split(" ".join(text.split()))) if p]


def join_sentences(parts: list[str], lang: str) -> str:
    return ("" if _UNSPACED.match(lang) else " ").join(p for p in parts if p)


def needs_audio(backend) -> bool:
    """Whether a backend translates the speech (and so needs the utterance's audio)."""
    return bool(getattr(backend, "needs_audio", False))


class SentenceCache:
    """Recent translations by (source language, sentence) → {target: text}; one thread's."""

    def __init__(self, size: int = 512):
        self.size = size
        self._items: OrderedDict[tuple[str, str], dict[str, str]] = OrderedDict()

    def get(self, source: str, sentence: str) -> dict[str, str]:
        key = (source, sentence)
        found = self._items.get(key)
        if found is None:
            return {}
        self._items.move_to_end(key)
        return found

    def put(self, source: str, sentence: str, translations: dict[str, str]) -> None:
        key = (source, sentence)
        self._items.setdefault(key, {}).update(translations)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


@dataclass
class TranslationResult:
    """What one caption's translation produced."""

    translations: dict[str, str] = field(default_factory=dict)  # target → text
    errors: dict[str, str] = field(default_factory=dict)  # target → why it is missing
    backends: dict[str, str] = field(default_factory=dict)  # target → backend that made it
    elapsed: float = 0.0  # seconds the whole stage took
    timings: dict[str, float] = field(default_factory=dict)  # backend → seconds of its call

    def caption(self, final, *, seq: int, emitted: float):
        """The ``kind="translation"`` caption for ``final``: same id and times, these
        translations (and, where Caption has the field, ``translation_errors``)."""
        changes = {"kind": "translation", "seq": seq, "emitted": emitted,
                   "translations": dict(self.translations)}
        if any(f.name == "translation_errors" for f in dataclasses.fields(final)):
            changes["translation_errors"] = dict(self.errors)
        return dataclasses.replace(final, **changes)


class TranslationStage:
    """Routes one caption to the backends of its targets. Thread-safe as its backends are
    (each backend serialises its own calls)."""

    def __init__(self, targets: Sequence[str], backends: Iterable[Translator], *, backend: str = "auto",
                 overrides: Mapping[str, str] | None = None, glossary: Glossary | None = None,
                 source: str | None = None, slow_s: float = 2.0):
        self.targets = list(dict.fromkeys(t.strip() for t in targets if t and t.strip()))
        self.backends: dict[str, Translator] = {}
        for b in backends:
            if b.name in self.backends:
                raise TranslationConfigError(f"two translation backends are both called '{b.name}'")
            self.backends[b.name] = b
        self.backend = backend
        self.overrides = dict(overrides or {})
        self.glossary = glossary or Glossary()
        self.slow_s = slow_s
        for t in self.overrides:
            if t not in self.targets:
                raise TranslationConfigError(
                    f"translate: a backend is set for '{t}', which is not one of the targets "
                    f"({', '.join(self.targets) or 'none'})")
        self._chains = {t: self._chain(t, source) for t in self.targets}
        if source is None or base_language(source) in ("zh", "yue", "ja", "ko"):
            self._warn_unprotected()

    def _warn_unprotected(self) -> None:
        """Say at start which Chinese (Japanese, Korean) glossary terms no target protects: only a
        fixed form is written into a model's input, so without one the term is the model's guess."""
        unprotected = self.glossary.unprotected(self.targets)
        if unprotected:
            term, targets = next(iter(unprotected.items()))
            log.warning("glossary: no fixed translation of %s; translated out of its language such a term "
                        "comes out as the model makes of it: add e.g. [glossary.%s] %s = \"…\"",
                        "; ".join(f"{t} for {', '.join(ts)}" for t, ts in unprotected.items()), targets[0], term)

    # -- configuration --------------------------------------------------------------------
    def _available(self) -> str:
        return "; ".join(b.describe() for b in self.backends.values()) or "none"

    def _chain(self, target: str, source: str | None) -> list[Translator]:
        """The backends that may translate into ``target``, in the order they are tried."""
        choice = self.overrides.get(target, self.backend)
        if choice not in BACKEND_NAMES:
            raise TranslationConfigError(f"translate: unknown backend '{choice}' for '{target}'; "
                                         f"choose one of {', '.join(BACKEND_NAMES)}")
        if choice == "auto":
            order = AUTO_ORDER_EN if same_language(target, "en") else AUTO_ORDER
            chain = [self.backends[n] for n in order if n in self.backends]
            chain += [b for n, b in self.backends.items() if n not in order]
        elif choice not in self.backends:
            raise TranslationConfigError(
                f"translate: target '{target}' is set to backend '{choice}', which is not available "
                f"(available: {self._available()})")
        else:
            chain = [self.backends[choice]]
        if source is not None and same_words(source, target):
            return chain  # nothing to translate: the source text is the target text
        able = [b for b in chain if b.can_target(target)]
        if source is not None:
            able = [b for b in able if b.supports(source, target)]
        if not able:
            route = f"{source} → {target}" if source else f"into '{target}'"
            hint = ""
            if "ctranslate2" not in self.backends and choice in ("auto", "ctranslate2"):
                hint = ("; a multilingual model translates between 200 languages: `subtitler models pull "
                        "nllb-200-distilled-600M`, then translate.model = \"nllb-200-distilled-600M\"")
            raise TranslationConfigError(
                f"translate: nothing can translate {route} "
                f"(backend {'auto' if choice == 'auto' else repr(choice)}; "
                f"available: {self._available()}){hint}")
        return able

    @property
    def uses_audio(self) -> bool:
        """Whether some target may be translated from the speech (the engine keeps the audio)."""
        return any(needs_audio(b) for chain in self._chains.values() for b in chain)

    def text_targets(self, source: str) -> list[str]:
        """The targets a caption in ``source`` gets from its text alone (for partials)."""
        plan, _ = self.route(source)
        out = [t for name, ts in plan.items() if not needs_audio(self.backends[name]) for t in ts]
        return [t for t in self.targets if t in out or same_words(source, t)]

    def describe_routes(self, source: str | None = None) -> str:
        """'es ← apertium, en ← whisper' (the first backend each target would try)."""
        parts = []
        for t in self.targets:
            chain = self._chains[t]
            if source is not None and same_words(source, t):
                parts.append(f"{t} = the spoken language")
            elif source is not None:
                able = [b.name for b in chain if b.supports(source, t)]
                parts.append(f"{t} ← {able[0] if able else 'nothing'}")
            else:
                parts.append(f"{t} ← {' or '.join(b.name for b in chain if b.can_target(t))}")
        return ", ".join(parts)

    def route(self, source: str, targets: Sequence[str] | None = None
              ) -> tuple[dict[str, list[str]], dict[str, str]]:
        """For a caption in ``source``: ({backend name: [targets]}, {target: error}), over all
        targets or the given ones."""
        plan: dict[str, list[str]] = {}
        errors: dict[str, str] = {}
        for target in self.targets if targets is None else [t for t in self.targets if t in targets]:
            if same_words(source, target):
                continue
            backend = next((b for b in self._chains[target] if b.supports(source, target)), None)
            if backend is None:
                tried = ", ".join(b.name for b in self._chains[target])
                errors[target] = f"no backend translates {source} → {target} (tried: {tried})"
            else:
                plan.setdefault(backend.name, []).append(target)
        return plan, errors

    def warmup(self) -> None:
        """Start what backends can start ahead of the first caption (Apertium's pipelines)."""
        for name, b in self.backends.items():
            if hasattr(b, "warmup"):
                try:
                    b.warmup(self.targets)
                except Exception as e:  # a warm-up failure shows again, marked, at first use
                    log.warning("translation backend %s could not warm up: %s", name, e)

    def close(self) -> None:
        for b in self.backends.values():
            if hasattr(b, "close"):
                b.close()

    # -- work -----------------------------------------------------------------------------
    def translate(self, text: str, source: str, *, audio=None, targets: Sequence[str] | None = None,
                  cache: SentenceCache | None = None) -> TranslationResult:
        """Translate one caption's text (in ``source``) into every target (or the given ones).
        Never raises for a backend's failure: it is logged and marked in ``errors``. With a
        ``cache``, text backends translate sentence by sentence and reuse what is cached."""
        t0 = time.perf_counter()
        result = TranslationResult()
        if not text.strip() or not source:
            return result
        wanted = self.targets if targets is None else [t for t in self.targets if t in targets]
        for target in wanted:
            if same_words(source, target):
                result.translations[target] = text
        plan, result.errors = self.route(source, wanted)
        for name, targets in plan.items():
            backend = self.backends[name]
            t1 = time.perf_counter()
            try:
                if cache is not None and not needs_audio(backend):
                    out = self._by_sentence(backend, text, source, targets, cache)
                else:
                    out = self._call(backend, text, source, targets, audio)
            except Exception as e:
                reason = str(e) if isinstance(e, TranslationError) else f"{type(e).__name__}: {e}"
                log.warning("translation by %s (%s → %s) failed: %s", name, source, ",".join(targets), reason)
                for t in targets:
                    result.errors[t] = f"{name}: {reason}"
                continue
            finally:
                result.timings[name] = time.perf_counter() - t1
            if result.timings[name] > self.slow_s:
                log.warning("translation by %s took %.2f s for %d target(s)", name, result.timings[name],
                            len(targets))
            for t in targets:
                translated = (out.get(t) or "").strip()
                if translated:
                    result.translations[t] = translated
                    result.backends[t] = name
                else:
                    result.errors[t] = f"{name}: produced no text"
        result.elapsed = time.perf_counter() - t0
        return result

    def _by_sentence(self, backend: Translator, text: str, source: str, targets: list[str],
                     cache: SentenceCache) -> dict[str, str]:
        """``text`` translated one sentence at a time, reusing cached sentences; a sentence
        whose translation came out empty fails its target as a whole."""
        sentences = split_sentences(text)
        parts: dict[str, list[str]] = {t: [] for t in targets}
        for sentence in sentences:
            known = cache.get(source, sentence)
            missing = [t for t in targets if t not in known]
            if missing:
                out = self._call(backend, sentence, source, missing, None)
                fresh = {t: (out.get(t) or "").strip() for t in missing}
                cache.put(source, sentence, {t: v for t, v in fresh.items() if v})
                known = {**known, **fresh}
            for t in targets:
                parts[t].append(known.get(t, ""))
        return {t: join_sentences(p, t) if all(p) else "" for t, p in parts.items()}

    def _call(self, backend: Translator, text: str, source: str, targets: list[str], audio) -> dict[str, str]:
        g = self.glossary
        style = getattr(backend, "glossary_style", "inline")
        if not g or not g.find(text):
            return backend.translate(text, source, targets, audio=audio)
        if style == "placeholder":
            p = g.protect(text, "placeholder")
            out = backend.translate(p.text, source, targets, audio=audio)
            return {t: g.restore(v, p, t) for t, v in out.items()}
        # inline: each target gets the source with that target's fixed forms written in.
        protected = {t: g.protect(text, "inline", t) for t in targets}
        rows = getattr(backend, "translate_rows", None)
        if rows is not None:
            texts = rows([(protected[t].text, t) for t in targets], source)
            out = dict(zip(targets, texts))
        else:  # one text for all targets (Whisper works from the audio anyway)
            out = backend.translate(text, source, targets, audio=audio)
        return {t: g.restore(v, protected[t], t) for t, v in out.items()}


@dataclass
class _Job:
    caption: object
    audio: object
    skipped: bool = False
    partial: bool = False


class TranslationWorker:
    """Runs a stage on one thread: ``submit(final, audio)`` returns at once; ``on_result(final,
    result)`` is called from the worker thread for every submitted caption, in order (a skipped
    one gets a result whose errors say so). ``on_result`` must be quick and must not raise.

    ``max_pending``: finals waiting beyond this are skipped, oldest first (live input); None
    waits for every one (a file). ``partial_interval`` (seconds) turns on partial translation:
    ``submit_partial(caption)`` keeps only the newest partial, translated by the text backends
    when no final is waiting, at most once per interval; its ``on_result`` may come after the
    caption's final (the caller drops what is stale). With partials on, text is translated
    sentence by sentence through ``cache``, so unchanged sentences keep their translation."""

    def __init__(self, stage: TranslationStage, on_result: Callable[[object, TranslationResult], None],
                 max_pending: int | None = 8, partial_interval: float | None = None):
        self.stage, self.on_result = stage, on_result
        self.max_pending = None if max_pending is None else max(1, max_pending)
        self.partial_interval = partial_interval
        self.cache = SentenceCache() if partial_interval is not None else None
        self._queue: deque[_Job] = deque()
        self._partial: _Job | None = None
        self._next_partial = 0.0  # monotonic time the next partial may start
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._busy = False
        self.skipped = 0
        self.partials_done = 0
        self._thread = threading.Thread(target=self._run, name="subtitler-translate", daemon=True)
        self._thread.start()

    def submit(self, caption, audio=None) -> None:
        """Queue a final caption (``caption.text`` in ``caption.lang``) for translation."""
        with self._cond:
            if self._closing:
                return
            if self._partial is not None and self._partial.caption.id == caption.id:
                self._partial = None  # the final supersedes its partial
            self._queue.append(_Job(caption, audio))
            if self.max_pending is not None:
                waiting = [j for j in self._queue if not j.skipped]
                for job in waiting[:max(0, len(waiting) - self.max_pending)]:
                    job.skipped, job.audio = True, None  # newest captions matter most live
                    self.skipped += 1
            self._cond.notify()

    def submit_partial(self, caption) -> None:
        """Offer a partial caption; it replaces any partial not yet started. Ignored unless
        partial translation is on."""
        if self.partial_interval is None:
            return
        with self._cond:
            if self._closing:
                return
            self._partial = _Job(caption, None, partial=True)
            self._cond.notify()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + int(self._busy)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Finish the queued finals (up to ``timeout`` s; a waiting partial is dropped), then
        stop. True when all was delivered."""
        with self._cond:
            self._closing = True
            self._partial = None
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next_job(self) -> _Job | None:
        """The next job (finals first), waiting as needed; None when closed and done."""
        with self._cond:
            while True:
                if self._queue:
                    job = self._queue.popleft()
                    break
                if self._closing:
                    return None
                if self._partial is not None:
                    wait = self._next_partial - time.monotonic()
                    if wait <= 0:
                        job, self._partial = self._partial, None
                        break
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            self._busy = True
            return job

    def _run(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            caption = job.caption
            try:
                if job.skipped:
                    reason = f"skipped: translation fell more than {self.max_pending} captions behind"
                    same = {t for t in self.stage.targets if same_words(caption.lang, t)}
                    result = TranslationResult(translations={t: caption.text for t in same},
                                               errors={t: reason for t in self.stage.targets if t not in same})
                elif job.partial:
                    result = self.stage.translate(caption.text, caption.lang,
                                                  targets=self.stage.text_targets(caption.lang), cache=self.cache)
                    self.partials_done += 1
                    self._next_partial = time.monotonic() + self.partial_interval
                else:
                    result = self.stage.translate(caption.text, caption.lang, audio=job.audio, cache=self.cache)
                self.on_result(caption, result)
            except Exception:  # never let one caption stop the translations of the next
                log.exception("translation of caption %s failed", getattr(caption, "id", "?"))
            finally:
                with self._cond:
                    self._busy = False
