"""TLS for venue networks: the pages over https://, screens, the console and `subtitler send`
over wss://, with a certificate made here (``cryptography``: a self-signed certificate for
127.0.0.1 and localhost). The real server on loopback; Debian's chromium through Playwright for
the overlay; the real `subtitler send` and `subtitler serve` commands for their flags.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from subtitler.config import Config
from subtitler.server import Server, ServerError

from test_send import Decoder, finish, write_wav
from test_server import TOKEN, caption, publish, recv_event, recv_json, room

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "subtitler test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(certificate):
    cert, key = certificate
    config = dataclasses.replace(Config().server, host="127.0.0.1", port=0, token=TOKEN, tls_cert=str(cert),
                                 tls_key=str(key))
    server = Server(config).start()
    server.add_room("main", token=TOKEN, default=True)
    yield server
    server.stop(drain=0.2)


def client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def test_pages_screens_and_console_over_https_and_wss(tls_server, certificate):
    server, (cert, _) = tls_server, certificate
    ctx = client_context(cert)
    base = f"https://127.0.0.1:{server.port}"
    assert server.base_urls() == [base] and server.page_urls()["audio"] == f"wss://127.0.0.1:{server.port}"
    with urllib.request.urlopen(base + "/healthz", context=ctx, timeout=5) as r:
        assert json.loads(r.read())["tls"] is True
    with urllib.request.urlopen(base + "/overlay.html", context=ctx, timeout=5) as r:
        assert r.status == 200 and b"<html" in r.read().lower()

    async def main():
        async with connect(f"wss://127.0.0.1:{server.port}/ws/view", ssl=ctx) as view:
            await view.send(json.dumps({"type": "hello", "langs": ["*"]}))
            assert (await recv_json(view))["type"] == "welcome"
            await asyncio.to_thread(publish, server, caption(1, "final", "over TLS"))
            assert (await recv_event(view))["text"] == "over TLS"
        # the console's page is https://…: its origin is this server's own
        async with connect(f"wss://127.0.0.1:{server.port}/ws/control", ssl=ctx, origin=base) as console:
            await console.send(json.dumps({"type": "auth", "token": TOKEN}))
            assert (await recv_json(console))["type"] == "ok"
        # a page from the plain-http origin is another origin
        with pytest.raises(Exception, match="403"):
            await connect(f"wss://127.0.0.1:{server.port}/ws/control", ssl=ctx,
                          origin=f"http://127.0.0.1:{server.port}")
    asyncio.run(main())
    # plain http to the TLS port: refused by TLS, and the server serves on
    with pytest.raises(Exception):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5).read()
    with urllib.request.urlopen(base + "/healthz", context=ctx, timeout=5) as r:
        assert r.status == 200


def test_send_streams_over_wss_and_refuses_an_untrusted_certificate(tls_server, certificate, tmp_path):
    server, (cert, _) = tls_server, certificate
    wav = tmp_path / "talk.wav"
    audio = write_wav(wav, 5.0)
    url = f"wss://127.0.0.1:{server.port}"
    untrusted = subprocess.run([sys.executable, "-m", "subtitler", "send", str(wav), "--server", url, "--token",
                                TOKEN], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert untrusted.returncode == 2 and "certificate is not trusted" in untrusted.stderr \
        and "--tls-ca" in untrusted.stderr, untrusted.stderr
    decoder = Decoder(server, speed=20.0)
    decoder.start()
    sender = subprocess.Popen([sys.executable, "-m", "subtitler", "send", str(wav), "--server", url, "--token",
                               TOKEN, "--tls-ca", str(cert)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    finish(server, decoder)
    out, _ = sender.communicate(timeout=60)
    assert sender.returncode == 0 and "all of it received by the server" in out, out
    assert np.array_equal(decoder.audio(), audio)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_the_overlay_in_chromium_over_https(tls_server):
    from playwright.sync_api import sync_playwright

    server = tls_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(ignore_https_errors=True)  # the test's own certificate
            errors: list[str] = []
            context.on("weberror", lambda e: errors.append(str(e.error)))
            page = context.new_page()
            page.goto(f"https://127.0.0.1:{server.port}/overlay.html?lang=en&fade=0")
            page.wait_for_function("document.body.dataset.conn === 'live'", timeout=15000)  # joined over wss
            publish(server, caption(1, "final", "captions over wss"))
            page.wait_for_function("() => document.body.innerText.includes('captions over wss')", timeout=15000)
            assert len(room(server).channel.viewers) == 1
            assert not errors, errors
        finally:
            browser.close()


def test_bad_tls_settings_are_one_clear_error(certificate, tmp_path):
    cert, key = certificate
    base = Config().server
    with pytest.raises(ServerError, match="tls_key"):
        Server(dataclasses.replace(base, port=0, tls_cert=str(cert))).start()
    with pytest.raises(ServerError, match="cannot read .*missing.pem"):
        Server(dataclasses.replace(base, port=0, tls_cert=str(tmp_path / "missing.pem"), tls_key=str(key))).start()
    with pytest.raises(ServerError, match="do not load"):
        Server(dataclasses.replace(base, port=0, tls_cert=str(key), tls_key=str(cert))).start()
    # the command says it before anything starts: exit 2, one line
    r = subprocess.run([sys.executable, "-m", "subtitler", "serve", "--rooms", "hall", "--port", "0",
                        "--tls-cert", str(cert)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "tls_key (--tls-key) is not set" in r.stderr, r.stderr
