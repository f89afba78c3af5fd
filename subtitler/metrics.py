"""What /metrics says: each room's counters, and the Prometheus text of every room at once.

Pure: no sockets, no clocks. ``RoomMetrics`` is counted by the room's channel and ingest;
``render`` writes one family per metric with a ``room="NAME"`` sample per room, then the
host's own lines (``Server.set_host_metrics``) as they come.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .captions import SessionStats

LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
RECENT_LATENCIES = 200  # the status's final_latency_p50 is over these


@dataclass
class RoomMetrics:
    partials: int = 0
    finals: int = 0
    translations: int = 0
    superseded: int = 0  # queued partials replaced by a newer one (or by the final)
    slow_disconnects: int = 0
    protocol_errors: int = 0
    audio_seconds_received: float = 0.0
    latency_sum: float = 0.0
    latency_count: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    recent_latencies: deque = field(default_factory=lambda: deque(maxlen=RECENT_LATENCIES))

    def record_latency(self, latency: float) -> None:
        latency = max(0.0, latency)
        self.recent_latencies.append(latency)
        self.latency_sum += latency
        self.latency_count += 1
        for i, le in enumerate(LATENCY_BUCKETS):
            if latency <= le:
                self.latency_buckets[i] += 1

    def latency_p50(self) -> float | None:
        lat = sorted(self.recent_latencies)
        return lat[len(lat) // 2] if lat else None


@dataclass
class RoomSample:
    """One room's numbers at the moment /metrics is read."""

    name: str
    metrics: RoomMetrics
    stats: SessionStats | None
    viewers: int
    consoles: int
    paused: bool
    transcripts: dict | None = None  # the transcript writer's health (``WriterHealth.to_dict``), once it runs


def _value(v: float | int) -> str:
    return f"{v:.10g}" if isinstance(v, float) else str(v)


def sample(name: str, labels: str, value: float | int) -> str:
    """One sample line: ``name{labels} value``, or ``name value`` without labels."""
    return f"{name}{{{labels}}} {_value(value)}" if labels else f"{name} {_value(value)}"


def family(name: str, kind: str, help_: str, samples) -> list[str]:
    """One metric family's lines: its HELP and TYPE, then a line per ``(labels, value)``."""
    return [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *(sample(name, labels, v) for labels, v in samples)]


def render(rooms: list[RoomSample], *, uptime: float, host_text: str = "") -> str:
    """Prometheus text format (0.0.4): every per-room sample labelled with its room."""
    lines: list[str] = []

    def add(name: str, kind: str, help_: str, samples) -> None:  # samples: (name suffix, labels, value)
        lines.extend(family(name, kind, help_, ()))
        lines.extend(sample(name + suffix, labels, value) for suffix, labels, value in samples)

    def per_room(fn, extra: str = "") -> list:
        return [("", f'room="{r.name}"' + (f",{extra}" if extra else ""), fn(r)) for r in rooms]

    def stat(fn, default):
        return lambda r: fn(r.stats) if r.stats else default

    add("subtitler_captions_total", "counter", "Captions published to the room, by kind.",
           per_room(lambda r: r.metrics.finals, 'kind="final"') + per_room(lambda r: r.metrics.partials,
                                                                             'kind="partial"'))
    add("subtitler_translations_total", "counter", "Translations published after their caption.",
           per_room(lambda r: r.metrics.translations))
    histogram = []
    for r in rooms:
        m, room = r.metrics, f'room="{r.name}"'
        for le, n in zip(LATENCY_BUCKETS, m.latency_buckets):
            histogram.append(("_bucket", f'{room},le="{le:g}"', n))
        histogram += [("_bucket", f'{room},le="+Inf"', m.latency_count), ("_sum", room, float(m.latency_sum)),
                      ("_count", room, m.latency_count)]
    add("subtitler_final_latency_seconds", "histogram", "From the end of speech to its final caption.",
           histogram)
    add("subtitler_lag_seconds", "gauge", "Audio received but not yet decoded.",
           per_room(stat(lambda st: float(round(st.lag, 3)), 0.0)))
    add("subtitler_audio_seconds", "gauge", "Audio the room's session has heard.",
           per_room(stat(lambda st: float(round(st.audio_seconds, 3)), 0.0)))
    add("subtitler_viewers", "gauge", "Connected screens.", per_room(lambda r: r.viewers))
    add("subtitler_consoles", "gauge", "Connected, authenticated consoles.", per_room(lambda r: r.consoles))
    add("subtitler_audio_dropped_blocks_total", "counter", "Audio blocks lost because the capture queue was full.",
           per_room(stat(lambda st: st.dropped_frames, 0)))
    add("subtitler_skipped_utterances_total", "counter",
           "Utterances skipped (never decoded) to keep the lag bounded under max_lag_s.",
           per_room(stat(lambda st: st.skipped_utterances, 0)))
    add("subtitler_skipped_audio_seconds_total", "counter", "Audio of the skipped utterances.",
           per_room(stat(lambda st: float(round(st.skipped_seconds, 3)), 0.0)))
    add("subtitler_audio_idle_seconds", "gauge", "Seconds since the room's source last delivered audio.",
           [("", f'room="{r.name}"', float(round(r.stats.audio_idle_s, 3))) for r in rooms
            if r.stats and r.stats.audio_idle_s is not None])
    add("subtitler_audio_received_seconds_total", "counter", "Audio received on /ws/audio.",
           per_room(lambda r: float(round(r.metrics.audio_seconds_received, 3))))
    add("subtitler_messages_dropped_total", "counter", "Messages not sent: queued partials replaced by a newer one.",
           per_room(lambda r: r.metrics.superseded, 'reason="superseded"'))
    add("subtitler_clients_disconnected_total", "counter", "Clients closed with 1013 because they did not keep up.",
           per_room(lambda r: r.metrics.slow_disconnects, 'reason="slow"'))
    add("subtitler_protocol_errors_total", "counter", "Malformed, unknown or refused client messages.",
           per_room(lambda r: r.metrics.protocol_errors))
    add("subtitler_paused", "gauge", "1 while captioning is paused.", per_room(lambda r: int(r.paused)))
    writing = [r for r in rooms if r.transcripts is not None]

    def transcripts(fn) -> list:
        return [("", f'room="{r.name}"', fn(r.transcripts)) for r in writing]
    add("subtitler_transcripts_ok", "gauge", "1 while the room's transcript files are written; 0 while "
           "writing fails (retried).", transcripts(lambda t: int(t["ok"])))
    add("subtitler_transcript_write_errors_total", "counter", "Failed attempts to write the transcripts.",
           transcripts(lambda t: t["failures"]))
    add("subtitler_transcript_captions_pending", "gauge", "Captions waiting to be written to the transcripts.",
           transcripts(lambda t: t["pending"]))
    add("subtitler_transcript_captions_written_total", "counter", "Captions written to every transcript file.",
           transcripts(lambda t: t["written"]))
    add("subtitler_transcript_captions_lost_total", "counter",
           "Captions never written (the writer's queue was full, or it closed while the disk failed).",
           transcripts(lambda t: t["lost"]))
    add("subtitler_rooms", "gauge", "Rooms this server serves.", [("", "", len(rooms))])
    add("subtitler_uptime_seconds", "gauge", "Seconds since the server started.",
           [("", "", float(round(uptime, 3)))])
    text = "\n".join(lines) + "\n"
    if host_text:
        text += host_text if host_text.endswith("\n") else host_text + "\n"
    return text
