"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` (Anthropic's Messages API), on the chat path.

The request is converted to a chat request (:mod:`.request`), then :func:`trio_front.api.chat.prepare`
validates, renders and tokenizes it exactly as ``/v1/chat/completions`` would; the answer is built from the
assistant layer's events by :class:`.blocks.MessageBlocks`, the same machine for the JSON message and the
stream. Every failure is answered in Anthropic's error shape (:mod:`.errors`): before a stream starts as
the response, after as an in-band ``error`` event.

A stream is ``message_start``, the blocks' ``content_block_start`` / ``_delta`` / ``_stop`` events,
``message_delta`` (stop reason, usage) and ``message_stop``, each with its ``event:`` line; ``ping``
events while nothing comes for ``--keep-alive-interval`` seconds (as Anthropic sends them).

Cancellation: a client that leaves aborts the engine request at once (``drive`` registers the abort as
the disconnect callback); leaving the generation's context aborts it in every other case.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from trio_front.assistant.setup import AssistantSetup
from trio_front.engine.client import EngineError
from trio_front.serving.generation import Chunk, Generation, GenerationError

from .. import chat
from ..disconnect import ClientDisconnected
from ..errors import APIError
from ..http import Headers, Send, SSEWriter, send_json
from ..models import parse_json
from ..state import ServerState, engine_failure
from ..streaming import drive
from .blocks import MessageBlocks, stop_reason
from .effort import disabled_thinking_effort
from .errors import AnthropicAPIError, stream_error
from .request import chat_request, refuse_budget, to_chat

log = logging.getLogger("trio_front.api")

Handler = Callable[[ServerState, bytes, Send, Headers], Awaitable[None]]


def anthropic_errors(handler: Handler) -> Handler:
    """*handler* with every failure turned into an :class:`AnthropicAPIError` (the app sends it unless
    the response already started); a disconnect and cancellation pass through."""

    async def wrapped(state: ServerState, body: bytes, send: Send, headers: Headers) -> None:
        try:
            await handler(state, body, send, headers)
        except APIError as exc:
            raise AnthropicAPIError.of(exc) from None
        except EngineError as exc:
            log.warning("anthropic messages: %s", exc)
            raise AnthropicAPIError(500, str(exc) or type(exc).__name__) from None
        except ClientDisconnected:
            raise
        except Exception:
            log.exception("error while handling an Anthropic request")
            raise AnthropicAPIError(500, "internal server error") from None

    return wrapped


async def _prepare(
    state: ServerState, body: bytes, headers: Headers, *, count_tokens: bool
) -> tuple[Generation, str, AssistantSetup, bool]:
    chat_body, thinking = to_chat(parse_json(body), count_tokens=count_tokens)
    if thinking == "enabled" and not count_tokens:  # a budget does not change the prompt it counts
        raise refuse_budget()
    if thinking == "disabled":  # after output_config.effort, which it overrides (vLLM's order)
        chat_body["reasoning_effort"] = disabled_thinking_effort(state)
    req = chat_request(chat_body)
    generation, request_id, setup = await chat.prepare(state, req, stream=req.stream, headers=headers)
    return generation, request_id, setup, req.stream


async def _count_tokens(state: ServerState, body: bytes, send: Send, headers: Headers) -> None:
    """``{"input_tokens": n}``: the prompt the same ``/v1/messages`` request renders (system, tools and
    all), and vLLM's ``context_management``. Nothing reaches the engine."""
    generation, _id, _setup, _stream = await _prepare(state, body, headers, count_tokens=True)
    n = len(generation.prompt_ids)
    await send_json(send, 200, {"input_tokens": n, "context_management": {"original_input_tokens": n}})


def _usage(gen: Generation) -> dict[str, Any]:
    """vLLM's ``_build_anthropic_usage`` without prompt-token details (``--enable-prompt-tokens-details``
    is refused, so no cache fields)."""
    return {"input_tokens": gen.usage.prompt_tokens, "output_tokens": gen.usage.completion_tokens}


def _stop(setup: AssistantSetup, gen: Generation, called: bool, blocks: MessageBlocks) -> dict[str, Any]:
    reason, sequence = stop_reason(
        setup.plan.finish_reason(gen.finish_reason, called), gen.stop_reason, blocks
    )
    return {"stop_reason": reason, "stop_sequence": sequence}


async def _messages(state: ServerState, body: bytes, send: Send, headers: Headers) -> None:
    gen, request_id, setup, stream = await _prepare(state, body, headers, count_tokens=False)
    model = state.response_model(gen.lora_request)
    out, blocks = setup.output(), MessageBlocks()
    head = {"id": request_id, "type": "message", "role": "assistant"}
    if not stream:

        async def collect(_index: int, _gen: Generation, chunk: Chunk) -> None:
            blocks.feed(out.push(chunk.text, chunk.token_ids))

        try:
            await drive([gen], collect)
        except GenerationError:
            raise engine_failure(setup.constraint) from None
        blocks.feed(out.finish())
        blocks.close()
        gen.usage.reasoning_tokens = out.reasoning_tokens()
        stop = {k: v for k, v in _stop(setup, gen, out.called, blocks).items() if v is not None}
        message = {**head, "content": blocks.content, "model": model, **stop, "usage": _usage(gen)}
        await send_json(send, 200, message)  # vLLM drops null fields (model_dump(exclude_none=True))
        return

    sse = SSEWriter(send, send_timeout=state.send_timeout)

    async def emit(events: list[dict[str, Any]]) -> None:
        for event in events:
            await sse.named_event(event["type"], event)

    async def ping() -> None:
        await sse.named_event("ping", {"type": "ping"})

    async def on_chunk(_index: int, _gen: Generation, chunk: Chunk) -> None:
        events = out.push(chunk.text, chunk.token_ids)
        if chunk.finish_reason is not None:
            events += out.finish()
        await emit(blocks.feed(events))

    start = {**head, "content": [], "model": model, "stop_reason": None, "stop_sequence": None}
    start["usage"] = {"input_tokens": gen.usage.prompt_tokens, "output_tokens": 0}
    await emit([{"type": "message_start", "message": start}])
    try:
        await drive([gen], on_chunk, keep_alive=state.keep_alive_interval, on_idle=ping)
    except GenerationError:
        failure = engine_failure(setup.constraint)
        await emit([stream_error(failure.status, failure.message)])
        await sse.close()
        return
    except EngineError as exc:
        await emit([stream_error(503, str(exc) or type(exc).__name__)])
        await sse.close()
        return
    gen.usage.reasoning_tokens = out.reasoning_tokens()
    await emit(blocks.feed(out.finish()) + blocks.close())
    delta = {"type": "message_delta", "delta": _stop(setup, gen, out.called, blocks), "usage": _usage(gen)}
    await emit([delta, {"type": "message_stop"}])
    await sse.close()


handle_messages = anthropic_errors(_messages)
handle_count_tokens = anthropic_errors(_count_tokens)

#: the POST routes (``api/app.py``)
ROUTES: dict[str, Handler] = {
    "/v1/messages": handle_messages,
    "/v1/messages/count_tokens": handle_count_tokens,
}
