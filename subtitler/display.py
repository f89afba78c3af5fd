"""The terminal as a sink: the partial caption rewrites one line in place, finals scroll.

The partial's line is measured in display columns, not characters: a CJK character takes two.
A line wider than the terminal wraps, and ``CLEAR_LINE`` then clears only its last row, so the
next rewrite would leave the wrapped rows behind as debris. The partial is cut to fit from the
left ("…" + its newest words), never in the middle of a character.
"""

from __future__ import annotations

import shutil
import sys
import threading
from typing import TextIO

from .captions import Caption
from .cues import char_width, display_width

DIM, BOLD, RESET, CLEAR_LINE = "\x1b[2m", "\x1b[1m", "\x1b[0m", "\r\x1b[2K"


def fit_tail(text: str, columns: int) -> str:
    """``text`` if it fits in ``columns`` display columns, else "…" and as much of its end as
    fits beside it ("…会议现在开始" rather than a line that wraps)."""
    if display_width(text) <= columns:
        return text
    room, i = columns - 1, len(text)  # "…" takes one column
    while i > 0 and char_width(text[i - 1]) <= room:
        room -= char_width(text[i - 1])
        i -= 1
    while i < len(text) and char_width(text[i]) == 0:  # not a combining mark without its letter
        i += 1
    return "…" + text[i:]


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
                stamp = f"[{clock(caption.start)}] "
                # One column spare: a line that fills the last column wraps on some terminals.
                room = max(8, shutil.get_terminal_size((100, 20)).columns - display_width(stamp) - 1)
                text = fit_tail(" ".join(caption.text.split()), room)
                self.stream.write(f"{CLEAR_LINE}{DIM}{stamp}{text}{RESET}")
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
