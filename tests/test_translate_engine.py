"""Translation end to end: a real-speech WAV through the real engine (Whisper base, CPU int8)
with translation targets, to real WebSocket screens of the room server (127.0.0.1, a free
port) and to the per-language transcript files.

* English prompts → targets es and ca (Apertium's eng-spa and eng-cat, installed from
  Debian), plus a target whose backend blocks and then fails: every final is published
  before any translation (translation never holds the original up), the failing target is
  marked on each caption and the other languages come out; screens opened with ``es``,
  ``ca`` and ``*`` get the captions and exactly their translations.
* Spanish prompts → en by Whisper's own speech → English (reusing the encoder pass the
  transcription made) and es, the spoken language itself.
* Live (real-time) input with partial translation on: translated partials never come after
  their final and a translated line changes only when its source sentence changed.
* A [glossary] in config.toml: its terms are heard right and come out of Apertium as fixed.

Measured on the 2-core dev box: the English run ~7 s, the Spanish ~9 s, the live one ~10 s.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from pathlib import Path

import pytest
import srt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import corpus
from subtitler.audio import FileSource
from subtitler.captions import Caption
from subtitler.config import Config, ServerConfig
from subtitler.engine import Session, load_translation
from subtitler.server import Server
from subtitler.transcripts import TranscriptWriter, load_jsonl
from subtitler.translate import TranslationError, TranslationStage, split_sentences
from subtitler.translate import apertium as ap

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not ap.available() or not {"eng-spa", "eng-cat"} <= set(ap.installed_pairs()),
                                 reason="needs apt-get install apertium apertium-eng-spa apertium-eng-cat")]

HOST = "127.0.0.1"


class Recorder:
    """A sink that keeps everything, translations included; calls ``on_final`` per final."""

    accepts_translations = True

    def __init__(self, on_final=None):
        self.captions: list[Caption] = []
        self.on_final = on_final

    def on_caption(self, caption: Caption) -> None:
        self.captions.append(caption)
        if caption.is_final and caption.text and self.on_final is not None:
            self.on_final(self)

    def kind(self, kind: str) -> list[Caption]:
        return [c for c in self.captions if c.kind == kind]

    @property
    def finals(self) -> list[Caption]:
        return [c for c in self.kind("final") if c.text]


class Screens:
    """Viewers on /ws/view (one per ``langs`` selection), collecting every event in a thread
    until the server closes them."""

    def __init__(self, server: Server, selections: dict[str, list[str]]):
        self.server, self.selections = server, selections
        self.events: dict[str, list[dict]] = {name: [] for name in selections}
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _viewer(self, name: str, langs: list[str]) -> None:
        async with connect(f"ws://{HOST}:{self.server.port}/ws/view") as ws:
            await ws.send(json.dumps({"type": "hello", "langs": langs}))
            try:
                async for message in ws:
                    event = json.loads(message)
                    if event["type"] != "status":
                        self.events[name].append(event)
            except ConnectionClosed:
                pass

    async def _main(self) -> None:
        await asyncio.gather(*(self._viewer(n, l) for n, l in self.selections.items()))

    def __enter__(self) -> "Screens":
        self._thread.start()
        deadline = time.monotonic() + 10
        while len(self.server.hub.viewers) < len(self.selections) or \
                not all(self.events[n] for n in self.selections):  # the welcome arrived
            assert time.monotonic() < deadline, "the screens did not connect"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(drain=2.0)  # delivers what is queued, then closes every screen (1001)
        self._thread.join(15)
        assert not self._thread.is_alive()

    def of(self, name: str, kind: str) -> list[dict]:
        return [e for e in self.events[name] if e["type"] == kind]


class Blocked:
    """A backend for 'de' that holds its first call until released, then fails every call."""

    name = "ctranslate2"
    glossary_style = "inline"

    def __init__(self):
        self.release = threading.Event()
        self.calls = 0

    def describe(self):
        return "ctranslate2: a broken test model (en → de)"

    def can_target(self, target):
        return target == "de"

    def supports(self, source, target):
        return target == "de"

    def translate(self, text, source, targets, *, audio=None):
        self.calls += 1
        self.release.wait(60)
        self.release.set()  # should the finals never all come, wait only once
        raise TranslationError("the model crashed (test)")


def read_srt(path: Path) -> list[srt.Subtitle]:
    text = path.read_text("utf-8")
    assert text == "" or text.endswith("\n\n"), repr(text[-80:])
    return list(srt.parse(text))


# -- English speech → es, ca (Apertium), de (broken) ----------------------------------------------

@pytest.fixture(scope="module")
def english_four(tmp_path_factory) -> dict:
    """4 English prompts, ~15 s ('To leave the conference…', 'You are now muted.', …)."""
    return corpus.build_stream(tmp_path_factory.mktemp("tr_en") / "en4.wav", count=4, seed=1)


@pytest.fixture(scope="module")
def english_run(asr_base, english_four, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tr_en_out")
    targets = ["es", "ca", "de"]
    apertium = ap.ApertiumTranslator()
    broken = Blocked()
    stage = TranslationStage(targets, [apertium, broken], glossary=None, source="en")
    expected = len(english_four["utterances"])

    def all_finals_out(rec: Recorder) -> None:
        if len(rec.finals) == expected:
            broken.release.set()  # only now may the first translation finish

    rec = Recorder(all_finals_out)
    server = Server(ServerConfig(host=HOST, port=0, token="t"), live=False, languages=targets).start()
    writer = TranscriptWriter(folder, languages=targets)
    config = Config().with_overrides({"asr.language": "en"})
    try:
        with Screens(server, {"es": ["es"], "ca": ["ca"], "all": ["*"], "source": ["source"]}) as screens:
            session = Session(asr_base, FileSource(english_four["wav"]), [writer, rec, server.sink], config,
                              translation=stage)
            session.run()
            writer.close()
    finally:
        server.stop()
        stage.close()
    return {"rec": rec, "screens": screens, "writer": writer, "folder": folder, "broken": broken,
            "apertium": ap.ApertiumTranslator(), "session": session}


def test_every_final_goes_out_before_any_translation(english_run):
    rec = english_run["rec"]
    kinds = [c.kind for c in rec.captions]
    assert kinds.count("final") == 4 and kinds.count("translation") == 4, kinds
    # The first translation was held until all four finals were out: the finals never waited.
    assert kinds.index("translation") > max(i for i, k in enumerate(kinds) if k == "final")
    seqs = [c.seq for c in rec.captions]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "one strictly increasing seq for all"
    for f, t in zip(rec.finals, rec.kind("translation")):
        assert (t.id, t.text, t.start, t.end, t.lang) == (f.id, f.text, f.start, f.end, "en")
        assert t.seq > f.seq and t.emitted >= f.emitted


def test_translations_and_the_failure_are_on_each_caption(english_run):
    rec, apertium = english_run["rec"], english_run["apertium"]
    assert english_run["broken"].calls == 4
    for t in rec.kind("translation"):
        assert set(t.translations) == {"es", "ca"}, t
        assert t.translations["es"] == apertium.translate(t.text, "en", ["es"])["es"]
        assert t.translations["ca"] == apertium.translate(t.text, "en", ["ca"])["ca"]
        assert t.translations["es"] != t.text and t.translations["ca"] != t.translations["es"]
        assert set(t.translation_errors) == {"de"} and "the model crashed" in t.translation_errors["de"]
    assert english_run["session"].translations == 4 and english_run["session"].translation_errors == 4


def test_screens_get_the_captions_and_exactly_their_languages(english_run):
    rec, screens = english_run["rec"], english_run["screens"]
    by_id = {t.id: t.translations for t in rec.kind("translation")}
    for name in ("es", "ca", "all", "source"):
        welcome = screens.events[name][0]
        assert welcome["type"] == "welcome" and {"es", "ca", "de"} <= set(welcome["languages"])
        finals = [e for e in screens.of(name, "caption") if e["kind"] == "final"]
        assert [e["text"] for e in finals] == [f.text for f in rec.finals], name  # every screen: the source
        assert all(e["translations"] == {} for e in finals)  # published before its translations
    for lang in ("es", "ca"):
        got = [(e["id"], e["lang"], e["text"]) for e in screens.of(lang, "translation")]
        assert got == [(i, lang, tr[lang]) for i, tr in by_id.items()], lang
        # each translation follows its caption on the wire
        order = [(e["type"], e["id"]) for e in screens.events[lang] if e["type"] in ("caption", "translation")]
        for i in by_id:
            assert order.index(("translation", i)) > order.index(("caption", i))
    everything = [(e["id"], e["lang"]) for e in screens.of("all", "translation")]
    assert sorted(everything) == sorted((i, l) for i in by_id for l in ("es", "ca"))
    assert screens.of("source", "translation") == []  # "source" asked for no translation


def test_per_language_transcripts(english_run):
    rec, folder, writer = english_run["rec"], english_run["folder"], english_run["writer"]
    assert {p.name for p in folder.iterdir()} == {
        *(f"captions.{f}" for f in ("srt", "vtt", "txt", "jsonl")),
        *(f"captions.{lang}.{f}" for lang in ("es", "ca", "de") for f in ("srt", "vtt", "txt"))}
    main_txt = (folder / "captions.txt").read_text("utf-8").splitlines()
    stamps = [line.split("]")[0] for line in main_txt]
    translations = rec.kind("translation")
    for lang in ("es", "ca"):
        lines = (folder / f"captions.{lang}.txt").read_text("utf-8").splitlines()
        assert [line.split("]")[0] for line in lines] == stamps  # the finals' timing
        assert [line.split("] ", 1)[1] for line in lines] == [t.translations[lang] for t in translations]
        subs = read_srt(folder / f"captions.{lang}.srt")
        text = " ".join(s.content.replace("\n", " ") for s in subs)
        assert text == " ".join(t.translations[lang] for t in translations)
        assert subs[0].start.total_seconds() == pytest.approx(rec.finals[0].start, abs=0.001)
        assert subs[-1].end.total_seconds() == pytest.approx(rec.finals[-1].end, abs=0.001)
        assert (folder / f"captions.{lang}.vtt").read_text("utf-8").startswith("WEBVTT\n\n")
    assert (folder / "captions.de.srt").read_text("utf-8") == ""  # nothing came out in German
    assert len(read_srt(folder / "captions.srt")) >= 4  # the source-language files as ever
    rows = load_jsonl(writer.paths["jsonl"])
    assert [r["text"] for r in rows] == [f.text for f in rec.finals]
    assert [r["translations"] for r in rows] == [t.translations for t in translations]
    assert all(set(r["translation_errors"]) == {"de"} for r in rows)
    raw = load_jsonl(writer.paths["jsonl"], raw=True)
    assert [r.get("kind", "final") for r in raw] == ["final"] * 4 + ["translation"] * 4


# -- Spanish speech → en (Whisper, from the speech) ---------------------------------------------------

class CountingASR:
    """The real model; counts the session's own decodes (translation calls the model directly)."""

    def __init__(self, asr):
        self.asr, self.decodes = asr, 0

    def __getattr__(self, name):
        return getattr(self.asr, name)

    def decode(self, audio, **kwargs):
        self.decodes += 1
        return self.asr.decode(audio, **kwargs)


def test_spanish_speech_to_english_by_whisper_reusing_the_encoder(asr_base, tmp_path):
    truth = corpus.build_stream(tmp_path / "es4.wav", lang="es", count=4, seed=1)
    # lead_ms 0: the final's audio is the translation's, so its encoder output is reused (with a
    # lead the translation hears the utterance without it, in an encoder pass of its own)
    config = Config().with_overrides({"asr.language": "es", "translate.targets": "en,es",
                                      "translate.overrides": "en=whisper", "vad.lead_ms": 0})
    stage = load_translation(config, asr_base)
    assert stage.describe_routes("es") == "en ← whisper, es = the spoken language"
    counting, rec = CountingASR(asr_base), Recorder()
    writer = TranscriptWriter(tmp_path / "out", languages=["en", "es"])
    server = Server(ServerConfig(host=HOST, port=0, token="t"), live=False, languages=["en", "es"]).start()
    passes = asr_base.encoder_passes
    try:
        with Screens(server, {"en": ["en"]}) as screens:
            Session(counting, FileSource(truth["wav"]), [writer, rec, server.sink], config,
                    translation=stage).run()
            writer.close()
    finally:
        server.stop()
        stage.close()
    finals, translations = rec.finals, rec.kind("translation")
    assert len(finals) == len(translations) == 4
    # One encoder pass per transcription decode: every translation reused its final's.
    assert asr_base.encoder_passes - passes == counting.decodes
    english = {t.id: t.translations["en"] for t in translations if "en" in t.translations}
    for t in translations:
        assert t.translations["es"] == t.text  # the spoken language is the text itself
        assert "en" in t.translations or t.translation_errors["en"].startswith("whisper:")
    assert len(english) >= 3, [t.translation_errors for t in translations]
    assert all(re.search(r"[A-Za-z]", text) for text in english.values())
    # Words of the English references come out (Whisper base hears these prompts well enough).
    refs = corpus.load_prompts("en")
    spoken = " ".join(corpus.normalize(refs.get(u["name"], ""), "en") for u in truth["utterances"])
    heard = " ".join(corpus.normalize(text, "en") for text in english.values()).split()
    assert sum(w in spoken.split() for w in heard) >= len(heard) / 2, (heard, spoken)
    assert [(e["id"], e["text"]) for e in screens.of("en", "translation")] == list(english.items())
    lines = (tmp_path / "out" / "captions.en.txt").read_text("utf-8").splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == list(english.values())
    assert len((tmp_path / "out" / "captions.es.txt").read_text("utf-8").splitlines()) == 4


# -- live, with partials translated ------------------------------------------------------------------

def test_live_partials_are_translated_without_flicker(asr_base, tmp_path):
    truth = corpus.build_stream(tmp_path / "live.wav", count=2, seed=4, min_duration=4.0, max_duration=6.5,
                                noise_db=-60.0)
    config = Config().with_overrides({"asr.language": "en", "translate.targets": "es",
                                      "translate.partials": "true", "translate.partial_interval": "0.3"})
    stage = load_translation(config, asr_base)
    rec = Recorder()
    try:
        Session(asr_base, FileSource(truth["wav"], realtime=True), [rec], config, translation=stage).run()
    finally:
        stage.close()
    finals = {c.id: c for c in rec.finals}
    assert len(finals) == 2 and len(rec.kind("translation")) == 2
    translated = [c for c in rec.kind("partial") if c.translations]
    assert translated, "no partial was translated"
    for c in translated:
        # A translated partial is the partial re-published with its translation, never after the final.
        assert c.seq < finals[c.id].seq
        assert c.translations["es"], c
    # Per utterance, a partial's translated sentence changes only when its source sentence did.
    for uid in finals:
        seen: dict[str, str] = {}
        for c in (p for p in translated if p.id == uid):
            sentences = split_sentences(c.text)
            parts = split_sentences(c.translations["es"])
            if len(parts) == len(sentences):
                for s, p in zip(sentences, parts):
                    assert seen.setdefault(s, p) == p, (s, seen[s], p)
    # The final's translation reuses the partials' sentences: no change where nothing changed.
    for t in rec.kind("translation"):
        assert t.translations["es"]
        assert t.seq > finals[t.id].seq


# -- the glossary, from config.toml through the engine ---------------------------------------------

def test_glossary_terms_are_heard_and_come_out_as_specified(asr_base, tmp_path):
    """[glossary] in a config file: its terms reach Whisper's prompt in the session (heard and
    spelled right) and survive Apertium with their fixed Spanish form."""
    import shutil
    import subprocess

    import numpy as np

    from subtitler.config import load_config

    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    speech = tmp_path / "sco.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(speech),
                    "The SCO summit in Chongqing begins tomorrow."], check=True)
    audio = corpus.load_16k(speech)
    pad = np.zeros(16000, np.int16)  # 1 s of silence
    corpus.write_wav(tmp_path / "talk.wav", np.concatenate([pad, audio, pad, pad]))
    (tmp_path / "config.toml").write_text('[asr]\nlanguage = "en"\n[translate]\ntargets = ["es"]\n'
                                          '[glossary]\nterms = ["Chongqing", "SCO"]\n[glossary.es]\nSCO = "OCS"\n')
    config = load_config(tmp_path / "config.toml")
    stage = load_translation(config, asr_base)
    rec = Recorder()
    try:
        Session(asr_base, FileSource(tmp_path / "talk.wav"), [rec], config, translation=stage).run()
    finally:
        stage.close()
    (final,) = rec.finals
    (update,) = rec.kind("translation")
    assert "SCO" in final.text and "Chongqing" in final.text, final.text
    spanish = update.translations["es"]
    assert "OCS" in spanish and "Chongqing" in spanish and "zqx" not in spanish.lower(), spanish
