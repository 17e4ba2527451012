"""What the layers share: wrapping a ``send`` without hiding hypercorn from the app, header lists, refusals.

Why :func:`rebind`: the app reaches hypercorn's connection through its ASGI ``send`` (``transport.py``:
``send.__self__`` is hypercorn's ``HTTPStream`` / ``WSStream``). That is how a client's disconnect cancels
its request at once (``disconnect.py``) and how streamed chunks skip hypercorn's per-message cost
(``direct_body.py``). A plain closure around ``send`` would hide that object, and every request would fall
back to a watcher task and to a full ASGI ``send`` per chunk. So a layer's wrapper is made a bound method
of the same object: ``wrapper.__self__`` is still hypercorn's stream, and calling it runs the layer. The
layers only ever act on the response's start (``http.response.start``, the WebSocket handshake), which
always goes through ASGI, so the chunks that :mod:`..direct_body` writes past them lose nothing.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import APIError
from ..http import Headers, Receive, Scope, Send, send_json

Message = dict[str, Any]


def rebind(forward: Callable[[Any, Message], Awaitable[None]], send: Send) -> Send:
    """``forward(owner, message)`` as an ASGI ``send``: bound to ``send.__self__`` when *send* is a bound
    method (hypercorn's), so the app can still find the connection under it; else bound to ``None``."""
    owner = getattr(send, "__self__", None)
    return types.MethodType(forward, _NO_OWNER if owner is None else owner)


class _NoOwner:
    """``__self__`` of a wrapper around a ``send`` that is no bound method (another server, a test):
    nothing that walks ``__self__`` recognises it, exactly as it would not recognise the original."""

    __slots__ = ()


_NO_OWNER = _NoOwner()


def first(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header *name* (lower-case) in an ASGI header list (starlette's ``Headers.get``)."""
    for key, value in headers:
        if key == name:
            return value
    return None


def values(headers: Headers, name: bytes) -> list[bytes]:
    """Every value of header *name* (starlette's ``Headers.getlist``)."""
    return [value for key, value in headers if key == name]


def set_header(headers: Headers, name: bytes, value: bytes) -> None:
    """Set header *name* in place, as starlette's ``MutableHeaders.__setitem__``: the first occurrence takes
    the value and later duplicates are removed; appended if absent."""
    found = [i for i, (key, _) in enumerate(headers) if key == name]
    if not found:
        headers.append((name, value))
        return
    for i in reversed(found[1:]):
        del headers[i]
    headers[found[0]] = (name, value)


def client_address(scope: Scope) -> str:
    """``host:port`` of the peer as uvicorn's access log writes it; ``""`` when unknown (a Unix socket)."""
    client = scope.get("client")
    if isinstance(client, (tuple, list)) and len(client) == 2 and isinstance(client[1], int):
        return f"{client[0]}:{client[1]}"
    return ""


async def refuse(scope: Scope, receive: Receive, send: Send, error: APIError, headers: Headers = ()) -> None:
    """Answer a request that does not reach the app: *error* as an OpenAI-style JSON response.

    A WebSocket is refused before it is accepted: with an HTTP response (ASGI's ``websocket.http.response``
    extension, which hypercorn has), so the client sees the real status; on a server without it, by closing
    the handshake with 1008 (the server answers 403). The ``websocket.connect`` message is read first, as
    ASGI orders. Cancellation: nothing to clean up.
    """
    if scope["type"] == "http":
        await send_json(send, error.status, error.json(), list(headers))
        return
    message = await receive()
    if message["type"] != "websocket.connect":  # the client left already
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = error.json()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
