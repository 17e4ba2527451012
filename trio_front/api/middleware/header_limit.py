"""``--h11-max-header-count``: a request with more header fields than that is answered 431.

vLLM passes the flag to uvicorn, which (0.54, the version vLLM 0.32 runs on) never reads it: there a
request with any number of headers is served. We enforce it, as the flag says, on every request
(HTTP/1.x and HTTP/2, and WebSocket handshakes, refused before the upgrade). hypercorn has already parsed
the headers by then; their total size is bounded earlier, by hypercorn's own limit
(``--h11-max-incomplete-event-size``).
"""

from __future__ import annotations

from ..errors import APIError
from ..http import Receive, Scope, Send
from .plumbing import refuse


class HeaderLimit:
    """ASGI layer: 431 ``Request Header Fields Too Large`` past *max_count* header fields."""

    def __init__(self, app, max_count: int) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.max_count = max_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and len(scope["headers"]) > self.max_count:
            error = APIError(431, f"too many request header fields (more than {self.max_count})")
            await refuse(scope, receive, send, error)
            return
        await self.app(scope, receive, send)
