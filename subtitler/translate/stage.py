"""The translation stage: which backend translates which target, one call per backend, and a
worker thread so the source caption is never held up by its translations.

``TranslationStage`` is pure routing over ``Translator`` objects (tested with fakes):

* per target, the backend named in ``overrides``, else ``backend``; ``auto`` tries, in order,
  the CTranslate2 model, Apertium (when the pair is installed), then Whisper (for ``en``);
* a target that no allowed backend can produce is a ``TranslationConfigError`` at start;
* at run time each caption's source language picks, per target, the first allowed backend
  that supports source → target; the targets of one backend go in one call (one batched
  ``translate_batch`` for CTranslate2);
* a backend that raises, or returns nothing for a target, is logged and the target is marked
  in ``TranslationResult.errors``; the other backends' targets are unaffected.

``TranslationWorker`` runs the stage on its own thread behind a bounded queue: the engine
publishes the final at once and submits it; the result arrives through a callback. When
translation falls behind, the oldest waiting captions are skipped (and marked as such).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from .base import TranslationConfigError, TranslationError, Translator
from .glossary import Glossary

log = logging.getLogger("subtitler.translate")

# The order ``auto`` tries backends in: a loaded multilingual model first, then the
# rule-based pairs, then Whisper's own speech → English.
AUTO_ORDER = ("ctranslate2", "apertium", "whisper")
BACKEND_NAMES = ("auto", *AUTO_ORDER)


def _same_language(a: str, b: str) -> bool:
    """'es' and 'es': nothing to translate. 'zh' and 'zh-Hant' differ (a script to change)."""
    return a.replace("_", "-").lower() == b.replace("_", "-").lower()


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
            chain = [self.backends[n] for n in AUTO_ORDER if n in self.backends]
            chain += [b for n, b in self.backends.items() if n not in AUTO_ORDER]
        elif choice not in self.backends:
            raise TranslationConfigError(
                f"translate: target '{target}' is set to backend '{choice}', which is not available "
                f"(available: {self._available()})")
        else:
            chain = [self.backends[choice]]
        if source is not None and _same_language(source, target):
            return chain  # nothing to translate: the source text is the target text
        able = [b for b in chain if b.can_target(target)]
        if source is not None:
            able = [b for b in able if b.supports(source, target)]
        if not able:
            route = f"{source} → {target}" if source else f"into '{target}'"
            raise TranslationConfigError(
                f"translate: nothing can translate {route} "
                f"(backend {'auto' if choice == 'auto' else repr(choice)}; "
                f"available: {self._available()})")
        return able

    def route(self, source: str) -> tuple[dict[str, list[str]], dict[str, str]]:
        """For a caption in ``source``: ({backend name: [targets]}, {target: error})."""
        plan: dict[str, list[str]] = {}
        errors: dict[str, str] = {}
        for target in self.targets:
            if _same_language(source, target):
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
    def translate(self, text: str, source: str, *, audio=None) -> TranslationResult:
        """Translate one caption's text (in ``source``) into every target. Never raises for a
        backend's failure: it is logged and marked in ``errors``."""
        t0 = time.perf_counter()
        result = TranslationResult()
        if not text.strip() or not source:
            return result
        for target in self.targets:
            if _same_language(source, target):
                result.translations[target] = text
        plan, result.errors = self.route(source)
        for name, targets in plan.items():
            backend = self.backends[name]
            t1 = time.perf_counter()
            try:
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


class TranslationWorker:
    """Runs a stage on one thread: ``submit(final, audio)`` returns at once; ``on_result(final,
    result)`` is called from the worker thread for every submitted caption, in order (a skipped
    one gets a result whose errors say so). ``on_result`` must be quick and must not raise."""

    def __init__(self, stage: TranslationStage, on_result: Callable[[object, TranslationResult], None],
                 max_pending: int = 8):
        self.stage, self.on_result = stage, on_result
        self.max_pending = max(1, max_pending)
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._busy = False
        self.skipped = 0
        self._thread = threading.Thread(target=self._run, name="subtitler-translate", daemon=True)
        self._thread.start()

    def submit(self, caption, audio=None) -> None:
        """Queue a final caption (``caption.text`` in ``caption.lang``) for translation."""
        with self._cond:
            if self._closing:
                return
            self._queue.append(_Job(caption, audio))
            waiting = [j for j in self._queue if not j.skipped]
            for job in waiting[:max(0, len(waiting) - self.max_pending)]:
                job.skipped, job.audio = True, None  # newest captions matter most live
                self.skipped += 1
            self._cond.notify()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + int(self._busy)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Finish what is queued (up to ``timeout`` s), then stop. True when all was delivered."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                job = self._queue.popleft()
                self._busy = True
            caption = job.caption
            try:
                if job.skipped:
                    reason = f"skipped: translation fell more than {self.max_pending} captions behind"
                    same = {t for t in self.stage.targets if _same_language(caption.lang, t)}
                    result = TranslationResult(translations={t: caption.text for t in same},
                                               errors={t: reason for t in self.stage.targets if t not in same})
                else:
                    result = self.stage.translate(caption.text, caption.lang, audio=job.audio)
                self.on_result(caption, result)
            except Exception:  # never let one caption stop the translations of the next
                log.exception("translation of caption %s failed", getattr(caption, "id", "?"))
            finally:
                with self._cond:
                    self._busy = False
