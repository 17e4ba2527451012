"""Streaming body chunks of an HTTP/1.x response straight to its socket, under hypercorn.

Why this exists: every ASGI ``http.response.body`` message costs hypercorn-on-trio ~50 µs of CPU
(``../shared/docs/trio_stack.md`` §1.5), whatever its size: the message walks ``HTTPStream.app_send`` →
``H11Protocol.stream_send`` → ``TCPServer.protocol_send``, which takes a ``trio.Lock`` (a scheduler pass)
and runs a shielded ``send_all`` (another). A streamed completion sends one message per token, so this is
the largest cost of the whole frontend. For the middle of a chunked body none of that is needed: a chunk
is its length in hex, CRLF, the data, CRLF (h11 does nothing else for a ``Data`` event, and its state does
not change), and one non-blocking ``send()`` on the socket usually takes all of it, with no scheduler
pass at all. An HTTP/1.0 client gets a close-delimited body, which h11 writes as the bare data.

:func:`find` walks hypercorn's ``send`` callable down to the h11 connection and the trio socket, and
accepts only what it understands: hypercorn's HTTP/1.x protocol, an h11 connection that is sending a
chunked body (HTTP/1.1) or a close-delimited one (HTTP/1.0), i.e. a response without ``content-length``,
over a plain TCP ``trio.SocketStream``. Anything else (HTTP/2, TLS, another server) gives ``None``, and the
caller keeps using ASGI ``send``. The response's start and its end still go through ASGI, so hypercorn
sees a normal response: headers, then (from its side) an empty body and the end of the message.

Writing is exclusive with hypercorn's own writes: :meth:`DirectBody.write` takes hypercorn's send lock
without waiting (``acquire_nowait``); if hypercorn holds it, the chunk goes through ASGI instead. A send
that cannot complete at once (the client reads slowly) finishes with ``send_all`` under the lock.

A client that stops reading: once one chunk has waited ``send_timeout`` seconds, the connection is reset
(RST, unsent data dropped, see :mod:`.transport`) and :class:`ClientStuck` is raised, so the request
unwinds and its engine request is aborted; memory meanwhile stays bounded by the engine client's
coalescing. Cancellation: a write that completed at once is not a checkpoint; a cancelled remainder
leaves a partial chunk on the wire, which is harmless because a response abandoned mid-body makes
hypercorn close the connection. A dead connection raises :class:`BrokenConnection` (hypercorn's own path
would drop the data silently).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import h11
import trio

from . import transport

_MAX_HOPS = 4


class BrokenConnection(Exception):
    """The client's connection is gone (reset, closed, or closed by the server)."""


class ClientStuck(BrokenConnection):
    """The client read nothing for ``send_timeout`` seconds; its connection was reset."""


class DirectBody:
    """Body chunks of one HTTP/1.x response: chunk framing (unless *chunked* is false: HTTP/1.0) + a
    non-blocking socket send, under hypercorn's send lock; the remainder of a partial send waits at most
    ``send_timeout``."""

    def __init__(
        self,
        connection: h11.Connection,
        stream: trio.SocketStream,
        lock: trio.Lock,
        send_timeout: float,
        *,
        chunked: bool = True,
    ) -> None:
        self.send_timeout = send_timeout
        self.chunked = chunked
        self._connection = connection
        self._stream = stream
        self._lock = lock
        self._sock: socket.socket = stream.socket._sock  # type: ignore[attr-defined]

    async def write(self, data: bytes) -> bool:
        """Send one body chunk. Returns ``False`` (nothing sent) if hypercorn is writing right now."""
        if not data:  # an empty chunk would end the body
            return True
        lock = self._lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            return False
        try:
            if self._connection.our_state is not h11.SEND_BODY:  # the response ended or the connection failed
                raise BrokenConnection(f"the response is over ({self._connection.our_state})")
            # One chunk of chunked transfer coding (RFC 9112 §7.1), framed as h11's ChunkedWriter does (its
            # Http10Writer writes the bare data); a Data event changes no h11 state, so h11 stays right for
            # the end of the message.
            framed = b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data
            try:
                sent = self._sock.send(framed)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise BrokenConnection(str(exc)) from None
            if sent < len(framed):
                try:
                    with trio.move_on_after(self.send_timeout) as waited:
                        await self._stream.send_all(memoryview(framed)[sent:])
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise BrokenConnection(str(exc)) from None
                if waited.cancelled_caught:
                    transport.reset(self._stream)
                    raise ClientStuck(f"the client read nothing for {self.send_timeout} s")
        finally:
            lock.release()
        return True


def find(send: Callable[..., Any], send_timeout: float = 30.0) -> DirectBody | None:
    """The direct writer under hypercorn's ASGI ``send`` of a response whose headers went out, or ``None``.

    Call it after ``http.response.start`` was sent (hypercorn writes the headers then), before any body.
    """
    for _ in range(_MAX_HOPS):  # our own wrappers (functools.wraps style) first
        send = getattr(send, "__wrapped__", send)
    protocol = getattr(getattr(transport.http_stream(send), "send", None), "__self__", None)
    connection = getattr(protocol, "connection", None)
    if not isinstance(connection, h11.Connection):
        return None
    if connection.our_state is not h11.SEND_BODY:
        return None
    # h11 chose the framing when the headers went out: chunked (HTTP/1.1) or close-delimited (HTTP/1.0)
    writer = type(connection._writer).__name__
    if writer not in ("ChunkedWriter", "Http10Writer"):
        return None
    server = transport.find_server(getattr(protocol, "send", None))
    stream, lock = getattr(server, "stream", None), getattr(server, "send_lock", None)
    if type(stream) is not trio.SocketStream or not isinstance(lock, trio.Lock):
        return None
    if not isinstance(getattr(stream.socket, "_sock", None), socket.socket):
        return None
    return DirectBody(connection, stream, lock, send_timeout, chunked=writer == "ChunkedWriter")
