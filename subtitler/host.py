"""The host: Whisper and the translation backends loaded once, one decode thread for every room.

Rooms attach while they run (``Room.run``); the decode thread asks each attached room what it
has due, lets ``scheduler.DecodeScheduler`` choose (finals of any room first, partials shared
fairly) and runs the chosen decode — one at a time on a CPU, several rooms as one batch on a
GPU. A partial whose room, or any other room, has a final
waiting by the time its encoder pass is done is abandoned: partials never hold up a final.

A model failure on one room's audio stops that room (``Room.fail``); the others go on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING, Iterable

import numpy as np

from .asr import Thresholds, WhisperASR
from .captions import SAMPLE_RATE
from .config import Config
from .metrics import family
from .models import ModelNotFoundError, resolve_model
from .scheduler import FINAL, PARTIAL, PAUSE, URGENCY_NAMES, DecodeScheduler, Offer
from .translate import TranslationConfigError, TranslationStage, build_stage

if TYPE_CHECKING:
    from .room import Room

log = logging.getLogger("subtitler")

URGENCY = {"final": FINAL, "pause": PAUSE, "partial": PARTIAL}
IDLE_WAIT_S = 0.02  # partials fall due by the clock, not only on events: look again this often
# A partial that would show this much more of an utterance's speech than the room's screens show
# runs to its end, whatever other rooms wait for: an overloaded host slows partials down, but a
# speaker's words still reach the screens every few seconds.
STARVED_S = 2.0
# Auto capacity: rooms the host takes = this budget over one measured final-grade decode pass,
# an estimate which server.max_rooms replaces. Calibrated with bench/rooms.py on the 2-core
# Xeon: one pass 0.44 s with base (2 rooms kept every final p90 ≤ 1.5 s, 3 did not) and
# 0.24 s with tiny.en (5 rooms at p90 ≤ 1.4 s, 6 did not): base → 2 rooms, tiny.en → 5.
CAPACITY_BUDGET_S = 1.25
MAX_AUTO_ROOMS = 64


class CapacityError(ValueError):
    """Opening one more room would slow every room: refused with what to do instead."""


def load_asr(config: Config, progress: bool = True, model: str | None = None) -> WhisperASR:
    """Resolve and load the Whisper model (once per process); ``model``: another than asr.model
    with the same settings (the partial model)."""
    a = config.asr
    path = resolve_model(model or a.model, a.models_dir, progress=progress)
    asr = WhisperASR(path, a.device, a.compute_type, a.cpu_threads,
                     Thresholds(a.no_speech_threshold, a.logprob_threshold, a.compression_ratio_threshold),
                     a.encoder)
    if model is None and a.language != "auto" and a.language not in asr.languages:
        raise ValueError(f"asr.language = '{a.language}' is not a language of model '{a.model}'; "
                         f"allowed: auto, {', '.join(asr.languages)}")
    return asr


def load_partial_asr(config: Config, progress: bool = True) -> WhisperASR | None:
    """asr.partial_model loaded, or None when it is unset or the main model itself."""
    a = config.asr
    if not a.partial_model or a.partial_model == a.model:
        return None
    try:
        asr = load_asr(config, progress, model=a.partial_model)
    except (ModelNotFoundError, ValueError, OSError, RuntimeError) as e:
        raise ModelNotFoundError(f"asr.partial_model = '{a.partial_model}': {e}") from None
    if not asr.multilingual and a.language != "en":
        log.warning("asr.partial_model '%s' is English-only: partials use it only while the language is en "
                    "(asr.language = %s); other languages' partials stay on '%s'", a.partial_model, a.language,
                    a.model)
    # One decode now, so that the room's first partial does not pay for the model's start-up.
    noise = (np.random.default_rng(0).standard_normal(SAMPLE_RATE) * 30).astype(np.int16)
    asr.decode(noise, language="en", beam_size=1, fallback=False, known_speech=True)
    return asr


def check_translation(config: Config) -> None:
    if config.translate.targets and config.asr.task == "translate":
        raise TranslationConfigError(
            "asr.task = 'translate' turns the captions into English, so there is no source text to "
            "translate from; keep asr.task = 'transcribe' and add 'en' to translate.targets instead")


class Host:
    """Owns the models and the decode thread. ``Host(asr)`` for a given model (tests,
    ``transcribe``); ``Host.load(config)`` loads what a venue's rooms need."""

    def __init__(self, asr: WhisperASR, *, translation: TranslationStage | None = None,
                 config: Config | None = None, max_rooms: int = 0, partial_asr: WhisperASR | None = None):
        self.asr = asr
        self.partial_asr = partial_asr  # a smaller model for partials (asr.partial_model), or None
        self.partial_model_decodes = 0
        self.config = config or Config()
        self.translation = translation  # backends for every target any room may ask for
        # Rooms are batched on a GPU only, where one call fills what one utterance leaves idle.
        # On the CPU a batch's results all come at its end: two rooms' finals batched in a
        # 3-room venue (bench/rooms.py) took 1.18 s together where one by one the first came
        # after 0.6 s; and a lone decode can give up its encoder pass for a final, a batch not.
        self._gpu = getattr(asr, "device", "cpu") == "cuda"
        batch = getattr(asr, "batch_size", 1) if self._gpu and getattr(asr, "batch_benefit", False) else 1
        self.scheduler = DecodeScheduler(max_batch=max(1, batch))
        self._max_rooms = max_rooms
        self.final_decode_s: float | None = None  # measured by measure_capacity()
        self._rooms: dict[str, "Room"] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(threading.Lock())
        self._woken = False
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.decodes = 0
        self.abandoned_for_finals = 0
        self._shown: dict[str, tuple[int, int]] = {}  # room → (utterance, samples its last partial heard)
        self.batches = 0

    @classmethod
    def load(cls, config: Config, *, rooms: Iterable[Config] = (), progress: bool = True) -> "Host":
        """Load Whisper once, and the translation backends for the venue's targets and every
        room's (``rooms``: each room's ``Config.for_room``)."""
        rooms = list(rooms)
        for c in [config, *rooms]:
            check_translation(c)
        asr = load_asr(config, progress=progress)
        partial_asr = load_partial_asr(config, progress=progress)
        targets = list(dict.fromkeys(t for c in [config, *rooms] for t in c.translate.targets))
        stage = None
        if targets:
            # The backends are what is shared; each room's stage brings its own glossary. With
            # one fixed spoken language everywhere, targets are checked against it now.
            spoken = {c.asr.language for c in [config, *rooms]}
            source = spoken.pop() if len(spoken) == 1 and "auto" not in spoken else None
            stage = build_stage(dataclasses.replace(config.translate, targets=targets), asr=asr,
                                glossary=config.glossary, source=source)
            stage.warmup()
        return cls(asr, translation=stage, config=config, max_rooms=config.server.max_rooms, partial_asr=partial_asr)

    # -- translation per room -------------------------------------------------------------
    def stage_for(self, config: Config) -> TranslationStage | None:
        """The room's translation: its targets and source, on the backends loaded once.
        A target nothing loaded can produce raises TranslationConfigError."""
        targets = config.translate.targets
        if not targets:
            return None
        check_translation(config)
        if self.translation is None:  # the venue started without targets: load them now
            self.translation = build_stage(config.translate, asr=self.asr, glossary=config.glossary, source=None)
        t = config.translate
        stage = TranslationStage(targets, self.translation.backends.values(), backend=t.backend,
                                 overrides={k: v for k, v in t.parsed_overrides.items() if k in targets},
                                 glossary=config.glossary,
                                 source=None if config.asr.language == "auto" else config.asr.language,
                                 slow_s=t.slow_s)
        stage.warmup()
        return stage

    def close(self) -> None:
        self.stop()
        if self.translation is not None:
            self.translation.close()

    # -- capacity -------------------------------------------------------------------------
    def measure_capacity(self) -> float:
        """Time one final-grade decode pass (3 s of faint noise at the final's beam: the encoder
        pass and the decoder's start, which dominate a short final) after a warm-up call. Each
        call gets audio of its own: a second decode of the same audio would reuse its encoder
        output and time the text generation alone."""
        rng = np.random.default_rng()
        language = "en" if "en" in self.asr.languages else None
        beam = self.config.asr.beam_size
        times = []
        for _ in range(2):  # the first warms caches up
            audio = (rng.standard_normal(3 * SAMPLE_RATE) * 30).astype(np.int16)
            t0 = time.perf_counter()
            self.asr.decode(audio, language=language, beam_size=beam, fallback=False, known_speech=True)
            times.append(time.perf_counter() - t0)
        self.final_decode_s = times[-1]
        return self.final_decode_s

    @property
    def capacity_measured(self) -> bool:
        return self._max_rooms <= 0

    @property
    def max_rooms(self) -> int:
        if self._max_rooms > 0:
            return self._max_rooms
        if self.final_decode_s is None:
            self.measure_capacity()
        return max(1, min(MAX_AUTO_ROOMS, int(CAPACITY_BUDGET_S / max(self.final_decode_s, 1e-3))))

    def capacity(self) -> dict:
        with self._lock:
            rooms = list(self._rooms.values())
        lagging = [r.name for r in rooms if r.stats().lag > 5.0]
        return {"rooms": len(rooms), "max_rooms": self.max_rooms, "overloaded": bool(lagging),
                "lagging": lagging}

    def check_room_for(self, open_rooms: int) -> None:
        """CapacityError when one more room (with ``open_rooms`` open) would be too many."""
        limit = self.max_rooms
        if open_rooms >= limit:
            how = ("server.max_rooms" if self._max_rooms > 0 else
                   f"measured: one final decode takes {self.final_decode_s:.2f} s on {self.asr.device}")
            raise CapacityError(f"the host is at capacity: {open_rooms} rooms open, at most {limit} "
                                f"({how}); close a room first, or set server.max_rooms higher if the "
                                f"rooms are rarely all speaking at once")

    # -- rooms attach while they run ------------------------------------------------------------
    def attach(self, room: "Room") -> None:
        with self._lock:
            if room.name in self._rooms and self._rooms[room.name] is not room:
                raise ValueError(f"a room named '{room.name}' is already running on this host")
            self._rooms[room.name] = room
        self._start()
        self.wake()

    def detach(self, room: "Room") -> None:
        with self._lock:
            if self._rooms.get(room.name) is room:
                del self._rooms[room.name]
        self.scheduler.forget(room.name)
        self._shown.pop(room.name, None)

    @property
    def rooms(self) -> list["Room"]:
        with self._lock:
            return list(self._rooms.values())

    @property
    def running(self) -> bool:
        return not self._stopping

    def wake(self) -> None:
        """A room has news (speech began or ended): look at the offers now."""
        with self._wake:
            self._woken = True
            self._wake.notify()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._decode_loop, name="subtitler-decode", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the decode thread (rooms still waiting for decodes give up waiting)."""
        self._stopping = True
        self.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        for room in self.rooms:
            room.wake()

    # -- the decode thread ----------------------------------------------------------------------
    def _decode_loop(self) -> None:
        while not self._stopping:
            rooms = {r.name: r for r in self.rooms}
            offers = []
            for room in rooms.values():
                kind = room.due()
                if kind is not None:
                    offers.append(Offer(room.name, URGENCY[kind]))
            now = time.monotonic()
            if offers:
                wait = self.scheduler.wait_for_batch(offers, now)
                if wait > 0:
                    time.sleep(wait)
                    continue
            if not offers:
                with self._wake:
                    if not self._woken:
                        self._wake.wait(IDLE_WAIT_S)
                    self._woken = False
                continue
            jobs = []
            for offer in self.scheduler.choose(offers, now):
                room = rooms[offer.room]
                job = room.take_job()
                if job is not None:
                    jobs.append((room, job))
            if len(jobs) > 1:
                self._decode_batch(jobs)
            elif jobs:
                self._decode_one(*jobs[0])

    def _abandon(self, room: "Room", job) -> bool:
        """Drop this decode? Asked after its encoder pass, and between the torch encoder's
        layers: a partial gives way to any room's final or decode at a pause (a final in all
        but name), so a final waits for one encoder layer of a partial, not a whole pass;
        unless the room's screens have shown nothing of STARVED_S of its speaker's words."""
        if room.is_stale(job):
            return True
        if job.final or job.may_finalize:
            return False
        utterance, shown = self._shown.get(room.name, (None, 0))
        if job.samples - (shown if utterance == job.utterance_id else 0) >= STARVED_S * SAMPLE_RATE:
            return False
        if any(r.due() in ("final", "pause") for r in self.rooms if r is not room):
            self.abandoned_for_finals += 1
            return True
        return False

    def asr_for(self, job) -> WhisperASR:
        """The partial model for a plain partial it can hear; the main model for the rest: a
        final, a decode at a pause (it may become the final), a translation, an utterance whose
        language is not known yet, and a language an English-only partial model does not speak."""
        small = self.partial_asr
        if small is None or job.final or job.may_finalize or job.task != "transcribe":
            return self.asr
        if job.language is None:  # detection stays with the main model: a partial's guess is kept
            return self.asr
        if not small.multilingual and job.language != "en":
            return self.asr
        return small

    def _decode_one(self, room: "Room", job) -> None:
        try:
            decoding = self.asr_for(job).decode(
                job.audio, language=job.language, prior=job.prior, task=job.task, beam_size=job.beam_size,
                prefix=job.prefix, prompt=job.prompt, fallback=job.fallback, abandon=lambda: self._abandon(room, job))
        except Exception as e:  # surface it in that room's run(); the other rooms go on
            log.exception("decoding failed in room %s", room.name)
            room.fail(e)
            return
        self._finish(room, job, decoding)

    def _finish(self, room: "Room", job, decoding) -> None:
        self.decodes += 1
        if self.asr_for(job) is not self.asr:
            self.partial_model_decodes += 1
        if not job.final and decoding.rejected != "abandoned":
            self._shown[room.name] = (job.utterance_id, job.samples)
        self._trace(room, job, decoding)
        room.finish_job(job, decoding)

    @staticmethod
    def _trace(room: "Room", job, decoding) -> None:
        """With --verbose: each decode, for reading where a room's latency went."""
        if log.isEnabledFor(logging.INFO):
            kind = "final" if job.final else "pause" if job.may_finalize else "partial"
            log.info("room %s: %s decode of %.1f s of audio in %.2f s%s", room.name, kind,
                     job.samples / SAMPLE_RATE, decoding.elapsed,
                     f" ({decoding.rejected})" if decoding.rejected else "")

    def _decode_batch(self, jobs: list) -> None:
        """Several rooms' decodes in one model call (where the model says batching pays)."""
        from .asr import DecodeRequest

        groups: dict[int, list] = {}  # one call per model: partials may be on the partial model
        for room, job in jobs:
            groups.setdefault(id(self.asr_for(job)), []).append((room, job))
        if len(groups) > 1:
            for group in groups.values():  # the most urgent job's model first
                if len(group) > 1:
                    self._decode_batch(group)
                else:
                    self._decode_one(*group[0])
            return
        asr = self.asr_for(jobs[0][1])
        requests = [DecodeRequest(job.audio, language=job.language, prior=job.prior, task=job.task,
                                  beam_size=job.beam_size, prefix=job.prefix, prompt=job.prompt,
                                  fallback=job.fallback, abandon=(lambda r=room, j=job: self._abandon(r, j)))
                    for room, job in jobs]
        try:
            decodings = asr.decode_batch(requests)
        except Exception:  # one bad item must not take the others down: decode them one by one
            log.exception("batched decoding failed; decoding the %d rooms one by one", len(jobs))
            for room, job in jobs:
                self._decode_one(room, job)
            return
        self.batches += 1
        for (room, job), decoding in zip(jobs, decodings):
            self._finish(room, job, decoding)

    def metrics_text(self) -> str:
        """Host-level lines for /metrics: the decoder's work, shared by every room."""
        lines = family("subtitler_host_decodes_total", "counter", "Decodes the host ran, by what was chosen.",
                       [(f'kind="{URGENCY_NAMES[k]}"', n) for k, n in self.scheduler.chosen.items()])
        lines += family("subtitler_host_partials_abandoned_total", "counter", "Partials given up (between encoder "
                        "layers or after the pass) for another room's final or decode at a pause.",
                        [("", self.abandoned_for_finals)])
        lines += family("subtitler_host_partial_model_decodes_total", "counter",
                        "Partials decoded by asr.partial_model.", [("", self.partial_model_decodes)])
        lines += family("subtitler_host_rooms", "gauge", "Rooms decoding on this host.", [("", len(self.rooms))])
        lines += family("subtitler_host_max_rooms", "gauge", "Rooms this host takes before it refuses another.",
                        [("", self._max_rooms if self._max_rooms > 0 else self.max_rooms)])
        return "\n".join(lines) + "\n"
