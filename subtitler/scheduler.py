"""The decode scheduler: which room's decode runs next on the host's one Whisper model.

Pure: the host's decode thread asks every room's streaming policy what it has due (an
``Offer``: its urgency), hands the offers to ``DecodeScheduler.choose`` and runs what comes
back. No model, thread or clock in here; tests drive it by simulation with a fake decoder.

The rules, in order:
  1. An ended utterance's final (``FINAL``) goes before anything else of any room, the one
     that has waited longest first: a busy room never starves another room's final.
  2. Then a decode at a speaker's pause (``PAUSE``): it becomes the final the moment the
     silence is confirmed, so it is a final in all but name.
  3. Partials (``PARTIAL``) last, shared fairly: the room served longest ago goes first, so
     every room's screens move, whatever the others do.
When the host cannot keep up, finals take the decoder and the partials are what slows down;
each room's policy then bounds its own backlog.

With ``max_batch`` > 1 the most urgent offers of several rooms are chosen together, in the
order above, for the host to batch; the caller may wait ``window_s`` (on a GPU) after the
first offer became due for others to join, never longer.
"""

from __future__ import annotations

from dataclasses import dataclass

FINAL, PAUSE, PARTIAL = 0, 1, 2  # urgency classes, most urgent first
URGENCY_NAMES = {FINAL: "final", PAUSE: "pause", PARTIAL: "partial"}


@dataclass(frozen=True)
class Offer:
    """A room has a decode due: its name and how urgent the decode is."""

    room: str
    urgency: int


class DecodeScheduler:
    """Chooses the next decode(s) among the rooms' offers (see the module's rules)."""

    def __init__(self, max_batch: int = 1, window_s: float = 0.05):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.window_s = window_s
        self._due_since: dict[tuple[str, int], float] = {}  # (room, urgency) → when first offered
        self._served: dict[str, float] = {}  # room → when its last partial was chosen
        self.chosen = {FINAL: 0, PAUSE: 0, PARTIAL: 0}

    def observe(self, offers: list[Offer], now: float) -> None:
        """Note which offers are due at ``now``: an offer keeps the time it first appeared,
        which orders finals by how long they have waited."""
        current = {(o.room, o.urgency) for o in offers}
        for key in list(self._due_since):
            if key not in current:
                del self._due_since[key]
        for key in current:
            self._due_since.setdefault(key, now)

    def order(self, offers: list[Offer], now: float) -> list[Offer]:
        """The offers, most deserving first."""
        self.observe(offers, now)

        def rank(o: Offer) -> tuple:
            since = self._due_since[(o.room, o.urgency)]
            if o.urgency == PARTIAL:  # fairness: the room served longest ago first
                return (o.urgency, self._served.get(o.room, float("-inf")), since, o.room)
            return (o.urgency, since, o.room)
        return sorted(offers, key=rank)

    def choose(self, offers: list[Offer], now: float) -> list[Offer]:
        """The decodes to run now, most deserving first: up to ``max_batch`` (one per room).
        Marks them served."""
        chosen = self.order(offers, now)[: self.max_batch]
        for o in chosen:
            self._due_since.pop((o.room, o.urgency), None)
            self.chosen[o.urgency] += 1
            if o.urgency == PARTIAL:
                self._served[o.room] = now
        return chosen

    def wait_for_batch(self, offers: list[Offer], now: float) -> float:
        """Seconds worth waiting for more rooms to join a batch (0 = run now): only when
        batching, with fewer offers than a full batch and no final already waiting long."""
        if self.max_batch <= 1 or not offers or len({o.room for o in offers}) >= self.max_batch:
            return 0.0
        self.observe(offers, now)
        oldest = min(self._due_since[(o.room, o.urgency)] for o in offers)
        return max(0.0, oldest + self.window_s - now)

    def forget(self, room: str) -> None:
        """A room closed: drop what was remembered of it."""
        self._served.pop(room, None)
        for key in [k for k in self._due_since if k[0] == room]:
            del self._due_since[key]
