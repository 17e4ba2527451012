"""hypercorn's configuration for a frontend: where to listen, TLS, and the limits on each connection.

Where, in this order: ``listen_fd`` (the ``frontend`` drop-in: vLLM hands us a TCP or AF_UNIX stream
socket, bound but not listening; hypercorn's ``fd://N`` bind adopts it and ``listen()`` is called when
serving starts), ``uds`` (a Unix socket path), else ``host:port`` (with ``reuse_port``, one socket several
worker processes share, ``workers.py``).

TLS is uvicorn's (vLLM's server), not hypercorn's: an ``ssl.SSLContext(PROTOCOL_TLS_SERVER)`` (TLS 1.2 or
newer, Python's default ciphers unless ``ssl_ciphers``), ``load_cert_chain(certfile, keyfile)``, the
verify mode from ``ssl_cert_reqs`` and only ``ssl_ca_certs`` trusted for client certificates. hypercorn's
own context would differ: it allows only ``ECDHE+AESGCM`` ciphers, trusts the system's CAs for client
certificates, and offers HTTP/2 by ALPN. Here ALPN offers ``http/1.1`` only, as uvicorn serves.

Limits per connection (what a connection flood can hold, see README "Limits"): hypercorn's idle timer
runs from accept (and from the end of each response) until a request head has been parsed, and bytes
arriving do not restart it, so a client trickling its request line and headers (slowloris) is closed
``http_timeout_keep_alive`` seconds after it connected, like an idle keep-alive connection; the request
line plus headers may not exceed ``h11_max_incomplete_event_size`` bytes (431 and close); a TLS handshake
has 60 s (asyncio's default, so uvicorn's). No per-read timeout: an SSE client legitimately sends nothing
for the whole stream.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat
from typing import TYPE_CHECKING

import hypercorn.config

if TYPE_CHECKING:
    from .server import FrontendConfig

#: asyncio's (and so uvicorn's) default; hypercorn's too
SSL_HANDSHAKE_TIMEOUT = 60.0


class _Config(hypercorn.config.Config):
    """hypercorn's Config serving TLS with a context built beforehand (:func:`tls_context`).

    hypercorn asks ``ssl_enabled`` whether ``bind`` is secure and ``create_ssl_context()`` for the context;
    overriding both keeps its certificate/key attributes (which would build its own context) unused.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__()
        self._ssl_context = ssl_context

    @property
    def ssl_enabled(self) -> bool:
        return self._ssl_context is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl_context


def hypercorn_config(config: FrontendConfig) -> hypercorn.config.Config:
    """The hypercorn Config serving *config*'s socket with its TLS settings and limits.

    Validates first (raises ValueError with a message naming the flag: missing or unreadable certificate
    files, a key without a certificate, an inherited fd that is not a stream socket, a Unix socket path in
    use by a live server), then binds what it must bind itself (``uds``, ``reuse_port``).
    """
    ssl_context = tls_context(config)
    hconfig = _Config(ssl_context)
    hconfig.bind = [_bind(config)]
    hconfig.graceful_timeout = config.graceful_timeout
    hconfig.backlog = 2048  # uvicorn's
    hconfig.keep_alive_timeout = config.http_timeout_keep_alive
    hconfig.h11_max_incomplete_size = config.h11_max_incomplete_event_size
    hconfig.ssl_handshake_timeout = SSL_HANDSHAKE_TIMEOUT
    hconfig.accesslog = None
    # WebSocket keep-alives are protocol pings, sent by hypercorn; SSE ones are comments (streaming.py).
    hconfig.websocket_ping_interval = config.keep_alive_interval
    return hconfig


def tls_context(config: FrontendConfig) -> ssl.SSLContext | None:
    """uvicorn's server context for the ``ssl_*`` settings, or None without ``ssl_certfile``.

    Like uvicorn, ``ssl_certfile`` alone is enough when the file holds the key too. Unlike uvicorn, which
    ignores them without a certificate or fails later, settings that cannot take effect are refused: a key,
    CA file, cipher list or client-certificate requirement without ``--ssl-certfile``, and a
    client-certificate check (``--ssl-cert-reqs`` 1 or 2) without ``--ssl-ca-certs`` to check against (every
    client certificate would be rejected). An encrypted key is refused (vLLM has no flag for its password;
    OpenSSL would prompt on the terminal).
    """
    certfile, keyfile, ca_certs = config.ssl_certfile, config.ssl_keyfile, config.ssl_ca_certs
    if config.ssl_cert_reqs not in (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED):
        raise ValueError(
            f"--ssl-cert-reqs {config.ssl_cert_reqs}: must be 0 (CERT_NONE), 1 (CERT_OPTIONAL) or 2 "
            "(CERT_REQUIRED)"
        )
    if certfile is None:
        given = [
            flag
            for flag, value in (
                ("--ssl-keyfile", keyfile),
                ("--ssl-ca-certs", ca_certs),
                ("--ssl-ciphers", config.ssl_ciphers),
                ("--ssl-cert-reqs", config.ssl_cert_reqs or None),
            )
            if value is not None
        ]
        if given:
            raise ValueError(f"{', '.join(given)} given without --ssl-certfile (TLS needs a certificate)")
        return None
    if config.ssl_cert_reqs != ssl.CERT_NONE and ca_certs is None:
        raise ValueError(
            f"--ssl-cert-reqs {config.ssl_cert_reqs} needs --ssl-ca-certs (the CAs that client certificates "
            "are checked against)"
        )
    for flag, path in (
        ("--ssl-certfile", certfile),
        ("--ssl-keyfile", keyfile),
        ("--ssl-ca-certs", ca_certs),
    ):
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"{flag} {path}: no such file")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def no_password() -> str:
        raise ValueError(f"--ssl-keyfile {keyfile or certfile}: the key is encrypted (no password flag)")

    try:
        context.load_cert_chain(certfile, keyfile, no_password)
    except (ssl.SSLError, OSError) as error:
        flags = "--ssl-certfile/--ssl-keyfile" if keyfile else "--ssl-certfile (no --ssl-keyfile)"
        raise ValueError(f"{flags}: cannot load the certificate and its key: {error}") from None
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    if ca_certs is not None:
        try:
            context.load_verify_locations(ca_certs)
        except (ssl.SSLError, OSError) as error:
            raise ValueError(f"--ssl-ca-certs {ca_certs}: cannot load: {error}") from None
    if config.ssl_ciphers:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError as error:
            raise ValueError(f"--ssl-ciphers {config.ssl_ciphers!r}: {error}") from None
    # uvicorn's HTTP/1.1 server negotiates no ALPN; offering h2 would switch hypercorn to HTTP/2.
    context.set_alpn_protocols(["http/1.1"])
    return context


def _bind(config: FrontendConfig) -> str:
    if config.listen_fd is not None:
        return f"fd://{inherited_socket(config.listen_fd)}"
    if config.uds is not None:
        return f"fd://{unix_socket(config.uds)}"
    if config.reuse_port:
        return _shared_bind(config.host, config.port)
    return f"{config.host}:{config.port}"


def inherited_socket(fd: int) -> int:
    """Check that *fd* is a bound TCP or AF_UNIX stream socket (listening or not); returns *fd*.

    The socket is left open for hypercorn, which adopts it with ``fd://`` and calls ``listen()``.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        raise ValueError(f"--listen-fd {fd}: not an open file descriptor") from None
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"--listen-fd {fd}: not a socket")
    sock = socket.socket(fileno=fd)  # detects family and type; detach() below keeps the fd open
    try:
        if sock.type != socket.SOCK_STREAM or sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
            socket.AF_UNIX,
        ):
            raise ValueError(
                f"--listen-fd {fd}: not a TCP or Unix stream socket ({sock.family!r}, {sock.type!r})"
            )
        name = sock.getsockname()  # an unbound socket: '' (AF_UNIX) or port 0 (TCP)
        if not (name if sock.family == socket.AF_UNIX else name[1]):
            raise ValueError(f"--listen-fd {fd}: the socket is not bound")
    finally:
        sock.detach()
    return fd


def unix_socket(path: str) -> int:
    """Bind a stream socket at *path* (vLLM's ``--uds``: no chmod, so the umask decides who may connect);
    returns its fd, not listening yet.

    A socket file left by a server that is gone (nothing accepts on it) is replaced; a live one, or any
    other file at *path*, is refused, where hypercorn's own ``unix:`` bind would silently unlink a live
    server's socket.
    """
    try:
        mode = None if path.startswith("\0") else os.stat(path).st_mode  # "\0": Linux's abstract names
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise ValueError(f"--uds {path}: exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)  # stale: its server is gone
            except OSError as error:
                raise ValueError(f"--uds {path}: cannot tell whether it is in use: {error}") from None
            else:
                raise ValueError(f"--uds {path}: another server is listening on it")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ValueError(f"--uds {path}: already in use") from None
        raise ValueError(f"--uds {path}: cannot bind: {error.strerror}") from None
    return sock.detach()


def _shared_bind(host: str, port: int) -> str:
    """A listening socket several worker processes bind together (the kernel balances connections)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return f"fd://{sock.detach()}"
