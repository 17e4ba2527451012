"""Noticing that an HTTP client went away, and cancelling its request's work at once.

Hypercorn never cancels an app task when its client goes away: it only queues ``http.disconnect`` for the
app's ``receive()``. :func:`run_with_disconnect` turns that message into a cancellation of the request's
scope, at any stage (tokenizing, queued in the engine, prefill, decode, streaming, or a non-streaming
request still running), and runs the request's :func:`on_disconnect` callbacks (the engine aborts) in the
same moment. The engine request is also aborted by the generation's context manager on the way out; both
are idempotent.

How the message is seen, fastest first:

* **Under hypercorn** (HTTP/1.1 and HTTP/2), :func:`run_with_disconnect` wraps the request's
  ``HTTPStream.app_put``: hypercorn's connection task calls it when it reads the EOF or reset, so the scope
  is cancelled and the aborts go out inside that task, in the same pass of trio's scheduler. A watcher task
  blocked in ``receive()`` would wake one pass later, and under load a pass runs every other stream's
  event (several milliseconds with hundreds of streams). No task and no nursery are needed either, which
  matters for short requests.
* **Any other ASGI server**: a watcher task blocked in ``receive()`` beside the work, in a nursery.

Hypercorn's ``send`` does not raise on a dead connection (ASGI 2.1); an ``OSError`` from it, or our own
direct writer's broken pipe, surfaces as :class:`ClientDisconnected` from the work, which ends the request
the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import trio

from . import transport

if TYPE_CHECKING:
    from .http import Receive, Send

log = logging.getLogger("trio_front.api")

#: The current request's disconnect callbacks (set by :func:`run_with_disconnect`).
_disconnect_callbacks: ContextVar[list[Callable[[], None]] | None] = ContextVar(
    "trio_front_disconnect_callbacks", default=None
)


class ClientDisconnected(Exception):
    """The client went away (seen by ``receive()`` or by a failing ``send``)."""


def on_disconnect(callback: Callable[[], None]) -> None:
    """Have *callback* run synchronously as soon as the current request's client disconnects.

    For work that must not wait for the request's cancelled task to unwind, i.e. the engine aborts
    (which the unwinding also does: both are idempotent). Callbacks run right after the request's scope
    was cancelled, in registration order, in whichever task noticed the disconnect; an exception is logged
    and skipped. Outside :func:`run_with_disconnect` this does nothing.
    """
    callbacks = _disconnect_callbacks.get()
    if callbacks is not None:
        callbacks.append(callback)


class _Request:
    """One request's disconnect state: its cancel scope and callbacks; :meth:`left` fires them once."""

    __slots__ = ("callbacks", "disconnected", "scope")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.callbacks: list[Callable[[], None]] = []
        self.disconnected = False

    def left(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        # Cancel first: a work task parked on engine output then wakes with Cancelled, not with the
        # "aborted" error the callbacks hand to its stream.
        self.scope.cancel(reason="client disconnected")
        for callback in self.callbacks:
            try:
                callback()
            except Exception:
                log.exception("disconnect callback failed")


async def run_with_disconnect(
    receive: Receive, work: Callable[[], Awaitable[None]], send: Send | None = None
) -> bool:
    """Run *work* until it completes or the client disconnects.

    *send* is the server's own ASGI ``send`` (unwrapped): under hypercorn it leads to the request's
    stream, whose disconnect is then seen without a watcher task. Returns ``True`` if *work* completed,
    ``False`` if the client disconnected first (then *work* was cancelled: its cleanup, e.g. the engine
    abort, has run). Exceptions from *work* propagate. Callbacks that *work* registered with
    :func:`on_disconnect` run the moment the client leaves.
    """
    stream = transport.http_stream(send)
    if stream is None:
        return await _run_with_watcher(receive, work)
    with trio.CancelScope() as scope:
        request = _Request(scope)
        original_put = stream.app_put

        async def app_put(message: dict[str, Any]) -> None:
            # Hypercorn also says "disconnect" right after a complete response (the stream is recycled
            # for the next request on the connection): nothing left to cancel then.
            if message["type"] == "http.disconnect" and not transport.response_complete(stream):
                request.left()
            await original_put(message)

        stream.app_put = app_put
        token = _disconnect_callbacks.set(request.callbacks)
        try:
            if stream.closed:  # it left before the hook was in place; its message waits in receive()
                request.left()
            await work()
        except ClientDisconnected:
            request.disconnected = True
        finally:
            stream.app_put = original_put
            _disconnect_callbacks.reset(token)
    return not request.disconnected


async def _run_with_watcher(receive: Receive, work: Callable[[], Awaitable[None]]) -> bool:
    """:func:`run_with_disconnect` for other servers: a task blocked in ``receive()`` beside *work*."""

    async def watch(request: _Request) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        request.left()

    try:
        async with trio.open_nursery() as nursery:
            request = _Request(nursery.cancel_scope)
            token = _disconnect_callbacks.set(request.callbacks)
            try:
                nursery.start_soon(watch, request)
                try:
                    await work()
                except ClientDisconnected:
                    request.disconnected = True
                nursery.cancel_scope.cancel(reason="response complete")
            finally:
                _disconnect_callbacks.reset(token)
    except BaseExceptionGroup as group:
        raise unwrap(group) from None
    return not request.disconnected


def unwrap(group: BaseExceptionGroup) -> BaseException:
    """The one real error inside a nursery's exception group (the watcher only ever gets cancelled)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group
