"""``POST /v1/completions``: prompt as text, token ids, or a list of either; ``n`` choices per prompt;
``echo`` with prompt logprobs (what lm-eval-harness's loglikelihood sends); streaming or not.

Everything runs inside the request's cancel scope (see ``disconnect.py``): tokenization, the engine
requests and the response. Validation is complete before the engine sees anything (:func:`prepare`).

Engine requests as vLLM builds them: prompt *p* is parent ``{request id}-{p}-{unique}``; with ``n > 1`` its
children are ``{i}_{parent}``, child *i* seeded ``seed + i``, all sharing the prompt. Choice ``p * n + i``
is prompt *p*'s child *i*. Leaving early (disconnect, error, shutdown) aborts every live child in one
ABORT (``streaming.drive``); a stop string ends only the child it matched in.
"""

from __future__ import annotations

import functools
import logging
from typing import Annotated, Any

import attrs
import msgspec

from trio_front.engine import wire
from trio_front.engine.client import EngineError
from trio_front.serving import structured
from trio_front.serving.generation import Chunk, Generation, GenerationError
from trio_front.serving.params import (
    ParamError,
    added_special_tokens,
    build_params,
    check_prompt,
    child_params,
    refuse_unsupported,
    requested_prompt_logprobs,
    truncate_prompt,
)
from trio_front.text.detokenizer import TextParams

from . import beam
from .errors import APIError
from .http import Headers, Send, SSEWriter, chunk_encoder, send_json
from .logprobs import completion_logprobs, echo_completion_logprobs, end_offset, prompt_logprobs_field
from .models import CompletionRequest, parse_json, structure
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


@attrs.define
class PreparedPrompt:
    """One prompt of a completions request, validated: what its engine requests get."""

    prompt_ids: list[int]
    #: The prompt as text (decoded from token ids when needed): what ``echo`` returns.
    prompt_text: str
    params: wire.SamplingParams
    text_params: TextParams


@attrs.define
class Prepared:
    request_id: str
    model: str
    prompts: list[PreparedPrompt]
    lora_request: wire.LoRARequest | None = None


#: ``CompletionRequest.max_tokens``' default in vLLM (and in ``models.py``)
DEFAULT_MAX_TOKENS = 16


def normalize_null_max_tokens(req: CompletionRequest) -> None:
    """vLLM's ``normalize_null_max_tokens`` validator: an explicit ``"max_tokens": null`` is the default
    16, so a completion never runs to the end of the context (nor takes a generation config's
    ``max_new_tokens``) because a client sent null."""
    if req.max_tokens is None:
        req.max_tokens = DEFAULT_MAX_TOKENS


def _echo_without_generation(req: CompletionRequest) -> bool:
    """vLLM's ``echo`` with ``max_tokens: 0``: the engine runs one step (for the prompt logprobs), and the
    token it samples is not shown."""
    return req.echo and req.max_tokens == 0


async def prepare(state: ServerState, req: CompletionRequest, headers: Headers = ()) -> Prepared:
    """Validate and tokenize a completions request; nothing is sent to the engine. Raises
    :class:`APIError`. Also used by ``/v1/completions/render``."""
    lora = state.resolve_lora(req.model)
    normalize_null_max_tokens(req)
    try:
        refuse_unsupported(req)
    except ParamError as exc:
        raise param_error(exc) from None
    if req.suffix is not None:
        raise APIError(400, "suffix is not supported", param="suffix")
    if req.best_of not in (None, 1):
        raise APIError(400, "best_of is not supported", param="best_of")
    if req.stream_options and not req.stream:
        raise APIError(400, "Stream options can only be defined when `stream=True`.", param="stream_options")
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
    # vLLM: echo asks the engine for the prompt's logprobs unless prompt_logprobs says otherwise.
    prompt_logprobs = requested_prompt_logprobs(req)
    prepared: list[PreparedPrompt] = []
    for prompt in prompts:
        if isinstance(prompt, str):
            ids = await tok.encode_async(prompt, add_special_tokens=req.add_special_tokens)
        else:
            ids = prompt
        try:
            ids = truncate_prompt(
                ids,
                req.truncate_prompt_tokens,
                req.truncation_side,
                limits.max_model_len,
                max_tokens=req.max_tokens,
                # a text prompt keeps its BOS (vLLM lets the tokenizer truncate); token ids are sliced
                special_tokens=added_special_tokens(tok, req.add_special_tokens)
                if isinstance(prompt, str) and req.truncate_prompt_tokens is not None
                else (0, 0),
            )
            if req.use_beam_search:
                max_tokens = check_prompt(len(ids), limits, req.max_tokens)
                params, text_params = wire.SamplingParams(max_tokens=max_tokens), TextParams()
            else:
                max_tokens = check_prompt(
                    len(ids), limits, 1 if _echo_without_generation(req) else req.max_tokens
                )
                params, text_params = build_params(
                    req,
                    limits=limits,
                    max_tokens=max_tokens,
                    logprobs=req.logprobs,
                    prompt_logprobs=prompt_logprobs,
                    stream=req.stream,
                    structured_outputs=constraint,
                    tokenizer=tok,
                )
        except ParamError as exc:
            raise param_error(exc) from None
        text = prompt if isinstance(prompt, str) else ""
        if req.echo and not text:  # token-id prompts are echoed as their text, as vLLM does
            text = tok.decode(ids, skip_special_tokens=False)
        prepared.append(PreparedPrompt(ids, text, params, text_params))
    request_id = f"cmpl-{base_request_id(req.request_id, headers)}"
    # vLLM's model_name(lora_request): the adapter's name, else the first served name
    return Prepared(request_id, state.response_model(lora), prepared, lora)


async def handle(state: ServerState, body: bytes, send: Send, headers: Headers = ()) -> None:
    req = structure(parse_json(body), CompletionRequest)
    prepared = await prepare(state, req, headers)
    log.debug("completion %s: %d prompt(s), n=%d", prepared.request_id, len(prepared.prompts), req.n)
    if req.use_beam_search:
        await beam.complete(
            state,
            req,
            [(p.prompt_ids, p.prompt_text) for p in prepared.prompts],
            request_id=prepared.request_id,
            model=prepared.model,
            lora_request=prepared.lora_request,
            send=send,
        )
        return
    generations = _generations(state, req, prepared)
    if req.stream:
        await _stream(state, req, prepared, generations, send)
    else:
        await _complete(state, req, prepared, generations, send)


def _generations(state: ServerState, req: CompletionRequest, prepared: Prepared) -> list[Generation]:
    """Prompt *p*'s child *i* at index ``p * n + i`` (unstarted: ``drive`` enters them)."""
    generations = []
    for p, prompt in enumerate(prepared.prompts):
        parent = state.engine.new_request_id(f"{prepared.request_id}-{p}")
        for i in range(req.n):
            generations.append(
                Generation(
                    state.engine,
                    state.tokenizer,
                    prompt.prompt_ids,
                    child_params(prompt.params, i) if req.n > 1 else prompt.params,
                    prompt.text_params,
                    id_prefix=prepared.request_id,
                    request_id=f"{i}_{parent}" if req.n > 1 else parent,
                    external_id=prepared.request_id,
                    lora_request=prepared.lora_request,
                    priority=req.priority,
                    cache_salt=req.cache_salt,
                )
            )
    return generations


def _echo_text(req: CompletionRequest, prompt: PreparedPrompt) -> str:
    return "" if req.return_token_ids else prompt.prompt_text


async def _complete(
    state: ServerState,
    req: CompletionRequest,
    prepared: Prepared,
    generations: list[Generation],
    send: Send,
) -> None:
    chunks: list[list[Chunk]] = [[] for _ in generations]

    async def on_chunk(index: int, _gen: Generation, chunk: Chunk) -> None:
        chunks[index].append(chunk)

    try:
        await drive(generations, on_chunk)
    except GenerationError as exc:
        raise engine_failure(generations[0].params.structured_outputs, error=exc.error) from None
    tok = state.tokenizer
    as_ids = state.tokens_as_ids(req.return_tokens_as_token_ids)
    no_generation = _echo_without_generation(req)
    choices = []
    for index, gen in enumerate(generations):
        prompt = prepared.prompts[index // req.n]
        generated = [] if no_generation else chunks[index]
        text = "" if no_generation else gen.output_text
        logprobs = None
        if req.echo:
            text = _echo_text(req, prompt) + text
            if req.logprobs is not None:
                logprobs = echo_completion_logprobs(
                    tok,
                    prompt.prompt_ids,
                    gen.prompt_logprobs,
                    generated,
                    req.logprobs,
                    with_generated=not no_generation,
                    return_as_ids=as_ids,
                )
        elif req.logprobs is not None:
            logprobs = completion_logprobs(tok, generated, req.logprobs, offset=0, return_as_ids=as_ids)
        choice: dict[str, Any] = {
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": gen.finish_reason,
            "stop_reason": gen.stop_reason,
            "prompt_logprobs": prompt_logprobs_field(tok, prompt.prompt_ids, gen.prompt_logprobs)
            if gen.params.prompt_logprobs is not None
            else None,
        }
        # vLLM's keys, null unless asked for (routed experts are never returned here)
        choice["prompt_token_ids"] = prompt.prompt_ids if req.return_token_ids else None
        choice["token_ids"] = (
            [t for c in chunks[index] for t in c.token_ids] if req.return_token_ids else None
        )
        choice["routed_experts"] = None
        choices.append(choice)
    await send_json(
        send,
        200,
        {
            "id": prepared.request_id,
            "object": "text_completion",
            "created": generations[0].created,
            "model": prepared.model,
            "choices": choices,
            "service_tier": None,
            "usage": response_usage(_total_usage(generations, req.n)),
            "system_fingerprint": state.system_fingerprint,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        },
    )


async def _stream(
    state: ServerState,
    req: CompletionRequest,
    prepared: Prepared,
    generations: list[Generation],
    send: Send,
) -> None:
    usage_wanted, continuous = state.stream_usage(req.stream_options)
    sse = SSEWriter(send, send_timeout=state.send_timeout)
    created = generations[0].created
    head = {
        "id": prepared.request_id,
        "object": "text_completion",
        "created": created,
        "model": prepared.model,
    }
    encode = chunk_encoder(head)
    # vLLM stamps the fingerprint on the terminal chunks only, or on the usage chunk that follows them.
    fingerprint = stream_fingerprint(state)
    tok = state.tokenizer
    as_ids = state.tokens_as_ids(req.return_tokens_as_token_ids)
    no_generation = _echo_without_generation(req)
    echoed = [False] * len(generations)
    offsets = [0] * len(generations)
    sent_tokens = [0] * len(generations)
    contexts: list[list[int]] = [[] for _ in generations]  # per choice, for the token strings
    single = len(generations) == 1

    async def on_chunk(index: int, gen: Generation, chunk: Chunk) -> None:
        prompt = prepared.prompts[index // req.n]
        text, token_ids, chunks = chunk.text, chunk.token_ids, [chunk]
        if no_generation:  # the sampled token is not shown, only the prompt (and the finish)
            text, token_ids, chunks = "", [], []
        logprobs = None
        prompt_ids_out = None
        if req.echo and not echoed[index]:
            echoed[index] = True
            prompt_ids_out = prompt.prompt_ids
            text = _echo_text(req, prompt) + text
            if req.logprobs is not None:
                logprobs = echo_completion_logprobs(
                    tok,
                    prompt.prompt_ids,
                    gen.prompt_logprobs,
                    chunks,
                    req.logprobs,
                    with_generated=not no_generation,
                    return_as_ids=as_ids,
                    context=contexts[index],
                )
            token_ids = [*prompt.prompt_ids, *token_ids]
        else:
            if req.return_token_ids and not echoed[index]:
                echoed[index] = True
                prompt_ids_out = prompt.prompt_ids
            if not text and not token_ids and chunk.finish_reason is None and not sent_tokens[index]:
                return  # nothing to say yet (a stop string may be starting)
            if req.logprobs is not None:
                logprobs = completion_logprobs(
                    tok,
                    chunks,
                    req.logprobs,
                    offset=offsets[index],
                    return_as_ids=as_ids,
                    context=contexts[index],
                )
        if logprobs is not None:
            offsets[index] = end_offset(logprobs, offsets[index])
        sent_tokens[index] += len(chunk.token_ids)
        choice: dict[str, Any] = {
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": chunk.finish_reason,
            "stop_reason": chunk.stop_reason,
        }
        if req.return_token_ids:
            choice["prompt_token_ids"] = prompt_ids_out
            choice["token_ids"] = list(chunk.token_ids)
        # A single prompt's last chunk is held to leave with the usage event and [DONE] (one write).
        hold = single and chunk.finish_reason is not None
        stamp = fingerprint if chunk.finish_reason is not None and not usage_wanted else {}
        if continuous:  # vLLM's continuous_usage_stats: this choice's tokens so far
            prompt_tokens, completion = gen.usage.prompt_tokens, gen.usage.completion_tokens
            usage = {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion,
                "completion_tokens": completion,
            }
            await sse.event({**head, "choices": [choice], "usage": usage, **stamp}, hold=hold)
        elif stamp:
            await sse.event({**head, "choices": [choice], **stamp}, hold=hold)
        else:
            await sse.event(encode(choice), hold=hold)

    await sse.start()
    try:
        await drive(generations, on_chunk, keep_alive=state.keep_alive_interval, on_idle=sse.keep_alive)
    except GenerationError as exc:
        await sse.event(engine_failure(generations[0].params.structured_outputs, error=exc.error).body())
    except EngineError as exc:  # the engine died mid-stream: tell the client in-band, as vLLM does
        await sse.event(APIError(503, str(exc)).body())
    if usage_wanted:
        usage_event = {**head, "choices": [], "usage": _total_usage(generations, req.n), **fingerprint}
        await sse.event(usage_event, hold=True)
    await sse.done()


def _total_usage(generations: list[Generation], n: int) -> dict[str, Any]:
    """vLLM's usage: every prompt counted once (not once per child), every child's tokens."""
    if len(generations) == 1:
        return generations[0].usage.as_dict()
    prompt = sum(g.usage.prompt_tokens for g in generations[::n])
    completion = sum(g.usage.completion_tokens for g in generations)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }
    # No prompt_tokens_details: vLLM shows them only with --enable-prompt-tokens-details (not supported)
    return usage
