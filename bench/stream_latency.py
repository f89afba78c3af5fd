"""Stream a WAV through the engine at real time and print latency, accuracy and cost as JSON.

    python bench/corpus.py bench/out/en.wav --count 40 --long-silence-after 19
    python bench/stream_latency.py bench/out/en.wav --reference bench/out/en.json

Figures:
  final_latency_p50/p90   caption emitted − wall time at which the utterance's last voiced
                          sample was fed (the reference's speech end when given)
  first_partial_p50/p90   first caption of an utterance − wall time its first voiced sample was fed
  wer_streaming / wer_offline   the same model on the same audio: the live finals vs the best
                          of four faster-whisper whole-file passes (beam 1/5, VAD filter on/off)
  rtf                     seconds spent decoding per second of audio
  peak_rss_mb             of this process during streaming (model included)
  words_in_silence        caption words whose span overlaps no reference utterance
  finals_correcting_committed   finals that changed a word the screens showed as committed
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corpus import percentile, wer  # noqa: E402

from subtitler.audio import FileSource  # noqa: E402
from subtitler.config import load_config  # noqa: E402
from subtitler.engine import Session, load_asr  # noqa: E402


class Recorder:
    """A sink that keeps every caption; a source wrapper that logs when each sample was fed."""

    def __init__(self):
        self.captions = []

    def on_caption(self, caption):
        self.captions.append(caption)


class LoggedSource(FileSource):
    def __init__(self, path, clock):
        super().__init__(path, realtime=True)
        self.clock = clock
        self.feed_log: list[tuple[float, float]] = []  # (audio seconds fed so far, wall seconds)

    def __iter__(self):
        for block in super().__iter__():
            yield block
            self.feed_log.append((self.fed_seconds, self.clock()))

    def fed_at(self, audio_t: float) -> float:
        """Wall time at which the sample at audio_t had been handed to the engine."""
        import bisect

        i = bisect.bisect_left(self.feed_log, (audio_t, -1.0))
        return self.feed_log[min(i, len(self.feed_log) - 1)][1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("wav")
    p.add_argument("--reference", help="JSON from bench/corpus.py with utterance texts and times")
    p.add_argument("--model", help="Whisper model (default: the config's)")
    p.add_argument("--config", help="config file")
    p.add_argument("--set", action="append", default=[], help="section.key=value overrides")
    p.add_argument("--no-offline", action="store_true", help="skip the offline WER baseline")
    p.add_argument("--captions", help="also write each final, its reference and its latency here (JSONL)")
    args = p.parse_args()

    config = load_config(args.config)
    overrides = dict(s.split("=", 1) for s in args.set)
    if args.model:
        overrides["asr.model"] = args.model
    config = config.with_overrides(overrides)
    ref = json.loads(Path(args.reference).read_text()) if args.reference else None

    asr = load_asr(config, progress=False)
    decode_seconds = []
    decode = asr.decode

    decode_spans: list[tuple[float, float]] = []  # (wall start, wall end) of each decode

    def timed_decode(*a, **k):
        started = session.now()
        d = decode(*a, **k)
        decode_seconds.append(d.elapsed)
        decode_spans.append((started, session.now()))
        return d

    asr.decode = timed_decode
    recorder = Recorder()
    session = None
    source = LoggedSource(args.wav, clock=lambda: session.now())
    session = Session(asr, source, [recorder], config)
    t0 = time.monotonic()
    result = session.run()
    wall = time.monotonic() - t0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    finals = [c for c in recorder.captions if c.is_final and c.text]
    by_id: dict[int, list] = {}
    for c in recorder.captions:
        by_id.setdefault(c.id, []).append(c)

    # Match each caption to the reference utterance it overlaps most, for true speech times.
    utts = ref["utterances"] if ref else []

    def reference_for(c):
        best, overlap = None, 0.0
        for u in utts:
            o = min(c.end, u["end"]) - max(c.start, u["start"])
            if o > overlap:
                best, overlap = u, o
        return best

    final_lat, first_lat, in_silence, start_delay, rows = [], [], 0, [], []
    for c in finals:
        u = reference_for(c) if utts else None
        rows.append({"start": c.start, "end": c.end, "text": c.text, "reference": u["text"] if u else None,
                     "partials": [f"{p.committed} | {p.tentative}" for p in by_id.get(c.id, [])
                                  if p.kind == "partial"]})
        if utts and u is None:
            in_silence += len(c.text.split())
            continue
        end = u["end"] if u else c.end
        final_lat.append(c.emitted - source.fed_at(end))
        rows[-1]["latency"] = round(final_lat[-1], 3)
        # how long after the speech ended did the decode that produced this final start?
        span = max((s for s in decode_spans if s[1] <= c.emitted + 1e-3), default=None)
        if span is not None:
            start_delay.append(span[0] - source.fed_at(end))
    # finals that changed a word the screens had shown as committed (an early commit corrected)
    from subtitler.asr import normalize_for_match

    corrected = 0
    for c in finals:
        shown = next((p.committed.split() for p in reversed(by_id.get(c.id, [])) if p.kind == "partial"), [])
        if [normalize_for_match(w) for w in c.text.split()[:len(shown)]] != [normalize_for_match(w) for w in shown]:
            corrected += 1
    for cid, caps in by_id.items():
        first = caps[0]
        if not first.text:
            continue
        u = reference_for(first) if utts else None
        start = u["start"] if u else first.start
        first_lat.append(first.emitted - source.fed_at(start))

    out = {
        "wav": args.wav, "model": config.asr.model, "audio_seconds": round(result.audio_seconds, 2),
        "captions_final": len(finals), "reference_utterances": len(utts) or None,
        "final_latency_p50": percentile(final_lat, 0.5), "final_latency_p90": percentile(final_lat, 0.9),
        "final_latency_max": percentile(final_lat, 1.0),
        "final_decode_start_p50": percentile(start_delay, 0.5),
        "final_decode_start_p90": percentile(start_delay, 0.9),
        "first_partial_p50": percentile(first_lat, 0.5), "first_partial_p90": percentile(first_lat, 0.9),
        "partials": sum(1 for c in recorder.captions if c.kind == "partial"),
        "finals_correcting_committed": corrected,
        "rtf": round(sum(decode_seconds) / max(result.audio_seconds, 1e-9), 3),
        "decodes": len(decode_seconds),
        "decode_seconds_p50": percentile(decode_seconds, 0.5),
        "max_lag": round(result.max_lag, 2), "dropped_blocks": result.dropped_blocks,
        "skipped_utterances": result.skipped_utterances,
        "peak_rss_mb": round(peak_rss_mb, 1), "wall_seconds": round(wall, 1),
        "words_in_silence": in_silence if utts else None,
    }
    if ref:
        lang = ref.get("lang", "en")
        refs = [" ".join(u["text"] for u in utts)]
        out["wer_streaming"] = round(wer(refs, [" ".join(c.text for c in finals)], lang=lang), 4)
        if not args.no_offline:
            # the strongest baseline: the best of four whole-file passes (beam 1 and 5, with and
            # without faster-whisper's VAD filter); beam 5 alone can loop on long silences
            from screen_quality import offline_baseline

            base = offline_baseline({**ref, "wav": args.wav, "lang": lang}, config.asr.model,
                                    Path(args.wav).parent)
            out["wer_offline"] = base["best"][lang]
            out["wer_offline_passes"] = {k: v[lang] for k, v in base["passes"].items()}
            out["wer_ratio"] = round(out["wer_streaming"] / max(out["wer_offline"], 1e-9), 3)
    if args.captions:
        Path(args.captions).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
