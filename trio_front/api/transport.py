"""Resetting the TCP connection under a client that stopped reading (WebSockets, streamed responses).

Why this exists: hypercorn's trio worker writes every frame with ``await stream.send_all(data)`` inside
a *shielded* cancel scope and under a per-connection lock (``hypercorn/trio/tcp_server.py``,
``protocol_send``). When the client stops reading and the kernel's buffers are full, that call blocks
until the client reads or the connection breaks, and no cancellation can interrupt it — not ours, not
hypercorn's own graceful-shutdown deadline. The ASGI interface offers no way to reach the socket.

So we find it: the ``send`` callable hypercorn gives a WebSocket app is ``WSStream.app_send``; the
stream's ``send`` is the HTTP/1.1 or HTTP/2 protocol's ``stream_send``, whose ``send`` is
``TCPServer.protocol_send``, whose owner holds the trio stream. :func:`find_server` walks that chain
generically (``__self__`` then ``.send``, looking for a ``.stream`` that is a trio stream) and returns
``None`` for any other server or wrapping. :func:`reset` sets ``SO_LINGER`` to zero (the kernel drops
the unsent data and sends RST instead of keeping an orphaned socket around for minutes) and closes the
socket: trio's ``close`` wakes the blocked ``send_all`` with ``ClosedResourceError``, hypercorn treats
that as a closed connection, and our writer's ``send`` returns.

Over HTTP/2 this resets the whole connection (every stream on it): acceptable for a client that has
stopped reading anyway.

:func:`http_stream` finds the request's own hypercorn ``HTTPStream`` (the first hop of an HTTP ``send``),
for the disconnect hook (:mod:`.disconnect`) and the direct body writer (:mod:`.direct_body`).
:func:`receive_nowait` finds the non-blocking form of hypercorn's ASGI ``receive`` (its app queue), for
reading a body that has already arrived without a scheduler pass per message (:func:`.http.read_body`).
This module is where our knowledge of hypercorn's internals lives.
"""

from __future__ import annotations

import contextlib
import socket as stdlib_socket
import struct
from collections.abc import Callable
from typing import Any

import trio

try:  # hypercorn's internals; without them every caller keeps plain ASGI
    from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
except ImportError:  # pragma: no cover - another hypercorn layout
    HTTPStream = ASGIHTTPState = None  # type: ignore[assignment,misc]

_MAX_HOPS = 6


def http_stream(send: Callable[..., Any] | None) -> Any | None:
    """Hypercorn's ``HTTPStream`` behind its ASGI ``send`` for an HTTP request (``HTTPStream.app_send``),
    with the attributes we use (``app_put``, ``closed``, ``state``, ``send``), or ``None``."""
    stream = getattr(send, "__self__", None)
    if (
        HTTPStream is not None
        and isinstance(stream, HTTPStream)
        and callable(getattr(stream, "app_put", None))
        and isinstance(getattr(stream, "closed", None), bool)
        and isinstance(getattr(stream, "state", None), ASGIHTTPState)
    ):
        return stream
    return None


def receive_nowait(receive: Callable[..., Any]) -> Callable[[], Any] | None:
    """``receive_nowait`` of the trio memory channel behind an ASGI *receive* (hypercorn's trio worker
    hands the app its app queue's bound ``MemoryReceiveChannel.receive``), or ``None`` for anything else.

    It returns a message that is already queued or raises ``trio.WouldBlock``; ``trio.EndOfChannel`` and
    ``trio.ClosedResourceError`` as ``receive`` would. hypercorn queues a body as one message per chunk it
    read plus an empty final one, so awaiting ``receive`` costs a pass of trio's scheduler per message
    even when the whole body is there.
    """
    channel = getattr(receive, "__self__", None)
    if isinstance(channel, trio.MemoryReceiveChannel) and (
        getattr(receive, "__func__", None) is trio.MemoryReceiveChannel.receive
    ):
        return channel.receive_nowait
    return None


def response_complete(stream: Any) -> bool:
    """Whether *stream* (from :func:`http_stream`) has sent its whole response."""
    return stream.state is ASGIHTTPState.CLOSED


def find_server(send: Callable[..., Any]) -> Any | None:
    """The object under an ASGI ``send`` callable that holds the connection's trio stream (hypercorn's
    ``TCPServer``, with ``.stream`` and ``.send_lock``), or ``None`` if the chain is not hypercorn's.

    The walk goes ``__self__`` of each ``send``, then that object's ``.send``.
    """
    obj: Any = send
    for _ in range(_MAX_HOPS):
        owner = getattr(obj, "__self__", None)
        if owner is None:
            return None
        if isinstance(getattr(owner, "stream", None), (trio.SocketStream, trio.SSLStream)):
            return owner
        obj = getattr(owner, "send", None)
    return None


def find_transport(send: Callable[..., Any]) -> trio.SocketStream | None:
    """The trio socket stream under hypercorn's ASGI ``send`` callable (under TLS too), or ``None``."""
    stream = getattr(find_server(send), "stream", None)
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream if isinstance(stream, trio.SocketStream) else None


def reset(stream: trio.SocketStream) -> None:
    """Abort the TCP connection now (RST, unsent data dropped). Synchronous; idempotent."""
    sock = stream.socket
    if sock.fileno() == -1:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
