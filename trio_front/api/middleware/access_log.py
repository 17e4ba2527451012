"""The access log: one INFO line per request on logger ``trio_front.access``, in uvicorn's format.

vLLM's server logs through uvicorn's access log (on unless ``--disable-uvicorn-access-log``)::

    127.0.0.1:53422 - "POST /v1/completions HTTP/1.1" 200
    127.0.0.1:53430 - "WebSocket /v1/realtime?model=m" [accepted]
    127.0.0.1:53436 - "WebSocket /v1/realtime" 401

The line is written when the response starts (its status is known then), so a streamed response is
logged once, at its first byte, and a request the client abandons before any answer is not logged
(uvicorn's behaviour too). A WebSocket is logged at its handshake: ``[accepted]``, the status of an HTTP
refusal, or 403 for a handshake closed before acceptance. The path is the one the client sent (before
``--root-path`` is stripped), percent-quoted, with the query string.

Cost: nothing at all when the logger is not enabled for INFO (the layer steps aside for that request);
otherwise one ``Logger.info`` call per request, and for each further message a type test.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from ..http import Receive, Scope, Send
from .plumbing import Message, client_address, rebind

log = logging.getLogger("trio_front.access")


def _target(scope: Scope) -> str:
    """uvicorn's ``get_path_with_query_string``."""
    query = scope.get("query_string", b"")
    path = quote(scope["path"])
    return f"{path}?{query.decode('latin-1')}" if query else path


class AccessLog:
    """ASGI layer: logs each HTTP response's status and each WebSocket handshake's outcome."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and log.isEnabledFor(logging.INFO):

            async def forward(_owner: object, message: Message) -> None:
                if message["type"] == "http.response.start":
                    log.info(
                        '%s - "%s %s HTTP/%s" %d',
                        client_address(scope),
                        scope["method"],
                        _target(scope),
                        scope["http_version"],
                        message["status"],
                    )
                await send(message)

            await self.app(scope, receive, rebind(forward, send))
        elif kind == "websocket" and log.isEnabledFor(logging.INFO):
            handshake = True

            async def forward_ws(_owner: object, message: Message) -> None:
                nonlocal handshake
                if handshake:
                    outcome = _handshake_outcome(message)
                    if outcome is not None:
                        handshake = False
                        log.info('%s - "WebSocket %s" %s', client_address(scope), _target(scope), outcome)
                await send(message)

            await self.app(scope, receive, rebind(forward_ws, send))
        else:
            await self.app(scope, receive, send)


def _handshake_outcome(message: Message) -> str | None:
    kind = message["type"]
    if kind == "websocket.accept":
        return "[accepted]"
    if kind == "websocket.http.response.start":
        return str(message["status"])
    if kind == "websocket.close":
        return "403"
    return None
