"""ASGI plumbing for one HTTP request: its body, JSON responses and SSE streams.

How a request notices its client leaving is :mod:`.disconnect`. Hypercorn's ``send`` does not raise on a
dead connection (ASGI 2.1); an ``OSError`` from it is treated as a disconnect, for servers that follow
ASGI 2.4.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio

from . import direct_body, transport
from .direct_body import DirectBody
from .disconnect import ClientDisconnected
from .errors import APIError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Largest request body we read (vLLM's Rust frontend uses the same order of magnitude).
MAX_BODY_BYTES = 32 * 1024 * 1024

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tell nginx not to buffer the stream
]


log = logging.getLogger("trio_front.api")


#: A request body that stalls this long between two chunks gets 408: a client trickling its body must
#: not hold a connection (and a request slot) for ever; hypercorn only times out the request head.
BODY_STALL_TIMEOUT = 30.0


async def read_body(
    receive: Receive, limit: int = MAX_BODY_BYTES, stall_timeout: float | None = None
) -> bytes:
    """Read the whole request body; 413 past *limit* bytes; 408 if no chunk arrives for *stall_timeout*
    seconds; :class:`ClientDisconnected` if the client left.

    Under hypercorn, messages already queued are taken without waiting (:func:`.transport.receive_nowait`):
    a body that arrived with its headers costs no scheduler pass (it was two, body and end). Only a
    missing chunk is awaited, under the stall timeout. Cancellation is checked on entry either way.
    """
    parts: list[bytes] = []
    size = 0
    stall_timeout = BODY_STALL_TIMEOUT if stall_timeout is None else stall_timeout
    take = transport.receive_nowait(receive)
    await trio.lowlevel.checkpoint_if_cancelled()
    while True:
        message = None
        if take is not None:
            try:
                message = take()
            except trio.WouldBlock:
                pass
        if message is None:
            with trio.move_on_after(stall_timeout) as stalled:
                message = await receive()
            if stalled.cancelled_caught:
                raise APIError(408, f"the request body stalled for {stall_timeout:g} s")
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body larger than {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def send_json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    length = (b"content-length", str(len(body)).encode())
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, length, *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: APIError) -> None:
    await send_json(send, error.status, error.json())


def chunk_encoder(head: dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
    """``encode(choice)`` → the JSON of ``{**head, "choices": [choice]}``, with *head* serialized once per
    response rather than once per event (orjson keeps key order, so ``choices`` closes the object)."""
    template = orjson.dumps({**head, "choices": []})
    assert template.endswith(b"[]}")
    prefix = template[:-2]

    def encode(choice: dict[str, Any]) -> bytes:
        return prefix + orjson.dumps(choice) + b"]}"

    return encode


class SSEWriter:
    """Server-sent events in vLLM's framing: ``data: <json>\\n\\n`` ... ``data: [DONE]\\n\\n``.

    Every ASGI ``send`` costs hypercorn-on-trio tens of microseconds (protocol events, a lock, a shielded
    ``send_all``, scheduler passes) whatever its size, so events in the middle of the stream are written
    straight to the socket where :mod:`.direct_body` can (HTTP/1.x under hypercorn), and :meth:`event`
    with ``hold=True`` keeps an event back to go out with the next write: a stream's last chunk, its usage
    event and ``[DONE]`` leave in one ``send`` together with the end of the body. Held events are lost if
    the client left meanwhile.
    """

    def __init__(self, send: Send, *, send_timeout: float = 30.0) -> None:
        self._send = send
        self._send_timeout = send_timeout
        self.started = False
        self._held: list[bytes] = []
        self._direct: DirectBody | None = None

    async def start(self) -> None:
        if not self.started:
            self.started = True
            await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            self._direct = direct_body.find(self._send, self._send_timeout)

    async def event(self, payload: Any, *, hold: bool = False) -> None:
        """Send one event (*payload*: JSON bytes or a value to serialize); ``hold``: with the next write."""
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        if hold:
            self._held.append(b"data: " + data + b"\n\n")
            return
        await self._raw(b"data: " + data + b"\n\n")

    async def named_event(self, name: str, payload: Any) -> None:
        """An event with an ``event:`` line (the Responses API uses them)."""
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await self._raw(b"event: " + name.encode() + b"\ndata: " + data + b"\n\n")

    async def keep_alive(self) -> None:
        await self._raw(b": keep-alive\n\n")

    async def done(self) -> None:
        """``[DONE]`` and the end of the body, in one write with any held events."""
        await self._end(b"data: [DONE]\n\n")

    async def close(self) -> None:
        """End the body (held events go with it)."""
        await self._end(b"")

    async def _with_held(self, data: bytes) -> bytes:
        """Start the response if needed; *data* preceded by the held events (now released)."""
        if not self.started:
            await self.start()
        if self._held:
            data = b"".join((*self._held, data))
            self._held.clear()
        return data

    async def _end(self, data: bytes) -> None:
        data = await self._with_held(data)
        try:
            await self._send({"type": "http.response.body", "body": data, "more_body": False})
        except OSError:
            raise ClientDisconnected from None

    async def _raw(self, data: bytes) -> None:
        data = await self._with_held(data)
        if self._direct is not None:
            try:
                if await self._direct.write(data):
                    return
            except direct_body.ClientStuck as exc:
                log.warning("closed a streamed response: %s", exc)
                raise ClientDisconnected from None
            except direct_body.BrokenConnection:
                raise ClientDisconnected from None
        try:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})
        except OSError:
            raise ClientDisconnected from None


Headers = list[tuple[bytes, bytes]]


def header(headers: Headers, name: bytes) -> str | None:
    """The first value of header *name* (lower-case bytes) in an ASGI header list, decoded as latin-1."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None
