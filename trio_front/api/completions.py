"""``POST /v1/completions``: prompt as text, token ids, or a list of either; streaming or not.

Everything runs inside the request's cancel scope (see ``disconnect.py``): tokenization, the engine
request and the response. Validation is complete before the engine sees anything.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import msgspec

from trio_front.engine.client import EngineError
from trio_front.serving import structured
from trio_front.serving.generation import Chunk, Generation, GenerationError
from trio_front.serving.params import ParamError, build_params, check_prompt

from .errors import APIError
from .http import Headers, Send, SSEWriter, chunk_encoder, send_json
from .logprobs import completion_logprobs
from .models import CompletionRequest, parse_json, structure
from .state import ServerState, engine_failure, include_usage, new_id, param_error
from .streaming import drive

_SHAPE_ERROR = (
    "prompt must be a string, a list of strings, a list of token ids, or a list of token-id lists (non-empty)"
)


@functools.cache
def _ids_type(vocab_size: int) -> Any:
    return list[Annotated[int, msgspec.Meta(ge=0, lt=vocab_size)]]


def _token_ids(value: list[Any], vocab_size: int) -> list[int]:
    """*value* as token ids: exact ints (no bools, no floats) in ``[0, vocab_size)``, checked in one pass
    in C (msgspec), which matters for 1k-token prompts; 400 otherwise."""
    try:
        return msgspec.convert(value, _ids_type(vocab_size), strict=True)
    except msgspec.ValidationError:
        pass
    bad = next(t for t in value if type(t) is not int or not 0 <= t < vocab_size)
    if type(bad) is not int:
        raise APIError(400, _SHAPE_ERROR, param="prompt") from None
    raise APIError(400, f"prompt contains out-of-vocab token id {bad}", param="prompt") from None


def _prompts(prompt: Any, vocab_size: int) -> list[str | list[int]]:
    """Normalize OpenAI's four prompt shapes to a list of texts or checked token-id lists."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if type(prompt[0]) is int:
            return [_token_ids(prompt, vocab_size)]
        if all(isinstance(p, str) or (isinstance(p, list) and p) for p in prompt):
            return [p if isinstance(p, str) else _token_ids(p, vocab_size) for p in prompt]
    raise APIError(400, _SHAPE_ERROR, param="prompt")


async def handle(state: ServerState, body: bytes, send: Send, headers: Headers = ()) -> None:
    req = structure(parse_json(body), CompletionRequest)
    state.check_model(req.model)
    if req.suffix is not None:
        raise APIError(400, "suffix is not supported", param="suffix")
    if req.best_of not in (None, 1):
        raise APIError(400, "best_of is not supported", param="best_of")
    if req.prompt_logprobs is not None:
        raise APIError(400, "prompt_logprobs is not supported yet", param="prompt_logprobs")
    if req.bad_words:
        raise APIError(400, "bad_words is not supported yet", param="bad_words")
    usage_wanted = include_usage(req.stream_options)
    try:
        constraint = structured.from_request(
            req.response_format, req.structured_outputs, config=state.structured
        )
    except ParamError as exc:
        raise param_error(exc) from None
    state.check_engine()
    limits = state.limits  # known once the engine registered
    prompts = _prompts(req.prompt, limits.vocab_size)
    tok = state.tokenizer

    request_id = new_id("cmpl")
    generations: list[Generation] = []
    prompt_texts: list[str] = []
    for prompt in prompts:
        if isinstance(prompt, str):
            ids = await tok.encode_async(prompt, add_special_tokens=req.add_special_tokens)
            text = prompt
        else:
            ids, text = prompt, ""
        try:
            max_tokens = check_prompt(len(ids), limits, req.max_tokens)
            params, text_params = build_params(
                req,
                limits=limits,
                max_tokens=max_tokens,
                logprobs=req.logprobs,
                stream=req.stream,
                structured_outputs=constraint,
            )
        except ParamError as exc:
            raise param_error(exc) from None
        if req.echo and not text:
            text = tok.decode(ids, skip_special_tokens=False)
        prompt_texts.append(text)
        generations.append(
            Generation(
                state.engine,
                tok,
                ids,
                params,
                text_params,
                id_prefix=request_id,
                priority=req.priority,
                cache_salt=req.cache_salt,
            )
        )

    model = req.model or state.served_model_name
    if req.stream:
        await _stream(state, req, generations, prompt_texts, request_id, model, usage_wanted, send)
    else:
        await _complete(state, req, generations, prompt_texts, request_id, model, send)


async def _complete(
    state: ServerState,
    req: CompletionRequest,
    generations: list[Generation],
    prompt_texts: list[str],
    request_id: str,
    model: str,
    send: Send,
) -> None:
    chunks: list[list[Chunk]] = [[] for _ in generations]

    async def on_chunk(index: int, _gen: Generation, chunk: Chunk) -> None:
        chunks[index].append(chunk)

    try:
        await drive(generations, on_chunk)
    except GenerationError:
        raise engine_failure(generations[0].params.structured_outputs) from None
    choices = []
    for i, gen in enumerate(generations):
        text = gen.output_text
        if req.echo:
            text = prompt_texts[i] + text
        logprobs = None
        if req.logprobs is not None:
            logprobs = completion_logprobs(state.tokenizer, chunks[i], req.logprobs, offset=0)
        choices.append(
            {
                "index": i,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": gen.finish_reason,
                "stop_reason": gen.stop_reason,
                "prompt_logprobs": None,
            }
        )
    usage = _total_usage(generations)
    await send_json(
        send,
        200,
        {
            "id": request_id,
            "object": "text_completion",
            "created": generations[0].created,
            "model": model,
            "choices": choices,
            "usage": usage,
            "system_fingerprint": None,
            "kv_transfer_params": None,
        },
    )


async def _stream(
    state: ServerState,
    req: CompletionRequest,
    generations: list[Generation],
    prompt_texts: list[str],
    request_id: str,
    model: str,
    usage_wanted: bool,
    send: Send,
) -> None:
    sse = SSEWriter(send, send_timeout=state.send_timeout)
    created = generations[0].created
    head = {"id": request_id, "object": "text_completion", "created": created, "model": model}
    encode = chunk_encoder(head)
    echoed = [not req.echo for _ in generations]
    offsets = [0 for _ in generations]
    single = len(generations) == 1

    async def on_chunk(index: int, gen: Generation, chunk: Chunk) -> None:
        text = chunk.text
        if not echoed[index]:
            text = prompt_texts[index] + text
            echoed[index] = True
        if not text and chunk.finish_reason is None and not chunk.token_ids:
            return
        logprobs = None
        if req.logprobs is not None:
            logprobs = completion_logprobs(state.tokenizer, [chunk], req.logprobs, offset=offsets[index])
            offsets[index] += len(text)
        choice = {
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": chunk.finish_reason,
            "stop_reason": chunk.stop_reason,
        }
        # A single prompt's last chunk is held to leave with the usage event and [DONE] (one write).
        hold = single and chunk.finish_reason is not None
        await sse.event(encode(choice), hold=hold)

    await sse.start()
    try:
        await drive(generations, on_chunk, keep_alive=state.keep_alive_interval, on_idle=sse.keep_alive)
    except GenerationError:
        await sse.event(engine_failure(generations[0].params.structured_outputs).body())
    except EngineError as exc:  # the engine died mid-stream: tell the client in-band, as vLLM does
        await sse.event(APIError(503, str(exc)).body())
    if usage_wanted:
        await sse.event({**head, "choices": [], "usage": _total_usage(generations)}, hold=True)
    await sse.done()


def _total_usage(generations: list[Generation]) -> dict[str, Any]:
    if len(generations) == 1:
        return generations[0].usage.as_dict()
    prompt = sum(g.usage.prompt_tokens for g in generations)
    completion = sum(g.usage.completion_tokens for g in generations)
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion}
