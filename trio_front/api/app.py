"""The ASGI application: routing, the lifespan that owns the engine client, and request scopes.

Structure of tasks (every one has an owner):

* hypercorn's lifespan task runs :meth:`App._lifespan`, whose nursery owns the :class:`EngineClient`
  (its reader, socket monitors and liveness ping). Start-up completes at once so ``/health`` can say 503
  while the engine loads; shutdown cancels that nursery, which aborts whatever the engine still runs.
* each HTTP request runs in hypercorn's app task for it, in a cancel scope that the client's disconnect
  cancels (``disconnect.py``; under hypercorn without a task of its own): the engine aborts go out at once,
  and leaving a generation's context aborts its engine request too.
* each WebSocket runs its own nursery (``ws/socket.py``) with one task per response (``realtime/``,
  ``responses/websocket.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from trio_front.engine.client import EngineClient

from . import admin, chat, completions, realtime, responses
from .disconnect import ClientDisconnected, run_with_disconnect
from .errors import APIError
from .http import Headers, Receive, Scope, Send, read_body, send_error
from .state import ServerState

log = logging.getLogger("trio_front.api")

#: ``handler(state, body, send, headers)``: headers are the ASGI scope's (lower-case names, bytes).
HTTPHandler = Callable[[ServerState, bytes, Send, Headers], Awaitable[None]]
WSHandler = Callable[[ServerState, Scope, Receive, Send], Awaitable[None]]


class App:
    """ASGI 3 app serving the OpenAI API for one model on one engine."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.registry = admin.make_registry(state)
        self.post_routes: dict[str, HTTPHandler] = {
            "/v1/completions": completions.handle,
            "/v1/chat/completions": chat.handle,
        }
        self.post_routes["/v1/responses"] = responses.handle_post
        self.ws_routes: dict[str, WSHandler] = {
            "/v1/responses": responses.handle_websocket,
            "/v1/realtime": realtime.handle_websocket,
        }
        self._shutdown = trio.Event()

    @property
    def engine(self) -> EngineClient:
        return self.state.engine

    def begin_shutdown(self) -> None:
        """Stop the engine link now: every open engine request is aborted and its response ends."""
        self._shutdown.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # ------------------------------------------------------------------------------ lifespan

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        got_shutdown = False

        async def wait_for_shutdown_message() -> None:
            nonlocal got_shutdown
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            got_shutdown = True
            self._shutdown.set()

        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(self.engine.run)
            except BaseException as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                raise
            await send({"type": "lifespan.startup.complete"})
            nursery.start_soon(wait_for_shutdown_message)
            await self._shutdown.wait()
            # Cancelling the engine client's tasks aborts every request the engine still runs.
            nursery.cancel_scope.cancel(reason="server shutdown")
        if not got_shutdown:
            while (await receive())["type"] != "lifespan.shutdown":
                pass
        await send({"type": "lifespan.shutdown.complete"})

    # ------------------------------------------------------------------------------ HTTP

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        state = self.state
        tracked_send = _TrackedSend(send)
        try:
            if method == "POST" and path in self.post_routes:
                handler = self.post_routes[path]
                body = await read_body(receive)
                headers = scope["headers"]
                await run_with_disconnect(receive, lambda: handler(state, body, tracked_send, headers), send)
            elif method == "GET" and path == "/health":
                await admin.health(state, tracked_send)
            elif method == "GET" and path == "/v1/models":
                await admin.models(state, tracked_send)
            elif method == "GET" and path == "/version":
                await admin.version(state, tracked_send)
            elif method == "GET" and path == "/metrics":
                await admin.metrics(self.registry, tracked_send)
            elif path in self.post_routes or path in ("/health", "/v1/models", "/version", "/metrics"):
                raise APIError(405, f"method {method} not allowed on {path}")
            else:
                raise APIError(404, f"no route for {method} {path}", type="NotFoundError")
        except ClientDisconnected:
            return
        except APIError as exc:
            if not tracked_send.started:
                await send_error(send, exc)
        except Exception:
            log.exception("error while handling %s %s", method, path)
            if not tracked_send.started:
                await send_error(send, APIError(500, "internal server error"))

    # ------------------------------------------------------------------------------ WebSocket

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.ws_routes.get(scope["path"])
        if handler is None:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4404})
            return
        await handler(self.state, scope, receive, send)


class _TrackedSend:
    """ASGI ``send`` that remembers whether anything was sent (an error can then no longer be a response),
    and shields a response's last message.

    Why the shield: for a ``Connection: close`` or HTTP/1.0 client, hypercorn closes the connection inside
    the call that sends the last body message, and queues ``http.disconnect`` while doing so. A disconnect
    watcher (``disconnect.py``, for servers where its hypercorn hook does not apply; the hook ignores a
    disconnect after a complete response) would then cancel the request, interrupting that close halfway
    and leaving the client waiting for an EOF that never comes.
    ``__wrapped__`` lets :mod:`.direct_body` reach the server's own ``send`` underneath.
    """

    __slots__ = ("__wrapped__", "started")

    def __init__(self, send: Send) -> None:
        self.__wrapped__ = send
        self.started = False

    async def __call__(self, message: dict[str, Any]) -> None:
        self.started = True
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await self.__wrapped__(message)
        else:
            await self.__wrapped__(message)
