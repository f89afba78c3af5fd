"""Whisper's own speech → English translation, for the target ``en``.

It works from the utterance's audio, not from the transcript: ``WhisperASR.decode`` with
``task="translate"`` and the caption's language. The decode shares the ASR model (and its
lock) with transcription, so it runs between the session's own decodes. ``asr.decode`` keeps
the encoder outputs of the last few utterances it decoded, so translating the final just
transcribed reuses its encoder pass and costs only the text generation.
"""

from __future__ import annotations

from .base import TranslationError


class WhisperTranslator:
    name = "whisper"
    glossary_style = "inline"  # terms reach Whisper through its prompt; restore fixes spelling
    needs_audio = True  # it translates the speech: the engine keeps each final's audio for it

    def __init__(self, asr, *, beam_size: int = 5, prompt: str = "", fallback: bool = True):
        self.asr = asr
        self.beam_size = beam_size
        self.prompt = prompt  # e.g. Glossary.hotwords(): names Whisper should write as given
        self.fallback = fallback

    def describe(self) -> str:
        if not self.asr.multilingual:
            return "whisper: the model is English-only and cannot translate"
        return f"whisper: speech → en with model {self.asr.model_path.name}"

    def can_target(self, target: str) -> bool:
        return target == "en" and self.asr.multilingual

    def supports(self, source: str, target: str) -> bool:
        return self.can_target(target) and source != "en" and source in self.asr.languages

    def translate(self, text: str, source: str, targets: list[str], *, audio=None) -> dict[str, str]:
        if any(t != "en" for t in targets):
            raise TranslationError(f"Whisper translates into en only, not {', '.join(t for t in targets if t != 'en')}")
        if audio is None or len(audio) == 0:
            raise TranslationError("Whisper translates speech: the caption came without its audio")
        decoding = self.asr.decode(audio, language=source, task="translate", beam_size=self.beam_size,
                                   prompt=self.prompt, fallback=self.fallback, known_speech=True)
        if not decoding.ok:
            raise TranslationError(f"Whisper's translation was rejected ({decoding.rejected or 'empty'})")
        return {"en": decoding.text}
