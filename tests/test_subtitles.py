"""`subtitler subtitles`: a saved captions.jsonl re-cut into SRT / VTT / TXT, read back with the
`srt` and `webvtt-py` parsers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import srt
import webvtt

from subtitler.captions import Caption
from subtitler.chinese import convert
from subtitler.cues import display_width
from subtitler.subtitles import SubtitlesError, recut
from subtitler.transcripts import TranscriptWriter

# A session in Chongqing: Mandarin spoken (Whisper's Traditional, as it often writes it),
# translated into English and Russian.
SPOKEN = [
    (0.5, 4.0, "各位來賓，女士們，先生們，大家上午好！歡迎來到第七屆中國國際智能產業博覽會。",
     "Distinguished guests, ladies and gentlemen, good morning! Welcome to the seventh Smart China Expo.",
     "Уважаемые гости, дамы и господа, доброе утро! Добро пожаловать на седьмую выставку."),
    (4.4, 5.0, "謝謝大家。", "Thank you all.", "Спасибо всем."),
    (9.0, 14.0, "今天我們在重慶討論人工智慧與軟體產業的未來，參會的有來自四十多個國家和地區的代表團。",
     "Today in Chongqing we discuss the future of artificial intelligence and the software industry, with "
     "delegations from more than forty countries and regions.",
     "Сегодня в Чунцине мы обсуждаем будущее искусственного интеллекта и индустрии программного обеспечения."),
]


@pytest.fixture
def session(tmp_path) -> Path:
    folder = tmp_path / "2026-09-01_09-00-00"
    writer = TranscriptWriter(folder, languages=["en", "ru"])
    seq = 0
    for i, (start, end, text, en, ru) in enumerate(SPOKEN, 1):
        seq += 1
        writer.on_caption(Caption(i, seq, "final", start, end, end + 0.5, "zh", text))
        seq += 1
        writer.on_caption(Caption(i, seq, "translation", start, end, end + 0.9, "zh", text,
                                  translations={"en": en, "ru": ru}))
    writer.close()
    return folder / "captions.jsonl"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "subtitler", "subtitles", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_every_language_recut_and_parsed_back(session, tmp_path):
    out = tmp_path / "recut"
    done = run(str(session), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["captions.en.srt", "captions.en.txt", "captions.en.vtt", "captions.ru.srt",
                     "captions.ru.txt", "captions.ru.vtt", "captions.srt", "captions.txt", "captions.vtt"]
    assert done.stdout.split() == [str(out / n) for n in
                                   ["captions.srt", "captions.vtt", "captions.txt", "captions.en.srt",
                                    "captions.en.vtt", "captions.en.txt", "captions.ru.srt", "captions.ru.vtt",
                                    "captions.ru.txt"]]

    zh = list(srt.parse((out / "captions.srt").read_text(encoding="utf-8")))
    zh_lines = [line for cue in zh for line in cue.content.split("\n")]
    # Simplified by default, at most 16 characters a line, 2 lines a cue, nothing lost
    assert "".join(zh_lines) == "".join(convert(s[2], "zh") for s in SPOKEN)
    joined = "".join(zh_lines)
    assert "欢迎来到" in joined and "软件产业" in joined and "來" not in joined
    assert all(display_width(line) <= 32 for line in zh_lines) and all(len(c.content.split("\n")) <= 2 for c in zh)
    # cues never overlap, and the short "谢谢大家。" (0.6 s spoken) is held for its reading time
    # (5 characters at 9 a second, at least 0.8 s), into the silence before the next caption
    for a, b in zip(zh, zh[1:]):
        assert a.end <= b.start
    thanks = next(c for c in zh if c.content == "谢谢大家。")
    assert thanks.start.total_seconds() == pytest.approx(4.4)
    assert (thanks.end - thanks.start).total_seconds() == pytest.approx(0.8, abs=0.002)

    en = list(webvtt.read(str(out / "captions.en.vtt")))
    en_lines = [line for cue in en for line in cue.text.split("\n")]
    assert " ".join(en_lines).split() == " ".join(s[3] for s in SPOKEN).split()
    assert all(len(line) <= 42 for line in en_lines) and max(map(len, en_lines)) > 32  # English keeps 42
    ru = list(srt.parse((out / "captions.ru.srt").read_text(encoding="utf-8")))
    assert " ".join(c.content.replace("\n", " ") for c in ru).split() == " ".join(s[4] for s in SPOKEN).split()
    txt = (out / "captions.txt").read_text(encoding="utf-8").splitlines()
    assert txt[0] == "[00:00:00] " + convert(SPOKEN[0][2], "zh") and len(txt) == 3


def test_one_language_other_lengths_other_script(session, tmp_path):
    out = tmp_path / "edit"
    done = run(str(session), "--lang", "zh-Hant", "--formats", "srt,vtt", "--max-line-chars", "10",
               "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["captions.zh-Hant.srt", "captions.zh-Hant.vtt"]
    cues = list(srt.parse((out / "captions.zh-Hant.srt").read_text(encoding="utf-8")))
    lines = [line for c in cues for line in c.content.split("\n")]
    assert all(display_width(line) <= 20 for line in lines) and max(map(len, lines)) >= 9
    assert "軟體" in "".join(lines) and "会" not in "".join(lines)  # Traditional (Taiwan), from the zh text
    vtt = list(webvtt.read(str(out / "captions.zh-Hant.vtt")))
    assert [c.text for c in vtt] == [c.content for c in cues]

    out2 = tmp_path / "trad"
    done = run(str(session), "--lang", "zh", "--chinese", "traditional", "--formats", "srt", "--out", str(out2),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (out2 / "captions.zh.srt").read_text(encoding="utf-8")
    assert "會議" not in text and "歡迎" in text


@pytest.mark.parametrize("args, message", [
    (["--lang", "fr"], "--lang fr: not in captions.jsonl; it has: zh, en, ru"),
    (["--lang", "français"], "not a language code"),
    (["--formats", "srt,ass"], "formats ass: not a subtitle format; allowed: srt, vtt, txt"),
    (["--chinese", "pinyin"], "[output] chinese = 'pinyin'"),
    (["--max-line-chars", "3"], "[output] max_line_chars = 3: out of range"),
])
def test_bad_requests_one_clear_error(session, tmp_path, args, message):
    done = run(str(session), *args, "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_bad_files_one_clear_error_and_the_session_is_untouched(session, tmp_path):
    done = run(str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert done.returncode == 2 and "nope.jsonl: no such file" in done.stderr
    before = {p.name: p.read_bytes() for p in session.parent.iterdir()}
    done = run(str(session), "--out", str(session.parent), cwd=tmp_path)
    assert done.returncode == 2 and "the session's own folder" in done.stderr
    assert {p.name: p.read_bytes() for p in session.parent.iterdir()} == before
    broken = tmp_path / "broken.jsonl"
    broken.write_text(session.read_text(encoding="utf-8").replace('"text"', '"txet"', 1), encoding="utf-8")
    done = run(str(broken), "--out", str(tmp_path / "y"), cwd=tmp_path)
    assert done.returncode == 2 and "line 1: the caption has no valid 'text'" in done.stderr
    broken.write_text('{"id": 1, "start": 0\nnot json\n', encoding="utf-8")
    with pytest.raises(SubtitlesError, match="line 1 is not JSON"):
        recut(broken, tmp_path / "z")


def test_a_line_cut_off_by_a_crash_is_skipped(session, tmp_path):
    text = session.read_text(encoding="utf-8")
    cut = tmp_path / "crashed.jsonl"
    cut.write_text(text + '{"id": 4, "seq": 7, "start": 20.0, "end": 2', encoding="utf-8")
    written = recut(cut, tmp_path / "out", formats=["srt"])
    assert len(list(srt.parse(written["srt"].read_text(encoding="utf-8")))) >= 3
    rows = [json.loads(l) for l in text.splitlines()]
    assert len(rows) == 6  # three finals and their translation updates, as the writer wrote them


def test_a_transcript_with_gaps_and_skipped_speech_is_recut_with_its_marks_in_place(tmp_path):
    # as a live session writes it: a mark arrives after the captions of earlier speech
    folder = tmp_path / "2026-09-01_10-00-00"
    writer = TranscriptWriter(folder, languages=["en"])
    (s1, e1, zh1, en1, _), (s2, e2, zh2, en2, _), (s3, e3, zh3, en3, _) = SPOKEN
    writer.on_caption(Caption(1, 1, "final", s1, e1, e1 + 0.5, "zh", convert(zh1, "zh"), translations={"en": en1}))
    writer.on_skipped(5.2, 8.4, 3.0)
    writer.on_caption(Caption(3, 2, "final", s3, e3, e3 + 0.5, "zh", convert(zh3, "zh"), translations={"en": en3}))
    writer.on_gap(15.0, 2.5, "the sender's microphone overflowed")
    writer.close()
    out = tmp_path / "recut"
    done = run(str(folder / "captions.jsonl"), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("captions.txt", "captions.en.txt", "captions.vtt", "captions.en.vtt", "captions.srt"):
        # the re-cut marks speech missing where the session's own files did
        assert (out / name).read_text("utf-8") == (folder / name).read_text("utf-8"), name
    txt = (out / "captions.en.txt").read_text("utf-8").splitlines()
    assert [line.split("] ", 1)[1][:16] for line in txt] == [
        en1[:16], "[not transcribed", en3[:16], "[audio lost: 2.5"]
    vtt = webvtt.read(str(out / "captions.vtt"))
    assert [c.text.replace("\n", "") for c in vtt.captions] != [] and len(vtt.footer_comments) == 1
    assert any("not transcribed: 3.0 s of speech" in n for c in vtt.captions for n in c.comments)
    assert "not transcribed" not in (out / "captions.srt").read_text("utf-8")  # SRT has no comments


def test_a_mark_without_its_times_is_one_clear_error(session, tmp_path):
    broken = tmp_path / "marks.jsonl"
    broken.write_text(session.read_text(encoding="utf-8") + '{"kind": "skipped", "start": 3}\n', encoding="utf-8")
    done = run(str(broken), "--out", str(tmp_path / "y"), cwd=tmp_path)
    assert done.returncode == 2 and "line 7: a 'skipped' mark without its times" in done.stderr
    assert done.stderr.count("\n") == 1
