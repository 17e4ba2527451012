"""``POST /v1/chat/completions``: render the chat template, generate, answer in vLLM's shapes.

Tools, tool choice, reasoning and structured outputs are planned by the assistant layer
(``trio_front.assistant``); this module only turns its events into chat messages and chunks. A streamed
answer, assembled as a client does (content and reasoning concatenated, tool calls merged by index),
equals the non-streamed one, by construction: both come from the same events.
"""

from __future__ import annotations

from typing import Any

from trio_front.assistant import (
    AssistantEvent,
    AssistantOutput,
    ContentDelta,
    ReasoningDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
    plan_tools,
)
from trio_front.assistant.setup import AssistantSetup
from trio_front.engine.client import EngineError
from trio_front.serving import structured
from trio_front.serving.generation import Chunk, Generation, GenerationError
from trio_front.serving.params import ParamError, check_prompt
from trio_front.text.chat_template import ChatTemplateError

from .assistant_request import assistant_generation, assistant_params
from .errors import APIError
from .http import Headers, Send, SSEWriter, chunk_encoder, send_json
from .logprobs import chat_logprobs
from .models import ChatCompletionRequest, parse_json, structure
from .state import ServerState, engine_failure, include_usage, new_id, param_error
from .streaming import drive

MAX_TOP_LOGPROBS = 20


async def prepare(
    state: ServerState, req: ChatCompletionRequest, *, stream: bool
) -> tuple[Generation, str, AssistantSetup]:
    """Validate, render and tokenize a chat request; return its (unstarted) generation, request id and
    assistant setup."""
    if not isinstance(req.messages, list) or not req.messages:
        raise APIError(400, "messages must be a non-empty list", param="messages")
    try:
        plan = plan_tools(req.tools, req.tool_choice, req.parallel_tool_calls, state.assistant)
        constraint = structured.from_request(
            req.response_format, req.structured_outputs, config=state.structured
        )
        setup = AssistantSetup.build(
            plan,
            constraint,
            config=state.assistant,
            structured_config=state.structured,
            tokenizer=state.tokenizer,
            include_reasoning=req.include_reasoning,
            chat_template_kwargs=req.chat_template_kwargs,
        )
    except ParamError as exc:
        raise param_error(exc) from None
    if req.prompt_logprobs is not None:
        raise APIError(400, "prompt_logprobs is not supported yet", param="prompt_logprobs")
    if req.bad_words:
        raise APIError(400, "bad_words is not supported yet", param="bad_words")
    if req.top_logprobs is not None and not 0 <= req.top_logprobs <= MAX_TOP_LOGPROBS:
        raise APIError(400, f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs")
    if req.add_generation_prompt and req.continue_final_message:
        raise APIError(400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
    state.check_engine()
    try:
        rendered = state.renderer.render(
            req.messages,
            add_generation_prompt=req.add_generation_prompt,
            continue_final_message=req.continue_final_message,
            tools=plan.render_tools,
            documents=req.documents,
            reasoning_effort=req.reasoning_effort,
            chat_template=req.chat_template,
            chat_template_kwargs=req.chat_template_kwargs,
        )
    except ChatTemplateError as exc:
        raise APIError(400, str(exc), param="messages") from None
    ids = await state.tokenizer.encode_async(rendered.prompt, add_special_tokens=req.add_special_tokens)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    try:
        limits = state.limits
        max_tokens = check_prompt(len(ids), limits, max_tokens)
        params, text_params = assistant_params(
            setup, req, limits=limits, max_tokens=max_tokens, logprobs=logprobs, stream=stream
        )
    except ParamError as exc:
        raise param_error(exc) from None
    request_id = new_id("chatcmpl")
    generation = assistant_generation(
        state,
        setup,
        ids,
        params,
        text_params,
        id_prefix=request_id,
        priority=req.priority,
        cache_salt=req.cache_salt,
    )
    return generation, request_id, setup


def _echo_prefix(req: ChatCompletionRequest) -> str:
    last = req.messages[-1] if req.echo and req.messages else None
    if isinstance(last, dict) and last.get("role") == "assistant" and isinstance(last.get("content"), str):
        return last["content"]
    return ""


async def handle(state: ServerState, body: bytes, send: Send, headers: Headers = ()) -> None:
    req = structure(parse_json(body), ChatCompletionRequest)
    state.check_model(req.model)
    usage_wanted = include_usage(req.stream_options)
    generation, request_id, setup = await prepare(state, req, stream=req.stream)
    model = req.model or state.served_model_name
    if req.stream:
        await _stream(state, req, generation, request_id, model, usage_wanted, setup, send)
    else:
        await _complete(state, req, generation, request_id, model, setup, send)


def _tool_call(call: ToolCallDone) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _message_content(setup: AssistantSetup, out: AssistantOutput, prefix: str) -> str | None:
    """vLLM's conventions: ``None`` for no content once tools or reasoning are parsed out of the text,
    ``""`` for a required/named tool choice, the plain text otherwise."""
    content = prefix + out.result.content
    if setup.plan.mode in ("required", "named"):
        return content
    if content or (setup.reasoning is None and not out.called and setup.plan.mode == "none"):
        return content
    return None


def _finish_reason(setup: AssistantSetup, gen: Generation, out: AssistantOutput) -> str | None:
    return setup.plan.finish_reason(gen.finish_reason, out.called)


def _delta(events: list[AssistantEvent]) -> dict[str, Any]:
    """One chunk's delta from the events of one engine step (fields in vLLM's order)."""
    content, reasoning, calls = [], [], {}
    for event in events:
        if isinstance(event, ContentDelta):
            content.append(event.text)
        elif isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, ToolCallStarted):
            calls[event.index] = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
        elif isinstance(event, ToolCallArgumentsDelta):
            entry = calls.setdefault(event.index, {"index": event.index, "function": {"arguments": ""}})
            entry["function"]["arguments"] += event.delta
    delta: dict[str, Any] = {}
    if reasoning:
        delta["reasoning"] = "".join(reasoning)
    if content:
        delta["content"] = "".join(content)
    if calls:
        delta["tool_calls"] = list(calls.values())
    return delta


async def _complete(
    state: ServerState,
    req: ChatCompletionRequest,
    gen: Generation,
    request_id: str,
    model: str,
    setup: AssistantSetup,
    send: Send,
) -> None:
    chunks: list[Chunk] = []
    out = setup.output()

    async def on_chunk(_index: int, _gen: Generation, chunk: Chunk) -> None:
        chunks.append(chunk)
        out.push(chunk.text, chunk.token_ids)

    try:
        await drive([gen], on_chunk)
    except GenerationError:
        raise engine_failure(setup.constraint) from None
    out.finish()
    gen.usage.reasoning_tokens = out.reasoning_tokens()
    logprobs = chat_logprobs(state.tokenizer, chunks, req.top_logprobs or 0) if req.logprobs else None
    result = out.result
    message = {
        "role": "assistant",
        "content": _message_content(setup, out, _echo_prefix(req)),
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": [_tool_call(c) for c in result.tool_calls],
        "reasoning": result.reasoning,
    }
    choice = {
        "index": 0,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": _finish_reason(setup, gen, out),
        "stop_reason": gen.stop_reason,
    }
    await send_json(
        send,
        200,
        {
            "id": request_id,
            "object": "chat.completion",
            "created": gen.created,
            "model": model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": gen.usage.as_dict(),
            "prompt_logprobs": None,
            "kv_transfer_params": None,
        },
    )


async def _stream(
    state: ServerState,
    req: ChatCompletionRequest,
    gen: Generation,
    request_id: str,
    model: str,
    usage_wanted: bool,
    setup: AssistantSetup,
    send: Send,
) -> None:
    sse = SSEWriter(send, send_timeout=state.send_timeout)
    out = setup.output()
    head: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": gen.created,
        "model": model,
    }
    await sse.event(
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
    )
    prefix = [_echo_prefix(req)]
    encode = chunk_encoder(head)

    async def on_chunk(_index: int, _gen: Generation, chunk: Chunk) -> None:
        text = chunk.text
        if prefix[0]:
            text, prefix[0] = prefix[0] + text, ""
        final = chunk.finish_reason is not None
        events = out.push(text, chunk.token_ids)
        if final:
            events += out.finish()
        if not events and not final and not (req.logprobs and chunk.token_ids):
            return  # text held back by a parser (a marker may be starting), nothing to say yet
        logprobs = chat_logprobs(state.tokenizer, [chunk], req.top_logprobs or 0) if req.logprobs else None
        choice: dict[str, Any] = {
            "index": 0,
            "delta": _delta(events) if events or not final else {},
            "logprobs": logprobs,
            "finish_reason": _finish_reason(setup, gen, out) if final else None,
        }
        if final:
            choice["stop_reason"] = chunk.stop_reason
        # The last chunk is held to leave with the usage event and [DONE] (one write).
        await sse.event(encode(choice), hold=final)

    try:
        await drive([gen], on_chunk, keep_alive=state.keep_alive_interval, on_idle=sse.keep_alive)
    except GenerationError:
        await sse.event(engine_failure(setup.constraint).body())
    except EngineError as exc:
        await sse.event(APIError(503, str(exc)).body())
    gen.usage.reasoning_tokens = out.reasoning_tokens()
    if usage_wanted:
        await sse.event({**head, "choices": [], "usage": gen.usage.as_dict()}, hold=True)
    await sse.done()
