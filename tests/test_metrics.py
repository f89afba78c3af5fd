"""/metrics text (metrics.render), pure: what a room's skipped speech, idle audio and transcript
writer say, in the Prometheus text format."""

from __future__ import annotations

import re

from subtitler.captions import SessionStats
from subtitler.metrics import RoomMetrics, RoomSample, render


def stats(**kw) -> SessionStats:
    base = dict(audio_seconds=61.0, lag=0.4, dropped_frames=0, utterances=9, finals=7, in_speech=False,
                level_db=-30.0)
    return SessionStats(**{**base, **kw})


def samples(text: str) -> dict[str, float]:
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line and not line.startswith("#"):
            m = re.fullmatch(r'([a-z_]+)(\{[^}]*\})? (\S+)', line)
            assert m, line
            assert re.sub(r"_(bucket|sum|count)$", "", m.group(1)) in typed, line
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_skipped_speech_idle_audio_and_a_failing_writer_are_in_the_metrics():
    failing = {"ok": False, "error": "cannot write the transcripts (x/captions.srt): No space left on device",
               "pending": 3, "written": 12, "failures": 5, "lost": 0}
    rooms = [RoomSample("hall", RoomMetrics(), stats(skipped_utterances=4, skipped_seconds=13.25, audio_idle_s=2.5),
                        3, 1, False, failing),
             RoomSample("forum", RoomMetrics(), stats(), 0, 0, False, None)]
    got = samples(render(rooms, uptime=10.0))
    assert got['subtitler_skipped_utterances_total{room="hall"}'] == 4
    assert got['subtitler_skipped_audio_seconds_total{room="hall"}'] == 13.25
    assert got['subtitler_skipped_utterances_total{room="forum"}'] == 0
    assert got['subtitler_audio_idle_seconds{room="hall"}'] == 2.5
    assert 'subtitler_audio_idle_seconds{room="forum"}' not in got  # no audio yet: no figure, not 0
    assert got['subtitler_transcripts_ok{room="hall"}'] == 0
    assert got['subtitler_transcript_write_errors_total{room="hall"}'] == 5
    assert got['subtitler_transcript_captions_pending{room="hall"}'] == 3
    assert got['subtitler_transcript_captions_written_total{room="hall"}'] == 12
    assert got['subtitler_transcript_captions_lost_total{room="hall"}'] == 0
    assert not any('room="forum"' in k for k in got if k.startswith("subtitler_transcript"))  # no writer yet
