"""``POST /v1/chat/completions``: render the chat template, generate, answer in vLLM's shapes.

Tools, tool choice, reasoning and structured outputs are planned by the assistant layer
(``trio_front.assistant``); this module only turns its events into chat messages and chunks. A streamed
answer, assembled as a client does (content and reasoning concatenated, tool calls merged by index),
equals the non-streamed one, by construction: both come from the same events.
"""

from __future__ import annotations

import logging
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
from trio_front.engine import wire
from trio_front.engine.client import EngineError
from trio_front.serving import structured
from trio_front.serving.generation import Chunk, Generation, GenerationError
from trio_front.serving.params import (
    ParamError,
    added_special_tokens,
    check_prompt,
    child_params,
    refuse_unsupported,
    requested_prompt_logprobs,
    truncate_prompt,
)
from trio_front.text.chat_template import ChatTemplateError
from trio_front.text.detokenizer import TextParams

from . import beam
from .assistant_request import assistant_generation, assistant_params
from .errors import APIError
from .http import Headers, Send, SSEWriter, chunk_encoder, send_json
from .logprobs import chat_logprobs, prompt_logprobs_field
from .models import ChatCompletionRequest, parse_json, structure
from .state import (
    ServerState,
    base_request_id,
    engine_failure,
    param_error,
    response_usage,
    stream_fingerprint,
)
from .streaming import drive

log = logging.getLogger("trio_front.api")


async def prepare(
    state: ServerState, req: ChatCompletionRequest, *, stream: bool, headers: Headers = ()
) -> tuple[Generation, str, AssistantSetup]:
    """Validate, render and tokenize a chat request; return its (unstarted) generation (choice 0's, with
    ``n > 1`` see :func:`_generations`), request id and assistant setup. Nothing reaches the engine."""
    lora = state.resolve_lora(req.model)
    try:
        refuse_unsupported(req)
    except ParamError as exc:
        raise param_error(exc) from None
    if req.stream_options and not req.stream:
        raise APIError(400, "Stream options can only be defined when `stream=True`.", param="stream_options")
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
            chat_template_kwargs=state.chat_template_kwargs(req.chat_template_kwargs),
        )
    except ParamError as exc:
        raise param_error(exc) from None
    if (
        req.prompt_logprobs is not None
        and req.stream
        and (req.prompt_logprobs > 0 or req.prompt_logprobs == -1)
    ):
        raise APIError(
            400, "`prompt_logprobs` are not available when `stream=True`.", param="prompt_logprobs"
        )
    if req.top_logprobs is not None and req.top_logprobs < 0 and req.top_logprobs != -1:
        raise APIError(400, "`top_logprobs` must be a positive value or -1.", param="top_logprobs")
    if req.add_generation_prompt and req.continue_final_message:
        raise APIError(400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
    state.check_engine()
    state.check_chat_template(req.chat_template, req.chat_template_kwargs)
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
        ids = truncate_prompt(
            ids,
            req.truncate_prompt_tokens,
            req.truncation_side,
            limits.max_model_len,
            max_tokens=max_tokens,
            special_tokens=added_special_tokens(state.tokenizer, req.add_special_tokens)
            if req.truncate_prompt_tokens is not None
            else (0, 0),
        )
        max_tokens = check_prompt(len(ids), limits, max_tokens)
        if req.use_beam_search:  # validated and driven by api/beam.py
            params, text_params = wire.SamplingParams(max_tokens=max_tokens), TextParams()
        else:
            params, text_params = assistant_params(
                setup,
                req,
                limits=limits,
                max_tokens=max_tokens,
                logprobs=logprobs,
                prompt_logprobs=requested_prompt_logprobs(req),  # chat echo asks for them too
                stream=stream,
                tokenizer=state.tokenizer,
                logprobs_param="top_logprobs",
                chat=True,
            )
    except ParamError as exc:
        raise param_error(exc) from None
    request_id = f"chatcmpl-{base_request_id(req.request_id, headers)}"
    generation = assistant_generation(
        state,
        setup,
        ids,
        params,
        text_params,
        id_prefix=request_id,
        priority=req.priority,
        cache_salt=req.cache_salt,
        lora_request=lora,
    )
    return generation, request_id, setup


def _generations(
    state: ServerState, req: ChatCompletionRequest, first: Generation, request_id: str, setup: AssistantSetup
) -> tuple[list[Generation], list[AssistantSetup]]:
    """``n`` choices as vLLM's parallel sampling: children ``{i}_{parent id}`` of one prompt, child *i*
    seeded ``seed + i``, each with its own assistant state (reasoning parser)."""
    if req.n == 1:
        return [first], [setup]
    parent = state.engine.new_request_id(request_id)
    generations, setups = [], []
    for i in range(req.n):
        child_setup = setup if i == 0 else setup.fork(state.tokenizer)
        generations.append(
            assistant_generation(
                state,
                child_setup,
                first.prompt_ids,
                child_params(first.params, i),
                first.text_params,
                id_prefix=request_id,
                request_id=f"{i}_{parent}",
                external_id=request_id,
                priority=req.priority,
                cache_salt=req.cache_salt,
                lora_request=first.lora_request,
            )
        )
        setups.append(child_setup)
    return generations, setups


def _echo_prefix(req: ChatCompletionRequest, role: str) -> str:
    """vLLM's ``echo``: the last message's text when it has the answer's *role*."""
    last = req.messages[-1] if req.echo and req.messages else None
    if isinstance(last, dict) and last.get("role") == role and isinstance(last.get("content"), str):
        return last["content"]
    return ""


async def handle(state: ServerState, body: bytes, send: Send, headers: Headers = ()) -> None:
    req = structure(parse_json(body), ChatCompletionRequest)
    usage_wanted, continuous_usage = state.stream_usage(req.stream_options)
    generation, request_id, setup = await prepare(state, req, stream=req.stream, headers=headers)
    model = state.response_model(generation.lora_request)
    log.debug("chat %s: %d prompt tokens, n=%d", request_id, len(generation.prompt_ids), req.n)
    if req.use_beam_search:
        await beam.chat(
            state,
            req,
            generation.prompt_ids,
            setup,
            request_id=request_id,
            model=model,
            lora_request=generation.lora_request,
            send=send,
        )
        return
    generations, setups = _generations(state, req, generation, request_id, setup)
    if req.stream:
        usage = (usage_wanted, continuous_usage)
        await _stream(state, req, generations, request_id, model, usage, setups, send)
    else:
        await _complete(state, req, generations, request_id, model, setups, send)


def running_usage(state: ServerState, prompt: int, completion: int, reasoning: int) -> dict[str, Any]:
    """A chat chunk's ``usage`` with ``continuous_usage_stats``: the tokens so far, and vLLM's
    ``completion_tokens_details`` key (``reasoning_tokens`` with a reasoning parser, else null)."""
    details = {"reasoning_tokens": reasoning} if state.assistant.reasoning_parser else None
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "completion_tokens_details": details,
    }


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
    generations: list[Generation],
    request_id: str,
    model: str,
    setups: list[AssistantSetup],
    send: Send,
) -> None:
    chunks: list[list[Chunk]] = [[] for _ in generations]
    outs = [setup.output() for setup in setups]
    role = state.chat_role(req.add_generation_prompt, req.messages)

    async def on_chunk(index: int, _gen: Generation, chunk: Chunk) -> None:
        chunks[index].append(chunk)
        outs[index].push(chunk.text, chunk.token_ids)

    try:
        await drive(generations, on_chunk)
    except GenerationError as exc:
        raise engine_failure(setups[0].constraint, error=exc.error) from None
    as_ids = state.tokens_as_ids(req.return_tokens_as_token_ids)
    choices = []
    for index, (gen, setup, out) in enumerate(zip(generations, setups, outs, strict=True)):
        out.finish()
        gen.usage.reasoning_tokens = out.reasoning_tokens()
        logprobs = None
        if req.logprobs:
            logprobs = chat_logprobs(
                state.tokenizer, chunks[index], req.top_logprobs or 0, return_as_ids=as_ids
            )
        result = out.result
        message = {
            "role": role,
            "content": _message_content(setup, out, _echo_prefix(req, role)),
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": [_tool_call(c) for c in result.tool_calls],
            "reasoning": result.reasoning,
        }
        if not result.tool_calls:  # vLLM's ChatMessage serializer drops an empty list
            del message["tool_calls"]
        choice: dict[str, Any] = {
            "index": index,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": _finish_reason(setup, gen, out),
            "stop_reason": gen.stop_reason,
        }
        choice["token_ids"] = (
            [t for c in chunks[index] for t in c.token_ids] if req.return_token_ids else None
        )
        choice["routed_experts"] = None  # vLLM's key; routed experts are never returned here
        choices.append(choice)
    first = generations[0]
    response: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion",
        "created": first.created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": state.system_fingerprint,
        "usage": response_usage(_usage(generations)),
        "prompt_logprobs": prompt_logprobs_field(state.tokenizer, first.prompt_ids, first.prompt_logprobs)
        if first.params.prompt_logprobs is not None
        else None,
        "prompt_token_ids": first.prompt_ids if req.return_token_ids else None,
        "prompt_text": None,  # vLLM's return_prompt_text, refused here
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }
    await send_json(send, 200, response)


def _usage(generations: list[Generation]) -> dict[str, Any]:
    """One prompt, counted once; every choice's tokens (vLLM's usage for ``n > 1``)."""
    if len(generations) == 1:
        return generations[0].usage.as_dict()
    usage = generations[0].usage.as_dict()
    completion = sum(g.usage.completion_tokens for g in generations)
    usage["completion_tokens"] = completion
    usage["total_tokens"] = usage["prompt_tokens"] + completion
    reasoning = [g.usage.reasoning_tokens for g in generations]
    if all(r is not None for r in reasoning):
        usage["completion_tokens_details"] = {"reasoning_tokens": sum(r for r in reasoning if r is not None)}
    return usage


async def _stream(
    state: ServerState,
    req: ChatCompletionRequest,
    generations: list[Generation],
    request_id: str,
    model: str,
    usage: tuple[bool, bool],
    setups: list[AssistantSetup],
    send: Send,
) -> None:
    """The SSE answer. *usage* is ``(a usage event at the end, usage on every chunk)``
    (:meth:`ServerState.stream_usage`)."""
    usage_wanted, continuous = usage
    sse = SSEWriter(send, send_timeout=state.send_timeout)
    outs = [setup.output() for setup in setups]
    role = state.chat_role(req.add_generation_prompt, req.messages)
    first = generations[0]
    head: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": first.created,
        "model": model,
    }
    for index in range(len(generations)):  # vLLM sends the role once per choice, first of all
        event: dict[str, Any] = {
            **head,
            "choices": [
                {
                    "index": index,
                    "delta": {"role": role, "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        if req.return_token_ids:  # on every choice's role chunk, as vLLM sends it
            event["prompt_token_ids"] = first.prompt_ids
        if continuous:
            event["usage"] = running_usage(state, first.usage.prompt_tokens, 0, 0)
        await sse.event(event)
    prefix = [_echo_prefix(req, role)] * len(generations)
    encode = chunk_encoder(head)
    # vLLM stamps the fingerprint on the terminal chunks only, or on the usage chunk that follows them.
    fingerprint = stream_fingerprint(state)
    as_ids = state.tokens_as_ids(req.return_tokens_as_token_ids)
    single = len(generations) == 1
    contexts: list[list[int]] = [[] for _ in generations]  # per choice, for the token strings

    async def on_chunk(index: int, gen: Generation, chunk: Chunk) -> None:
        text = chunk.text
        if prefix[index]:
            text, prefix[index] = prefix[index] + text, ""
        final = chunk.finish_reason is not None
        out = outs[index]
        events = out.push(text, chunk.token_ids)
        if final:
            events += out.finish()
        wants_tokens = (req.logprobs or req.return_token_ids) and chunk.token_ids
        if not events and not final and not wants_tokens:
            return  # text held back by a parser (a marker may be starting), nothing to say yet
        logprobs = None
        if req.logprobs:
            logprobs = chat_logprobs(
                state.tokenizer, [chunk], req.top_logprobs or 0, return_as_ids=as_ids, context=contexts[index]
            )
        choice: dict[str, Any] = {
            "index": index,
            "delta": _delta(events) if events or not final else {},
            "logprobs": logprobs,
            "finish_reason": _finish_reason(setups[index], gen, out) if final else None,
        }
        if final:
            choice["stop_reason"] = chunk.stop_reason
        if req.return_token_ids:
            choice["token_ids"] = list(chunk.token_ids)
        # A single choice's last chunk is held to leave with the usage event and [DONE] (one write).
        stamp = fingerprint if final and not usage_wanted else {}
        if continuous:
            count = gen.usage.completion_tokens
            usage = running_usage(state, gen.usage.prompt_tokens, count, out.reasoning_tokens() or 0)
            await sse.event({**head, "choices": [choice], "usage": usage, **stamp}, hold=final and single)
        elif stamp:
            await sse.event({**head, "choices": [choice], **stamp}, hold=final and single)
        else:
            await sse.event(encode(choice), hold=final and single)

    try:
        await drive(generations, on_chunk, keep_alive=state.keep_alive_interval, on_idle=sse.keep_alive)
    except GenerationError as exc:
        await sse.event(engine_failure(setups[0].constraint, error=exc.error).body())
    except EngineError as exc:
        await sse.event(APIError(503, str(exc)).body())
    for gen, out in zip(generations, outs, strict=True):
        gen.usage.reasoning_tokens = out.reasoning_tokens()
    if usage_wanted:
        await sse.event({**head, "choices": [], "usage": _usage(generations), **fingerprint}, hold=True)
    await sse.done()
