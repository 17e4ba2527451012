"""A minimal HTTP/1.1 client on trio raw sockets, just enough for streaming /v1/completions.

Why not httpx: the load generator must stay much cheaper than the frontends it measures. This client does
one ``send_all`` per request and, per receive, a chunked-transfer decode plus an SSE split with
``bytes.find``; it parses JSON only where the harness needs a field (the first chunk's ``id``, the usage
chunk, errors).

Supported: keep-alive connections, ``Content-Length`` and ``Transfer-Encoding: chunked`` bodies, bodies
delimited by connection close, SSE ``data:`` events separated by blank lines (LF or CRLF).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import trio

MAX_HEAD_BYTES = 64 * 1024
RECV_BYTES = 256 * 1024


class ProtocolError(Exception):
    """The server sent something this client does not understand, or closed mid-response."""


async def connect(
    host: str, port: int, *, rcvbuf: int | None = None, timeout: float = 10.0
) -> trio.SocketStream:
    """A TCP connection with ``TCP_NODELAY`` (and ``SO_RCVBUF`` set *before* connecting, if given)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        with trio.fail_after(timeout):
            await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)  # sets TCP_NODELAY


def request_head(method: str, host: str, port: int, path: str, body_len: int, extra: str = "") -> bytes:
    """The request line and headers (``extra``: more ``Name: value\\r\\n`` lines)."""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {body_len}\r\n{extra}\r\n"
    ).encode()


class Response:
    """Status and framing of one response, and its incremental body decoder (:meth:`decode`)."""

    __slots__ = ("chunk_left", "chunked", "done", "keep_alive", "length_left", "state", "status")

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        te = headers.get("transfer-encoding", "").lower()
        self.chunked = "chunked" in te
        cl = headers.get("content-length")
        self.length_left: int | None = None if self.chunked or cl is None else int(cl)
        self.keep_alive = headers.get("connection", "").lower() != "close" and (
            self.chunked or self.length_left is not None
        )
        self.state = "size"  # chunked decoder state: size | data | crlf | trailer
        self.chunk_left = 0
        self.done = self.length_left == 0

    def decode(self, buf: bytearray) -> bytes:
        """Take whatever body bytes *buf* holds, removing them and any chunked framing from *buf*."""
        if not self.chunked:
            if self.length_left is None:  # delimited by close
                out = bytes(buf)
                buf.clear()
                return out
            n = min(len(buf), self.length_left)
            out = bytes(buf[:n])
            del buf[:n]
            self.length_left -= n
            self.done = self.length_left == 0
            return out
        pieces: list[bytes] = []
        pos = 0
        for _ in range(1_000_000):
            if self.state == "size":
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.state = "trailer"
                else:
                    self.chunk_left, self.state = size, "data"
            elif self.state == "data":
                n = min(len(buf) - pos, self.chunk_left)
                if n <= 0:
                    break
                pieces.append(bytes(buf[pos : pos + n]))
                pos += n
                self.chunk_left -= n
                if self.chunk_left == 0:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(buf) - pos < 2:
                    break
                pos += 2
                self.state = "size"
            else:  # trailer: lines until an empty one
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                empty = eol == pos
                pos = eol + 2
                if empty:
                    self.done = True
                    break
        del buf[:pos]
        return b"".join(pieces)


def parse_head(buf: bytearray) -> Response | None:
    """Parse and remove a complete response head from *buf*; None while it is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD_BYTES:
            raise ProtocolError("response head too large")
        return None
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError(f"bad status line {head[0]!r}")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    resp = Response(int(parts[1]), headers)
    if parts[0] == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        resp.keep_alive = False
    return resp


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it are strictly sequential."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.closed = False
        self.requests = 0

    async def aclose(self) -> None:
        """Close the socket now (no HTTP-level goodbye): what a client that goes away does."""
        if not self.closed:
            self.closed = True
            await self.stream.aclose()

    async def _fill(self, max_bytes: int = RECV_BYTES) -> bool:
        """Receive more bytes into the buffer; False on EOF."""
        data = await self.stream.receive_some(max_bytes)
        if not data:
            return False
        self.buf += data
        return True

    async def send(self, data: bytes) -> None:
        self.requests += 1
        await self.stream.send_all(data)

    async def read_head(self) -> Response:
        """Read the status line and headers. Raises :class:`ProtocolError` on EOF or garbage."""
        for _ in range(10_000):
            resp = parse_head(self.buf)
            if resp is not None:
                return resp
            if not await self._fill():
                raise ProtocolError(
                    "connection closed before response head" if not self.buf else "EOF in head"
                )
        raise ProtocolError("no response head")

    async def read_body(self, resp: Response, max_bytes: int = RECV_BYTES) -> bytes | None:
        """The next piece of body (may be ``b""`` if only framing arrived); None once the body ended."""
        if resp.done:
            return None
        if self.buf:
            data = resp.decode(self.buf)
            if data or resp.done:
                return data
        if not await self._fill(max_bytes):
            if not resp.chunked and resp.length_left is None:
                resp.done = True
                return None
            raise ProtocolError("connection closed mid-body")
        return resp.decode(self.buf)

    async def read_all(self, resp: Response, limit: int = 1 << 20) -> bytes:
        """The rest of the body (bounded by *limit* bytes and a loop count)."""
        out = bytearray()
        for _ in range(100_000):
            data = await self.read_body(resp)
            if data is None:
                break
            out += data
            if len(out) > limit:
                raise ProtocolError("body too large")
        return bytes(out)


class SSEParser:
    """Splits a byte stream into SSE ``data:`` payloads (multi-line data joined with LF)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf + data if self.buf else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        start = 0
        for _ in range(1_000_000):
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            block = buf[start:end]
            start = end + 2
            if block.startswith(b"data:") and b"\n" not in block:
                out.append(block[5:].lstrip(b" "))
                continue
            lines = [ln[5:].lstrip(b" ") for ln in block.split(b"\n") if ln.startswith(b"data:")]
            if lines:
                out.append(b"\n".join(lines))
        self.buf = buf[start:]
        return out


async def get_json(host: str, port: int, path: str, timeout: float = 10.0) -> Any:
    """GET *path* on a fresh connection and decode the JSON body."""
    with trio.fail_after(timeout):
        conn = Connection(await connect(host, port))
        try:
            head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            await conn.send(head)
            resp = await conn.read_head()
            body = await conn.read_all(resp)
        finally:
            await conn.aclose()
    if resp.status != 200:
        raise ProtocolError(f"GET {path}: HTTP {resp.status}: {body[:200]!r}")
    return json.loads(body)
