"""Apertium: rule-based, offline, light on the CPU, for the language pairs installed from Debian
(``apt-get install apertium apertium-eng-spa`` …).

``apertium eng-spa`` as one process per caption costs ~0.5–0.8 s here, nearly all of it
loading the pair's dictionaries. So each pair runs as one persistent pipeline in null-flush
mode (every program of the pair's mode with ``-z``, the way Apertium's own ``-z`` option and
its web service run it): a caption is written followed by NUL and its translation is read up
to the next NUL, ~3 ms a caption. Text goes in Apertium's stream format with the same escaping
its plain-text deformatter applies; unknown words come out unmarked (the ``-u`` behaviour).
A pipeline that fails or stalls is killed, the caption is marked, and the next caption starts
a fresh one. Where the pipeline cannot be built, each caption runs ``apertium -u PAIR``.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from .base import TranslationError
from .languages import apertium_codes, from_apertium

MODES_DIRS = (Path("/usr/share/apertium/modes"), Path("/usr/local/share/apertium/modes"))
INSTALL_HINT = "apt-get install apertium apertium-eng-spa (apt-cache search apertium lists the pairs)"

# A translation direction: 'eng-spa', 'spa-eng_US', 'es-pt', 'hbs-eng' — not the debugging
# modes a pair also installs ('eng-spa-tagger', 'eng-spa-biltrans' …).
_PAIR = re.compile(r"^([a-z]{2,3})(?:_[A-Za-z0-9]+)?-([a-z]{2,3})(?:_[A-Za-z0-9]+)?$")
# Characters Apertium's stream format reserves (as apertium-destxt escapes them).
_RESERVED = re.compile(r"([\\\[\]^$/@<>{}])")
_SENTENCE_END = ".[]"  # what the deformatter appends; the reformatter takes the '.' away again


def available() -> bool:
    return shutil.which("apertium") is not None


def installed_pairs(modes_dirs=MODES_DIRS) -> dict[str, Path]:
    """Installed translation directions: {'eng-spa': mode file, …}."""
    pairs: dict[str, Path] = {}
    for d in modes_dirs:
        d = Path(d)
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.mode")):
            if _PAIR.match(f.stem) and f.stem not in pairs:
                pairs[f.stem] = f
    return pairs


def _split(pair: str) -> tuple[str, str, bool]:
    """'spa-eng_US' → ('spa', 'eng', True: a variant)."""
    m = _PAIR.match(pair)
    assert m is not None
    return m.group(1), m.group(2), "_" in pair


def escape(text: str) -> str:
    return _RESERVED.sub(r"\\\1", " ".join(text.split()))


def unescape(stream: str) -> str:
    text = stream.replace("\0", "")
    if text.endswith(_SENTENCE_END):
        text = text[: -len(_SENTENCE_END)]
    text = re.sub(r"(?<!\\)\[\]", "", text)  # empty superblanks
    return tidy(re.sub(r"\\(.)", r"\1", text))


def tidy(text: str) -> str:
    text = re.sub(r"\s+([.,])(?=\s|$)", r"\1", text)  # 'una fruta .': Apertium spaces a final stop
    return " ".join(text.split())


class _Pipeline:
    """One pair's programs, started once, fed one NUL-terminated caption at a time."""

    def __init__(self, mode_file: Path, timeout_s: float):
        self.timeout_s = timeout_s
        script = subprocess.run(["apertium-wblank-mode", "-z", str(mode_file)], capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        if not script:
            raise OSError(f"apertium-wblank-mode gave no pipeline for {mode_file}")
        env = dict(os.environ, LC_ALL="C.UTF-8")
        # $1 = the generator's option (-n: no unknown-word marks), $2 = the tagger's (none).
        self.proc = subprocess.Popen(["bash", "-c", script, "apertium", "-n", ""], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        self._buffer = b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def translate(self, text: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((escape(text) + _SENTENCE_END + "\0").encode("utf-8"))
        self.proc.stdin.flush()
        deadline = time.monotonic() + self.timeout_s
        fd = self.proc.stdout.fileno()
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within {self.timeout_s:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise OSError(f"the pipeline ended (exit status {self.proc.wait()})")
                self._buffer += chunk
        out, _, self._buffer = self._buffer.partition(b"\0")
        if self._buffer.strip(b"\0"):
            raise OSError("the pipeline's output is out of step with its input")
        self._buffer = b""
        return unescape(out.decode("utf-8", errors="replace"))

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except BrokenPipeError:
                    pass  # a caption was still buffered for a pipeline that had ended: drop it


class ApertiumTranslator:
    """Translates with the installed Apertium pairs. ``pairs`` defaults to all installed ones."""

    name = "apertium"
    glossary_style = "placeholder"

    def __init__(self, pairs: dict[str, Path] | None = None, *, timeout_s: float = 10.0,
                 persistent: bool = True):
        if not available():
            raise TranslationError(f"Apertium is not installed: {INSTALL_HINT}")
        self.pairs = dict(installed_pairs() if pairs is None else pairs)
        self.timeout_s = timeout_s
        self.persistent = persistent and shutil.which("apertium-wblank-mode") is not None
        self._pipes: dict[str, _Pipeline] = {}
        self._locks: dict[str, threading.Lock] = {p: threading.Lock() for p in self.pairs}

    def describe(self) -> str:
        if not self.pairs:
            return f"apertium: no language pair installed ({INSTALL_HINT})"
        return f"apertium: pairs {', '.join(self.pairs)}"

    def pair_for(self, source: str, target: str) -> str | None:
        """The installed direction for source → target: a variant named after the target
        (eng-hbs_HR for 'hr', spa-eng_US for 'en-US') first, then the plain one."""
        sources, targets = apertium_codes(source), apertium_codes(target)
        region = re.split(r"[-_]", target)[-1].upper() if re.search(r"[-_]", target) else target.upper()
        best = None
        for pair in self.pairs:
            a, b, variant = _split(pair)
            if a in sources and b in targets:
                suffix = pair.rsplit("_", 1)[-1] if variant else ""
                fit = 0 if suffix == region else (1 if not variant else 2)
                rank = (sources.index(a) + targets.index(b), fit, pair)
                if best is None or rank < best:
                    best = rank
        return best[2] if best else None

    @property
    def languages(self) -> set[tuple[str, str]]:
        """(source, target) in Whisper's codes, for every installed direction."""
        out = set()
        for pair in self.pairs:
            a, b, _ = _split(pair)
            out |= {(s, t) for s in from_apertium(a) for t in from_apertium(b)}
        return out

    def can_target(self, target: str) -> bool:
        targets = apertium_codes(target)
        return any(_split(p)[1] in targets for p in self.pairs)

    def supports(self, source: str, target: str) -> bool:
        return self.pair_for(source, target) is not None

    def warmup(self, targets=()) -> None:
        """Start the pipelines of every pair into ``targets`` and run one word through them, so the
        first caption costs milliseconds, not the ~0.4 s of loading the pair's data."""
        if not self.persistent:
            return
        wanted = [set(apertium_codes(t)) for t in targets]
        for pair in self.pairs:
            if any(_split(pair)[1] in w for w in wanted):
                self._translate(pair, "Hello.")  # the programs load their data at the first input

    def translate(self, text: str, source: str, targets: list[str], *, audio=None) -> dict[str, str]:
        out: dict[str, str] = {}
        for target in targets:
            pair = self.pair_for(source, target)
            if pair is None:
                raise TranslationError(f"no Apertium pair for {source} → {target} ({self.describe()})")
            out[target] = self._translate(pair, text)
        return out

    def _pipe(self, pair: str) -> _Pipeline:
        pipe = self._pipes.get(pair)
        if pipe is None or not pipe.alive():
            if pipe is not None:
                pipe.close()
            pipe = self._pipes[pair] = _Pipeline(self.pairs[pair], self.timeout_s)
        return pipe

    def _translate(self, pair: str, text: str) -> str:
        if not text.strip():
            return ""
        with self._locks[pair]:
            if self.persistent:
                try:
                    return self._pipe(pair).translate(text)
                except (OSError, TimeoutError, subprocess.SubprocessError) as e:
                    pipe = self._pipes.pop(pair, None)
                    if pipe is not None:
                        pipe.close()  # the next caption starts a fresh pipeline
                    raise TranslationError(f"apertium {pair}: {e}") from None
            return self._one_shot(pair, text)

    def _one_shot(self, pair: str, text: str) -> str:
        env = dict(os.environ, LC_ALL="C.UTF-8")
        try:
            done = subprocess.run(["apertium", "-u", pair], input=" ".join(text.split()), text=True,
                                  capture_output=True, timeout=self.timeout_s, env=env)
        except subprocess.TimeoutExpired:
            raise TranslationError(f"apertium {pair}: no answer within {self.timeout_s:g} s") from None
        if done.returncode != 0:
            raise TranslationError(f"apertium {pair} failed: {done.stderr.strip()[:200]}")
        return tidy(done.stdout)

    def close(self) -> None:
        for pair, pipe in list(self._pipes.items()):
            with self._locks[pair]:
                pipe.close()
            self._pipes.pop(pair, None)

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass
