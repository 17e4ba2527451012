"""``X-Request-Id`` on every HTTP response (``--enable-request-id-headers``): vLLM's XRequestIdMiddleware.

The response carries the request's own ``X-Request-Id`` (its first value, as sent, even empty), else a
fresh uuid4 in hex; the header is appended to the app's. As in vLLM, WebSockets get none (the layer only
touches ``http.response.start``). The id the engine request gets is chosen elsewhere
(``state.base_request_id``), exactly as vLLM's is independent of this header.
"""

from __future__ import annotations

import uuid

from ..http import Receive, Scope, Send
from .plumbing import Message, first, rebind


class RequestId:
    """ASGI layer: appends ``x-request-id`` to HTTP responses."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = first(scope["headers"], b"x-request-id")

        async def forward(_owner: object, message: Message) -> None:
            if message["type"] == "http.response.start":
                request_id = given if given is not None else uuid.uuid4().hex.encode()
                # a copy: the app may send the same header list with every response
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        await self.app(scope, receive, rebind(forward, send))
