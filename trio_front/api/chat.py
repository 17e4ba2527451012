"""``POST /v1/chat/completions``: render the chat template, generate, answer in vLLM's shapes.

Tools are passed to the chat template (so models that describe tools in their prompt see them), but tool
calls are not parsed out of the output yet: ``tool_choice`` other than ``"none"``/``"auto"`` is refused.
"""

from __future__ import annotations

from typing import Any

from trio_front.engine.client import EngineError
from trio_front.serving.generation import Chunk, Generation, GenerationError
from trio_front.serving.params import ParamError, build_params, check_prompt
from trio_front.text.chat_template import ChatTemplateError

from .errors import APIError
from .http import Send, SSEWriter, chunk_encoder, send_json
from .logprobs import chat_logprobs
from .models import ChatCompletionRequest, parse_json, structure
from .state import ServerState, include_usage, new_id, param_error
from .streaming import drive

MAX_TOP_LOGPROBS = 20


async def prepare(state: ServerState, req: ChatCompletionRequest, *, stream: bool) -> tuple[Generation, str]:
    """Validate, render and tokenize a chat request; return its (unstarted) generation and request id."""
    if not isinstance(req.messages, list) or not req.messages:
        raise APIError(400, "messages must be a non-empty list", param="messages")
    if req.tool_choice not in (None, "none", "auto"):
        raise APIError(
            400, "tool_choice other than 'none' or 'auto' is not supported yet", param="tool_choice"
        )
    if req.response_format not in (None, {"type": "text"}):
        raise APIError(
            400, "response_format (structured output) is not supported yet", param="response_format"
        )
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
            tools=None if req.tool_choice == "none" else req.tools,
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
        params, text_params = build_params(
            req, limits=limits, max_tokens=max_tokens, logprobs=logprobs, stream=stream
        )
    except ParamError as exc:
        raise param_error(exc) from None
    request_id = new_id("chatcmpl")
    generation = Generation(
        state.engine,
        state.tokenizer,
        ids,
        params,
        text_params,
        id_prefix=request_id,
        priority=req.priority,
        cache_salt=req.cache_salt,
    )
    return generation, request_id


def _echo_prefix(req: ChatCompletionRequest) -> str:
    last = req.messages[-1] if req.echo and req.messages else None
    if isinstance(last, dict) and last.get("role") == "assistant" and isinstance(last.get("content"), str):
        return last["content"]
    return ""


async def handle(state: ServerState, body: bytes, send: Send) -> None:
    req = structure(parse_json(body), ChatCompletionRequest)
    state.check_model(req.model)
    usage_wanted = include_usage(req.stream_options)
    generation, request_id = await prepare(state, req, stream=req.stream)
    model = req.model or state.served_model_name
    if req.stream:
        await _stream(state, req, generation, request_id, model, usage_wanted, send)
    else:
        await _complete(state, req, generation, request_id, model, send)


async def _complete(
    state: ServerState, req: ChatCompletionRequest, gen: Generation, request_id: str, model: str, send: Send
) -> None:
    chunks: list[Chunk] = []

    async def on_chunk(_index: int, _gen: Generation, chunk: Chunk) -> None:
        chunks.append(chunk)

    try:
        await drive([gen], on_chunk)
    except GenerationError as exc:
        raise APIError(500, str(exc)) from None
    logprobs = chat_logprobs(state.tokenizer, chunks, req.top_logprobs or 0) if req.logprobs else None
    message = {
        "role": "assistant",
        "content": _echo_prefix(req) + gen.output_text,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": [],
        "reasoning_content": None,
    }
    choice = {
        "index": 0,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": gen.finish_reason,
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
    send: Send,
) -> None:
    sse = SSEWriter(send, send_timeout=state.send_timeout)
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
        if not text and chunk.finish_reason is None and not chunk.token_ids:
            return
        logprobs = chat_logprobs(state.tokenizer, [chunk], req.top_logprobs or 0) if req.logprobs else None
        choice: dict[str, Any] = {
            "index": 0,
            "delta": {"content": text} if text or chunk.finish_reason is None else {},
            "logprobs": logprobs,
            "finish_reason": chunk.finish_reason,
        }
        if chunk.finish_reason is not None:
            choice["stop_reason"] = chunk.stop_reason
        # The last chunk is held to leave with the usage event and [DONE] (one write).
        await sse.event(encode(choice), hold=chunk.finish_reason is not None)

    try:
        await drive([gen], on_chunk, keep_alive=state.keep_alive_interval, on_idle=sse.keep_alive)
    except GenerationError as exc:
        await sse.event(APIError(500, str(exc)).body())
    except EngineError as exc:
        await sse.event(APIError(503, str(exc)).body())
    if usage_wanted:
        await sse.event({**head, "choices": [], "usage": gen.usage.as_dict()}, hold=True)
    await sse.done()
