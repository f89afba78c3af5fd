"""The room pages (web/overlay.*, web/console.*) in a real headless Chromium.

Nothing is mocked: Debian's ``chromium`` driven by Playwright (never a downloaded browser),
the real server (``subtitler.server.Server``) on 127.0.0.1, and in the engine tests the real
engine decoding real speech (Asterisk prompts joined by ``bench/corpus.py``) with the packaged
Whisper ``base``. Until the translation stage exists, captions get a second language where
they enter the server (``TranslatingSink``). Screenshots are saved in ``test-artifacts/``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "room-token-for-tests-4f1c"
VIEWPORT = {"width": 1280, "height": 720}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")


# -- helpers -------------------------------------------------------------------------------------

def start_server(port: int = 0):
    """A venue of one room as `subtitler run` serves it: the room answers the single-room paths
    (/overlay.html, /ws/view …). → (server, the room's RoomLink)."""
    from subtitler.config import Config
    from subtitler.server import Server

    config = dataclasses.replace(Config().server, host="127.0.0.1", port=port, token=TOKEN)
    server = Server(config)
    room = server.add_room("main", token=TOKEN, default=True)
    return server.start(), room


def base_url(server) -> str:
    return f"http://127.0.0.1:{server.port}"


def caption(id: int, text: str, kind: str = "final", committed: str | None = None, lang: str = "en",
            translations: dict | None = None):
    from subtitler.captions import Caption

    if kind == "final":
        committed = text
    committed = committed or ""
    return Caption(id=id, seq=0, kind=kind, start=id * 3.0, end=id * 3.0 + 2.0, emitted=id * 3.0 + 2.5,
                   lang=lang, text=text, committed=committed, tentative=text[len(committed):].strip(),
                   translations=dict(translations or {}))


def zh(text: str) -> str:
    """The stand-in 'translation' the tests give captions (a real one is another stage's job)."""
    return "中文字幕：" + text


class TranslatingSink:
    """Sits where captions enter the server: gives every caption a Chinese line, keeps a copy."""

    def __init__(self, sink):
        self.sink = sink
        self.captions = []
        self.lock = threading.Lock()

    def on_caption(self, c) -> None:
        if c.text.strip():
            c = dataclasses.replace(c, translations={**c.translations, "zh": zh(c.text)})
        with self.lock:
            self.captions.append(c)
        self.sink.on_caption(c)


def shown(page, lang: str) -> list[dict]:
    """The captions a language block shows now: id, kind, text (as rendered), lang."""
    return page.evaluate("""(lang) => Array.from(document.querySelectorAll(
        `.block[data-lang="${lang}"] .cap:not(.gone)`)).map(c => (
        {id: Number(c.dataset.id), kind: c.dataset.kind, text: c.textContent, lang: c.lang}))""", lang)


def wait_final(page, lang: str, text: str, timeout: float = 10_000) -> None:
    page.wait_for_function("""([lang, text]) => Array.from(document.querySelectorAll(
        `.block[data-lang="${lang}"] .cap.final`)).some(c => c.textContent === text)""",
                           arg=[lang, text], timeout=timeout)


def wait_live(page, timeout: float = 10_000) -> None:
    page.wait_for_function("document.body.dataset.conn === 'live'", timeout=timeout)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


# What the overlay has shown over time, whatever has faded or rolled away since: per block and
# utterance id, how many partial states were seen and the last final text.
OBSERVER_JS = """
window.__seen = {};
new MutationObserver(() => {
  document.querySelectorAll('.block').forEach(b => b.querySelectorAll('.cap').forEach(c => {
    const key = b.dataset.lang + '|' + c.dataset.id;
    const e = window.__seen[key] || (window.__seen[key] = {partials: 0, final: null});
    if (c.dataset.kind === 'partial') e.partials += 1; else e.final = c.textContent;
  }));
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""

# A backdrop standing in for the video behind an OBS source, for screenshots of the transparent
# overlay: light and dark areas, so the outline is seen to work on both.
BACKDROP_JS = """document.documentElement.style.background =
  'linear-gradient(100deg, #f4f4f4 0 22%, #8a8f96 22% 44%, #d9c46a 44% 64%, #1d2f4f 64% 84%, #000 84%)'"""


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport=VIEWPORT)
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    yield ctx
    ctx.close()
    assert not errors, f"JavaScript errors in the pages: {errors}"


@pytest.fixture
def page(context):
    return context.new_page()


@pytest.fixture
def served():
    s, room = start_server()
    yield s, room
    s.stop(drain=0.2)


@pytest.fixture
def server(served):
    return served[0]


@pytest.fixture
def room(served):
    return served[1]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict:
    """Three real English prompts, ~11 s: short enough for a browser test, long enough for partials."""
    import corpus

    out = tmp_path_factory.mktemp("room") / "room.wav"
    return corpus.build_stream(out, lang="en", count=3, seed=10, gaps=(0.6, 1.0), min_duration=2.0,
                               max_duration=4.0, noise_db=-60.0)


# -- the overlay ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_overlay_shows_real_engine_captions_in_two_languages(page, asr_base, speech):
    import corpus
    from subtitler.audio import FileSource
    from subtitler.config import Config
    from subtitler.engine import Session

    server, room = start_server()
    try:
        sink = TranslatingSink(room.sink)
        page.add_init_script(OBSERVER_JS)
        page.goto(base_url(server) + "/overlay.html?lang=zh,en&lines=3&size=40&fade=120")
        wait_live(page)
        assert page.evaluate("subtitlerOverlay.options.langs") == ["zh", "en"]

        config = Config().with_overrides({"asr.language": "en"})
        session = Session(asr_base, FileSource(speech["wav"], realtime=True), [sink], config,
                          on_stats=room.update_stats)
        room.attach(session)
        runner = threading.Thread(target=session.run, daemon=True)
        runner.start()
        runner.join(timeout=90)
        assert not runner.is_alive(), "the session did not finish its 11 s of speech in 90 s"

        finals = [c for c in sink.captions if c.kind == "final" and c.text.strip()]
        assert len(finals) >= 2, f"the engine published {len(finals)} captions for 3 prompts"
        # Every final the engine published reaches the screen, in both languages, as published.
        for c in finals:
            wait_final(page, "en", c.text)
            wait_final(page, "zh", zh(c.text))
        seen = page.evaluate("window.__seen")
        for c in finals:
            assert seen[f"en|{c.id}"]["final"] == c.text
            assert seen[f"zh|{c.id}"]["final"] == zh(c.text)
        # Partials were drawn, in their lighter style, before their final replaced them in place.
        partial_ids = {c.id for c in sink.captions if c.kind == "partial" and c.text.strip()}
        if partial_ids:
            assert any(seen.get(f"en|{i}", {}).get("partials") for i in partial_ids)
        assert corpus.wer([" ".join(u["text"] for u in speech["utterances"])],
                          [" ".join(c.text for c in finals)]) < 0.35

        # Two languages stacked: the Chinese block above the English, neither overlapping, each
        # line in its language (so Chinese is drawn with a CJK face).
        boxes = page.evaluate("""Array.from(document.querySelectorAll('.block')).map(b => {
            const r = b.getBoundingClientRect(); return {lang: b.dataset.lang, top: r.top, bottom: r.bottom}; })""")
        assert [b["lang"] for b in boxes] == ["zh", "en"]
        assert boxes[0]["bottom"] <= boxes[1]["top"] + 1
        assert all(c["lang"] == "zh" for c in shown(page, "zh"))
        assert all(c["lang"] == "en" for c in shown(page, "en"))
        last = shown(page, "en")[-1]
        assert last["kind"] == "final" and last["text"] == finals[-1].text
        # finals in the full colour (once the 250 ms colour change from partial is over)
        page.wait_for_function("""Array.from(document.querySelectorAll('.block[data-lang=en] .cap.final .c'))
            .every(c => getComputedStyle(c).color === 'rgb(255, 255, 255)')""", timeout=3_000)
        page.evaluate(BACKDROP_JS)
        screenshot(page, "overlay-engine-zh-en.png")
    finally:
        server.stop(drain=0.2)


def test_overlay_inserts_caption_text_as_text_never_as_html(page, server, room):
    page.goto(base_url(server) + "/overlay.html?lang=en,zh&lines=3&size=36&bg=%23101820")
    wait_live(page)
    evil = ('<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned = \'img\'">'
            '<b>bold</b> &amp; &lt;i&gt;')
    evil_zh = '<img src=x onerror="window.__pwned = \'zh\'">中文<iframe src="javascript:parent.__pwned=1">'
    room.sink.on_caption(caption(1, evil[:40], kind="partial", committed="<script>",
                                   translations={"zh": evil_zh[:20]}))
    page.wait_for_function("document.querySelectorAll('.cap.partial').length === 2")
    room.sink.on_caption(caption(1, evil, translations={"zh": evil_zh}))
    room.sink.on_translation(1, "zh", '<svg onload="window.__pwned = \'svg\'"></svg>译文：' + evil_zh)
    room.sink.on_caption(caption(2, "</p></main><script>window.__pwned = 2</script>", translations={
        "zh": "<style>*{display:none}</style>仍然可见"}))
    wait_final(page, "en", evil)
    wait_final(page, "zh", '<svg onload="window.__pwned = \'svg\'"></svg>译文：' + evil_zh)
    wait_final(page, "en", "</p></main><script>window.__pwned = 2</script>")
    wait_final(page, "zh", "<style>*{display:none}</style>仍然可见")
    page.wait_for_timeout(300)  # time for anything that would run to run
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('#captions :is(script, img, b, i, svg, iframe, style)').length") == 0
    assert page.evaluate("document.querySelectorAll('#captions .cap').length") == 4
    assert page.locator(".block[data-lang=zh] .cap").last.is_visible()
    screenshot(page, "overlay-markup-as-text.png")

    # after a clear, a late translation of a cleared caption does not bring it back
    room.clear()
    page.wait_for_function("document.querySelectorAll('.cap').length === 0", timeout=5_000)
    room.sink.on_translation(2, "zh", "迟到的翻译")
    room.sink.on_caption(caption(3, "After the clear."))
    wait_final(page, "en", "After the clear.")
    assert "迟到的翻译" not in page.text_content("#captions")


def test_overlay_resumes_from_its_last_seq_when_the_heartbeat_stops(page, server, room):
    """A connection that stays open but goes silent is dead after 5 s: the overlay reconnects
    with ``since`` = the last seq it processed (and its session), and what it missed arrives
    once, nothing twice."""
    hellos: list[dict] = []
    routes: list = []
    silent = threading.Event()

    def route(ws):
        upstream = ws.connect_to_server()
        first = not routes
        routes.append(ws)

        def from_page(message):
            if isinstance(message, str) and '"hello"' in message:
                hellos.append(json.loads(message))
            upstream.send(message)

        def from_server(message):
            if first and silent.is_set():  # the first connection goes quiet: no status, no captions
                return
            ws.send(message)
        ws.on_message(from_page)
        upstream.on_message(from_server)

    page.route_web_socket(lambda url: url.endswith("/ws/view"), route)
    page.goto(base_url(server) + "/overlay.html?lines=3&size=32")
    wait_live(page)
    room.sink.on_caption(caption(1, "One."))
    room.sink.on_caption(caption(2, "Two."))
    wait_final(page, "source", "Two.")
    last_seq = page.evaluate("subtitlerOverlay.state.seq")
    assert last_seq == 2

    silent.set()
    t0 = time.monotonic()
    room.sink.on_caption(caption(3, "Three, said while the line was silent.", kind="partial",
                                   committed="Three,"))
    room.sink.on_caption(caption(3, "Three, said while the line was silent."))
    page.wait_for_function("subtitlerOverlay.state.connects >= 2", timeout=15_000)
    waited = time.monotonic() - t0
    assert 4.5 <= waited <= 12, f"reconnected after {waited:.1f} s of silence (heartbeat timeout is 5 s)"
    assert hellos[0] == {"type": "hello", "langs": ["source"], "since": 0}
    assert hellos[1]["since"] == last_seq and hellos[1]["session"] == room.session_id
    wait_final(page, "source", "Three, said while the line was silent.")
    ids = [c["id"] for c in shown(page, "source")]
    assert ids == [1, 2, 3], f"missed or duplicated captions after resuming: {ids}"


def test_overlay_survives_a_server_restart(page):
    first, room1 = start_server()
    port = first.port
    second = None
    try:
        page.goto(base_url(first) + "/overlay.html?lang=en&size=40")
        wait_live(page)
        room1.sink.on_caption(caption(1, "Before the restart."))
        wait_final(page, "en", "Before the restart.")

        first.stop(drain=0.2)
        page.wait_for_function("document.body.dataset.conn === 'reconnecting'", timeout=5_000)
        # the discreet mark shows (after a short grace time, so quick reconnects do not flash)
        page.wait_for_function("getComputedStyle(document.getElementById('conn')).opacity > 0.95", timeout=5_000)
        assert page.text_content("#conn .label") == "reconnecting"
        assert shown(page, "en")[0]["text"] == "Before the restart."  # kept while disconnected
        page.evaluate(BACKDROP_JS)
        screenshot(page, "overlay-reconnecting.png")

        second, room2 = start_server(port)
        page.wait_for_function("subtitlerOverlay.state.connects >= 2", timeout=15_000)
        assert page.evaluate("subtitlerOverlay.state.session") == room2.session_id
        # A new session numbers from 1 again: the overlay starts over instead of skipping it.
        room2.sink.on_caption(caption(1, "After the restart."))
        wait_final(page, "en", "After the restart.")
        assert [c["text"] for c in shown(page, "en")] == ["After the restart."]
        page.wait_for_function("getComputedStyle(document.getElementById('conn')).opacity < 0.05", timeout=3_000)
    finally:
        first.stop(drain=0.2)
        if second is not None:
            second.stop(drain=0.2)


def test_screens_that_lose_their_server_together_spread_their_first_retry(page):
    """An edge that dies drops thousands of screens in one millisecond: each waits a random
    0.25–2 s before its first retry (a burst of handshakes would stall the survivor), while the
    operator's console, one client, comes back after the usual short back-off."""
    first, _ = start_server()
    try:
        page.goto(base_url(first) + "/overlay.html?lang=en")
        wait_live(page)
        page.evaluate("""() => {
            window.crowd = [];
            for (let i = 0; i < 40; i++) {
                const v = new subtitlerClient.Viewer({label: "screen " + i});
                v.start();
                window.crowd.push(v);
            }
            window.console1 = new subtitlerClient.Viewer({label: "console", spreadMs: 0});
            window.console1.start();
        }""")
        page.wait_for_function("crowd.every(v => v.state.conn === 'live') && console1.state.conn === 'live'",
                               timeout=10_000)
        first.stop(drain=0.2)
        page.wait_for_function("crowd.every(v => v.state.conn === 'reconnecting') && "
                               "console1.state.conn === 'reconnecting'", timeout=10_000)
        waits = page.evaluate("crowd.map(v => v.state.nextRetryMs)")
        assert 250 <= min(waits) and max(waits) <= 2000, waits
        assert max(waits) - min(waits) > 800, f"the screens would knock together: {sorted(waits)}"
        assert 400 <= page.evaluate("console1.state.nextRetryMs") <= 600
    finally:
        first.stop(drain=0.2)


def test_overlay_url_options(context, server, room):
    page = context.new_page()
    page.goto(base_url(server) + "/overlay.html")
    wait_live(page)
    opts = page.evaluate("subtitlerOverlay.options")
    assert (opts["langs"], opts["lines"], opts["size"], opts["pos"], opts["bg"], opts["fade"]) == \
        (["source"], 2, 48, "bottom", "transparent", 12)
    assert opts["server"] == f"ws://127.0.0.1:{server.port}/ws/view"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgba(0, 0, 0, 0)"
    assert page.evaluate("getComputedStyle(document.body).cursor") == "none"

    page = context.new_page()
    page.goto(base_url(server) + "/overlay.html?lang=zh,en,bad%20code&lines=3&size=40&bg=102030&pos=top"
                                 "&fade=1.5&font=DejaVu%20Serif&align=center")
    wait_live(page)
    assert page.evaluate("Array.from(document.querySelectorAll('.block')).map(b => b.dataset.lang)") == ["zh", "en"]
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(16, 32, 48)"
    line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.roll')).lineHeight)")
    height = page.evaluate("document.querySelector('.block').getBoundingClientRect().height")
    assert line == round(40 * 1.4) and 3 * line <= height <= 3.5 * line  # three lines, and no more
    assert page.evaluate("document.getElementById('captions').getBoundingClientRect().top") < 0.1 * VIEWPORT["height"]

    room.sink.on_caption(caption(1, "A long caption that wraps over more lines than the window "
                                      "holds, so that only its last three lines stay in view at "
                                      "this size, however long it goes on and on and on and on.",
                                   translations={"zh": "短"}))
    wait_final(page, "zh", "短")
    cap = page.locator(".block[data-lang=en] .cap").last
    assert cap.evaluate("c => getComputedStyle(c).fontFamily").startswith('"DejaVu Serif"')
    assert cap.evaluate("c => getComputedStyle(c).textAlign") == "center"
    assert cap.evaluate("c => getComputedStyle(c).fontSize") == "40px"
    # the block's height did not grow with the caption: lines beyond three roll out of view
    assert page.evaluate("document.querySelector('.block[data-lang=en]').getBoundingClientRect().height") == height
    assert page.evaluate("subtitlerOverlay.options.fade") == 1.5
    page.wait_for_function("document.querySelectorAll('.cap').length === 0", timeout=8_000)  # faded out


# -- the console ---------------------------------------------------------------------------------

def _read_wav(path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


@pytest.mark.slow
def test_console_asks_for_the_token_once_and_its_commands_take_effect(context, asr_base, speech):
    from subtitler.audio import PushSource
    from subtitler.config import Config
    from subtitler.engine import Session

    server, room = start_server()
    source = PushSource()
    sink = TranslatingSink(room.sink)
    session = Session(asr_base, source, [sink], Config().with_overrides({"asr.language": "en"}),
                      on_stats=room.update_stats)
    room.attach(session, source_languages=sorted(asr_base.languages))
    runner = threading.Thread(target=session.run, daemon=True)
    runner.start()
    feeding = threading.Event()
    feeding.set()

    def feed() -> None:  # the speech, at the pace it was spoken (as /ws/audio would bring it)
        audio, t0, block = _read_wav(speech["wav"]), time.monotonic(), 320
        for i in range(0, len(audio), block):
            if not feeding.is_set():
                return
            source.push(audio[i:i + block])
            time.sleep(max(0.0, t0 + (i + block) / 16000 - time.monotonic()))
    feeder = threading.Thread(target=feed, daemon=True)

    def until(predicate, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < end, "the command did not take effect"
            time.sleep(0.05)

    try:
        url = base_url(server)
        overlay = context.new_page()
        overlay.goto(url + "/overlay.html?lang=en,zh&lines=2&size=36&fade=120")
        wait_live(overlay)
        console = context.new_page()
        console.goto(url + "/console.html")

        # asked for the token; a wrong one is refused and asked again
        console.wait_for_selector("#token-dialog[open]")
        assert console.is_disabled("#btn-pause")
        console.fill("#token-input", "not-the-token")
        console.click("#token-submit")
        console.wait_for_function("document.getElementById('token-error').textContent.length > 0")
        assert console.evaluate("document.getElementById('token-dialog').open")
        console.fill("#token-input", TOKEN)
        console.click("#token-submit")
        console.wait_for_selector("#pill-control[data-state=live]")
        assert not console.evaluate("document.getElementById('token-dialog').open")
        # once: a reload (or a lost connection) does not ask again
        console.reload()
        console.wait_for_selector("#pill-control[data-state=live]")
        assert not console.evaluate("document.getElementById('token-dialog').open")
        assert console.is_enabled("#btn-pause") and console.is_enabled("#btn-clear")

        # pause / resume reach the session, and its status comes back to the console
        console.click("#btn-pause")
        until(lambda: session.paused)
        console.wait_for_function("subtitlerConsole.state.status && subtitlerConsole.state.status.paused === true")
        assert console.is_visible("#state-paused") and console.text_content("#btn-pause") == "Resume"
        console.click("#btn-pause")
        until(lambda: not session.paused)
        console.wait_for_function("subtitlerConsole.state.status.paused === false")
        assert not console.is_visible("#state-paused") and console.text_content("#btn-pause") == "Pause"

        # the source language
        console.select_option("#sel-language", "es")
        until(lambda: session.stats().language == "es")
        console.wait_for_function("document.getElementById('message').textContent.includes('Spanish')")
        console.select_option("#sel-language", "en")
        until(lambda: session.stats().language == "en")

        # the live transcript: every final in both languages; figures from the status
        feeder.start()
        feeder.join(timeout=30)
        until(lambda: session.policy.idle and sum(
            1 for c in sink.captions if c.kind == "final" and c.text.strip()) >= 2, timeout=30)
        finals = [c for c in sink.captions if c.kind == "final" and c.text.strip()]
        for c in finals:
            console.wait_for_function("""([id, t]) => { const e = document.querySelector(
                `#transcript .entry.final[data-id="${id}"] .text`); return e && e.textContent === t; }""",
                                      arg=[c.id, c.text])
            row = console.locator(f"#transcript .entry[data-id='{c.id}']")
            assert row.locator(".tr .txt").text_content() == zh(c.text)
        console.wait_for_function("Number(document.getElementById('fig-viewers').textContent) >= 2")
        assert console.text_content("#fig-dropped") == "0"
        assert console.text_content("#session") == room.session_id
        wait_final(overlay, "en", finals[-1].text)

        # clear empties every screen; the console keeps its transcript and marks the place
        console.click("#btn-clear")
        overlay.wait_for_function("document.querySelectorAll('.cap').length === 0", timeout=5_000)
        console.wait_for_selector("#transcript .divider")
        assert console.evaluate("document.querySelectorAll('#transcript .entry.final').length") == len(finals)
        screenshot(console, "console.png")
    finally:
        feeding.clear()
        source.end()
        session.stop()
        runner.join(timeout=30)
        server.stop(drain=0.2)
