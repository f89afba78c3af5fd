"""The terminal display with Chinese: the partial line is measured in display columns, so a
long Chinese partial never wraps and leaves rows of debris behind. Checked on a real VT100
emulator (pyte) of a given width, fed the exact bytes the display writes."""

from __future__ import annotations

import io

import pyte
import pytest

from subtitler.captions import Caption
from subtitler.cues import display_width
from subtitler.display import TerminalDisplay, fit_tail

PARTIALS = ["各位来宾", "各位来宾，女士们，先生们", "各位来宾，女士们，先生们，大家上午好！欢迎来到第七届中国国际智能产业博览会",
            "各位来宾，女士们，先生们，大家上午好！欢迎来到第七届中国国际智能产业博览会，今天我们在重庆相聚"]
FINAL = "各位来宾，女士们，先生们，大家上午好！欢迎来到第七届中国国际智能产业博览会，今天我们在重庆相聚。"


class Terminal(io.StringIO):
    """What the display writes, played on an emulated terminal of ``columns`` × 10."""

    def __init__(self, columns: int):
        super().__init__()
        self.screen = pyte.Screen(columns, 10)
        self.stream = pyte.Stream(self.screen)

    def write(self, s: str) -> int:
        self.stream.feed(s.replace("\n", "\r\n"))  # a tty's output processing (onlcr)
        return super().write(s)

    def isatty(self) -> bool:
        return True

    def rows(self) -> list[str]:
        return [row.rstrip() for row in self.screen.display]


def caption(kind: str, text: str, seq: int) -> Caption:
    return Caption(1, seq, kind, 62.0, 70.0, 70.5, "zh", text)


@pytest.mark.parametrize("columns", [30, 41, 80])
def test_a_chinese_partial_rewrites_one_row_and_leaves_no_debris(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    term = Terminal(columns)
    display = TerminalDisplay(term, live=True)
    for seq, text in enumerate(PARTIALS, 1):
        display.on_caption(caption("partial", text, seq))
        rows = [r for r in term.rows() if r]
        assert len(rows) == 1, rows  # one row: nothing wrapped
        assert display_width(rows[0]) <= columns - 1
        assert rows[0].startswith("[01:02] ")
        shown = rows[0].removeprefix("[01:02] ")
        assert text.endswith(shown.removeprefix("…"))  # the newest words are the ones shown
    display.on_caption(caption("final", FINAL, 9))
    rows = [r for r in term.rows() if r]
    # the final scrolls (and may wrap: it stays); no trace of any partial is left
    assert "".join(rows).replace(" ", "") == ("[01:02]" + FINAL)
    display.on_caption(caption("partial", "下面请", 10))
    assert [r for r in term.rows() if r][-1] == "[01:02] 下面请"


def test_fit_tail_measures_columns_not_characters():
    assert fit_tail("大家好", 6) == "大家好"
    assert fit_tail("大家上午好", 6) == "…午好"  # "…" (1) + two characters (4) fit in 6
    assert display_width(fit_tail("一二三四五六七八九十", 9)) <= 9
    assert fit_tail("abcdef", 4) == "…def"
    assert fit_tail("ab重庆", 5) == "…重庆"
