"""Running one response and producing the Responses API's streaming events (SSE and WebSocket alike).

Event sequence (each with a ``sequence_number`` from 0, assigned by the :class:`Emitter`)::

    response.created, response.in_progress
    response.output_item.added, response.content_part.added
    response.output_text.delta ...
    response.output_text.done, response.content_part.done, response.output_item.done
    response.completed | response.incomplete (max_output_tokens) | response.failed (engine error)

Cancellation (client disconnect, socket closed or stuck, server shutdown): the generation's context
aborts the engine request and nothing more is emitted; :func:`run_response` re-raises ``Cancelled``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Protocol

import attrs

from trio_front.engine.client import EngineError
from trio_front.serving.generation import Chunk, Generation, GenerationError

from ..streaming import drive
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
    text: str


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
        "parallel_tool_calls": False,
        "previous_response_id": req.previous_response_id,
        "reasoning": None,
        "service_tier": "default",
        "temperature": params.temperature if params is not None else req.temperature,
        "text": {"format": {"type": "text"}},
        "tool_choice": req.tool_choice or "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": params.top_p if params is not None else req.top_p,
        "truncation": req.truncation or "disabled",
        "usage": usage,
        "user": req.user,
        "metadata": req.metadata or {},
    }


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = (
        [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    )
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def usage(gen: Generation) -> dict[str, Any]:
    u = gen.usage
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens or 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    }


async def run_response(plan: Plan, emit: Emitter) -> Outcome:
    """Generate *plan*'s answer, emitting every event; return the final response object."""
    if plan.generation is None:  # WebSocket warm-up (generate: false): no output
        final = response_object(plan, "completed", usage=_zero_usage())
        await emit.event({"type": "response.created", "response": response_object(plan, "in_progress")})
        await emit.event({"type": "response.completed", "response": final})
        return Outcome("completed", final, "")
    gen = plan.generation
    item_id = f"msg_{secrets.token_hex(16)}"
    base = {"item_id": item_id, "output_index": 0, "content_index": 0}
    await emit.event({"type": "response.created", "response": response_object(plan, "in_progress")})
    await emit.event({"type": "response.in_progress", "response": response_object(plan, "in_progress")})
    await emit.event(
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": message_item(item_id, None, "in_progress"),
        }
    )
    await emit.event(
        {
            "type": "response.content_part.added",
            **base,
            "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
        }
    )

    async def on_chunk(_index: int, _gen: Generation, chunk: Chunk) -> None:
        if chunk.text:
            await emit.delta(
                item_id, {"type": "response.output_text.delta", **base, "logprobs": []}, chunk.text
            )

    error: dict[str, Any] | None = None
    try:
        await drive([gen], on_chunk, keep_alive=emit.keep_alive, on_idle=emit.idle)
    except (GenerationError, EngineError) as exc:
        error = {"code": "server_error", "message": str(exc) or type(exc).__name__}
    text = gen.output_text
    if error is None and gen.finish_reason == "abort":
        error = {"code": "server_error", "message": "the engine aborted the request"}
    if error is not None:
        status, incomplete = "failed", None
    elif gen.finish_reason == "length":
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    else:
        status, incomplete = "completed", None
    item_status = "completed" if status == "completed" else "incomplete"
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    await emit.event({"type": "response.output_text.done", **base, "text": text, "logprobs": []})
    await emit.event({"type": "response.content_part.done", **base, "part": part})
    item = message_item(item_id, text, item_status)
    await emit.event({"type": "response.output_item.done", "output_index": 0, "item": item})
    final = response_object(
        plan, status, output=[item], usage=usage(gen), error=error, incomplete_details=incomplete
    )
    await emit.event({"type": f"response.{status}", "response": final})
    return Outcome(status, final, text)


def _zero_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
