"""The venue's pages in a real headless Chromium: the audience page (web/live.*), the venue page
(web/index.html, venue.*), the room pages under /rooms/NAME/, and web/client.js.

Nothing is mocked but the host behind /ws/venue (a ``FakeVenue`` that opens and closes rooms on
the real server): Debian's ``chromium`` driven by Playwright (never a downloaded browser), the
real ``subtitler.server.Server`` on 127.0.0.1 with two or more rooms, captions published into
each room's sink as the engine would. Screenshots are saved in ``test-artifacts/``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
VENUE_TOKEN = "venue-token-for-tests-9b2e"
HALL_TOKEN = "hall-token-for-tests-51c0"
FORUM_TOKEN = "forum-token-for-tests-a7d3"
PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True, "locale": "en-US", "color_scheme": "dark"}
DESKTOP = {"viewport": {"width": 1280, "height": 900}, "locale": "en-US"}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")


# -- helpers -------------------------------------------------------------------------------------

def caption(id: int, text: str, kind: str = "final", committed: str | None = None, lang: str = "en",
            translations: dict | None = None):
    from subtitler.captions import Caption

    if kind == "final":
        committed = text
    committed = committed or ""
    return Caption(id=id, seq=0, kind=kind, start=id * 3.0, end=id * 3.0 + 2.0, emitted=id * 3.0 + 2.5,
                   lang=lang, text=text, committed=committed, tentative=text[len(committed):].strip(),
                   translations=dict(translations or {}))


def stats(audio_seconds: float = 0.0, *, lag: float = 0.1, paused: bool = False, language: str = "en"):
    from subtitler.captions import SessionStats

    return SessionStats(audio_seconds=audio_seconds, lag=lag, dropped_frames=0, utterances=0, finals=0,
                        in_speech=False, level_db=-30.0, paused=paused, language=language)


def start_venue():
    from subtitler.config import Config
    from subtitler.server import Server

    config = dataclasses.replace(Config().server, host="127.0.0.1", port=0, token=VENUE_TOKEN)
    return Server(config).start()


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def screenshot(page, name: str, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


def lines(page) -> list[dict]:
    """What the audience page shows now, top to bottom: id, kind, text (as rendered), lang."""
    return page.evaluate("""Array.from(document.querySelectorAll('#feed .line')).map(l => (
        {id: Number(l.dataset.id), kind: l.dataset.kind, text: l.textContent, lang: l.lang}))""")


def texts(page) -> list[str]:
    return [line["text"] for line in lines(page)]


def wait_text(page, text: str, timeout: float = 10_000) -> None:
    page.wait_for_function("""(t) => Array.from(document.querySelectorAll('#feed .line.final'))
        .some(l => l.textContent === t)""", arg=text, timeout=timeout)


def wait_live(page, timeout: float = 10_000) -> None:
    page.wait_for_function("document.body.dataset.conn === 'live'", timeout=timeout)


def until(predicate, timeout: float = 10.0, what: str = "the condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"{what} did not happen in {timeout} s"
        time.sleep(0.05)


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _context(browser, **options):
    ctx = browser.new_context(**options)
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    return ctx, errors


@pytest.fixture
def phone(browser):
    ctx, errors = _context(browser, **PHONE)
    yield ctx
    ctx.close()
    assert not errors, f"JavaScript errors in the pages: {errors}"


@pytest.fixture
def desktop(browser):
    ctx, errors = _context(browser, **DESKTOP)
    yield ctx
    ctx.close()
    assert not errors, f"JavaScript errors in the pages: {errors}"


@pytest.fixture
def venue():
    """A venue of two rooms: 'hall' spoken in English, translated into Chinese and Spanish;
    'forum' spoken in Chinese, translated into English."""
    server = start_venue()
    hall = server.add_room("hall", title="Main hall", token=HALL_TOKEN, languages=["zh", "es"])
    forum = server.add_room("forum", title="Forum 2: 智能制造", token=FORUM_TOKEN, languages=["en"])
    hall.update_stats(stats(1.0, language="en"))
    forum.update_stats(stats(1.0, language="zh"))
    yield server, hall, forum
    server.stop(drain=0.2)


# -- the audience page ---------------------------------------------------------------------------

HALL = [
    ("Welcome to the main hall.", "欢迎来到主会场。", "Bienvenidos a la sala principal."),
    ("The first talk starts at nine.", "第一场演讲九点开始。", "La primera charla empieza a las nueve."),
    ("Please switch off your phones.", "请关闭您的手机。", "Por favor, apaguen sus teléfonos."),
]
FORUM = [("智能制造论坛现在开始。", "The smart manufacturing forum begins now.")]


def publish_hall(hall, start: int = 1, items=HALL) -> None:
    for i, (en, zh, es) in enumerate(items, start):
        hall.sink.on_caption(caption(i, en, lang="en", translations={"zh": zh, "es": es}))


def test_live_page_on_a_phone_shows_its_room_in_the_picked_language(phone, venue):
    server, hall, forum = venue
    page = phone.new_page()
    page.goto(url(server, "/rooms/hall/live.html?lang=zh"))
    wait_live(page)
    publish_hall(hall)
    forum.sink.on_caption(caption(1, FORUM[0][0], lang="zh", translations={"en": FORUM[0][1]}))
    wait_text(page, HALL[-1][1])

    # the hall's captions, in Chinese, oldest first; nothing of the forum
    assert texts(page) == [zh for _, zh, _ in HALL]
    assert all(line["lang"] == "zh" and line["kind"] == "final" for line in lines(page))
    assert FORUM[0][0] not in page.text_content("body") and FORUM[0][1] not in page.text_content("body")
    assert page.text_content("#title") == "Main hall"
    # the picker offers the room's languages: what is spoken and every translation
    options = page.evaluate("Array.from(document.querySelectorAll('#lang option')).map(o => o.value)")
    assert options[0] == "source" and {"en", "zh", "es"} <= set(options)
    assert page.input_value("#lang") == "zh"
    # made for a 360 px screen: nothing wider than it, controls big enough for a thumb
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 360
    for button in ("#smaller", "#bigger", "#theme"):
        box = page.locator(button).bounding_box()
        assert box["width"] >= 40 and box["height"] >= 40 and box["x"] + box["width"] <= 360
    screenshot(page, "live-phone-zh.png")

    # another language: the same captions at once, without a new connection
    page.select_option("#lang", "es")
    assert texts(page) == [es for _, _, es in HALL]
    page.select_option("#lang", "source")
    assert texts(page) == [en for en, _, _ in HALL]
    assert page.evaluate("subtitlerLive.state.connects") == 1
    assert "lang=source" in page.url  # a reload or a shared link keeps it

    # a partial in the spoken language grows in place; its final replaces it; a translation
    # that comes after its final fills the line in Chinese
    hall.sink.on_caption(caption(4, "And now our first speaker", kind="partial", committed="And now"))
    page.wait_for_function("document.querySelector('#feed .line.partial') !== null")
    hall.sink.on_caption(caption(4, "And now our first speaker, Dr. Li.", lang="en", translations={"es": "Y ahora"}))
    wait_text(page, "And now our first speaker, Dr. Li.")
    assert [line["id"] for line in lines(page)] == [1, 2, 3, 4]
    page.select_option("#lang", "zh")
    page.wait_for_selector("#typing:not([hidden])")  # its Chinese is still to come
    screenshot(page, "live-phone-typing.png")
    hall.sink.on_translation(4, "zh", "现在请我们的第一位演讲者李博士。")
    wait_text(page, "现在请我们的第一位演讲者李博士。")
    assert page.is_hidden("#typing")

    # caption text is text, never markup
    hall.sink.on_caption(caption(5, '<img src=x onerror="window.__pwned=1"><b>bold</b>',
                                 translations={"zh": "<script>window.__pwned=2</script>中文"}))
    wait_text(page, "<script>window.__pwned=2</script>中文")
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('#feed :is(img, b, script)').length") == 0


def test_live_page_follows_the_newest_line_unless_the_reader_scrolled_back(phone, venue):
    server, hall, _ = venue
    page = phone.new_page()
    page.goto(url(server, "/rooms/hall/live.html?lang=en"))
    wait_live(page)
    for i in range(1, 31):
        hall.sink.on_caption(caption(i, f"Sentence number {i} of a long talk, long enough to wrap on a phone."))
    wait_text(page, "Sentence number 30 of a long talk, long enough to wrap on a phone.")

    def bottom_visible() -> bool:
        return page.evaluate("""(() => { const l = document.querySelector('#feed .line:last-of-type');
            const r = l.getBoundingClientRect(); return r.bottom <= innerHeight + 1 && r.top >= 0; })()""")

    page.wait_for_function("document.scrollingElement.scrollTop > 0")
    assert bottom_visible()
    assert page.is_hidden("#to-live")
    # the header stays in reach while reading
    assert page.locator(".bar").bounding_box()["y"] == 0

    # reading back: new lines do not pull the page down; a button brings it back
    page.evaluate("window.scrollBy(0, -1500)")
    page.wait_for_selector("#to-live:not([hidden])")
    top = page.evaluate("document.scrollingElement.scrollTop")
    hall.sink.on_caption(caption(31, "A line that comes while reading back."))
    wait_text(page, "A line that comes while reading back.")
    assert page.evaluate("document.scrollingElement.scrollTop") == top
    screenshot(page, "live-phone-reading-back.png")
    page.click("#to-live")
    assert bottom_visible()
    hall.sink.on_caption(caption(32, "And the page follows again."))
    wait_text(page, "And the page follows again.")
    page.wait_for_function("""(() => { const l = document.querySelector('#feed .line:last-of-type');
        return l.getBoundingClientRect().bottom <= innerHeight + 1; })()""")


def test_live_page_remembers_text_size_theme_and_language(phone, venue):
    server, hall, _ = venue
    publish_hall(hall)
    page = phone.new_page()
    page.goto(url(server, "/rooms/hall/live.html"))
    wait_live(page)
    wait_text(page, HALL[-1][0])  # no choice yet: the browser's English, which the room speaks

    def size() -> float:
        return page.evaluate("parseFloat(getComputedStyle(document.querySelector('#feed .line')).fontSize)")

    def background() -> str:
        return page.evaluate("getComputedStyle(document.body).backgroundColor")

    before, dark = size(), background()
    assert sum(map(int, dark[4:-1].split(","))) < 150  # the phone's dark mode
    page.click("#bigger")
    page.click("#bigger")
    assert size() > before
    page.click("#theme")
    light = background()
    assert light != dark
    # light means light: a bright background and dark text
    assert sum(map(int, light[4:-1].split(","))) > 600
    page.select_option("#lang", "es")
    wait_text(page, HALL[-1][2])
    screenshot(page, "live-phone-light-es.png")

    page.goto(url(server, "/rooms/hall/live.html"))  # as a reader coming back later
    wait_text(page, HALL[-1][2])
    assert page.input_value("#lang") == "es"
    big = size()
    assert big > before and background() == light
    page.click("#smaller")
    assert size() < big
    # each room remembers its own language: the forum page does not take the hall's
    page.goto(url(server, "/rooms/forum/live.html?lang=en"))
    wait_live(page)
    assert page.input_value("#lang") == "en"


def test_live_page_resumes_after_a_server_side_disconnect_without_duplicates(phone, venue):
    """The server drops the page's connection mid-talk: the page reconnects on its own with
    ``since`` = the last seq it drew (and its session), gets what it missed once, and shows
    every line exactly once."""
    server, hall, _ = venue
    hellos: list[dict] = []

    def route(ws):  # only to read what the page says; everything passes through
        upstream = ws.connect_to_server()

        def from_page(message):
            if isinstance(message, str) and '"hello"' in message:
                hellos.append(json.loads(message))
            upstream.send(message)
        ws.on_message(from_page)
        upstream.on_message(lambda message: ws.send(message))
        upstream.on_close(lambda code, reason: ws.close(code=code, reason=reason))

    page = phone.new_page()
    page.route_web_socket(lambda u: u.endswith("/rooms/hall/ws/view"), route)
    page.goto(url(server, "/rooms/hall/live.html?lang=zh"))
    wait_live(page)
    publish_hall(hall, items=HALL[:2])
    wait_text(page, HALL[1][1])
    seq = page.evaluate("subtitlerLive.state.seq")

    # the server closes the page's connection (as it does a screen that fell too far behind)
    for ws in list(hall.connections):
        server.run_blocking(ws.close(1013, "try again later"), 5)
    page.wait_for_function("document.body.dataset.conn === 'reconnecting'", timeout=5_000)
    assert "reconnecting" in page.text_content("#conn")
    screenshot(page, "live-phone-reconnecting.png")
    publish_hall(hall, start=3, items=HALL[2:])  # said while the phone was away
    page.wait_for_function("subtitlerLive.state.connects >= 2", timeout=15_000)
    wait_text(page, HALL[2][1])
    assert hellos[0]["since"] == 0
    assert hellos[1]["since"] == seq and hellos[1]["session"] == hall.session_id
    assert texts(page) == [zh for _, zh, _ in HALL]
    assert [line["id"] for line in lines(page)] == [1, 2, 3]
    wait_live(page)


def test_live_page_starts_over_when_the_room_restarts(phone, venue):
    """A room closed and opened again is a new session whose ids start at 1: the page clears what
    it had instead of mixing the two talks."""
    server, hall, _ = venue
    page = phone.new_page()
    page.goto(url(server, "/rooms/hall/live.html?lang=en"))
    wait_live(page)
    publish_hall(hall)
    wait_text(page, HALL[-1][0])
    server.remove_room("hall")
    page.wait_for_function("document.body.dataset.conn === 'reconnecting'", timeout=5_000)
    assert texts(page) == [en for en, _, _ in HALL]  # kept while away
    again = server.add_room("hall", title="Main hall", token=HALL_TOKEN, languages=["zh", "es"])
    page.wait_for_function("subtitlerLive.state.connects >= 2", timeout=15_000)
    again.sink.on_caption(caption(1, "The afternoon session begins."))
    wait_text(page, "The afternoon session begins.")
    assert texts(page) == ["The afternoon session begins."]


def test_chinese_captions_render_with_a_cjk_font(phone, venue):
    server, hall, forum = venue
    page = phone.new_page()
    page.goto(url(server, "/rooms/forum/live.html?lang=zh"))
    wait_live(page)
    forum.sink.on_caption(caption(1, "各位来宾，欢迎参加二〇二六智能制造论坛。今天我们讨论工业机器人的未来。", lang="zh",
                                  translations={"en": "Guests, welcome to the 2026 smart manufacturing forum."}))
    wait_text(page, "各位来宾，欢迎参加二〇二六智能制造论坛。今天我们讨论工业机器人的未来。")
    cdp = page.context.new_cdp_session(page)
    doc = cdp.send("DOM.getDocument")
    node = cdp.send("DOM.querySelector", {"nodeId": doc["root"]["nodeId"], "selector": "#feed .line .c"})
    cdp.send("CSS.enable")
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})["fonts"]
    families = {f["familyName"] for f in fonts}
    # every glyph drawn from a CJK face, none as a missing-glyph box from a Latin one
    assert families and all("CJK" in f for f in families), families
    title_fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": cdp.send(
        "DOM.querySelector", {"nodeId": doc["root"]["nodeId"], "selector": "#title"})["nodeId"]})["fonts"]
    assert any("CJK" in f["familyName"] for f in title_fonts)  # the room's Chinese title too
    screenshot(page, "live-phone-chinese.png")


# -- the room pages under /rooms/NAME/ ---------------------------------------------------------

def test_overlay_and_console_under_a_room_path_talk_to_that_room_only(desktop, venue):
    server, hall, forum = venue
    overlay = desktop.new_page()
    overlay.goto(url(server, "/rooms/forum/overlay.html?lang=en,zh&size=36&bg=101820"))
    overlay.wait_for_function("document.body.dataset.conn === 'live'")
    assert overlay.evaluate("subtitlerOverlay.options.server") == f"ws://127.0.0.1:{server.port}/rooms/forum/ws/view"
    publish_hall(hall)
    forum.sink.on_caption(caption(1, FORUM[0][0], lang="zh", translations={"en": FORUM[0][1]}))
    overlay.wait_for_function("""(t) => Array.from(document.querySelectorAll('.block[data-lang=en] .cap'))
        .some(c => c.textContent === t)""", arg=FORUM[0][1])
    assert HALL[0][0] not in overlay.text_content("#captions")
    assert overlay.text_content(".block[data-lang=zh]") == FORUM[0][0]

    # the hall's console with the hall's token; its phones card shows a QR code per language
    console = desktop.new_page()
    console.goto(url(server, f"/rooms/hall/console.html#token={HALL_TOKEN}"))
    console.wait_for_selector("#pill-control[data-state=live]")
    console.wait_for_function("""() => document.querySelectorAll('#phones img').length >= 3 &&
        Array.from(document.querySelectorAll('#phones img')).every(i => i.complete && i.naturalWidth > 0)""")
    srcs = console.evaluate("Array.from(document.querySelectorAll('#phones img')).map(i => i.getAttribute('src'))")
    assert {"qr.svg?lang=zh", "qr.svg?lang=es", "qr.svg?lang=en"} <= set(srcs)
    links = console.evaluate("Array.from(document.querySelectorAll('#phones a')).map(a => a.href)")
    assert url(server, "/rooms/hall/live.html?lang=zh") in links
    console.wait_for_function("(t) => document.getElementById('transcript').textContent.includes(t)", arg=HALL[0][0])
    assert FORUM[0][0] not in console.text_content("#transcript")
    console.wait_for_function("document.getElementById('room').textContent === 'Main hall (hall)'")
    screenshot(console, "console-room-hall.png")
    console.locator("#phones").scroll_into_view_if_needed()
    console.locator(".side").screenshot(path=str(ARTIFACTS / "console-room-hall-phones.png"))

    # the hall's token opens nothing of the forum: its console asks for a token again
    other = desktop.new_page()
    other.goto(url(server, "/rooms/forum/console.html"))
    other.wait_for_selector("#token-dialog[open]")  # no token kept for this room
    other.fill("#token-input", HALL_TOKEN)
    other.click("#token-submit")
    other.wait_for_function("document.getElementById('token-error').textContent.length > 0")
    assert other.is_disabled("#btn-pause")
    other.fill("#token-input", FORUM_TOKEN)
    other.click("#token-submit")
    other.wait_for_selector("#pill-control[data-state=live]")
    # and the hall's console still holds its own token
    console.reload()
    console.wait_for_selector("#pill-control[data-state=live]")
    assert not console.evaluate("document.getElementById('token-dialog').open")


def test_legacy_paths_serve_the_default_room(phone):
    server = start_venue()
    try:
        main = server.add_room("main", title="Room", languages=["zh"], default=True)
        server.add_room("other", languages=["en"])
        page = phone.new_page()
        page.goto(url(server, "/live.html?lang=zh"))
        wait_live(page)
        main.sink.on_caption(caption(1, "Hello.", translations={"zh": "你好。"}))
        wait_text(page, "你好。")
        assert page.evaluate("subtitlerClient.wsUrl('view')") == f"ws://127.0.0.1:{server.port}/ws/view"
    finally:
        server.stop(drain=0.2)


# -- the venue page ------------------------------------------------------------------------------

def room_card(page, name: str) -> dict:
    return page.evaluate("""(name) => { const c = document.querySelector(`.room[data-room="${name}"]`);
        if (!c) return null;
        return {title: c.querySelector('h2').textContent, state: c.dataset.state,
                stateText: c.querySelector('.state').textContent,
                langs: Array.from(c.querySelectorAll('tbody tr')).map(r => r.dataset.lang),
                overlay: Array.from(c.querySelectorAll('a.overlay-link')).map(a => a.getAttribute('href')),
                live: Array.from(c.querySelectorAll('a.live-link')).map(a => a.getAttribute('href')),
                console: c.querySelector('a.console-link').getAttribute('href'),
                qr: Array.from(c.querySelectorAll('.qrs img')).map(i => (
                    {src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0}))}; }""", name)


def test_venue_page_lists_every_room_with_its_state_languages_and_qr_codes(desktop, venue):
    server, hall, forum = venue
    annex = server.add_room("annex", title="Annex", languages=["en"])
    studio = server.add_room("studio", title="", languages=[])
    annex.update_stats(stats(5.0, lag=6.5, language="fr"))
    forum.update_stats(stats(2.0, paused=True, language="zh"))
    feeding = threading.Event()

    def feed() -> None:  # the hall hears audio all along: live
        t = 1.0
        while not feeding.is_set():
            t += 0.5
            hall.update_stats(stats(t, language="en"))
            time.sleep(0.5)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        page = desktop.new_page()
        page.goto(url(server, "/"))
        page.wait_for_function("document.querySelectorAll('.room').length === 4")
        page.wait_for_function("""Array.from(document.querySelectorAll('.qrs img'))
            .every(i => i.complete && i.naturalWidth > 0)""")
        names = page.evaluate("Array.from(document.querySelectorAll('.room')).map(r => r.dataset.room)")
        assert sorted(names) == ["annex", "forum", "hall", "studio"]

        card = room_card(page, "hall")
        assert card["title"] == "Main hall" and card["state"] == "live" and card["stateText"] == "live"
        assert card["langs"] == ["source", "en", "zh", "es"]
        assert card["overlay"] == ["/rooms/hall/overlay.html", "/rooms/hall/overlay.html?lang=en",
                                   "/rooms/hall/overlay.html?lang=zh", "/rooms/hall/overlay.html?lang=es"]
        assert card["live"] == ["/rooms/hall/live.html", "/rooms/hall/live.html?lang=en",
                                "/rooms/hall/live.html?lang=zh", "/rooms/hall/live.html?lang=es"]
        assert card["console"] == "/rooms/hall/console.html"
        assert [q["src"] for q in card["qr"]] == ["/rooms/hall/qr.svg?lang=en", "/rooms/hall/qr.svg?lang=zh",
                                                  "/rooms/hall/qr.svg?lang=es"]
        assert all(q["loaded"] for q in card["qr"])

        forum_card = room_card(page, "forum")
        assert forum_card["state"] == "paused" and forum_card["langs"] == ["source", "zh", "en"]
        annex_card = room_card(page, "annex")
        assert annex_card["state"] == "lagging" and annex_card["stateText"] == "lagging 6.5 s"
        studio_card = room_card(page, "studio")
        assert studio_card["state"] == "idle" and studio_card["title"] == "studio"
        # a room with no language to name: one QR code, of the page as spoken
        assert [q["src"] for q in studio_card["qr"]] == ["/rooms/studio/qr.svg"] and studio_card["qr"][0]["loaded"]
        # states are told apart at a glance, not only by their word
        colours = page.evaluate("""Object.fromEntries(Array.from(document.querySelectorAll('.room'))
            .map(r => [r.dataset.state, getComputedStyle(r.querySelector('.state')).backgroundColor]))""")
        assert len(set(colours.values())) == 4, colours
        screenshot(page, "venue.png", full_page=True)

        # the page follows the venue: a room resumes, a room closes
        forum.update_stats(stats(3.0, paused=False, language="zh"))
        page.wait_for_function("document.querySelector('.room[data-room=forum]').dataset.state !== 'paused'",
                               timeout=5_000)
        server.remove_room("studio")
        page.wait_for_function("document.querySelector('.room[data-room=studio]') === null", timeout=5_000)

        # an overlay address with options, for a room picked from the venue's
        page.click(".builder-card summary")
        page.select_option("#builder-room", "forum")
        page.fill("#builder [name=lang]", "en,zh")
        page.fill("#builder [name=size]", "40")
        assert page.input_value("#url") == url(server, "/rooms/forum/overlay.html?lang=en,zh&size=40")

        # a phone link opens the audience page in that language, a screen link the overlay
        with desktop.expect_page() as opened:
            page.click(".room[data-room=hall] tr[data-lang=zh] a.live-link")
        live = opened.value
        wait_live(live)
        assert live.input_value("#lang") == "zh"
        with desktop.expect_page() as opened:
            page.click(".room[data-room=hall] tr[data-lang=es] a.overlay-link")
        overlay = opened.value
        overlay.wait_for_function("document.body.dataset.conn === 'live'")
        assert overlay.evaluate("subtitlerOverlay.options.langs") == ["es"]
    finally:
        feeding.set()
        feeder.join(timeout=5)


def test_venue_poster_shows_one_rooms_qr_codes_large(desktop, venue):
    server, _, _ = venue
    page = desktop.new_page()
    page.goto(url(server, "/?poster=hall"))
    page.wait_for_function("""document.querySelectorAll('#poster-codes img').length === 3 &&
        Array.from(document.querySelectorAll('#poster-codes img')).every(i => i.complete && i.naturalWidth > 0)""")
    assert page.text_content("#poster-title") == "Main hall"
    assert page.is_hidden(".page")
    sizes = page.evaluate("Array.from(document.querySelectorAll('#poster-codes img')).map(i => i.getBoundingClientRect().width)")
    assert all(s >= 200 for s in sizes), sizes  # scannable across a room
    labels = page.evaluate("Array.from(document.querySelectorAll('#poster-codes figcaption .name')).map(n => n.textContent)")
    assert labels == ["English", "中文", "Español"]  # each in its own language
    screenshot(page, "venue-poster.png")


class FakeVenue:
    """The host's side of /ws/venue: opens rooms on the real server, up to a capacity."""

    def __init__(self, server, max_rooms: int):
        self.server, self.max_rooms = server, max_rooms
        self.opened: list[tuple[str, dict]] = []
        self.closed: list[str] = []

    def open_room(self, name: str, options: dict) -> dict:
        if len(self.server.rooms) >= self.max_rooms:
            raise ValueError(f"the venue is at capacity ({self.max_rooms} rooms): close a room before opening "
                             f"'{name}'")
        link = self.server.add_room(name, title=options.get("title", ""), token=options.get("token"),
                                    languages=options.get("targets", ()))
        link.update_stats(stats(0.0, language=options.get("language", "auto")))
        self.opened.append((name, options))
        return {"name": link.name, "token": link.token, "title": link.title}

    def close_room(self, name: str) -> None:
        if name not in self.server.rooms:
            raise ValueError(f"no room named '{name}'")
        self.server.remove_room(name)
        self.closed.append(name)

    def capacity(self) -> dict:
        n = len(self.server.rooms)
        return {"rooms": n, "max_rooms": self.max_rooms, "overloaded": False}


def test_venue_operator_opens_and_closes_rooms(desktop, venue):
    server, _, _ = venue
    fake = FakeVenue(server, max_rooms=3)
    server.set_venue(fake)
    page = desktop.new_page()

    # without the token: the rooms, but no controls
    page.goto(url(server, "/"))
    page.wait_for_function("document.querySelectorAll('.room').length === 2")
    assert page.is_hidden("#operator") and page.is_hidden(".room[data-room=hall] button.danger")

    # a wrong token is refused, plainly
    page.goto(url(server, "/#token=not-the-venue-token"))
    page.wait_for_function("document.getElementById('operator-message').textContent.includes('refused')")
    assert page.is_hidden("#operator")

    page.goto(url(server, f"/#token={VENUE_TOKEN}"))
    page.wait_for_selector("#operator:not([hidden])")
    assert "token" not in page.url  # out of sight, out of history
    page.wait_for_function("document.getElementById('capacity').textContent.includes('2 / 3')")
    # the operator's console links carry the venue token, which opens every room
    assert page.get_attribute(".room[data-room=forum] a.console-link", "href") == \
        f"/rooms/forum/console.html#token={VENUE_TOKEN}"

    # a bad name is caught before it is sent
    page.fill("#open-form [name=name]", "Annex Room!")
    page.click("#btn-open")
    assert "room name" in page.text_content("#operator-message")
    assert fake.opened == []

    page.fill("#open-form [name=name]", "annex")
    page.fill("#open-form [name=title]", "Annex B")
    page.fill("#open-form [name=language]", "en")
    page.fill("#open-form [name=targets]", "zh, es")
    page.fill("#open-form [name=token]", "annex-token-1234")
    page.click("#btn-open")
    page.wait_for_selector(".room[data-room=annex]")
    assert fake.opened == [("annex", {"title": "Annex B", "language": "en", "targets": ["zh", "es"],
                                      "token": "annex-token-1234"})]
    page.wait_for_function("document.getElementById('operator-message').textContent.includes(\"'annex' is open\")")
    assert page.get_attribute("#operator-message a", "href") == "/rooms/annex/console.html#token=annex-token-1234"
    assert room_card(page, "annex")["title"] == "Annex B"
    page.wait_for_function("""document.querySelectorAll('.room[data-room=annex] .qrs img').length === 3 &&
        Array.from(document.querySelectorAll('.room[data-room=annex] .qrs img')).every(i => i.naturalWidth > 0)""")

    # over capacity: refused, and the page says why
    page.fill("#open-form [name=name]", "overflow")
    page.click("#btn-open")
    page.wait_for_function("document.getElementById('operator-message').classList.contains('error')")
    message = page.text_content("#operator-message")
    assert "overflow" in message and "capacity" in message
    assert page.query_selector(".room[data-room=overflow]") is None
    screenshot(page, "venue-operator.png", full_page=True)

    # closing takes a second click, then the room goes
    page.click(".room[data-room=annex] button.danger")
    assert page.text_content(".room[data-room=annex] button.danger") == "Close 'annex'?"
    assert fake.closed == []
    page.click(".room[data-room=annex] button.danger")
    page.wait_for_selector(".room[data-room=annex]", state="detached")
    assert fake.closed == ["annex"] and "annex" not in server.rooms
    page.wait_for_function("document.getElementById('operator-message').textContent.includes(\"'annex' is closed\")")


# -- client.js -----------------------------------------------------------------------------------

CODES = ["en", "EN", "zh", "yue", "zh-Hant", "zh_Hant", "zho_Hant", "pt-BR", "sr-Latn-RS", "en-US-x1-ab",
         "de-CH-1901", "es-419", "epo", "a", "e", "english", "e1", "zh-", "zh--Hant", "-zh", "zh-Hant-", "zh-H",
         "zh-toolongtag", "zh-a-b-c", "zh-Hant-TW-abc-def", "zh Hant", " en", "en ", "en\n", "中文", "ä", "ss",
         "", "*", "source", "auto", "zh-Hant\u0000", "en-ünï", "x-yz", "iw", "ZH_hant_tw"]


def test_client_language_rule_is_langcodes(desktop, venue):
    from subtitler.langcodes import canonical, is_language_code, same_language

    server, _, _ = venue
    page = desktop.new_page()
    page.goto(url(server, "/rooms/hall/live.html"))
    got = page.evaluate("(codes) => codes.map(c => subtitlerClient.isLanguageCode(c))", CODES)
    assert dict(zip(CODES, got)) == {c: is_language_code(c) for c in CODES}
    assert sum(got) >= 12 and not all(got)  # both kinds are in the list
    good = [c for c in CODES if is_language_code(c)]
    assert page.evaluate("(codes) => codes.map(c => subtitlerClient.canonical(c))", good) == [canonical(c) for c in good]
    pairs = [(a, b) for a in good for b in good]
    assert page.evaluate("(pairs) => pairs.map(([a, b]) => subtitlerClient.sameLanguage(a, b))", pairs) == \
        [same_language(a, b) for a, b in pairs]
    # not a string: never a language
    assert page.evaluate("[null, undefined, 12, ['en'], {}].map(subtitlerClient.isLanguageCode)") == [False] * 5
    # the overlay takes the same rule for its ?lang= list
    overlay = desktop.new_page()
    overlay.goto(url(server, "/rooms/hall/overlay.html?lang=zh-Hant-TW-abc-def,zh_Hant,en-US-x1-ab,e1"))
    assert overlay.evaluate("subtitlerOverlay.options.langs") == ["zh_Hant", "en-US-x1-ab"]
