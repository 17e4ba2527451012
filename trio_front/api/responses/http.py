"""``POST /v1/responses``: a JSON Response object, or (``stream: true``) the events as SSE.

SSE framing is OpenAI's: ``event: <type>`` and ``data: <json>`` per event, no ``[DONE]``. With the
server's ``--keep-alive-interval``, an SSE comment goes out whenever nothing else did for that long
(long prefills, a queue in the engine), so proxies do not cut the stream.

The handler runs inside :func:`~trio_front.api.disconnect.run_with_disconnect` (``App`` does that for every
POST route): a client that disconnects cancels it and the generation aborts its engine request.
"""

from __future__ import annotations

from typing import Any

from ..http import Headers, Send, SSEWriter, send_json
from ..models import parse_json, structure
from ..state import ServerState, engine_failure
from .request import ResponsesRequest, new_response_id, plan
from .run import run_response


class _SSEEmitter:
    def __init__(self, sse: SSEWriter, keep_alive: float | None) -> None:
        self.sse = sse
        self.keep_alive = keep_alive
        self.sequence = 0

    async def event(self, event: dict[str, Any]) -> None:
        event["sequence_number"] = self.sequence
        self.sequence += 1
        await self.sse.named_event(event["type"], event)

    async def delta(self, key: object, event: dict[str, Any], text: str) -> None:
        event["delta"] = text
        await self.event(event)

    async def idle(self) -> None:
        await self.sse.keep_alive()


class _Discard:
    keep_alive: float | None = None

    async def event(self, event: dict[str, Any]) -> None:
        pass

    async def delta(self, key: object, event: dict[str, Any], text: str) -> None:
        pass

    async def idle(self) -> None:
        pass


async def handle_post(state: ServerState, body: bytes, send: Send, headers: Headers = ()) -> None:
    """Not streamed: the Response object (200), or an error status when the engine failed mid-response
    (its :class:`EngineError` propagates to the app's error handling, as chat's does). Streamed: the
    events, ending with ``response.failed`` in that case (the 200 is sent already)."""
    req = structure(parse_json(body), ResponsesRequest)
    planned = await plan(state, req, new_response_id())
    if not req.stream:
        outcome = await run_response(planned, _Discard())
        if outcome.constraint_rejected:  # the client's constraint, not our failure: a 400, as for chat
            raise engine_failure(planned.setup.constraint if planned.setup else None, "text.format")
        if outcome.engine_error is not None:  # the engine died: an error status, as chat and vLLM answer
            raise outcome.engine_error
        await send_json(send, 200, outcome.response)
        return
    sse = SSEWriter(send, send_timeout=state.send_timeout)
    await sse.start()
    await run_response(planned, _SSEEmitter(sse, state.keep_alive_interval))
    await sse.close()
