"""The room's event log and the wire format of its messages (subtitler/eventlog.py), pure:
no server. The same behaviour through real sockets is in test_server.py."""

from __future__ import annotations

import json

import pytest

from subtitler.eventlog import EventLog, normalize_langs
from subtitler.protocol import ProtocolError, parse_message, text_frame


def test_history_keeps_every_language_of_the_last_finals():
    """With N target languages a final brings N translation events: the log keeps room for
    them, so a late screen still gets the last `history` finals with all their translations."""
    langs = [f"l{i}" for i in range(8)]
    log = EventLog(history=50, languages=len(langs))
    for cid in range(1, 81):
        log.caption({"type": "caption", "id": cid, "kind": "final", "text": f"c{cid}"})
        for lang in langs:
            log.translation(cid, lang, f"{lang} {cid}")
    events = log.after(0)
    finals = [e.id for e in events if e.type == "caption"]
    assert finals == list(range(31, 81))
    assert all(sum(1 for e in events if e.type == "translation" and e.id == cid) == len(langs) for cid in finals)


@pytest.mark.parametrize("message, code", [
    (b"\x00\x01", "bad_message"),  # binary outside /ws/audio
    ("{not json", "bad_json"),
    ("[" * 100_000, "bad_json"),  # nested past the C stack
    ('["hello"]', "bad_message"),
    ('{"type": 3}', "bad_message"),
])
def test_a_bad_client_message_is_a_protocol_error_never_a_crash(message, code):
    with pytest.raises(ProtocolError) as e:
        parse_message(message)
    assert e.value.code == code and e.value.message


def test_language_selections():
    assert normalize_langs(None) is None and normalize_langs(["es", "*"]) is None
    # compared as langcodes compares codes: zh_Hant is zh-Hant
    assert normalize_langs(["zh_Hant", "source"]) == frozenset({"zh-hant", "source"})
    assert normalize_langs(["pt-BR", "yue", "zho_Hant"]) == frozenset({"pt-br", "yue", "zho-hant"})
    for bad in ([], "es", ["es"] * 17, ["<script>"], [3], ["e"], ["english-language"], [["es"]]):
        with pytest.raises(ProtocolError, match="language codes"):
            normalize_langs(bad)


@pytest.mark.parametrize("size", [5, 125, 126, 65535, 65536])
def test_text_frames_follow_rfc_6455_lengths(size):
    data = json.dumps({"t": "x" * size}).encode()[:size]
    frame = text_frame(data)
    assert frame[0] == 0x81 and frame.endswith(data)
    n = frame[1]
    length = n if n < 126 else int.from_bytes(frame[2:4] if n == 126 else frame[2:10], "big")
    assert length == size and len(frame) == size + {True: 2, False: 4 if n == 126 else 10}[n < 126]


def test_a_selection_gets_translations_whatever_the_separator_or_case():
    """A screen that asked for zh_Hant gets the zh-Hant translation, alone and inside a caption."""
    log = EventLog(history=5)
    caption, _ = log.caption({"type": "caption", "id": 1, "kind": "final", "text": "Hi",
                              "translations": {"zh-Hant": "嗨", "es": "Hola"}})
    late = log.translation(1, "ZH-hant", "你好")
    other = log.translation(1, "fr", "Salut")
    langs = normalize_langs(["zh_Hant"])
    assert json.loads(caption.wire(langs))["translations"] == {"zh-Hant": "嗨"}
    assert late.visible_to(langs) and not other.visible_to(langs)
    assert json.loads(caption.wire(None))["translations"] == {"zh-Hant": "嗨", "es": "Hola"}
