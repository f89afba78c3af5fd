"""The decode scheduler by simulation: rooms' policies, a fake decoder, an invented clock."""

from __future__ import annotations

import numpy as np
import pytest

from subtitler.asr import Decoding
from subtitler.captions import SAMPLE_RATE, Utterance
from subtitler.scheduler import FINAL, PARTIAL, PAUSE, DecodeScheduler, Offer
from subtitler.streaming import StreamingOptions, StreamingPolicy
from subtitler.vad import SpeechAudio, SpeechEnd, SpeechPause, SpeechStart


def test_finals_before_partials_of_any_room():
    s = DecodeScheduler()
    offers = [Offer("a", PARTIAL), Offer("b", PAUSE), Offer("c", FINAL)]
    assert [o.room for o in s.order(offers, 0.0)] == ["c", "b", "a"]
    assert s.choose(offers, 0.0) == [Offer("c", FINAL)]


def test_oldest_final_first_so_a_busy_room_never_starves_another():
    s = DecodeScheduler()
    s.observe([Offer("busy", FINAL)], 0.0)
    s.observe([Offer("busy", FINAL), Offer("quiet", FINAL)], 1.0)
    # busy's final was served at 1.0 and a new one of busy is due right away
    assert s.choose([Offer("busy", FINAL), Offer("quiet", FINAL)], 1.0)[0].room == "busy"
    assert s.choose([Offer("busy", FINAL), Offer("quiet", FINAL)], 1.5)[0].room == "quiet"


def test_partials_are_shared_round_robin():
    s = DecodeScheduler()
    rooms = ["a", "b", "c"]
    served = []
    for step in range(9):
        served.append(s.choose([Offer(r, PARTIAL) for r in rooms], float(step))[0].room)
    # every room gets its turn in every window of three decodes
    for i in range(0, 9, 3):
        assert sorted(served[i:i + 3]) == rooms


def test_batch_takes_the_most_urgent_one_per_room_and_waits_at_most_the_window():
    s = DecodeScheduler(max_batch=3, window_s=0.05)
    offers = [Offer("a", PARTIAL), Offer("b", FINAL)]
    assert s.wait_for_batch(offers, 10.0) == pytest.approx(0.05)
    assert s.wait_for_batch(offers, 10.03) == pytest.approx(0.02)
    assert s.wait_for_batch(offers, 10.2) == 0.0
    chosen = s.choose(offers + [Offer("c", PAUSE)], 10.2)
    assert [o.room for o in chosen] == ["b", "c", "a"]
    assert DecodeScheduler(max_batch=1).wait_for_batch(offers, 0.0) == 0.0


def test_forget_drops_a_closed_room():
    s = DecodeScheduler()
    s.choose([Offer("gone", PARTIAL)], 0.0)
    s.forget("gone")
    assert s.choose([Offer("gone", PARTIAL), Offer("new", PARTIAL)], 1.0)[0].room in ("gone", "new")
    with pytest.raises(ValueError):
        DecodeScheduler(max_batch=0)


# -- rooms' real policies, one fake decoder ---------------------------------------------------

class SimRoom:
    """A room whose speaker talks in utterances of ``length`` s with ``gap`` s between."""

    def __init__(self, name: str, length: float, gap: float, offset: float = 0.0):
        self.name = name
        self.policy = StreamingPolicy(StreamingOptions(partial_interval=0.5, first_partial_s=0.5, max_lag_s=30.0))
        self.length, self.gap, self.offset = length, gap, offset
        self.next_id = 0
        self.speaking_since: float | None = None
        self.ended_at: dict[int, float] = {}
        self.final_latency: list[float] = []
        self.partials = 0

    def tick(self, t: float, dt: float) -> None:
        """Audio from t to t+dt as segmenter events."""
        period = self.length + self.gap
        phase = (t - self.offset) % period if t >= self.offset else -1
        samples = np.ones(int(dt * SAMPLE_RATE), np.int16)
        if 0 <= phase < self.length:
            if self.speaking_since is None:
                self.next_id += 1
                self.speaking_since = t
                self.policy.on_event(SpeechStart(self.next_id, t), t)
            self.policy.on_event(SpeechAudio(self.next_id, samples, t + dt), t)
        elif self.speaking_since is not None:
            uid, start = self.next_id, self.speaking_since
            self.policy.on_event(SpeechPause(uid, t), t)
            audio = np.ones(int(round((t - start) * SAMPLE_RATE)), np.int16)
            self.policy.on_event(SpeechEnd(Utterance(uid, start, t, audio), "silence"), t)
            self.ended_at[uid] = t
            self.speaking_since = None
        for c in self.policy.drain():
            if c.kind == "final" and c.text:
                self.final_latency.append(t - self.ended_at[c.id])
            elif c.kind == "partial":
                self.partials += 1


def simulate(rooms: list[SimRoom], decode_s: float, seconds: float, dt: float = 0.02):
    """One decoder shared by every room, chosen by the scheduler, each decode ``decode_s`` long."""
    sched = DecodeScheduler()
    busy_until, running = 0.0, None
    t = 0.0
    kinds = {"final": FINAL, "pause": PAUSE, "partial": PARTIAL}
    order = []
    while t < seconds:
        for r in rooms:
            r.tick(t, dt)
        if running is not None and t >= busy_until:
            room, job = running
            words = " ".join(["word"] * max(1, job.samples // SAMPLE_RATE))
            room.policy.on_result(job, Decoding(text=words, language="en", language_probability=1.0), t)
            running = None
        if running is None:
            by_name = {r.name: r for r in rooms}
            offers = [Offer(r.name, kinds[k]) for r in rooms if (k := r.policy.due(t)) is not None]
            if offers:
                chosen = sched.choose(offers, t)[0]
                room = by_name[chosen.room]
                job = room.policy.next_job(t)
                order.append((chosen.room, chosen.urgency))
                running, busy_until = (room, job), t + decode_s
        t += dt
    for r in rooms:  # let the last results come out
        r.tick(t, dt)
    return order


def test_three_talking_rooms_share_one_decoder_finals_first():
    rooms = [SimRoom("a", 3.0, 0.8), SimRoom("b", 4.0, 0.7, offset=0.4), SimRoom("c", 2.5, 1.0, offset=1.1)]
    simulate(rooms, decode_s=0.35, seconds=60)
    for r in rooms:
        assert len(r.final_latency) >= 10, r.name
        assert max(r.final_latency) < 1.5, (r.name, r.final_latency)
        assert r.partials > 0, f"room {r.name} never saw a partial: partials are not shared"


def test_a_room_talking_nonstop_does_not_starve_a_quiet_rooms_final():
    busy = SimRoom("busy", 1.0, 0.1)  # an ended utterance every 1.1 s, forever
    quiet = SimRoom("quiet", 2.0, 6.0, offset=0.5)
    simulate([busy, quiet], decode_s=0.5, seconds=40)
    assert len(quiet.final_latency) >= 4
    assert max(quiet.final_latency) < 1.6, quiet.final_latency


def test_overload_slows_partials_first():
    rooms = [SimRoom(n, 3.0, 0.5, offset=i * 0.3) for i, n in enumerate("abcd")]
    light = [SimRoom("a", 3.0, 0.5)]
    simulate(light, decode_s=0.4, seconds=40)
    order = simulate(rooms, decode_s=0.4, seconds=40)
    per_room_partials = sum(r.partials for r in rooms) / len(rooms)
    assert per_room_partials < light[0].partials  # each room gets fewer partials under load …
    finals = [u for _, u in order if u != PARTIAL]
    assert len(finals) >= sum(len(r.final_latency) for r in rooms)  # … while every final was decoded
    for r in rooms:
        assert len(r.final_latency) >= 8
