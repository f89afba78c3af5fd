"""What the server answers over plain HTTP: responses, the files of web/, transcripts, QR codes.

Pure helpers (no server state): ``front.Front`` routes each request to one of them.
"""

from __future__ import annotations

import functools
import http
import io
import mimetypes
import re
import sys
import urllib.parse
from email.utils import formatdate
from pathlib import Path
from typing import Iterable

import segno
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .protocol import dumps

# The pages: web/ beside the package in a checkout (editable install), else where a regular
# install put them (pyproject's data-files).
WEB_DIR = next((d for d in (Path(__file__).resolve().parent.parent / "web",
                            Path(sys.prefix) / "share" / "subtitler" / "web") if d.is_dir()),
               Path(__file__).resolve().parent.parent / "web")

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".json": "application/json", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8",
                 ".woff2": "font/woff2", ".png": "image/png", ".ico": "image/x-icon"}
TRANSCRIPT_TYPES = {".srt": "text/plain; charset=utf-8", ".vtt": "text/vtt; charset=utf-8",
                    ".txt": "text/plain; charset=utf-8", ".jsonl": "application/x-ndjson; charset=utf-8"}
HOST_HEADER = re.compile(r"^[A-Za-z0-9.\-]+(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")

INDEX_HTML = """<!doctype html>
<html lang="en"><meta charset="utf-8"><title>subtitler</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:18px/1.5 system-ui,sans-serif;margin:3em auto;max-width:40em;padding:0 1em}}</style>
<h1>subtitler</h1>
<ul>
{rooms}
<li><a href="api/venue">api/venue</a>, <a href="healthz">healthz</a>, <a href="metrics">metrics</a></li>
</ul>
<p>Protocol v{protocol}.</p>
</html>
"""


def http_response(status: int, body: bytes, content_type: str, extra: Iterable[tuple[str, str]] = ()) -> Response:
    st = http.HTTPStatus(status)
    headers = Headers([("Date", formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Length", str(len(body))), ("Content-Type", content_type),
                       ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"), *extra])
    return Response(st.value, st.phrase, headers, body)


def text_response(status: int, text: str) -> Response:
    return http_response(status, text.encode(), "text/plain; charset=utf-8")


def json_response(obj: dict) -> Response:
    return http_response(200, dumps(obj), "application/json")


def redirect(location: str) -> Response:
    return http_response(302, b"", "text/plain; charset=utf-8", [("Location", location)])


def index_page(rooms: list[tuple[str, str, str]], protocol: int) -> Response:
    """The fallback for a web/ without index.html: (title, overlay url, console url) per room."""
    from html import escape

    items = "\n".join(f'<li>{escape(title)}: <a href="{escape(overlay)}">screens</a>, '
                      f'<a href="{escape(console)}">console</a></li>' for title, overlay, console in rooms)
    return http_response(200, INDEX_HTML.format(rooms=items, protocol=protocol).encode(), "text/html; charset=utf-8")


def static_file(web_dir: Path, url_path: str) -> Path | None:
    """The file under ``web_dir`` that ``url_path`` names, or None; never anything outside it."""
    path = urllib.parse.unquote(url_path.partition("?")[0].partition("#")[0])
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p]
    if any(p.startswith(".") for p in parts):  # "..", ".", and hidden files
        return None
    try:
        root = web_dir.resolve(strict=True)
        target = root.joinpath(*parts).resolve(strict=True)  # follows links, then checks where they led
    except (OSError, RuntimeError, ValueError):
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


def file_response(target: Path | None) -> Response:
    if target is None:
        return text_response(404, "not found\n")
    try:
        body = target.read_bytes()
    except OSError:
        return text_response(404, "not found\n")
    ctype = CONTENT_TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or \
        "application/octet-stream"
    return http_response(200, body, ctype)


def request_host(request: Request) -> str | None:
    """The request's Host header when it is a plain host[:port], else None."""
    host = request.headers.get("Host", "")
    return host if HOST_HEADER.fullmatch(host) else None


# -- transcripts ----------------------------------------------------------------------------------

def transcript_list(transcripts: dict[str, Path], prefix: str) -> list[dict]:
    """/api/session's files: 'srt' → the caption file, 'es.srt' → a translation's (with its lang)."""
    files = []
    for key, p in transcripts.items():
        lang, _, fmt = key.rpartition(".")
        entry = {"name": p.name, "format": fmt, "url": f"{prefix}/transcripts/{p.name}"}
        if lang:
            entry["lang"] = lang
        files.append(entry)
    return files


def transcript_response(transcripts: dict[str, Path], wanted: str) -> Response:
    """Only the session's own transcript files, by exact name: what the screens show anyway."""
    match = next((p for p in transcripts.values() if p.name == wanted), None)
    if match is None:
        return text_response(404, "no such transcript file in this session\n")
    try:
        return http_response(200, match.read_bytes(), TRANSCRIPT_TYPES.get(match.suffix, "text/plain; charset=utf-8"))
    except OSError:
        return text_response(404, "transcript file not readable\n")


# -- QR codes -------------------------------------------------------------------------------------

QR_ERROR = "m"  # survives a smudged or partly covered print; still a small code for a URL


@functools.lru_cache(maxsize=256)
def qr_svg(text: str) -> bytes:
    """An SVG QR code of ``text`` (segno), 4 px a module, the standard 4-module quiet zone."""
    out = io.BytesIO()
    segno.make(text, error=QR_ERROR, micro=False).save(out, kind="svg", scale=4, border=4, xmldecl=False,
                                                        title=text)
    return out.getvalue()


def qr_response(text: str) -> Response:
    return http_response(200, qr_svg(text), "image/svg+xml")
