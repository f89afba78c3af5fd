"""The terminal as a sink: the partial caption rewrites one line in place, finals scroll."""

from __future__ import annotations

import shutil
import sys
import threading
from typing import TextIO

from .captions import Caption

DIM, BOLD, RESET, CLEAR_LINE = "\x1b[2m", "\x1b[1m", "\x1b[0m", "\r\x1b[2K"


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class TerminalDisplay:
    def __init__(self, stream: TextIO = sys.stdout, live: bool | None = None):
        self.stream = stream
        self.live = stream.isatty() if live is None else live  # rewrite in place only on a terminal
        self._lock = threading.Lock()
        self._partial_shown = False

    def on_caption(self, caption: Caption) -> None:
        with self._lock:
            if caption.is_final:
                if self._partial_shown:
                    self.stream.write(CLEAR_LINE)
                    self._partial_shown = False
                if caption.text:
                    stamp = f"[{clock(caption.start)}]"
                    if self.live:
                        stamp = BOLD + stamp + RESET
                    self.stream.write(f"{stamp} {caption.text}\n")
            elif self.live:
                width = shutil.get_terminal_size((100, 20)).columns - 10
                text = caption.text if len(caption.text) <= width else "…" + caption.text[-width + 1:]
                self.stream.write(f"{CLEAR_LINE}{DIM}[{clock(caption.start)}] {text}{RESET}")
                self._partial_shown = True
            self.stream.flush()

    def message(self, text: str) -> None:
        """A status line that must not collide with the partial being rewritten."""
        with self._lock:
            if self._partial_shown:
                self.stream.write(CLEAR_LINE)
                self._partial_shown = False
            self.stream.write(text + "\n")
            self.stream.flush()
