"""Transcript files, read back with the real `srt` and `webvtt-py` parsers."""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import srt
import webvtt

from subtitler.captions import Caption
from subtitler.transcripts import Cue, TranscriptWriter, load_jsonl, session_folder, split_cues

ROOT = Path(__file__).resolve().parents[1]
LONG = (
    "This is a rather long sentence that a speaker might say in one breath, and it keeps "
    "going well past what fits on two subtitle lines, so it must become several cues."
)
RU = "Привет, как дела? Это тестовая строка на русском языке, довольно длинная."
ZH = "今天天气很好，我们去公园散步吧。"


def final(seq: int, start: float, end: float, text: str, **kw) -> Caption:
    return Caption(id=seq, seq=seq, kind="final", start=start, end=end, emitted=end + 0.4, lang="en", text=text, **kw)


def seconds(stamp: str) -> float:  # webvtt-py's own *_in_seconds truncates to whole seconds
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def read_srt(path: Path) -> list[srt.Subtitle]:
    text = path.read_text("utf-8")
    # Both parsers accept a cut-off tail quietly, so check the file ends on a cue boundary
    # and re-composes byte for byte: that is what a strict player would see.
    assert text == "" or text.endswith("\n\n")
    subs = list(srt.parse(text))
    assert srt.compose(subs, reindex=False) == text
    return subs


def read_vtt(path: Path) -> list[webvtt.Caption]:
    text = path.read_text("utf-8")
    assert text.startswith("WEBVTT\n\n") and text.endswith("\n\n")
    return webvtt.read(str(path)).captions


def read_jsonl_strict(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


# --- split_cues ---------------------------------------------------------------------


def test_split_cues_respects_limits_and_keeps_every_word():
    cues = split_cues(LONG, 10.0, 22.0)
    assert len(cues) > 1
    for cue in cues:
        assert isinstance(cue, Cue) and 1 <= len(cue.lines) <= 2
        assert all(0 < len(line) <= 42 and line == line.strip() for line in cue.lines)
    assert " ".join(" ".join(c.lines) for c in cues).split() == LONG.split()


def test_split_cues_timing_is_proportional_contiguous_and_exact():
    cues = split_cues(LONG, 10.0, 22.0)
    assert cues[0].start == 10.0 and cues[-1].end == 22.0
    for a, b in zip(cues, cues[1:]):
        assert a.end == b.start
    chars = [sum(map(len, c.lines)) for c in cues]
    for cue, n in zip(cues, chars):
        assert cue.end - cue.start == pytest.approx(12.0 * n / sum(chars))


def test_split_cues_short_text_stays_one_line_and_long_text_is_balanced():
    assert split_cues("Hello world.", 1, 2) == [Cue(1, 2, ("Hello world.",))]
    cues = split_cues("word " * 20, 0, 4)  # 99 chars: two cues of two even lines, not 42+42+15
    assert [len(c.lines) for c in cues] == [2, 2]
    assert max(len(l) for c in cues for l in c.lines) - min(len(l) for c in cues for l in c.lines) <= 5


def test_split_cues_hard_splits_a_word_longer_than_a_line():
    cues = split_cues("x" * 100 + " end", 0, 1, max_chars=42, max_lines=2)
    lines = [l for c in cues for l in c.lines]
    assert all(len(l) <= 42 for l in lines)
    assert "".join(lines).replace(" ", "") == "x" * 100 + "end"


def test_split_cues_empty_and_whitespace_text_gives_no_cues():
    assert split_cues("", 0, 1) == [] and split_cues(" \n\t ", 0, 1) == []


def test_split_cues_custom_limits():
    cues = split_cues(LONG, 0, 1, max_chars=20, max_lines=1)
    assert all(len(c.lines) == 1 and len(c.lines[0]) <= 20 for c in cues)


# --- TranscriptWriter ---------------------------------------------------------------


def test_writes_all_formats_numbered_across_captions(tmp_path):
    with TranscriptWriter(tmp_path / "out" / "s1") as w:
        w.on_caption(final(1, 1.0, 2.5, "Hello there."))
        w.on_caption(final(2, 3.0, 15.0, LONG))
        w.on_caption(final(3, 62.25, 63.5, "Bye."))
        paths = w.paths
    assert set(paths) == {"srt", "vtt", "txt", "jsonl"}
    assert {p.name for p in paths.values()} == {"captions.srt", "captions.vtt", "captions.txt", "captions.jsonl"}

    subs = read_srt(paths["srt"])
    long_cues = split_cues(LONG, 3.0, 15.0)
    assert [s.index for s in subs] == list(range(1, len(long_cues) + 3))
    assert subs[0].start.total_seconds() == 1.0 and subs[0].end.total_seconds() == 2.5
    assert subs[0].content == "Hello there."
    assert subs[1].start.total_seconds() == 3.0 and subs[len(long_cues)].end.total_seconds() == 15.0
    assert subs[-1].start.total_seconds() == 62.25 and subs[-1].content == "Bye."
    for s in subs:
        lines = s.content.split("\n")
        assert len(lines) <= 2 and all(len(l) <= 42 for l in lines)
    for a, b in zip(subs, subs[1:]):
        assert a.start < a.end <= b.start

    vtt = read_vtt(paths["vtt"])
    assert [(seconds(c.start), seconds(c.end), c.text) for c in vtt] == [
        (s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs
    ]

    assert paths["txt"].read_text("utf-8").splitlines() == [
        "[00:00:01] Hello there.",
        f"[00:00:03] {LONG}",
        "[00:01:02] Bye.",
    ]

    rows = read_jsonl_strict(paths["jsonl"])
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0] == {
        "id": 1, "seq": 1, "start": 1.0, "end": 2.5, "emitted": 2.9, "lang": "en",
        "text": "Hello there.", "translations": {},
    }
    assert load_jsonl(paths["jsonl"]) == rows


def test_partials_are_ignored(tmp_path):
    w = TranscriptWriter(tmp_path)
    w.on_caption(Caption(id=1, seq=1, kind="partial", start=0, end=1, emitted=1, lang="en", text="Hel", committed="Hel"))
    w.on_caption(final(2, 0, 1.2, "Hello."))
    w.on_caption(Caption(id=2, seq=3, kind="partial", start=2, end=3, emitted=3, lang="en", text="Wor"))
    w.close()
    assert [s.content for s in read_srt(w.paths["srt"])] == ["Hello."]
    assert [c.text for c in read_vtt(w.paths["vtt"])] == ["Hello."]
    assert len(load_jsonl(w.paths["jsonl"])) == 1
    assert w.paths["txt"].read_text("utf-8") == "[00:00:00] Hello.\n"


def test_utf8_chinese_and_russian_round_trip(tmp_path):
    with TranscriptWriter(tmp_path) as w:
        w.on_caption(final(1, 0, 3, RU))
        w.on_caption(Caption(id=2, seq=2, kind="final", start=3, end=5, emitted=5, lang="zh", text=ZH))
    subs = read_srt(w.paths["srt"])
    assert " ".join(s.content.replace("\n", " ") for s in subs[:-1]) == RU
    assert subs[-1].content == ZH
    assert [c.text for c in read_vtt(w.paths["vtt"])][-1] == ZH
    assert ZH in w.paths["txt"].read_text("utf-8") and RU in w.paths["txt"].read_text("utf-8")
    raw = w.paths["jsonl"].read_bytes()
    assert ZH.encode("utf-8") in raw and b"\\u" not in raw  # readable, not \u-escaped
    assert [r["text"] for r in load_jsonl(w.paths["jsonl"])] == [RU, ZH]


def test_translations_get_their_own_files_opened_lazily(tmp_path):
    w = TranscriptWriter(tmp_path)
    w.on_caption(final(1, 0, 2, "Good morning."))
    assert not (tmp_path / "captions.de.srt").exists()
    w.on_caption(final(2, 2, 4, "How are you?", translations={"de": "Wie geht es dir?", "ru": "Как дела?"}))
    w.on_caption(final(3, 4, 6, "Fine.", translations={"de": "Gut."}))
    w.close()
    de, ru = w.language_paths["de"], w.language_paths["ru"]
    assert de["srt"] == tmp_path / "captions.de.srt" and set(de) == {"srt", "vtt", "txt"}
    assert not (tmp_path / "captions.de.jsonl").exists()

    de_subs = read_srt(de["srt"])
    assert [(s.index, s.start.total_seconds(), s.end.total_seconds(), s.content) for s in de_subs] == [
        (1, 2.0, 4.0, "Wie geht es dir?"),
        (2, 4.0, 6.0, "Gut."),
    ]
    assert [c.text for c in read_vtt(ru["vtt"])] == ["Как дела?"]
    assert de["txt"].read_text("utf-8") == "[00:00:02] Wie geht es dir?\n[00:00:04] Gut.\n"
    assert len(read_srt(w.paths["srt"])) == 3  # the source language keeps all three
    rows = load_jsonl(w.paths["jsonl"])
    assert [r["translations"] for r in rows] == [{}, {"de": "Wie geht es dir?", "ru": "Как дела?"}, {"de": "Gut."}]


def test_arrows_newlines_and_markup_cannot_break_the_files(tmp_path):
    nasty = "a --> b\n\n2\n00:00:01,000 --> 00:00:02,000\nfake cue\r\nTom & <b>Jerry</b>"
    with TranscriptWriter(tmp_path) as w:
        w.on_caption(final(1, 0, 2, nasty))
        w.on_caption(final(2, 2, 3, "after"))
    subs = read_srt(w.paths["srt"])
    assert subs[-1].content == "after" and [s.index for s in subs] == list(range(1, len(subs) + 1))
    flat = " ".join(s.content.replace("\n", " ") for s in subs[:-1])
    assert "-->" not in flat and flat == "a -> b 2 00:00:01,000 -> 00:00:02,000 fake cue Tom & <b>Jerry</b>"
    vtt = read_vtt(w.paths["vtt"])
    assert len(vtt) == len(subs) and vtt[-1].text == "after"
    assert html.unescape(" ".join(c.text.replace("\n", " ") for c in vtt[:-1])) == flat
    assert "&amp;" in w.paths["vtt"].read_text("utf-8")  # escaped for VTT's markup
    assert len(w.paths["txt"].read_text("utf-8").splitlines()) == 2
    assert load_jsonl(w.paths["jsonl"])[0]["text"] == nasty  # the data file keeps the original


def test_degenerate_and_overlapping_times_never_go_backwards(tmp_path):
    with TranscriptWriter(tmp_path) as w:
        w.on_caption(final(1, 5.0, 5.0, "zero length"))
        w.on_caption(final(2, 4.0, 6.0, "starts before the last one ended"))
        w.on_caption(final(3, 6.0, 5.5, "ends before it starts"))
        w.on_caption(final(4, 0.0, 0.0, LONG))
    for subs in (
        [(s.start.total_seconds(), s.end.total_seconds()) for s in read_srt(w.paths["srt"])],
        [(seconds(c.start), seconds(c.end)) for c in read_vtt(w.paths["vtt"])],
    ):
        assert subs[0] == (5.0, 5.001)
        for start, end in subs:
            assert end > start
        for (_, end), (start, _) in zip(subs, subs[1:]):
            assert start >= end


def test_empty_final_is_kept_in_jsonl_only(tmp_path):
    with TranscriptWriter(tmp_path) as w:
        w.on_caption(final(1, 0, 1, "  "))
        w.on_caption(final(2, 1, 2, "words"))
    assert [s.index for s in read_srt(w.paths["srt"])] == [1]
    assert len(load_jsonl(w.paths["jsonl"])) == 2


def test_format_selection_and_unknown_format(tmp_path):
    w = TranscriptWriter(tmp_path / "a", formats=["srt", "jsonl"], basename="talk")
    assert w.paths == {"srt": tmp_path / "a" / "talk.srt", "jsonl": tmp_path / "a" / "talk.jsonl"}
    w.on_caption(final(1, 0, 1, "hi", translations={"fr": "salut"}))
    w.close()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["talk.fr.srt", "talk.jsonl", "talk.srt"]
    with pytest.raises(ValueError, match="srt, vtt, txt, jsonl"):
        TranscriptWriter(tmp_path / "b", formats=["srt", "ass"])


def test_vtt_is_valid_before_any_caption_and_close_is_final(tmp_path):
    w = TranscriptWriter(tmp_path, fsync=False)
    assert webvtt.read(str(w.paths["vtt"])).captions == []
    assert w.paths["srt"].read_bytes() == b"" and w.paths["jsonl"].read_bytes() == b""
    w.close()
    w.close()  # idempotent
    with pytest.raises(ValueError):
        w.on_caption(final(1, 0, 1, "late"))


def test_concurrent_writers_threads_keep_files_consistent(tmp_path):
    w = TranscriptWriter(tmp_path, fsync=False)

    def work(k: int) -> None:
        for i in range(25):
            n = k * 100 + i
            w.on_caption(final(n, n, n + 0.5, f"thread {k} caption {i}", translations={"de": f"faden {k} {i}"}))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert [s.index for s in read_srt(w.paths["srt"])] == list(range(1, 101))
    assert len(read_srt(w.language_paths["de"]["srt"])) == 100
    assert len(read_vtt(w.paths["vtt"])) == 100 and len(read_jsonl_strict(w.paths["jsonl"])) == 100


# --- crash safety -------------------------------------------------------------------

CHILD_TEXT = (
    "Caption number {} is long enough to need more than one cue on screen, "
    "with some Russian текст and Chinese 中文 thrown in for good measure."
)
CHILD = """
import sys, time
from pathlib import Path
from subtitler.captions import Caption
from subtitler.transcripts import TranscriptWriter
folder, stop_after = Path(sys.argv[1]), int(sys.argv[2])
w = TranscriptWriter(folder)  # never closed: the process dies with everything open
text = sys.argv[3]
i = 0
while True:
    w.on_caption(Caption(id=i, seq=i, kind="final", start=i * 3.0, end=i * 3.0 + 2.5,
                         emitted=i * 3.0 + 3.0, lang="en", text=text.format(i),
                         translations={"de": "Untertitel {}".format(i)}))
    print(i, flush=True)
    i += 1
    if i == stop_after:
        time.sleep(60)
"""


def run_and_kill(folder: Path, at_least: int, stop_after: int, delay: float = 0.0, written: bool = False) -> int:
    """Start a writer process, SIGKILL it `delay` s after it has reported `at_least` captions
    (``written``: after its writer thread put them in the JSONL, the last file it writes)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), str(stop_after), CHILD_TEXT], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        for _ in range(at_least):
            assert child.stdout.readline(), "writer process died early"
        while written and (folder / "captions.jsonl").read_bytes().count(b"\n") < at_least:
            time.sleep(0.0005)
        time.sleep(delay)  # a caption takes about a millisecond: land anywhere inside one
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    return at_least


def check_files(folder: Path) -> tuple[int, ...]:
    """Every file parses cleanly and holds whole captions only; returns the caption
    counts of (srt, vtt, txt, de.srt, jsonl), in the order they are appended to."""
    def whole_captions(contents: list[str]) -> int:
        # How many captions these cues are, provided they end exactly on a caption's last cue.
        expected, bounds = [], {0: 0}
        while len(expected) < len(contents):
            i = len(bounds) - 1
            expected += ["\n".join(c.lines) for c in split_cues(CHILD_TEXT.format(i), 0, 1)]
            bounds[len(expected)] = i + 1
        assert contents == expected[: len(contents)] and len(contents) in bounds, "a caption was cut"
        return bounds[len(contents)]

    assert len(split_cues(CHILD_TEXT.format(0), 0, 1)) > 1  # so a half-written caption would show
    subs = read_srt(folder / "captions.srt")
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    srt_n = whole_captions([s.content for s in subs])
    vtt_n = whole_captions([c.text for c in read_vtt(folder / "captions.vtt")])
    txt = (folder / "captions.txt").read_text("utf-8")
    assert txt == "" or txt.endswith("\n")
    assert txt.splitlines() == [f"[{_hms(i * 3)}] {CHILD_TEXT.format(i)}" for i in range(len(txt.splitlines()))]
    de = read_srt(folder / "captions.de.srt") if (folder / "captions.de.srt").exists() else []
    assert [s.content for s in de] == [f"Untertitel {i}" for i in range(len(de))]
    rows = read_jsonl_strict(folder / "captions.jsonl")
    assert [(r["seq"], r["text"]) for r in rows] == [(i, CHILD_TEXT.format(i)) for i in range(len(rows))]
    assert load_jsonl(folder / "captions.jsonl") == rows
    return srt_n, vtt_n, len(txt.splitlines()), len(de), len(rows)


def _hms(s: int) -> str:
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def test_kill_9_after_captions_loses_nothing(tmp_path):
    # killed while idle (its writer thread has had a moment for the last caption), files still open
    written = run_and_kill(tmp_path, at_least=4, stop_after=4, delay=0.3)
    assert check_files(tmp_path) == (written,) * 5


@pytest.mark.parametrize("attempt", range(4))
def test_kill_9_mid_write_leaves_only_whole_captions(tmp_path, attempt):
    run_and_kill(tmp_path, at_least=3, stop_after=10**9, delay=0.0013 * attempt, written=True)  # killed while writing
    counts = check_files(tmp_path)
    # Files are appended in turn (srt, vtt, txt, de..., jsonl last), so the caption in
    # flight may be in the first files but not yet the later ones; never half of it.
    assert counts[0] >= 3
    assert list(counts) == sorted(counts, reverse=True) and counts[0] - counts[-1] <= 1


def test_session_folder_names_are_unique(tmp_path):
    now = datetime(2024, 5, 17, 9, 3, 7)
    a = session_folder(tmp_path / "sessions", now)
    b = session_folder(tmp_path / "sessions", now)
    c = session_folder(tmp_path / "sessions", now)
    d = session_folder(tmp_path / "sessions", now, name="team meeting/1")
    assert [p.name for p in (a, b, c)] == ["2024-05-17_09-03-07", "2024-05-17_09-03-07-2", "2024-05-17_09-03-07-3"]
    assert d.name == "2024-05-17_09-03-07_team_meeting_1" and d.parent == tmp_path / "sessions"
    assert all(p.is_dir() for p in (a, b, c, d))
    assert session_folder(tmp_path).name.startswith(datetime.now().strftime("%Y-%m-%d_"))


def test_load_jsonl_skips_a_cut_off_last_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes('{"text": "один\u2028два"}\n{"text": "ok"}\n{"text": "cut'.encode("utf-8"))
    assert load_jsonl(path) == [{"text": "один\u2028два"}, {"text": "ok"}]


def translation(of: Caption, seq: int, translations: dict, errors: dict | None = None) -> Caption:
    return Caption(id=of.id, seq=seq, kind="translation", start=of.start, end=of.end, emitted=of.emitted + 0.3,
                   lang=of.lang, text=of.text, committed=of.text, translations=translations,
                   translation_errors=dict(errors or {}))


def test_translation_updates_go_to_the_language_files_and_fold_into_the_jsonl(tmp_path):
    w = TranscriptWriter(tmp_path, languages=["es", "zh"])
    assert w.accepts_translations
    assert set(w.all_paths) == {"srt", "vtt", "txt", "jsonl", "es.srt", "es.vtt", "es.txt",
                                "zh.srt", "zh.vtt", "zh.txt"}  # the targets' files exist from the start
    assert read_vtt(w.all_paths["es.vtt"]) == [] and w.all_paths["zh.srt"].read_text() == ""
    a, b = final(1, 0, 2, "Good morning."), final(2, 2, 4, "How are you?")
    w.on_caption(a)
    w.on_caption(b)
    w.on_caption(translation(a, 3, {"es": "Buenos días.", "zh": "早上好。"}))
    w.on_caption(translation(b, 4, {"es": "¿Cómo estás?"}, {"zh": "ctranslate2: timed out"}))
    w.close()
    assert [s.content for s in read_srt(w.paths["srt"])] == ["Good morning.", "How are you?"]  # not again
    es = read_srt(w.all_paths["es.srt"])
    assert [(s.index, s.start.total_seconds(), s.end.total_seconds(), s.content) for s in es] == [
        (1, 0.0, 2.0, "Buenos días."), (2, 2.0, 4.0, "¿Cómo estás?")]
    assert [c.text for c in read_vtt(w.all_paths["zh.vtt"])] == ["早上好。"]
    assert w.all_paths["es.txt"].read_text("utf-8") == "[00:00:00] Buenos días.\n[00:00:02] ¿Cómo estás?\n"
    raw = load_jsonl(w.paths["jsonl"], raw=True)
    assert raw == read_jsonl_strict(w.paths["jsonl"]) and len(raw) == 4
    assert raw[3] == {"id": 2, "seq": 4, "kind": "translation", "emitted": 4.7, "lang": "en",
                      "translations": {"es": "¿Cómo estás?"}, "translation_errors": {"zh": "ctranslate2: timed out"}}
    rows = load_jsonl(w.paths["jsonl"])
    assert [(r["id"], r["text"], r["translations"], r.get("translation_errors")) for r in rows] == [
        (1, "Good morning.", {"es": "Buenos días.", "zh": "早上好。"}, None),
        (2, "How are you?", {"es": "¿Cómo estás?"}, {"zh": "ctranslate2: timed out"})]


def test_load_jsonl_drops_an_update_without_its_final_and_a_later_update_clears_an_error(tmp_path):
    w = TranscriptWriter(tmp_path, ("jsonl",))
    a = final(1, 0, 2, "Hello.")
    w.on_caption(translation(final(0, 0, 0, "lost"), 1, {"es": "perdido"}))
    w.on_caption(a)
    w.on_caption(translation(a, 3, {}, {"es": "skipped"}))
    w.on_caption(translation(a, 4, {"es": "Hola."}))
    w.close()
    assert load_jsonl(w.paths["jsonl"]) == [{"id": 1, "seq": 1, "start": 0.0, "end": 2.0, "emitted": 2.4,
                                             "lang": "en", "text": "Hello.", "translations": {"es": "Hola."}}]


# --- a failing disk (issue 11) ---------------------------------------------------------------

import errno  # noqa: E402

import fulldisk  # noqa: E402
from subtitler import transcripts  # noqa: E402
from subtitler.transcripts import OutputFolderError, WriterHealth, check_output_folder  # noqa: E402


@pytest.fixture(params=["filesystem", "injected"])
def disk(request, tmp_path, monkeypatch):
    """A disk that fills up: a real 64 KiB tmpfs where this machine can mount one (else the
    injected one again), and the injected full disk at the writer's lowest layer."""
    if request.param == "filesystem":
        d = fulldisk.full_disk(tmp_path / "disk", monkeypatch)
    else:
        d = fulldisk.InjectedDisk(tmp_path / "disk", monkeypatch)
    yield d
    d.close()


def wait_for(what, predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def check_whole(folder: Path) -> None:
    """Every file as a strict reader sees it: whole records only, nothing appended onto a broken one."""
    read_srt(folder / "captions.srt")
    read_vtt(folder / "captions.vtt")
    assert (folder / "captions.txt").read_bytes()[-1:] in (b"", b"\n")
    read_jsonl_strict(folder / "captions.jsonl")
    if (folder / "captions.de.srt").exists():
        read_srt(folder / "captions.de.srt")


def test_a_full_disk_never_breaks_a_record_and_nothing_is_lost_once_space_returns(disk, caplog):
    reports: list[WriterHealth] = []
    w = TranscriptWriter(disk.path, on_health=reports.append)
    n = 0

    def say(count: int) -> None:
        nonlocal n
        for _ in range(count):
            w.on_caption(final(n, n * 3.0, n * 3.0 + 2.5, CHILD_TEXT.format(n), translations={"de": f"Untertitel {n}"}))
            n += 1

    say(3)
    assert w.flush(5)
    disk.fill()
    t0 = time.monotonic()
    say(25)  # about 25 KB: more than the slack in the files' last pages
    assert time.monotonic() - t0 < 0.5  # the caller never waits for the disk
    health = wait_for("the failure to show", lambda: next((h for h in [w.health()] if not h.ok), None))
    assert "No space left on device" in health.error and "captions." in health.error
    assert health.pending > 0 and health.failures >= 1 and health.lost == 0
    time.sleep(0.6)  # a few retries against the full disk
    check_whole(disk.path)  # a failed write was cut back: every file still parses strictly
    assert any("No space left on device" in r.getMessage() for r in caplog.records)

    disk.free()
    assert w.flush(15), w.health()
    say(2)  # and it goes on as before
    end = w.close()
    assert end.ok and end.error is None and end.lost == 0 and end.written == n == 30 and end.failures >= 2
    assert [r.ok for r in reports][-1] is True and any(not r.ok for r in reports)
    counts = check_files(disk.path)
    assert counts == (n,) * 5  # every caption, once, in order, in every file


def test_a_stalled_disk_does_not_hold_up_the_caller_and_the_queue_is_bounded(tmp_path, monkeypatch):
    gate = threading.Event()
    real = transcripts._os_write

    def stalled(fd, data):
        gate.wait()
        return real(fd, data)

    w = TranscriptWriter(tmp_path, queue_limit=20, fsync=False)
    monkeypatch.setattr(transcripts, "_os_write", stalled)
    t0 = time.monotonic()
    for i in range(25):
        w.on_caption(final(i, i, i + 0.5, f"caption {i}"))
    assert time.monotonic() - t0 < 0.2
    health = w.health()
    assert health.pending == 20 and health.lost == 5 and health.written == 0
    gate.set()
    assert w.flush(10)
    w.close()
    assert [r["text"] for r in load_jsonl(w.paths["jsonl"])] == [f"caption {i}" for i in range(20)]
    assert w.health().lost == 5


def test_close_while_the_disk_stays_full_reports_what_was_not_written(tmp_path, monkeypatch, caplog):
    disk = fulldisk.InjectedDisk(tmp_path, monkeypatch, slack=0)
    w = TranscriptWriter(tmp_path)
    disk.fill()
    for i in range(3):
        w.on_caption(final(i, i, i + 0.5, f"caption {i}"))
    end = w.close(timeout=0.5)
    assert not end.ok and end.lost == 3 and end.pending == 0
    assert any("3 caption(s) could not be written" in r.getMessage() for r in caplog.records)
    check_whole(tmp_path)


def test_a_broken_tail_left_by_an_earlier_run_is_cut_back_when_the_file_is_opened(tmp_path):
    with TranscriptWriter(tmp_path) as w:
        w.on_caption(final(1, 0, 1, "First."))
    for name, tail in (("captions.jsonl", b'{"id": 2, "seq": 2, "te'), ("captions.srt", b"2\n00:00:01,000 --> 00"),
                       ("captions.vtt", b"00:00:01.000 -->"), ("captions.txt", b"[00:00:01] Sec")):
        with open(tmp_path / name, "ab") as f:
            f.write(tail)  # what a power cut mid-write may leave
    with TranscriptWriter(tmp_path) as w:
        w.on_caption(final(3, 2, 3, "Third."))
    check_whole(tmp_path)
    assert [r["text"] for r in read_jsonl_strict(tmp_path / "captions.jsonl")] == ["First.", "Third."]
    assert [s.content for s in read_srt(tmp_path / "captions.srt")] == ["First.", "Third."]
    assert (tmp_path / "captions.txt").read_text() == "[00:00:00] First.\n[00:00:02] Third.\n"
    # a VTT cut inside its header is started again
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "captions.vtt").write_bytes(b"WEBV")
    with TranscriptWriter(tmp_path / "v", ("vtt",)) as w:
        w.on_caption(final(1, 0, 1, "Again."))
    assert [c.text for c in read_vtt(tmp_path / "v" / "captions.vtt")] == ["Again."]


def test_files_are_synced_on_a_timer_in_the_writer_thread_not_per_caption(tmp_path, monkeypatch):
    calls: list[str] = []
    real = os.fsync

    def fsync(fd):
        calls.append(threading.current_thread().name)
        real(fd)
    monkeypatch.setattr(transcripts.os, "fsync", fsync)
    w = TranscriptWriter(tmp_path, languages=["de", "es"], fsync_interval=0.3)
    made = len(calls)  # the new files' directory entries
    for i in range(60):
        w.on_caption(final(i, i, i + 0.5, f"caption {i}", translations={"de": f"de {i}", "es": f"es {i}"}))
    assert w.flush(5)
    files = 4 + 3 * 2  # srt, vtt, txt, jsonl and each translation's srt, vtt, txt
    wait_for("the timed sync", lambda: len(calls) - made >= files, timeout=3)
    synced = len(calls) - made
    assert synced <= 2 * files  # not 60 captions × 10 files (the old writer's 600)
    assert set(calls[made:]) == {"subtitler-transcripts"}  # never in the caller's thread
    w.on_caption(final(99, 99, 99.5, "last"))
    w.close()
    assert len(calls) - made > synced  # close syncs what came after


def test_check_output_folder_says_why_a_folder_cannot_take_transcripts(tmp_path, monkeypatch):
    assert check_output_folder(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"
    assert not (tmp_path / "new").exists()  # checked, and nothing left behind
    (tmp_path / "there").mkdir()
    check_output_folder(tmp_path / "there")
    assert list((tmp_path / "there").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="a part of that path is a file, not a folder; choose another "
                                                "folder with --out DIR"):
        check_output_folder(tmp_path / "file" / "sub")
    with pytest.raises(OutputFolderError, match="it is a file, not a folder"):
        check_output_folder(tmp_path / "file")

    def read_only(*a, **k):  # what mkstemp meets on a read-only file system
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(transcripts.tempfile, "mkstemp", read_only)
    with pytest.raises(OutputFolderError, match="read-only file system"):
        check_output_folder(tmp_path / "ro")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only file system: a read-only tmpfs where this machine can mount one,
    else a folder the (non-root) user may not write."""
    path = tmp_path / "ro"
    path.mkdir()
    if fulldisk.can_mount():
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", str(path)], check=True)
        yield path
        subprocess.run(["umount", "-l", str(path)])
    elif os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
    else:  # root without mount: the path under a file (always refused) stands in
        (tmp_path / "file").write_text("x")
        yield tmp_path / "file" / "ro"


@pytest.mark.parametrize("command", ["run", "serve", "transcribe"])
def test_an_unwritable_output_folder_is_one_error_before_anything_starts(command, tmp_path, read_only_dir):
    import wave

    (tmp_path / "a-file").write_text("not a folder")
    with wave.open(str(tmp_path / "talk.wav"), "wb") as wav:  # a real recording for transcribe
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\0\0" * 16000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for out in (tmp_path / "a-file" / "transcripts", read_only_dir / "transcripts"):
        args = [sys.executable, "-m", "subtitler", command, "--out", str(out), "--port", "0",
                "--set", "asr.model=no-such-model-so-a-load-would-fail"]
        if command == "run":
            args += ["--input", "remote"]
        elif command == "serve":
            args += ["--rooms", "hall"]
        else:
            args = [a for a in args if a not in ("--port", "0")] + [str(tmp_path / "talk.wav")]
        t0 = time.monotonic()
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"subtitler: error: cannot write transcripts to {out}: "), lines
        assert "--out DIR" in lines[0] and "Traceback" not in done.stderr
        assert "Serving" not in done.stderr and "Loading" not in done.stderr  # nothing started
        assert time.monotonic() - t0 < 30


def test_a_gap_is_marked_in_the_jsonl_in_its_place_and_load_jsonl_leaves_it_out(tmp_path):
    with TranscriptWriter(tmp_path) as w:
        w.on_caption(final(1, 0, 2, "Before."))
        w.on_gap(2.5, 3.25, "the sender's microphone overflowed")
        w.on_caption(final(2, 6, 7, "After."))
    raw = load_jsonl(w.paths["jsonl"], raw=True)
    assert [r.get("kind", "final") for r in raw] == ["final", "gap", "final"]
    assert raw[1] == {"kind": "gap", "at": 2.5, "seconds": 3.25, "reason": "the sender's microphone overflowed"}
    assert [r["text"] for r in load_jsonl(w.paths["jsonl"])] == ["Before.", "After."]
    assert [s.content for s in read_srt(w.paths["srt"])] == ["Before.", "After."]  # the subtitles stay subtitles


# --- speech missing from the transcript, marked where it lies --------------------------------

def test_skipped_speech_is_marked_in_the_jsonl_txt_and_vtt_of_every_language(tmp_path):
    with TranscriptWriter(tmp_path, languages=["es"]) as w:
        w.on_caption(final(1, 0.0, 2.0, "Before.", translations={"es": "Antes."}))
        w.on_skipped(5.0, 13.6, 8.0)
        w.on_gap(20.0, 3.25, "the sender's microphone overflowed")
        w.on_caption(final(4, 24.0, 26.0, "After.", translations={"es": "Después."}))
    raw = load_jsonl(w.paths["jsonl"], raw=True)
    assert [r.get("kind", "final") for r in raw] == ["final", "skipped", "gap", "final"]
    assert raw[1] == {"kind": "skipped", "start": 5.0, "end": 13.6, "seconds": 8.0,
                      "reason": "decoding fell behind the live audio"}
    assert [r["text"] for r in load_jsonl(w.paths["jsonl"])] == ["Before.", "After."]  # captions only
    for paths, before, after in ((w.paths, "Before.", "After."),
                                 (w.language_paths["es"], "Antes.", "Después.")):
        assert paths["txt"].read_text("utf-8").splitlines() == [
            f"[00:00:00] {before}",
            "[00:00:05] [not transcribed: 00:00:05–00:00:13, 8.0 s of speech skipped "
            "(decoding fell behind the live audio)]",
            "[00:00:20] [audio lost: 3.2 s, the sender's microphone overflowed]",
            f"[00:00:24] {after}",
        ]
        vtt = read_vtt(paths["vtt"])  # a NOTE is a comment: the captions stay the captions
        assert [c.text for c in vtt] == [before, after]
        assert vtt[1].comments == [
            "not transcribed: 8.0 s of speech from 00:00:05.000 to 00:00:13.600, skipped "
            "(decoding fell behind the live audio)",
            "audio lost: 3.2 s at 00:00:20.000 (the sender's microphone overflowed)"]
        assert [s.content for s in read_srt(paths["srt"])] == [before, after]  # no comments in SRT


def test_a_reason_cannot_break_the_txt_or_vtt(tmp_path):
    with TranscriptWriter(tmp_path) as w:
        w.on_gap(1.0, 2.0, "bad]\n\n00:00:01.000 --> 00:00:09.000\nfake")
        w.on_caption(final(1, 4.0, 5.0, "After."))
    assert len(w.paths["txt"].read_text("utf-8").splitlines()) == 2
    assert [c.text for c in read_vtt(w.paths["vtt"])] == ["After."]
    notes = webvtt.read(str(w.paths["vtt"])).header_comments  # a NOTE before the first cue
    assert len(notes) == 1 and "-->" not in notes[0] and "\n" not in notes[0]


# --- the reading-time hold in the live files ------------------------------------------------

# Chinese spoken fast, a long English caption before a short silence, a last word.
HELD = [
    (1.0, 1.6, "zh", "谢谢大家。", "Thank you all."),
    (4.0, 6.0, "en", LONG, "這是一個很長的句子，說話的人一口氣說完，超過兩行字幕能放下的長度。"),
    (9.0, 9.4, "en", "Right.", "好。"),
    (20.0, 20.2, "en", "Bye.", "再見。"),
]


def write_held_session(folder: Path) -> TranscriptWriter:
    w = TranscriptWriter(folder, languages=["zh-Hant"])
    for i, (start, end, lang, text, other) in enumerate(HELD, 1):
        w.on_caption(Caption(i, 2 * i, "final", start, end, end + 0.5, lang, text))
        w.on_caption(Caption(i, 2 * i + 1, "translation", start, end, end + 0.9, lang, text,
                             translations={"zh-Hant": other if lang != "zh" else "謝謝大家。"}))
    return w


def test_live_files_hold_each_cue_for_its_reading_time_as_a_recut_does(tmp_path):
    from subtitler.subtitles import recut

    w = write_held_session(tmp_path / "live")
    w.close()
    subs = read_srt(w.paths["srt"])
    times = [(s.start.total_seconds(), s.end.total_seconds()) for s in subs]
    # 5 Chinese characters need 0.8 s (9 a second; the minimum); the long English caption, spoken
    # in 2 s, needs 8.9 s at 17 a second: it stays until "Right." starts, never over it; the last
    # caption gets its reading time at the end of the session
    assert times[0] == (1.0, 1.8)
    assert times[-3][1] == 9.0 and times[-2][0] == 9.0
    assert times[-1] == (20.0, 20.8)
    for (_, end), (start, _) in zip(times, times[1:]):
        assert start >= end
    recut_files = recut(w.paths["jsonl"], tmp_path / "recut")
    for name, path in w.all_paths.items():
        if name.endswith(("srt", "vtt")):
            assert path.read_text("utf-8") == recut_files[name].read_text("utf-8"), name


def test_kill_9_leaves_every_caption_but_the_last_held(tmp_path):
    run_and_kill(tmp_path, at_least=4, stop_after=4, delay=0.3)
    subs = read_srt(tmp_path / "captions.srt")
    ends = {}  # caption → its last cue's end
    n = 0
    for i in range(4):
        n += len(split_cues(CHILD_TEXT.format(i), 0, 1))
        ends[i] = subs[n - 1].end.total_seconds()
    # each caption needs more than the 3 s to the next one: held until the next starts; the last,
    # never followed and never closed, keeps its spoken end
    assert ends == {0: 3.0, 1: 6.0, 2: 9.0, 3: 11.5}
    vtt = read_vtt(tmp_path / "captions.vtt")
    assert [seconds(c.end) for c in vtt] == [s.end.total_seconds() for s in subs]


def test_the_layout_is_pure_captions_in_writes_out_no_disk_no_thread(tmp_path):
    from subtitler.transcript_layout import TranscriptLayout

    captions = [final(1, 1.0, 1.2, "Hello there, everyone.", translations={"de": "Hallo zusammen."}),
                final(2, 5.0, 5.2, "Goodbye now, everyone.")]
    layout = TranscriptLayout(Path("/nowhere"), formats=["srt", "jsonl"], languages=["de"])
    assert layout.paths == {"srt": Path("/nowhere/captions.srt"), "jsonl": Path("/nowhere/captions.jsonl")}
    layout.start()
    assert [f.path.name for f in layout.files()] == ["captions.srt", "captions.de.srt", "captions.jsonl"]
    files: dict[str, bytearray] = {}

    def do(write) -> None:  # what the writer does on disk, in memory
        data = files.setdefault(write.file.path.name, bytearray())
        if write.at is not None:  # a held cue's new timing line, over the old one
            assert len(data) >= write.at + len(write.data)
            data[write.at:write.at + len(write.data)] = write.data
            return
        layout.appended(write, len(data))
        data += write.data

    for caption in captions:
        for write in layout.records(caption):
            do(write)
    for writes in layout.last_holds():
        for write in writes:
            do(write)
    subs = list(srt.parse(files["captions.srt"].decode()))
    assert subs[0].end.total_seconds() > 1.2 and subs[1].end.total_seconds() > 5.2  # held for reading
    with TranscriptWriter(tmp_path, formats=["srt", "jsonl"], languages=["de"]) as w:
        for caption in captions:
            w.on_caption(caption)
    assert {name: bytes(data) for name, data in files.items()} == {
        p.name: p.read_bytes() for p in w.all_paths.values()}  # byte for byte what the writer leaves
