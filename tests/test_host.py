"""The host's decode thread with a fake model: which decodes go to the model together.

On the CPU decodes run one at a time, most urgent first, so the first final never waits for the
others' (a batch's results all come at its end); on a GPU every chosen decode shares one call.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from subtitler.asr import Decoding
from subtitler.host import CAPACITY_BUDGET_S, MAX_AUTO_ROOMS, Host
from subtitler.streaming import DecodeJob


class FakeASR:
    """Answers at once and notes each model call as the list of rooms' prompts in it."""

    languages = ["en"]

    def __init__(self, device: str):
        self.device = device
        self.batch_benefit = True
        self.batch_size = 4
        self.calls: list[list[str]] = []

    def decode(self, audio, **kwargs) -> Decoding:
        self.calls.append([kwargs["prompt"]])
        return Decoding(text="words", language="en")

    def decode_batch(self, requests) -> list[Decoding]:
        self.calls.append([r.prompt for r in requests])
        return [Decoding(text="words", language="en") for _ in requests]


class FakeRoom:
    """One final due once ``go`` is set; finished when the host hands its result back."""

    def __init__(self, name: str, go: threading.Event, *, beam_size: int, prefix: str):
        self.name, self.go = name, go
        self.job = DecodeJob(utterance_id=1, final=True, audio=np.zeros(16000, np.float32), language="en",
                             prior=None, beam_size=beam_size, prefix=prefix, prompt=name, task="transcribe",
                             fallback=True)
        self.done = threading.Event()

    def due(self):
        return "final" if self.go.is_set() and not self.done.is_set() and self.job else None

    def take_job(self):
        job, self.job = self.job, None
        return job

    def finish_job(self, job, decoding) -> None:
        self.done.set()

    def is_stale(self, job) -> bool:
        return False

    def fail(self, error) -> None:
        raise AssertionError(f"room {self.name} failed: {error}")

    def wake(self) -> None:
        pass


def run_three_rooms(device: str) -> list[list[str]]:
    asr = FakeASR(device)
    host = Host(asr)
    go = threading.Event()
    rooms = [FakeRoom("a", go, beam_size=5, prefix=""), FakeRoom("b", go, beam_size=5, prefix="so"),
             FakeRoom("c", go, beam_size=5, prefix="")]
    try:
        for room in rooms:
            host.attach(room)
        time.sleep(0.05)  # every room attached before any has something due
        go.set()
        host.wake()
        for room in rooms:
            assert room.done.wait(5), f"room {room.name} never got its final"
    finally:
        host.stop()
    return asr.calls


def test_cpu_decodes_one_room_at_a_time_most_urgent_first():
    # three finals due at once, waiting as long: by name
    assert run_three_rooms("cpu") == [["a"], ["b"], ["c"]]


def test_gpu_batches_every_chosen_decode_in_one_call():
    assert [sorted(c) for c in run_three_rooms("cuda")] == [["a", "b", "c"]]
    # a decode waits at most 50 ms for other rooms to join its batch
    assert Host(FakeASR("cuda")).scheduler.window_s <= 0.05


def test_capacity_estimate_times_a_whole_decode_pass(asr_base):
    """The auto capacity comes from a real final-grade pass, encoder included (a second decode
    of the same audio would reuse its encoder output and promise rooms the host cannot take)."""
    host = Host(asr_base)
    passes = asr_base.encoder_passes
    seconds = host.measure_capacity()
    assert asr_base.encoder_passes == passes + 2  # the warm-up and the timed pass, each encoded
    assert seconds > 0 and host.max_rooms == max(1, min(MAX_AUTO_ROOMS, int(CAPACITY_BUDGET_S / seconds)))


class Talker(FakeRoom):
    """A room whose speaker goes on: a partial of ``seconds`` of its utterance is in flight."""

    def partial(self, seconds: float, utterance: int = 1) -> DecodeJob:
        return DecodeJob(utterance_id=utterance, final=False, audio=np.zeros(int(seconds * 16000), np.float32),
                         language="en", prior=None, beam_size=1, prefix="", prompt="", task="transcribe",
                         fallback=False)


class Pausing(FakeRoom):
    """A room whose speaker has just paused: its decode at the pause is due."""

    def due(self):
        return "pause"


def test_a_partial_gives_way_to_another_rooms_pause_but_never_starves_its_screens():
    host = Host(FakeASR("cpu"))
    go = threading.Event()
    talker, pausing = Talker("talker", go, beam_size=1, prefix=""), Pausing("pausing", go, beam_size=5, prefix="")
    host.attach(talker)
    host.attach(pausing)
    try:
        assert host._abandon(talker, talker.partial(1.0))  # its screens can wait for the other's final
        # 2 s of speech and nothing shown of it: the screens get this partial, whoever waits
        job = talker.partial(2.0)
        assert not host._abandon(talker, job)
        host._finish(talker, job, Decoding(text="words", language="en"))
        assert host._abandon(talker, talker.partial(3.0))  # shown up to 2 s: gives way again
        assert not host._abandon(talker, talker.partial(4.0))
        assert not host._abandon(talker, talker.partial(2.5, utterance=2))  # a new utterance: nothing shown
        assert host.abandoned_for_finals == 2
    finally:
        host.stop()


# -- a smaller model for partials (asr.partial_model) ----------------------------------------------------

class Model:
    """Stands for a loaded model in the choice of which one decodes a job."""

    def __init__(self, multilingual: bool):
        self.multilingual, self.device, self.languages = multilingual, "cpu", ["en"]


def job(*, final=False, may_finalize=False, language: str | None = "en", task="transcribe") -> DecodeJob:
    return DecodeJob(utterance_id=1, final=final, audio=np.zeros(16000, np.float32), language=language, prior="en",
                     beam_size=5 if final or may_finalize else 1, prefix="", prompt="", task=task, fallback=True,
                     may_finalize=may_finalize)


def test_partials_go_to_the_partial_model_and_everything_that_may_be_shown_as_final_to_the_main_one():
    main, english, multilingual = Model(True), Model(False), Model(True)
    assert Host(main).asr_for(job()) is main  # no partial model
    host = Host(main, partial_asr=english)
    assert host.asr_for(job()) is english
    assert host.asr_for(job(final=True)) is main
    assert host.asr_for(job(may_finalize=True)) is main  # a decode at a pause becomes the final
    assert host.asr_for(job(task="translate")) is main
    assert host.asr_for(job(language="es")) is main  # English-only: another language's partials stay
    assert host.asr_for(job(language=None)) is main  # detected per utterance: it could be anything
    host = Host(main, partial_asr=multilingual)
    assert host.asr_for(job(language="es")) is multilingual
    assert host.asr_for(job(language=None)) is main  # detection is the main model's: a guess would stay
    assert host.asr_for(job(final=True, language="es")) is main


class Spy:
    """A real model whose decodes are noted: (its name, beam size, seconds)."""

    def __init__(self, asr, name: str, calls: list):
        self.asr, self.name, self.calls = asr, name, calls

    def __getattr__(self, attr):
        return getattr(self.asr, attr)

    def decode(self, audio, **kwargs):
        t0 = time.perf_counter()
        decoding = self.asr.decode(audio, **kwargs)
        self.calls.append((self.name, kwargs["beam_size"], time.perf_counter() - t0))
        return decoding


def test_tiny_partials_beside_base_finals_on_real_speech(asr_base, asr_tiny_en, tmp_path):
    import corpus
    from subtitler.asr import normalize_for_match
    from subtitler.audio import FileSource
    from subtitler.config import Config
    from subtitler.room import Room

    stream = corpus.build_stream(tmp_path / "talk.wav", count=2, seed=4, min_duration=4.0, max_duration=6.5,
                                 noise_db=-60.0)
    config = Config().with_overrides({"asr.language": "en"})
    calls: list = []
    host = Host(Spy(asr_base, "base", calls), config=config, partial_asr=Spy(asr_tiny_en, "tiny.en", calls))
    captions = []

    class Sink:
        def on_caption(self, caption) -> None:
            captions.append(caption)

    try:
        Room(host, "main", FileSource(stream["wav"], realtime=True), [Sink()], config).run()
    finally:
        host.stop()
    tiny = [c for c in calls if c[0] == "tiny.en"]
    assert tiny and all(beam == 1 for _, beam, _ in tiny), calls  # greedy partials only
    assert host.partial_model_decodes == len(tiny)
    assert any(beam == 5 for name, beam, _ in calls if name == "base"), calls
    finals = [c for c in captions if c.is_final and c.text]
    partials = [c for c in captions if not c.is_final]
    assert partials and len(finals) == len(stream["utterances"])
    for u, final in zip(stream["utterances"], finals):  # the finals are base's, as good as alone
        said = [normalize_for_match(w) for w in u["text"].split()]
        heard = [normalize_for_match(w) for w in final.text.split()]
        assert sum(w in heard for w in said) >= 0.8 * len(said), (u["text"], final.text)


def test_a_partial_model_that_is_not_there_is_named_in_the_error(tmp_path):
    import pytest

    from subtitler.config import Config
    from subtitler.host import load_partial_asr
    from subtitler.models import ModelNotFoundError

    config = Config().with_overrides({"asr.partial_model": str(tmp_path / "tiny")})
    with pytest.raises(ModelNotFoundError) as e:
        load_partial_asr(config)
    assert str(e.value).startswith(f"asr.partial_model = '{tmp_path / 'tiny'}': model path")
    assert "not a CTranslate2 Whisper model folder" in str(e.value)
    assert load_partial_asr(Config().with_overrides({"asr.partial_model": "base"})) is None  # the main model


def test_gpu_batches_partials_on_the_partial_model_apart_from_finals():
    main, small = FakeASR("cuda"), FakeASR("cuda")
    small.multilingual = True
    host = Host(main, partial_asr=small)
    rooms = [(FakeRoom(n, threading.Event(), beam_size=5, prefix=""), dataclasses.replace(job(final=f), prompt=n))
             for n, f in (("a", True), ("b", False), ("c", False), ("d", True))]
    try:
        host._decode_batch([(room, j) for room, j in rooms])
    finally:
        host.stop()
    assert main.calls == [["a", "d"]] and small.calls == [["b", "c"]]
    assert all(room.done.is_set() for room, _ in rooms)
    assert host.partial_model_decodes == 2
