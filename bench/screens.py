"""Cheap screens for the fan-out benchmarks: thousands of /ws/view clients in one process.

Each ``Screen`` speaks the screen protocol as the overlay does (web/client.js): the HTTP
upgrade, ``hello`` with ``since``/``session``, pongs to the server's pings, and after a lost
connection a reconnect to the next server of its list after the overlay's spread first retry
(0.25–2 s), resuming where it was. What it does not do is what costs: it parses the server's
frames itself (unmasked, unfragmented, as a server sends them) and looks at a caption's bytes,
not its JSON, so that a benchmark measures the server and not its clients. On uvloop when it
is installed (its C transports read straight into one buffer), else on asyncio's own loop.

Per screen: the last ``seq`` (a ``seq`` not above it is a duplicate), the final ids it got (a
final missing at the end is a gap), and for each live caption the delay from the monotonic
time stamped at the start of its text (CLOCK_MONOTONIC is shared by every process on the
machine) to the moment its bytes were read.

A screen stands for a phone or a screen elsewhere, so what it checks is not done while the
benchmark's clock runs on the cores it shares with the servers: each caption frame is kept, in
the order it came, with the time it was read, and checked (``seq``, duplicates, finals, delay)
after the run; a resume asks from the newest kept frame's ``seq``. That saves ≈4 µs of the
≈19 µs a message costs a viewer process (at 5000 viewers, 2 × 47 % of a core → 2 × 35 %).
``parse_now`` (``bench/edge.py --parse-now``) checks each as it comes, as before 3 Dec 2026.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import resource
import time
from array import array

from machine import own_cpu_s

HOST = "127.0.0.1"
CONNECTING = 64  # handshakes in flight per process (a listen backlog that overflows costs a 1 s SYN retry)
RETRY_S = (0.4, 0.6)  # the overlay's first back-off after a failed attempt: 500 ms ± 20 %
SPREAD_S = (0.25, 2.0)  # the overlay's first retry after losing a live connection (RECONNECT_SPREAD_MS)
CAPTION = b'{"type":"caption","seq":'
WELCOME = b'{"type":"welcome"'
TEXT = b'"text":"'
FINAL = b'"kind":"final"'
HISTORY_END = b'"history":true}'


def caption_seq(data: bytes, at: int = 0) -> int:
    """The ``seq`` of the caption message starting at ``at`` in ``data`` (its first field)."""
    start = at + len(CAPTION)
    return int(data[start:data.index(b",", start)])


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (RFC 6455 §5.3: clients mask what they send)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((0x80 | opcode,)) + (bytes((0x80 | n,)) if n < 126 else bytes((0x80 | 126,)) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Fleet:
    """What every screen of a process adds to: delays, reconnects, and the screens still connecting."""

    def __init__(self, ports: list[int], path: str):
        self.ports, self.path = ports, path
        self.delays = array("d")
        self.reconnects = self.failed = 0
        self.errors: list[str] = []
        self.outages: list[float] = []  # a lost connection → welcomed again, per reconnect
        self.welcomed = asyncio.Event()
        self.waiting = 0  # screens not yet welcomed on their first connection
        self.gate = asyncio.Semaphore(CONNECTING)
        self.stopping = False
        self.parse_now = False  # read each frame as it comes (the harness before deferred reading)


class Screen(asyncio.Protocol):
    """One /ws/view client; moves to the next port after a lost connection and resumes."""

    def __init__(self, fleet: Fleet, port_index: int, langs: list[str] | None = None):
        self.fleet = fleet
        self.port_index = port_index
        self.langs = langs or ["*"]
        self.transport: asyncio.Transport | None = None
        self.seq, self.session = 0, None
        self.finals: set[int] = set()
        self.dups = 0
        self.upgraded = False
        self.welcomed = False  # ever
        self.healthy = False  # this connection was welcomed
        self.rest = b""
        self.lost_at: float | None = None
        self.unread: list = []  # read time, frame, read time, frame …: whole text frames not looked at yet

    # -- connecting -------------------------------------------------------------------------
    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(40):
            port = self.fleet.ports[self.port_index]
            try:
                async with self.fleet.gate:
                    await loop.create_connection(lambda: self, HOST, port)
                return
            except OSError:
                self.port_index = (self.port_index + 1) % len(self.fleet.ports)
                await asyncio.sleep(random.uniform(*RETRY_S))
        self.fleet.failed += 1

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.upgraded, self.rest = False, b""
        key = base64.b64encode(os.urandom(16)).decode()
        port = self.fleet.ports[self.port_index]
        transport.write(f"GET {self.fleet.path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        .encode())

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.fleet.stopping:
            return
        self.lost_at = time.monotonic()
        # As the overlay: the next server of the list, after a spread or a back-off, from the last seq.
        self.port_index = (self.port_index + 1) % len(self.fleet.ports)
        self.fleet.reconnects += 1
        loop = asyncio.get_running_loop()
        # the spread after a welcomed connection; a refused one backs off as the overlay does
        wait = random.uniform(*(SPREAD_S if self.healthy else RETRY_S))
        self.healthy = False
        loop.call_later(wait, lambda: loop.create_task(self.connect()))

    # -- reading ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if (len(data) > 4 and data[0] == 0x81 and data[1] == 126 and not self.rest and self.upgraded
                and (data[2] << 8 | data[3]) + 4 == len(data) and data.startswith(CAPTION, 4)
                and not self.fleet.parse_now):
            self.unread += (now, data)  # one whole caption frame (126–65535 bytes): looked at later
            return
        if self.rest:
            data = self.rest + data
            self.rest = b""
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.rest = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                return self._fail(data[:end].decode(errors="replace")[:200])
            data = data[end + 4:]
            self.upgraded = True
            hello = {"type": "hello", "langs": self.langs, "since": self.last_seq()}
            if self.session is not None:
                hello["session"] = self.session
            self.transport.write(masked(0x1, json.dumps(hello).encode()))
        pos, size = 0, len(data)
        while size - pos >= 2:
            n, start = data[pos + 1], pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n, start = int.from_bytes(data[pos + 2:pos + 4], "big"), pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, start = int.from_bytes(data[pos + 2:pos + 10], "big"), pos + 10
            elif n > 127:
                return self._fail("a masked frame from the server")
            end = start + n
            if end > size:
                break
            head = data[pos]
            pos = end
            if head == 0x81:
                if self.fleet.parse_now or not data.startswith(CAPTION, start):
                    self._text(data[start:end], now)  # a welcome: at once (captions need no other frame read)
                else:
                    self.unread += (now, bytes(4) + data[start:end])  # kept in order, as a whole frame is
            elif head == 0x89:  # ping: pong with its payload
                self.transport.write(masked(0xA, data[start:end]))
            elif head == 0x88:
                self.transport.close()
                return
            elif head != 0x8A:
                return self._fail(f"an unexpected frame from the server: {head:#x}")
        if pos < size:
            self.rest = data[pos:]

    def last_seq(self) -> int:
        """The last seq received (the kept frames came in order: the newest has it)."""
        if not self.unread:
            return self.seq
        return caption_seq(self.unread[-1], 4)

    def read_kept(self) -> None:
        """Read the frames kept by ``data_received``, in the order they came."""
        kept, self.unread = self.unread, []
        for i in range(0, len(kept), 2):
            self._text(kept[i + 1][4:], kept[i])

    def has(self, final_id: int) -> bool:
        """Got the final ``final_id``, the newest one sent? Finals come in order, so the newest
        kept final says (a final missing before it is a gap, counted after the run)."""
        kept = self.unread
        for i in range(len(kept) - 1, 0, -2):
            if FINAL in kept[i]:
                return b'"id":%d,' % final_id in kept[i]
        return final_id in self.finals

    def _fail(self, reason: str) -> None:
        """The server said something a screen would not accept: counted, and the line dropped."""
        self.fleet.errors.append(reason)
        self.transport.abort()

    def _text(self, payload: bytes, now: float) -> None:
        if not payload.startswith(CAPTION):  # bytes, not JSON: a screen here must be cheap
            if payload.startswith(WELCOME):
                self.session = json.loads(payload)["session"]
                self.healthy = True
                if self.lost_at is not None:
                    self.fleet.outages.append(now - self.lost_at)
                    self.lost_at = None
                if not self.welcomed:
                    self.welcomed = True
                    fleet = self.fleet
                    fleet.waiting -= 1
                    if not fleet.waiting:
                        fleet.welcomed.set()
            return
        seq = caption_seq(payload)
        if seq <= self.seq:
            self.dups += 1
            return
        self.seq = seq
        if FINAL in payload:
            j = payload.index(b'"id":') + 5
            self.finals.add(int(payload[j:payload.index(b",", j)]))
        if not payload.endswith(HISTORY_END):
            i = payload.index(TEXT) + len(TEXT)
            self.fleet.delays.append(now - float(payload[i:payload.index(b" ", i)]))


async def _run(ports: list[int], count: int, path: str, pipe, parse_now: bool) -> dict:
    loop = asyncio.get_running_loop()
    fleet = Fleet(ports, path)
    fleet.parse_now = parse_now
    fleet.waiting = count
    screens = [Screen(fleet, i % len(ports)) for i in range(count)]
    for s in screens:
        loop.create_task(s.connect())
    await asyncio.wait_for(fleet.welcomed.wait(), 120)
    stop = asyncio.Event()

    def on_message() -> None:
        os.set_blocking(pipe.fileno(), True)  # uvloop made it non-blocking; the figures are large
        message = pipe.recv()
        if isinstance(message, tuple) and message[0] == "has":  # how many screens have final id N
            pipe.send(sum(1 for s in screens if s.has(message[1])))
        else:
            stop.set()

    loop.add_reader(pipe.fileno(), on_message)
    pipe.send("ready")
    cpu0 = own_cpu_s()
    await stop.wait()
    loop.remove_reader(pipe.fileno())
    cpu = own_cpu_s() - cpu0
    fleet.stopping = True
    for s in screens:
        if s.transport is not None:
            s.transport.abort()
        s.read_kept()
    read_after = own_cpu_s() - cpu0 - cpu  # the reading kept until the figures were asked for
    return {"delays": fleet.delays.tobytes(), "finals": [sorted(s.finals) for s in screens],
            "dups": sum(s.dups for s in screens), "reconnects": fleet.reconnects, "failed": fleet.failed,
            "errors": fleet.errors[:5], "error_count": len(fleet.errors),
            "outages": fleet.outages,
            "cpu_s": cpu, "read_after_s": read_after, "loop": type(loop).__module__.partition(".")[0]}


def screens_process(ports: list[int], count: int, path: str, pipe, parse_now: bool = False) -> None:
    """A process of ``count`` screens spread over ``ports``: sends "ready" once every one is
    welcomed, and its figures once told to stop."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = new_loop()
    try:
        pipe.send(loop.run_until_complete(_run(ports, count, path, pipe, parse_now)))
    finally:
        loop.close()


def delays_of(result: dict) -> array:
    out = array("d")
    out.frombytes(result["delays"])
    return out
