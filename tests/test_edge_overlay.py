"""The overlay's list of servers (``server=ws://a,ws://b``) in a real headless Chromium, with a
real redis-server, the host and two ``subtitler edge`` processes; one edge is killed with SIGKILL
mid-stream and the page moves to the other without losing or repeating a caption."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from test_edge import HOST, RedisProcess, Talker, edge_process, host, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# client.js's Viewer given the same list, recording every event it hands to the page
RECORDER = """(urls) => {
  window.got = [];
  window.recorder = new subtitlerClient.Viewer({url: urls, event: function (m) {
    if (m.type === "caption" || m.type === "translation") window.got.push([m.seq, m.id, m.kind]);
  }});
  window.recorder.start();
}"""


def test_the_overlay_moves_to_the_next_edge_after_kill_9(tmp_path):
    redis = RedisProcess(tmp_path)
    try:
        with host(redis.url) as h, edge_process(redis.url) as (a, port_a), \
                edge_process(redis.url) as (b, port_b), sync_playwright() as p:
            link = h.rooms["hall"]
            wait_until(lambda: True)
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            servers = f"ws://{HOST}:{port_a}/rooms/hall,ws://{HOST}:{port_b}/rooms/hall"
            page.goto(f"http://{HOST}:{port_b}/rooms/hall/overlay.html?server={servers}&fade=0")
            page.wait_for_function("subtitlerOverlay.state.conn === 'live'", timeout=15_000)
            assert page.evaluate("subtitlerOverlay.state.server").startswith(f"ws://{HOST}:{port_a}/")
            page.evaluate(RECORDER, [f"ws://{HOST}:{port_a}/rooms/hall/ws/view",
                                     f"ws://{HOST}:{port_b}/rooms/hall/ws/view"])
            page.wait_for_function("recorder.state.conn === 'live'", timeout=15_000)
            with Talker(link, rate=10.0) as talker:
                wait_until(lambda: talker.n >= 10, what="captions")
                page.wait_for_function("window.got.length >= 10", timeout=15_000)
                os.kill(a.pid, signal.SIGKILL)
                page.wait_for_function(f"subtitlerOverlay.state.server.indexOf(':{port_b}/') > 0 && "
                                       f"subtitlerOverlay.state.conn === 'live'", timeout=20_000)
                page.wait_for_function(f"recorder.state.server.indexOf(':{port_b}/') > 0", timeout=20_000)
                start = talker.n
                wait_until(lambda: talker.n >= start + 10, what="captions after the move")
            last = link.channel.log.seq
            page.wait_for_function(f"recorder.state.seq >= {last} && subtitlerOverlay.state.seq >= {last}",
                                   timeout=15_000)
            got = page.evaluate("window.got")
            seqs = [s for s, _, _ in got]
            assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs), "a duplicate or a reordering"
            finals = [i for _, i, kind in got if kind == "final"]
            assert finals == list(range(1, talker.n + 1)), "a caption lost in the move"
            # the overlay shows the last caption, received from the edge it moved to
            text = page.inner_text("#captions")
            assert f"Utterance {talker.n}." in text
            browser.close()
    finally:
        redis.stop()
