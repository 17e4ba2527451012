"""Running one response and producing the Responses API's streaming events (SSE and WebSocket alike).

Event sequence (each with a ``sequence_number`` from 0, assigned by the :class:`Emitter`)::

    response.created, response.in_progress
    the output items' events (:mod:`.output`: reasoning, message, function calls, opened lazily)
    response.completed | response.incomplete (max_output_tokens) | response.failed (engine error)

The generation's text goes through the request's assistant output (``trio_front.assistant``); this
module never parses model output itself. The non-streamed answer is the final event's response object.

Cancellation (client disconnect, socket closed or stuck, server shutdown): the generation's context
aborts the engine request and nothing more is emitted; :func:`run_response` re-raises ``Cancelled``.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import attrs

from trio_front.assistant import AssistantResult
from trio_front.engine.client import EngineError
from trio_front.serving.generation import Chunk, Generation, GenerationError

from ..state import engine_failure
from ..streaming import drive
from .output import ResponseOutput
from .request import Plan


class Emitter(Protocol):
    """Where events go: an SSE stream, a WebSocket outbox, or nowhere (non-streaming)."""

    keep_alive: float | None

    async def event(self, event: dict[str, Any]) -> None: ...

    async def delta(self, key: object, event: dict[str, Any], text: str) -> None:
        """``event["delta"] = text`` — a WebSocket emitter may merge it into the previous delta."""

    async def idle(self) -> None:
        """Called after ``keep_alive`` seconds without output (an SSE comment)."""


@attrs.define(eq=False)
class Outcome:
    status: str
    response: dict[str, Any]  # the final Response object
    items: list[dict[str, Any]]  # its output items
    #: the engine rejected the request's structured-output constraint (a 400 when not streamed)
    constraint_rejected: bool = False
    #: the turn as a chat message (content, tool_calls, reasoning), for a continuation's history
    message: dict[str, Any] | None = None
    #: the engine link failed mid-response (died, stopped answering): a non-streamed request is then an
    #: error response, as vLLM's (its EngineDeadError handler), not a 200 with status "failed"
    engine_error: EngineError | None = None


def response_object(
    plan: Plan,
    status: str,
    *,
    output: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    req = plan.req
    params = plan.generation.params if plan.generation is not None else None
    done = status not in ("in_progress", "queued")
    echo = plan.echo
    return {
        "id": plan.response_id,
        "object": "response",
        "created_at": plan.created_at,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if done and status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": None,
        "model": plan.model,
        "output": output or [],
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": req.previous_response_id,
        "reasoning": echo.get("reasoning"),
        "service_tier": "default",
        "temperature": params.temperature if params is not None else req.temperature,
        "text": echo.get("text", {"format": {"type": "text"}}),
        "tool_choice": echo.get("tool_choice", "auto"),
        "tools": echo.get("tools", []),
        "top_logprobs": 0,
        "top_p": params.top_p if params is not None else req.top_p,
        "truncation": req.truncation or "disabled",
        "usage": usage,
        "user": req.user,
        "metadata": req.metadata or {},
    }


def usage(gen: Generation, reasoning_tokens: int | None = None) -> dict[str, Any]:
    u = gen.usage
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens or 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens or 0},
        "total_tokens": u.total_tokens,
    }


async def run_response(plan: Plan, emit: Emitter) -> Outcome:
    """Generate *plan*'s answer, emitting every event; return the final response object."""
    if plan.generation is None or plan.setup is None:  # WebSocket warm-up (generate: false): no output
        final = response_object(plan, "completed", usage=_zero_usage())
        await emit.event({"type": "response.created", "response": response_object(plan, "in_progress")})
        await emit.event({"type": "response.completed", "response": final})
        return Outcome("completed", final, [])
    gen, setup = plan.generation, plan.setup
    out = setup.output()
    items = ResponseOutput()
    await emit.event({"type": "response.created", "response": response_object(plan, "in_progress")})
    await emit.event({"type": "response.in_progress", "response": response_object(plan, "in_progress")})

    async def send(events: list[dict[str, Any]]) -> None:
        for event in events:
            if "delta" in event:
                await emit.delta(event["item_id"], event, event.pop("delta"))
            else:
                await emit.event(event)

    async def on_chunk(_index: int, _gen: Generation, chunk: Chunk) -> None:
        events = out.push(chunk.text, chunk.token_ids)
        if chunk.finish_reason is not None:
            events += out.finish()
        if events:
            await send(items.feed(events))

    error: dict[str, Any] | None = None
    engine_error: EngineError | None = None
    rejected = False
    try:
        await drive([gen], on_chunk, keep_alive=emit.keep_alive, on_idle=emit.idle)
    except GenerationError:
        rejected = setup.constraint is not None
        error = {"code": "server_error", "message": engine_failure(setup.constraint, _param(plan)).message}
    except EngineError as exc:
        engine_error = exc
        error = {"code": "server_error", "message": str(exc) or type(exc).__name__}
    await send(items.feed(out.finish()))
    if error is None and gen.finish_reason == "abort":
        error = {"code": "server_error", "message": "the engine aborted the request"}
    if error is not None:
        status, incomplete = "failed", None
    elif gen.finish_reason == "length":
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    else:
        status, incomplete = "completed", None
    await send(items.close("completed" if status == "completed" else "incomplete"))
    final = response_object(
        plan,
        status,
        output=items.items,
        usage=usage(gen, out.reasoning_tokens()),
        error=error,
        incomplete_details=incomplete,
    )
    await emit.event({"type": f"response.{status}", "response": final})
    return Outcome(status, final, items.items, rejected, history_message(out.result), engine_error)


def history_message(result: AssistantResult) -> dict[str, Any]:
    """The turn as the chat message a continuation (``previous_response_id``) renders."""
    message: dict[str, Any] = {"role": "assistant", "content": result.content or None}
    if result.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in result.tool_calls
        ]
    if result.reasoning:
        message["reasoning"] = result.reasoning
    return message


def _param(plan: Plan) -> str:
    """The field whose constraint the engine could have rejected."""
    return "text.format" if plan.setup is not None and plan.setup.plan.schema is None else "tool_choice"


def _zero_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
