"""One accepted WebSocket: a reader, a writer and a stuck-send watchdog in one nursery.

Task structure of a socket (:func:`serve_socket`)::

    socket nursery
    ├── reader (the handler's own task)   receive() until websocket.disconnect; handles client events
    ├── writer                            outbox → send(), one message at a time
    ├── watchdog                          fires when one send stays blocked past ``send_timeout``
    └── responses                         started by the protocol with Socket.start_soon, one task each

Why a separate writer: hypercorn's ``send`` blocks while the client does not read (it ends in a
shielded ``send_all``, see :mod:`..transport`), and it cannot be cancelled. So response tasks never call
it: they push into the :class:`~.outbox.Outbox` (deltas coalesce there) and keep draining the engine.

Why the reader stays in ``receive()``: hypercorn never cancels the app when the client goes away; it
only queues ``websocket.disconnect`` (and silently drops later sends).

How a socket ends:

* the client closes it (or the connection breaks): the reader sees ``websocket.disconnect`` and cancels
  the nursery; leaving each response's ``Generation`` aborts its engine request;
* the client stops reading: once one send has been blocked for ``send_timeout`` seconds the watchdog
  closes the outbox, cancels the nursery (aborting the engine requests at once) and resets the TCP
  connection, which unblocks the stuck send;
* server shutdown (:mod:`.shutdown`): while the server drains, responses already running finish
  (protocols refuse new ones, see :attr:`Socket.draining`); then :meth:`Socket.go_away` waits for the
  socket's response tasks to end, lets the writer send what they queued and closes the socket with 1001
  (going away). If the server's last deadline passes first, hypercorn cancels the connection: the same
  cancellation path aborts the engine requests, and if a send is blocked at that moment the watchdog
  resets the connection at once (otherwise the shielded send would hold the shutdown until the client
  reads).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import trio

from .. import transport
from ..errors import APIError
from ..http import Receive, Scope, Send
from .options import WSOptions, WSStats
from .outbox import Outbox

if TYPE_CHECKING:  # the state holds our options: importing it here would be circular
    from ..state import ServerState

log = logging.getLogger("trio_front.api.ws")


class Rejected(Exception):
    """Raised by a ``check`` to refuse the upgrade with the error's HTTP status and JSON body."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.message)
        self.error = error


class SocketHandler(Protocol):
    """A protocol on top of :class:`Socket` (Realtime, Responses WebSocket mode)."""

    async def opened(self) -> None:
        """Called once after the upgrade (e.g. to push ``session.created``)."""

    async def message(self, data: str | bytes) -> None:
        """One client message. Runs in the reader task: keep it short; start responses with
        :meth:`Socket.start_soon`. It is called only while the outbox has room."""


class Socket:
    """What a protocol handler sees of its socket."""

    def __init__(
        self, state: ServerState, nursery: trio.Nursery, send: Send, options: WSOptions, stats: WSStats
    ) -> None:
        self.state = state
        self.options = options
        self.stats = stats
        self.outbox = Outbox(options.max_outbox)
        #: why the socket ended: "client closed", "stuck", "send failed"
        self.close_reason: str | None = None
        self._nursery = nursery
        self._send = send
        self._transport = transport.find_transport(send)
        self._sending_since: float | None = None
        self._stuck_scope = trio.CancelScope()
        #: tasks started with :meth:`start_soon` still running (the responses)
        self.tasks = 0
        self._tasks_done = trio.lowlevel.ParkingLot()
        #: the close code :meth:`go_away` asked for (the writer sends it once the outbox is empty)
        self._close_code: int | None = None

    @property
    def draining(self) -> bool:
        """The server is shutting down: a protocol refuses new responses (running ones may finish)."""
        return self.stats.draining

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a task (a response) in the socket's nursery: it is cancelled when the socket ends, and
        :meth:`go_away` waits for it."""
        self.tasks += 1
        self._nursery.start_soon(self._counted, fn, args)

    async def _counted(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        finally:
            self.tasks -= 1
            if not self.tasks:
                self._tasks_done.unpark_all()

    def go_away(self, code: int = 1001) -> None:
        """Close the socket gracefully (server shutdown): once its response tasks have ended (the server
        has aborted what the drain left), the writer sends what they queued, then a close frame with
        *code* (1001, going away), and the socket ends. Idempotent; a no-op on a socket that is ending."""
        if self._close_code is not None or self.close_reason is not None:
            return
        self._close_code = code
        self._nursery.start_soon(self._finish_when_idle)

    async def _finish_when_idle(self) -> None:
        while self.tasks:
            await self._tasks_done.park()
        self.outbox.finish()  # the writer sends what is queued, then the close frame

    def push(self, event: dict[str, Any]) -> None:
        self.outbox.push(event)

    def _end(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self.outbox.close()
        self._nursery.cancel_scope.cancel(reason=reason)

    # ------------------------------------------------------------------ tasks

    async def _read(self, receive: Receive, handler: SocketHandler) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
                continue
            text = message.get("text")
            data: str | bytes = text if text is not None else (message.get("bytes") or b"")
            await self.outbox.wait_writable()
            await handler.message(data)

    async def _write(self) -> None:
        while True:
            try:
                event = await self.outbox.get()
            except trio.EndOfChannel:
                if self._close_code is not None and not self.outbox.closed:  # go_away(): all sent
                    await self._close(self._close_code)
                return
            data = orjson.dumps(event).decode()
            self._sending_since = now = trio.current_time()
            self._stuck_scope.deadline = now + self.options.send_timeout
            try:
                await self._send({"type": "websocket.send", "text": data})
            except OSError:  # servers that follow ASGI 2.4 raise when the client is gone
                self._end("send failed")
                return
            finally:
                self._sending_since = None
                self._stuck_scope.deadline = math.inf

    async def _close(self, code: int) -> None:
        """Send the close frame (under the stuck-send watchdog like any send), then end the socket."""
        self._sending_since = now = trio.current_time()
        self._stuck_scope.deadline = now + self.options.send_timeout
        try:
            await self._send({"type": "websocket.close", "code": code})
        except OSError:
            pass  # the client is gone already
        finally:
            self._sending_since = None
            self._stuck_scope.deadline = math.inf
        self._end("server shutdown")

    async def _watch(self) -> None:
        timeout = self.options.send_timeout
        while True:
            try:
                with self._stuck_scope:
                    await trio.sleep_forever()
            except trio.Cancelled:
                # The socket is torn down from outside (server shutdown) while a send is blocked: the
                # shielded send_all would hold this socket, and the shutdown, until the client reads.
                if self._sending_since is not None and self._transport is not None:
                    transport.reset(self._transport)
                raise
            since = self._sending_since
            if since is not None and trio.current_time() - since >= timeout:
                break
            # The send finished just as the deadline passed: re-arm with a fresh scope.
            self._stuck_scope = trio.CancelScope()
            if self._sending_since is not None:
                self._stuck_scope.deadline = self._sending_since + timeout
        self.stats.stuck_closed_total += 1
        log.warning("closing a WebSocket whose client has not read anything for %.1f s", timeout)
        self._end("stuck")
        if self._transport is not None:
            transport.reset(self._transport)
        else:
            log.warning(
                "cannot reach the TCP connection to reset it: the blocked send stays until the client "
                "reads or leaves (its engine requests are aborted)"
            )


async def serve_socket(
    state: ServerState,
    scope: Scope,
    receive: Receive,
    send: Send,
    make_handler: Callable[[Socket], SocketHandler],
    *,
    check: Callable[[], None] | None = None,
) -> None:
    """Accept the WebSocket (unless ``check()`` raises :class:`Rejected`) and serve it until it ends."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    stats = state.ws_stats
    try:
        if stats.draining:  # as HTTP requests while the server drains
            raise Rejected(APIError(503, "the server is shutting down", type="ServiceUnavailableError"))
        if check is not None:
            check()
    except Rejected as exc:
        await _deny(scope, send, exc.error)
        return
    stats.open_sockets += 1
    stats.sockets_total += 1
    sock: Socket | None = None
    try:
        accept: dict[str, Any] = {"type": "websocket.accept"}
        subprotocol = select_subprotocol(scope.get("subprotocols") or ())
        if subprotocol is not None:
            accept["subprotocol"] = subprotocol
        await send(accept)
        async with trio.open_nursery() as nursery:
            sock = Socket(state, nursery, send, state.ws_options, stats)
            stats.sockets.add(sock)
            nursery.start_soon(sock._write)
            nursery.start_soon(sock._watch)
            handler = make_handler(sock)
            await handler.opened()
            await sock._read(receive, handler)
            sock._end("client closed")
    finally:
        stats.open_sockets -= 1
        if sock is not None:
            stats.sockets.discard(sock)
            stats.coalesced_deltas_total += sock.outbox.coalesced
            stats.outbox_high_water = max(stats.outbox_high_water, sock.outbox.high_water)
            sock.outbox.close()


#: subprotocols we select when a client offers them. A browser cannot set headers on a WebSocket, so for
#: OpenAI's Realtime API it offers ``["realtime", "openai-insecure-api-key.<key>", ...]`` (the key is read
#: by ``middleware/auth.py``), and browsers fail a handshake whose answer selects none of the offered
#: subprotocols: OpenAI's server answers ``realtime``, as we do. vLLM accepts without any.
SUBPROTOCOLS = ("realtime",)


def select_subprotocol(offered: Sequence[str]) -> str | None:
    """The subprotocol to accept: the first of :data:`SUBPROTOCOLS` the client offered, else none (never
    the key-carrying ``openai-insecure-api-key.*``, which would echo the key)."""
    for protocol in offered:
        if protocol in SUBPROTOCOLS:
            return protocol
    return None


async def _deny(scope: Scope, send: Send, error: APIError) -> None:
    """Refuse the upgrade: an HTTP error response where the server supports it, else a close (403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": error.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": error.json()})
    else:
        await send({"type": "websocket.close", "code": 1008})
