"""Chinese end to end: a caption in Whisper's Traditional characters, made by a real room (no
Chinese speech at hand: injected where the policy hands its captions to the room), comes out
in Simplified in the files and on a real Chromium overlay, as two tidy lines of Chinese drawn
in Noto Sans CJK above the English; zh-Hant screens and files get Traditional.

Chromium is Debian's, driven by Playwright; which font drew the text is read from Chromium's
own layout (DevTools' CSS.getPlatformFontsForNode), and the line boxes from the DOM. The
screenshot is saved in ``test-artifacts/overlay_cjk.png``.
"""

from __future__ import annotations

import dataclasses
import threading
import wave
from pathlib import Path

import numpy as np
import pytest
import srt

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TOKEN = "cjk-room-token-9d2e"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")

# 38 characters: two lines at 48 px on a 1280 px screen, as Whisper might write them (Traditional).
TRADITIONAL = "各位來賓，歡迎來到第七屆智博會。今天我們在重慶討論人工智慧與軟體產業的未來。"
SIMPLIFIED = "各位来宾，欢迎来到第七届智博会。今天我们在重庆讨论人工智能与软件产业的未来。"
ENGLISH = "Distinguished guests, welcome to the seventh Smart China Expo."
KOREAN = "오늘 회의에 참석해 주셔서 대단히 감사합니다 지금부터 국제 인공지능 산업 박람회를 시작하겠습니다"


def silence(path: Path, seconds: float = 2.0) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(int(16000 * seconds), np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def chinese_room(tmp_path_factory, asr_base):
    """A real room (Session) whose policy hands it one Traditional final and its English
    translation; sinks: the transcript files and the server's room. → (server, folder)."""
    from subtitler.audio import FileSource
    from subtitler.captions import Caption
    from subtitler.config import Config
    from subtitler.engine import Session
    from subtitler.server import Server
    from subtitler.transcripts import TranscriptWriter
    from subtitler.translate import TranslationStage

    tmp = tmp_path_factory.mktemp("cjk")
    config = Config().with_overrides({"asr.language": "zh", "translate.targets": "zh-Hant"})
    server = Server(dataclasses.replace(config.server, host="127.0.0.1", port=0, token=TOKEN))
    link = server.add_room("main", token=TOKEN, default=True)
    server.start()
    writer = TranscriptWriter(tmp / "session", languages=["zh-Hant"])
    # zh-Hant of a Chinese source is a conversion, not a translation: no backend needed
    stage = TranslationStage(["zh-Hant"], [], source="zh")
    session = Session(asr_base, FileSource(silence(tmp / "quiet.wav")), [writer, link.sink], config,
                      translation=stage)
    policy = session.policy
    made = []

    def drain():  # the policy's captions, and ours first
        out = policy.__class__.drain(policy)
        if not made:
            final = Caption(1, policy.next_seq(), "final", 0.4, 5.2, 5.6, "zh", TRADITIONAL, committed=TRADITIONAL)
            update = Caption(1, policy.next_seq(), "translation", 0.4, 5.2, 5.9, "zh", TRADITIONAL,
                             translations={"en": ENGLISH})
            made.extend([final, update])
            out = [final, update, *out]
        return out

    policy.drain = drain
    runner = threading.Thread(target=session.run, daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive()
    writer.close()
    yield server, tmp / "session"
    server.stop(drain=0.2)


def test_files_are_simplified_and_cut_for_chinese(chinese_room):
    _, folder = chinese_room
    cues = list(srt.parse((folder / "captions.srt").read_text(encoding="utf-8")))
    lines = [line for c in cues for line in c.content.split("\n")]
    assert "".join(lines) == SIMPLIFIED
    assert all(len(line) <= 16 for line in lines) and not any(line[0] in "，。" for line in lines)
    hant = (folder / "captions.zh-Hant.srt").read_text(encoding="utf-8")
    assert "".join(c.content.replace("\n", "") for c in srt.parse(hant)) == \
        "各位來賓，歡迎來到第七屆智博會。今天我們在重慶討論人工智慧與軟體產業的未來。"
    from subtitler.transcripts import load_jsonl

    (record,) = load_jsonl(folder / "captions.jsonl")  # the record agrees with the screens
    assert record["text"] == SIMPLIFIED and record["translations"]["zh-Hant"] == TRADITIONAL


LINES_JS = """(sel) => {
  // The rendered lines of a caption: one box per character, grouped by their top edge.
  const el = document.querySelector(sel);
  const range = document.createRange();
  const chars = [];
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    for (let i = 0; i < n.length; i++) {
      range.setStart(n, i); range.setEnd(n, i + 1);
      const r = range.getBoundingClientRect();
      if (r.width > 0) chars.push({ch: n.data[i], top: Math.round(r.top), left: r.left, right: r.right,
                                   width: r.width});
    }
  }
  const lines = [];
  for (const c of chars) {
    let line = lines.find(l => Math.abs(l.top - c.top) < 4);
    if (!line) lines.push(line = {top: c.top, text: '', left: c.left, right: c.right, widths: []});
    line.text += c.ch; line.left = Math.min(line.left, c.left); line.right = Math.max(line.right, c.right);
    line.widths.push(c.width);
  }
  const block = el.closest('.block').getBoundingClientRect();
  return {lines: lines.sort((a, b) => a.top - b.top),
          block: {top: block.top, bottom: block.bottom, left: block.left, right: block.right}};
}"""


def platform_fonts(page, selector: str) -> dict[str, int]:
    """Which installed fonts Chromium drew a node's text with: {family: glyphs}."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    return {f["familyName"]: f["glyphCount"] for f in fonts}


def test_overlay_two_tidy_lines_of_simplified_chinese_above_english(chinese_room, browser):
    server, _ = chinese_room
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{server.port}/overlay.html?lang=zh,en&lines=2&size=48&fade=0&bg=black")
    zh, en = '.block[data-lang="zh"] .cap.final', '.block[data-lang="en"] .cap.final'
    page.wait_for_function("([zh, en]) => document.querySelector(zh) && document.querySelector(en)",
                           arg=[zh, en], timeout=15_000)
    page.evaluate("document.fonts.ready")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "overlay_cjk.png"))

    assert page.text_content(zh) == SIMPLIFIED and page.text_content(en) == ENGLISH
    assert page.evaluate("(s) => document.querySelector(s).lang", zh) == "zh"
    got = page.evaluate(LINES_JS, zh)
    lines, block = got["lines"], got["block"]
    # two lines, all of the caption, none starting with closing punctuation (line-break: strict)
    assert len(lines) == 2, [l["text"] for l in lines]
    assert "".join(l["text"] for l in lines) == SIMPLIFIED
    assert not any(l["text"][0] in "，。！？；：、）" for l in lines)
    # nothing cut: both lines inside the block's visible window, left to right
    for line in lines:
        assert block["top"] <= line["top"] and line["top"] + 40 <= block["bottom"]
        assert block["left"] - 1 <= line["left"] and line["right"] <= block["right"] + 1
    # every Chinese character a full-width glyph of Noto Sans CJK (a missing glyph's box is narrower)
    widths = [w for l in lines for w in l["widths"]]
    assert all(abs(w - 48) < 1.5 for w in widths), widths
    fonts = platform_fonts(page, zh)
    cjk = sum(n for family, n in fonts.items() if "CJK" in family)
    assert cjk == len(SIMPLIFIED), fonts
    tofu = page.evaluate("""() => { const s = document.createElement('span'); s.style.font = '600 48px sans-serif';
        s.textContent = '\\u{F0000}'; document.body.appendChild(s); const w = s.getBoundingClientRect().width;
        s.remove(); return w; }""")
    assert abs(tofu - 48) > 3  # so the width test above can tell a real glyph from a box
    # the Chinese block above the English one, not overlapping
    zb = page.evaluate("document.querySelector('.block[data-lang=\"zh\"]').getBoundingClientRect().bottom")
    et = page.evaluate("document.querySelector('.block[data-lang=\"en\"]').getBoundingClientRect().top")
    assert zb <= et + 1
    assert "Noto Sans CJK SC" in fonts
    assert not errors
    page.close()


def test_traditional_screen(chinese_room, browser):
    server, _ = chinese_room
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(f"http://127.0.0.1:{server.port}/overlay.html?lang=zh-Hant&lines=2&size=48&fade=0")
    sel = '.block[data-lang="zh-Hant"] .cap.final'
    page.wait_for_selector(sel, timeout=15_000)
    assert page.text_content(sel) == "各位來賓，歡迎來到第七屆智博會。今天我們在重慶討論人工智慧與軟體產業的未來。"
    fonts = platform_fonts(page, sel)
    assert "Noto Sans CJK TC" in fonts, fonts  # Han glyphs of the Traditional region
    page.close()


def test_korean_breaks_between_words_only(browser, tmp_path):
    page = browser.new_page(viewport={"width": 900, "height": 500})
    css = (Path(__file__).resolve().parents[1] / "web" / "overlay.css").read_text(encoding="utf-8")
    page.set_content(f"<html><head><style>{css}</style></head><body><main id=captions>"
                     f"<div class=block data-lang=ko style='height:auto'><div class=roll style='position:static'>"
                     f"<p class='cap final' lang=ko>{KOREAN}</p></div></div></main></body></html>")
    page.evaluate("document.fonts.ready")
    lines = page.evaluate(LINES_JS, ".cap")["lines"]
    assert len(lines) >= 2
    words = KOREAN.split()
    for line in lines:  # every rendered line is whole words
        assert all(w in words for w in line["text"].split()), [l["text"] for l in lines]
    assert "Noto Sans CJK KR" in platform_fonts(page, ".cap")
    page.close()


def test_audience_page_reads_chinese_in_its_face(chinese_room, browser):
    # a phone, 390 px wide: the caption wraps at CJK line-break rules, drawn in Noto Sans CJK SC
    server, _ = chinese_room
    page = browser.new_page(viewport={"width": 390, "height": 800})
    page.goto(f"http://127.0.0.1:{server.port}/rooms/main/live.html?lang=zh")
    page.wait_for_function("(t) => Array.from(document.querySelectorAll('.line')).some(l => l.textContent === t)",
                           arg=SIMPLIFIED, timeout=15_000)
    page.evaluate("(t) => Array.from(document.querySelectorAll('.line')).find(l => l.textContent === t)"
                  ".setAttribute('data-test', 'zh')", SIMPLIFIED)
    sel = '.line[data-test="zh"]'
    assert page.evaluate("(s) => document.querySelector(s).lang", sel) == "zh"
    lines = page.evaluate(LINES_JS.replace("el.closest('.block')", "el.parentElement"), sel)["lines"]
    assert len(lines) >= 2 and "".join(l["text"] for l in lines) == SIMPLIFIED
    assert not any(l["text"][0] in "，。！？；：、）" for l in lines)
    fonts = platform_fonts(page, sel)
    assert sum(n for f, n in fonts.items() if "CJK" in f) == len(SIMPLIFIED) and "Noto Sans CJK SC" in fonts, fonts
    page.close()


def test_console_shows_each_script_in_its_face(chinese_room, browser):
    server, _ = chinese_room
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"http://127.0.0.1:{server.port}/console.html#token={TOKEN}")
    text = '.entry .text:lang(zh)'
    page.wait_for_function("(s) => document.querySelector(s) && document.querySelector(s).textContent.length > 10",
                           arg=text, timeout=15_000)
    assert page.text_content(text) == SIMPLIFIED
    assert "Noto Sans CJK SC" in platform_fonts(page, text)
    hant = '.entry .tr .txt:lang(zh-Hant)'
    page.wait_for_selector(hant, timeout=15_000)
    assert page.text_content(hant) == TRADITIONAL
    assert "Noto Sans CJK TC" in platform_fonts(page, hant)
    page.close()
