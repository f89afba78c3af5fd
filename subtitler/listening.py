"""The listening socket's setting up: TLS, the open-file limit, bind errors, and this machine's
addresses (what the pages' URLs and the allowed Origins name). Used by ``front.Front``."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from pathlib import Path

from .config import ServerConfig


class ServerError(RuntimeError):
    """The server cannot start (port taken, address not on this machine); says what to do."""


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server's TLS context from ``tls_cert``/``tls_key``; None when neither is set.
    ServerError says what is wrong with them."""
    cert, key = config.tls_cert, config.tls_key
    if not cert and not key:
        return None
    if not cert or not key:
        missing = "tls_key (--tls-key)" if cert else "tls_cert (--tls-cert)"
        raise ServerError(f"TLS needs both a certificate and its key: {missing} is not set "
                          f"([server] tls_cert and tls_key, or --tls-cert and --tls-key)")
    for path in (cert, key):
        if not Path(path).is_file():
            raise ServerError(f"cannot read {path}: no such file; --tls-cert and --tls-key take PEM files "
                              f"(the certificate and its private key)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise ServerError(f"the TLS certificate {cert} and key {key} do not load ({e.reason or e}): give PEM "
                          f"files, the key belonging to the certificate") from None
    except OSError as e:
        raise ServerError(f"cannot read {cert} or {key}: {e.strerror or e}; --tls-cert and --tls-key take PEM "
                          f"files (the certificate and its private key)") from None
    return context


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (at most 2^20) where allowed; the soft
    limit in force after that."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def bind_error(host: str, port: int, e: OSError) -> str:
    import errno

    if e.errno == errno.EADDRINUSE:
        return (f"cannot serve on {host}:{port}: the port is in use (another subtitler?); "
                f"choose another with --port or [server] port (0 = any free port)")
    if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(e, socket.gaierror):
        return (f"cannot serve on {host}:{port}: {e.strerror or e}; --host must be an address "
                f"of this machine: 127.0.0.1 (this machine only) or 0.0.0.0 (every network)")
    if e.errno == errno.EACCES:
        return (f"cannot serve on {host}:{port}: permission denied (ports below 1024 need "
                f"privileges); choose a port above 1024 with --port")
    return f"cannot serve on {host}:{port}: {e}"


def local_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback, as the rooms' screens would use them."""
    found: list[str] = []

    def add(addr: str) -> None:
        try:
            if not ipaddress.ip_address(addr).is_loopback and addr not in found:
                found.append(addr)
        except ValueError:
            pass

    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            add(info[4][0])
    except OSError:
        pass
    # The address of the interface with the default route: connecting a UDP socket only asks
    # the routing table; no packet is sent.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1, never routed anywhere real
        add(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    return found
