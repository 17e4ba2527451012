"""Responses API WebSocket mode: ``GET /v1/responses`` upgraded; ``response.create`` events in, the
same events as the SSE stream out (``client.responses.connect()`` in the ``openai`` SDK).

* ``response.create`` carries a create body (``stream`` is implicit and ignored; ``background`` is
  refused). Its events carry ``sequence_number`` per response, and ``stream_id`` when the request had
  one. ``generate: false`` sets up a context without generating (a warm-up turn to continue from).
* ``stream_id`` lanes: one response at a time per lane (another ``response.create`` on a busy lane gets
  ``response_already_in_flight``), at most ``WSOptions.max_streams`` lanes running at once.
* ``previous_response_id`` continues from a response of *this socket*: the server keeps the last
  ``WSOptions.max_stored_responses`` completed or incomplete responses (default 64; the oldest is dropped
  first, and nothing outlives the socket). An unknown id gets ``previous_response_not_found``; start again
  with the full context.
* Errors are ``{"type": "error", "status", "error": {"type", "code", "message", "param"}}``; the socket
  stays open. ``response.steer`` and unknown event types are refused the same way.
* Cancellation: there is no cancel event in this mode; closing the socket aborts every running response.
  A client that stops reading is cut off after ``WSOptions.send_timeout`` (:mod:`trio_front.api.ws`).
* Server shutdown: while the server drains, running responses finish and a new ``response.create`` gets
  a 503 ``server_shutting_down`` error; then the socket closes with 1001 (:mod:`trio_front.api.ws.shutdown`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import orjson

from ..errors import APIError
from ..http import Receive, Scope, Send
from ..models import structure
from ..state import ServerState
from ..ws import Rejected, Socket, serve_socket
from .request import Plan, ResponsesRequest, new_response_id, plan
from .run import run_response

log = logging.getLogger("trio_front.api.responses")


class CodedError(APIError):
    """An :class:`APIError` with an OpenAI error ``code``."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None) -> None:
        super().__init__(status, message, param=param)
        self.code = code


def error_event(exc: APIError, stream_id: str | None) -> dict[str, Any]:
    code = getattr(exc, "code", None)
    if code is None:
        code = {404: "model_not_found", 503: "engine_unavailable"}.get(exc.status, "invalid_request")
        if exc.param == "input_tokens":
            code = "context_length_exceeded"
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    event: dict[str, Any] = {
        "type": "error",
        "status": exc.status,
        "error": {"type": kind, "code": code, "message": exc.message, "param": exc.param},
    }
    if stream_id is not None:
        event["stream_id"] = stream_id
    return event


class _Emitter:
    keep_alive: float | None = None

    def __init__(self, sock: Socket, stream_id: str | None) -> None:
        self.sock = sock
        self.stream_id = stream_id
        self.sequence = 0

    def _stamp(self, event: dict[str, Any]) -> None:
        event["sequence_number"] = self.sequence
        if self.stream_id is not None:
            event["stream_id"] = self.stream_id

    async def event(self, event: dict[str, Any]) -> None:
        self._stamp(event)
        self.sequence += 1
        self.sock.push(event)

    async def delta(self, key: object, event: dict[str, Any], text: str) -> None:
        self._stamp(event)
        if not self.sock.outbox.push_delta(key, event, "delta", text):
            self.sequence += 1  # a merged delta took no number of its own

    async def idle(self) -> None:
        pass


class ResponsesSocketHandler:
    def __init__(self, sock: Socket, state: ServerState) -> None:
        self.sock = sock
        self.state = state
        self.lanes: dict[str | None, str] = {}  # stream_id → id of the response running on it
        self.stored: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    async def opened(self) -> None:
        pass

    async def message(self, data: str | bytes) -> None:
        stream_id: str | None = None
        try:
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise CodedError(400, f"the message is not valid JSON: {exc}", "invalid_json") from None
            if not isinstance(event, dict):
                raise CodedError(400, "a client event must be a JSON object", "invalid_event")
            sid = event.get("stream_id")
            if sid is not None and not isinstance(sid, str):
                raise CodedError(400, "stream_id must be a string", "invalid_value", param="stream_id")
            stream_id = sid
            kind = event.get("type")
            if kind == "response.create":
                await self._create(event, stream_id)
            elif kind == "response.steer":
                raise CodedError(400, "response.steer is not supported", "unsupported_event", param="type")
            else:
                raise CodedError(
                    400,
                    f"unknown event type {kind!r}; expected 'response.create'",
                    "unknown_event",
                    param="type",
                )
        except APIError as exc:
            await self.sock.outbox.put(error_event(exc, stream_id))
        except Exception:
            log.exception("error while handling a Responses WebSocket event")
            await self.sock.outbox.put(error_event(APIError(500, "internal server error"), stream_id))

    async def _create(self, event: dict[str, Any], stream_id: str | None) -> None:
        if self.sock.draining:
            raise CodedError(503, "the server is shutting down", "server_shutting_down")
        if stream_id in self.lanes:
            lane = "this stream_id" if stream_id is not None else "this socket (no stream_id)"
            raise CodedError(
                409,
                f"a response ({self.lanes[stream_id]}) is already in flight on {lane}; wait for it to "
                "finish or use another stream_id",
                "response_already_in_flight",
            )
        if len(self.lanes) >= self.sock.options.max_streams:
            raise CodedError(
                429,
                f"at most {self.sock.options.max_streams} responses may run at once on one socket",
                "too_many_streams",
            )
        body = {k: v for k, v in event.items() if k not in ("type", "stream_id", "stream", "event_id")}
        req = structure(body, ResponsesRequest)
        history = None
        if req.previous_response_id is not None:
            history = self.stored.get(req.previous_response_id)
            if history is None:
                raise CodedError(
                    400,
                    f"Previous response with id '{req.previous_response_id}' not found (this socket keeps "
                    f"its last {self.sock.options.max_stored_responses} responses).",
                    "previous_response_not_found",
                    param="previous_response_id",
                )
        planned = await plan(self.state, req, new_response_id(), history=history, websocket=True)
        self.lanes[stream_id] = planned.response_id
        self.sock.start_soon(self._run, planned, stream_id)

    async def _run(self, planned: Plan, stream_id: str | None) -> None:
        stats = self.sock.stats
        stats.running_responses += 1
        stats.responses_total += 1
        finished = False
        try:
            try:
                outcome = await run_response(planned, _Emitter(self.sock, stream_id))
            except Exception:  # a bug: report it on this lane, keep the socket
                log.exception("Responses WebSocket response %s failed", planned.response_id)
                self.sock.push(error_event(APIError(500, "internal server error"), stream_id))
                finished = True
                return
            finished = True
            if outcome.status in ("completed", "incomplete"):
                context = list(planned.messages)
                if outcome.message is not None:  # with its tool calls and reasoning
                    context.append(outcome.message)
                self._remember(planned.response_id, context)
        finally:
            del self.lanes[stream_id]
            stats.running_responses -= 1
            if not finished:
                stats.cancelled_total += 1

    def _remember(self, response_id: str, context: list[dict[str, Any]]) -> None:
        self.stored[response_id] = context
        while len(self.stored) > self.sock.options.max_stored_responses:
            self.stored.popitem(last=False)


async def handle_websocket(state: ServerState, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ``/v1/responses`` socket (503 while the engine is not ready)."""

    def check() -> None:
        try:
            state.check_engine()
        except APIError as exc:
            raise Rejected(exc) from None

    def make_handler(sock: Socket) -> ResponsesSocketHandler:
        return ResponsesSocketHandler(sock, state)

    await serve_socket(state, scope, receive, send, make_handler, check=check)
