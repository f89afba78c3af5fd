"""Who may connect: connection caps per address and role, wrong-token back-off, and which
browser origins may steer a room. Pure: no sockets, no clocks (callers pass ``now``).

The server asks ``ConnectionLimits`` twice: when a TCP connection is accepted (every socket,
before a byte is read: the total and per-address caps keep the process far below its
open-file limit) and when a WebSocket handshake names its endpoint (a role: ``viewer``,
``console`` or ``sender``, each with its own total and per-address cap). The roles' pools are
separate, so screens that flood in never take the places of the console or the sender. The
per-address caps leave this machine's own loopback address alone (``LOCAL``).
``AuthThrottle`` slows wrong tokens down per address: a person may mistype ``free`` times;
after the n-th wrong token in a row beyond that the address must wait ``base · 2^(n-free-1)``
seconds (up to ``cap``) before its next attempt counts.
"""

from __future__ import annotations

import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass

ROLES = ("viewer", "console", "sender")
# This machine itself (OBS, a reverse proxy in front of the server, the benches) is not one
# client among many: the per-address caps leave it alone (the totals do not).
LOCAL = frozenset(("127.0.0.1", "::1", "::ffff:127.0.0.1"))
PAGE_SLACK = 64  # sockets per address beyond its WebSocket caps: page loads, /healthz, /metrics
FILES_RESERVE = 256  # open files kept for models, transcripts, logs: never given to sockets


@dataclass(frozen=True)
class Caps:
    """The caps in force: per role (total, per address), and for raw TCP connections (every
    role's places plus ``slack`` for page loads)."""

    viewers: tuple[int, int]
    consoles: tuple[int, int]
    senders: tuple[int, int]
    slack: int = PAGE_SLACK * 4

    def role(self, role: str) -> tuple[int, int]:
        return {"viewer": self.viewers, "console": self.consoles, "sender": self.senders}[role]

    @property
    def tcp_total(self) -> int:
        return self.viewers[0] + self.consoles[0] + self.senders[0] + self.slack

    @property
    def tcp_per_address(self) -> int:
        return self.viewers[1] + self.consoles[1] + self.senders[1] + PAGE_SLACK

    def fitted(self, open_files: int) -> "Caps":
        """These caps cut down until every socket fits in ``open_files`` with FILES_RESERVE to
        spare: screens first; under a tiny limit every role in proportion."""
        budget = max(64, open_files - FILES_RESERVE)
        if self.tcp_total <= budget:
            return self
        viewers = budget - (self.tcp_total - self.viewers[0])
        if viewers >= 16:
            return Caps((viewers, min(self.viewers[1], viewers)), self.consoles, self.senders, self.slack)
        share = budget / self.tcp_total

        def cut(cap: tuple[int, int]) -> tuple[int, int]:
            total = max(2, int(cap[0] * share))
            return total, min(cap[1], total)
        viewers_, consoles, senders = cut(self.viewers), cut(self.consoles), cut(self.senders)
        return Caps(viewers_, consoles, senders, max(8, budget - viewers_[0] - consoles[0] - senders[0]))


class ConnectionLimits:
    """Counts of open connections by address and by (role, address); refusals say why."""

    def __init__(self, caps: Caps):
        self.caps = caps
        self.sockets = 0
        self._by_address: dict[str, int] = {}
        self._roles: dict[str, int] = {r: 0 for r in ROLES}
        self._role_address: dict[tuple[str, str], int] = {}
        self.refused: dict[str, int] = {}  # reason → count, for /metrics

    # -- TCP connections ------------------------------------------------------------------------
    def open_socket(self, address: str) -> str | None:
        """Count a new TCP connection, or say why it is refused (then nothing is counted)."""
        if self.sockets >= self.caps.tcp_total:
            return self._refuse("server_full", f"this server has {self.sockets} connections open, its limit")
        n = self._by_address.get(address, 0)
        if n >= self.caps.tcp_per_address and address not in LOCAL:
            return self._refuse("address_full", f"{n} connections are open from {address}, the limit for "
                                                f"one address; close some")
        self.sockets += 1
        self._by_address[address] = n + 1
        return None

    @property
    def full(self) -> bool:
        """Every TCP place is taken (the server may then drop a connection that sent nothing)."""
        return self.sockets >= self.caps.tcp_total

    def close_socket(self, address: str) -> None:
        self.sockets -= 1
        n = self._by_address.pop(address, 1) - 1
        if n > 0:
            self._by_address[address] = n

    # -- WebSocket endpoints --------------------------------------------------------------------
    def admit(self, role: str, address: str) -> str | None:
        """Take a place for a ``role`` socket from ``address``, or say why there is none."""
        total, per_address = self.caps.role(role)
        what = {"viewer": "screens", "console": "consoles", "sender": "audio senders"}[role]
        if self._roles[role] >= total:
            return self._refuse(f"{role}_total", f"this server already has {total} {what} connected, its "
                                                 f"limit ([server] max_{role}s)")
        n = self._role_address.get((role, address), 0)
        if n >= per_address and address not in LOCAL:
            return self._refuse(f"{role}_address", f"{n} {what} are already connected from {address}, the "
                                                   f"limit for one address ([server] "
                                                   f"max_{role}s_per_address)")
        self._roles[role] += 1
        self._role_address[(role, address)] = n + 1
        return None

    def release(self, role: str, address: str) -> None:
        self._roles[role] -= 1
        n = self._role_address.pop((role, address), 1) - 1
        if n > 0:
            self._role_address[(role, address)] = n

    def count(self, role: str) -> int:
        return self._roles[role]

    def _refuse(self, reason: str, message: str) -> str:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return message


class AuthThrottle:
    """Wrong tokens per address, with exponential back-off; bounded memory.

    ``wait(address, now)``: seconds before this address may try a token again (0 = now).
    ``failed`` records a wrong token and returns the wait it earns; ``succeeded`` forgets the
    address. An address that stays quiet for ``forget_after`` seconds starts afresh.
    """

    def __init__(self, free: int = 3, base: float = 0.5, cap: float = 60.0, forget_after: float = 600.0,
                 max_addresses: int = 10000):
        self.free, self.base, self.cap = free, base, cap
        self.forget_after, self.max_addresses = forget_after, max_addresses
        self._state: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address → (failures, last)
        self.failures = 0  # every wrong token, for /metrics
        self.throttled = 0  # attempts refused while an address had to wait

    def _failures(self, address: str, now: float) -> tuple[int, float]:
        n, last = self._state.get(address, (0, now))
        if n and now - last > self.forget_after:
            del self._state[address]
            return 0, now
        return n, last

    def delay(self, n: int) -> float:
        return 0.0 if n <= self.free else min(self.cap, self.base * 2 ** (n - self.free - 1))

    def wait(self, address: str, now: float) -> float:
        n, last = self._failures(address, now)
        left = max(0.0, last + self.delay(n) - now)
        if left > 0:
            self.throttled += 1
        return left

    def failed(self, address: str, now: float) -> tuple[int, float]:
        """Count a wrong token: (failures in a row, seconds this address must now wait)."""
        n, _ = self._failures(address, now)
        n += 1
        self.failures += 1
        self._state[address] = (n, now)
        self._state.move_to_end(address)
        while len(self._state) > self.max_addresses:
            self._state.popitem(last=False)
        return n, self.delay(n)

    def succeeded(self, address: str) -> None:
        self._state.pop(address, None)


# -- origins ------------------------------------------------------------------------------------

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str | None:
    """``HTTP://Host:80`` → ``http://host:80``: scheme, lower-case host, explicit port; None
    for anything that is not an http(s) origin."""
    try:
        parts = urllib.parse.urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}"


def served_origins(scheme: str, hosts: list[str], port: int, allowed: list[str] = ()) -> frozenset[str]:
    """The origins of pages this server serves (``hosts`` on ``port``), with ``allowed``."""
    found = {normalize_origin(f"{scheme}://{f'[{h}]' if ':' in h else h}:{port}") for h in hosts}
    found |= {normalize_origin(o) for o in allowed}
    return frozenset(o for o in found if o)


def origin_allowed(origin: str | None, origins: frozenset[str]) -> bool:
    """A browser's ``Origin`` header must be one of ``origins``; no header (not a browser:
    ``subtitler send``, scripts) passes on to the token check."""
    if origin is None:
        return True
    return normalize_origin(origin) in origins
