"""subtitler: live speech transcription and multilingual subtitles.

The pipeline, one module a stage: audio → vad → streaming (asr) → captions → sinks
(transcripts, display); engine wires a session, cli is the entry point.
"""

__version__ = "0.1.0"
