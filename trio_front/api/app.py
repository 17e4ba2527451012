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

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from trio_front.engine.client import EngineClient, EngineError

from . import admin, chat, completions, lora, middleware, realtime, responses, scale_out, tokenize
from .anthropic.messages import ROUTES as ANTHROPIC_ROUTES
from .disconnect import ClientDisconnected, run_with_disconnect
from .errors import APIError
from .http import Headers, Receive, Scope, Send, read_body, send_error
from .state import ServerState

log = logging.getLogger("trio_front.api")

#: ``handler(state, body, send, headers)``: headers are the ASGI scope's (lower-case names, bytes).
HTTPHandler = Callable[[ServerState, bytes, Send, Headers], Awaitable[None]]
WSHandler = Callable[[ServerState, Scope, Receive, Send], Awaitable[None]]
#: ``handler(state, send)`` for bodiless GET routes.
GetHandler = Callable[[ServerState, Send], Awaitable[None]]

#: ``GET /v1/models/{id}``; the id is the rest of the path and may contain slashes (``org/model``).
MODEL_PREFIX = "/v1/models/"


async def _ping_post(state: ServerState, _body: bytes, send: Send, _headers: Headers) -> None:
    await admin.health(state, send)


class App:
    """ASGI 3 app serving the OpenAI API for one model on one engine."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.registry = admin.make_registry(state)
        self.post_routes: dict[str, HTTPHandler] = {
            "/v1/completions": completions.handle,
            "/v1/chat/completions": chat.handle,
            "/v1/responses": responses.handle_post,
            "/tokenize": tokenize.handle_tokenize,
            "/detokenize": tokenize.handle_detokenize,
            "/ping": _ping_post,
            **ANTHROPIC_ROUTES,
        }
        if lora.runtime_updating_enabled():  # vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING gate
            self.post_routes.update(lora.ROUTES)
        self.get_routes: dict[str, GetHandler] = {
            "/health": admin.health,
            "/ping": admin.health,
            "/v1/models": admin.models,
            "/version": admin.version,
            "/load": admin.load,
            "/metrics": lambda _state, send: admin.metrics(self.registry, send),
        }
        #: POST routes whose requests in flight ``/load`` counts (with ``--enable-server-load-tracking``):
        #: the generate routes, as vLLM's ``load_aware_call`` decorates them.
        self.load_tracked: set[str] = {"/v1/completions", "/v1/chat/completions", "/v1/responses"}
        self.load_tracked.add("/v1/messages")
        self.post_routes.update(scale_out.ROUTES)  # 403 without --enable-scale-out
        self.load_tracked |= scale_out.LOAD_TRACKED
        self.ws_routes: dict[str, WSHandler] = {
            "/v1/responses": responses.handle_websocket,
            "/v1/realtime": realtime.handle_websocket,
        }
        self._shutdown = trio.Event()
        #: set by :meth:`drain`: /health says 503 and new POSTs are refused while in-flight ones finish
        self.draining = False
        #: POST requests being handled (their streams included)
        self.in_flight = 0
        #: keys, CORS, request-id headers and the access log in front of the routes (``middleware/``)
        self._asgi = middleware.wrap(self._route, state.http)

    @property
    def engine(self) -> EngineClient:
        return self.state.engine

    def begin_shutdown(self) -> None:
        """Stop the engine link now: every open engine request is aborted and its response ends."""
        self._shutdown.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            if self.draining and (method == "POST" or path in ("/health", "/ping")):
                raise APIError(503, "the server is shutting down", type="ServiceUnavailableError")
            if method == "POST" and path in self.post_routes:
                handler = self.post_routes[path]
                body = await read_body(receive)
                headers = scope["headers"]
                self.in_flight += 1
                try:
                    with self._counted(path):
                        await run_with_disconnect(
                            receive, lambda: handler(state, body, tracked_send, headers), send
                        )
                finally:
                    self.in_flight -= 1
            elif method == "GET" and path in self.get_routes:
                await self.get_routes[path](state, tracked_send)
            elif method == "GET" and path.startswith(MODEL_PREFIX) and len(path) > len(MODEL_PREFIX):
                await admin.retrieve_model(state, path[len(MODEL_PREFIX) :], tracked_send)
            elif path in self.post_routes or path in self.get_routes or path.startswith(MODEL_PREFIX):
                raise APIError(405, f"method {method} not allowed on {path}")
            else:
                raise APIError(404, f"no route for {method} {path}", type="NotFoundError")
        except ClientDisconnected:
            return
        except APIError as exc:
            if not tracked_send.started:
                await send_error(send, exc)
        except EngineError as exc:  # the engine died (or failed) under the request: known, no traceback
            log.warning("%s %s: %s", method, path, exc)
            if not tracked_send.started:
                await send_error(send, APIError(500, str(exc)))
        except Exception:
            log.exception("error while handling %s %s", method, path)
            if not tracked_send.started:
                await send_error(send, APIError(500, "internal server error"))

    @contextlib.contextmanager
    def _counted(self, path: str) -> Iterator[None]:
        """Count the request in ``state.server_load`` while it runs (however it ends: done, error,
        disconnect), if load tracking is on and *path* is a generate route. Our handlers send their
        whole response, streams included, before returning, so this spans the stream too."""
        state = self.state
        if not (state.track_server_load and path in self.load_tracked):
            yield
            return
        state.server_load += 1
        try:
            yield
        finally:
            state.server_load -= 1

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
