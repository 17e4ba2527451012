"""``POST /v1/chat/completions/render`` and ``POST /v1/completions/render``: the ``GenerateRequest`` that
``/inference/v1/generate`` would need to produce the same answer (vLLM's ``scale_out/render/``).

Contract: the request goes through exactly the validation, templating, tokenization and parameter building
of the serving route (``chat.prepare`` / ``completions.prepare``), so a request the route would refuse
is refused here with the same 400; nothing reaches the engine. ``sampling_params`` is vLLM's JSON of its
``SamplingParams`` as ``to_sampling_params`` builds it: fields at their defaults left out (vLLM's
``omit_defaults``, including its habit of always writing the penalties, ``temperature``, ``top_p`` and
``min_p``), top-level private ``_fields`` stripped, the tool-choice / ``response_format`` constraint inside
as ``structured_outputs``. Nothing here awaits the engine, so cancellation only stops the tokenizer.
"""

from __future__ import annotations

from typing import Any

import msgspec

from trio_front.api import chat, completions
from trio_front.api.errors import APIError
from trio_front.api.http import Headers, Send, send_json
from trio_front.api.models import ChatCompletionRequest, CompletionRequest, parse_json, structure
from trio_front.api.state import ServerState
from trio_front.engine import wire

_SAMPLING_EPS = 1e-5
_MAX_TEMP = 1e-2


def _stop_list(stop: Any) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def vllm_sampling_params(
    params: wire.SamplingParams,
    *,
    n: int = 1,
    stop: Any = None,
    stop_token_ids: list[int] | None = None,
    bad_words: list[str] | None = None,
) -> dict[str, Any]:
    """vLLM's serialized ``SamplingParams`` for our engine *params* (whose ``stop`` strings, ``n`` and
    ``bad_words`` live elsewhere, so the caller passes the request's). Field order is vLLM's."""
    temperature = params.temperature
    if 0 < temperature < _MAX_TEMP:
        temperature = _MAX_TEMP  # SamplingParams.__post_init__ raises it, with a warning
    greedy = temperature < _SAMPLING_EPS
    out: dict[str, Any] = {}
    if n != 1:
        out["n"] = n
    out["presence_penalty"] = params.presence_penalty
    out["frequency_penalty"] = params.frequency_penalty
    out["repetition_penalty"] = params.repetition_penalty
    out["temperature"] = float(temperature)
    # Greedy resets top_p/top_k/min_p to the very default objects, which omit_defaults then leaves out.
    if not greedy:
        out["top_p"] = params.top_p
        if params.top_k != 0:
            out["top_k"] = params.top_k
        out["min_p"] = params.min_p
    if params.seed is not None:
        out["seed"] = params.seed
    out["stop"] = _stop_list(stop)
    out["stop_token_ids"] = list(dict.fromkeys(stop_token_ids or []))
    if params.ignore_eos:
        out["ignore_eos"] = True
    if params.max_tokens != 16:
        out["max_tokens"] = params.max_tokens
    if params.min_tokens:
        out["min_tokens"] = params.min_tokens
    if params.logprobs is not None:
        out["logprobs"] = params.logprobs
    if params.prompt_logprobs is not None:
        out["prompt_logprobs"] = params.prompt_logprobs
    if not params.skip_special_tokens:
        out["skip_special_tokens"] = False
    if not params.spaces_between_special_tokens:
        out["spaces_between_special_tokens"] = False
    if params.include_stop_str_in_output:
        out["include_stop_str_in_output"] = True
    out["output_kind"] = int(params.output_kind)
    out["skip_clone"] = True
    if params.structured_outputs is not None:
        constraint = msgspec.to_builtins(params.structured_outputs)
        # The backend is chosen later, in vLLM's input processor; render shows it unset.
        constraint["_backend"] = None
        constraint["_backend_was_auto"] = False
        out["structured_outputs"] = constraint
    if params.logit_bias:
        out["logit_bias"] = {str(k): v for k, v in params.logit_bias.items()}
    if params.allowed_token_ids is not None:
        out["allowed_token_ids"] = params.allowed_token_ids
    if params.extra_args:
        out["extra_args"] = params.extra_args
    out["bad_words"] = list(bad_words or [])
    # __post_init__: unset means "skip it exactly when prompt logprobs are wanted".
    out["skip_reading_prefix_cache"] = (
        params.skip_reading_prefix_cache
        if params.skip_reading_prefix_cache is not None
        else params.prompt_logprobs is not None
    )
    repetition = getattr(params, "repetition_detection", None)
    if repetition is not None:
        out["repetition_detection"] = msgspec.to_builtins(repetition)
    return out


def _stream_options(stream: bool, options: dict[str, Any] | None) -> dict[str, Any] | None:
    if not stream or options is None:
        return None
    return {
        "include_usage": options.get("include_usage", False),
        "continuous_usage_stats": options.get("continuous_usage_stats", False),
        **{k: v for k, v in options.items() if k not in ("include_usage", "continuous_usage_stats")},
    }


def generate_request(
    *,
    request_id: str,
    token_ids: list[int],
    sampling_params: dict[str, Any],
    model: str | None,
    stream: bool,
    stream_options: dict[str, Any] | None,
    cache_salt: str | None,
    priority: int,
    reasoning_ended: bool | None = None,
    reasoning_parser_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """vLLM's ``GenerateRequest.model_dump()`` (every field, vLLM's order)."""
    return {
        "request_id": request_id,
        "token_ids": token_ids,
        "token_offsets": None,
        "features": None,
        "content_parts": None,
        "sampling_params": sampling_params,
        "model": model,
        "reasoning_ended": reasoning_ended,
        "reasoning_parser_kwargs": reasoning_parser_kwargs,
        "return_token_ids": None,
        "output_mode": "tokens",
        "stream": stream,
        "stream_options": _stream_options(stream, stream_options),
        "cache_salt": cache_salt,
        "priority": priority,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
    }


def _refuse_beam_search(req: Any) -> None:
    if req.use_beam_search:
        raise APIError(400, "Beam search is not supported by the render endpoint", param="use_beam_search")


async def render_chat(state: ServerState, body: bytes, send: Send, headers: Headers) -> None:
    """``POST /v1/chat/completions/render`` → one ``GenerateRequest``."""
    req = structure(parse_json(body), ChatCompletionRequest)
    _refuse_beam_search(req)
    generation, request_id, setup = await chat.prepare(state, req, stream=req.stream, headers=headers)
    prompt_ids = list(generation.prompt_ids)
    reasoning_ended, reasoning_kwargs = setup.start(prompt_ids)
    if not req.include_reasoning:
        reasoning_ended = True  # vLLM's resolve_reasoning_ended, with or without a parser
    sampling = vllm_sampling_params(
        generation.params,
        n=req.n,
        stop=req.stop,
        stop_token_ids=req.stop_token_ids,
        bad_words=req.bad_words,
    )
    await send_json(
        send,
        200,
        generate_request(
            request_id=request_id,
            token_ids=prompt_ids,
            sampling_params=sampling,
            model=req.model,
            stream=bool(req.stream),
            stream_options=req.stream_options,
            cache_salt=req.cache_salt,
            priority=req.priority,
            reasoning_ended=reasoning_ended,
            reasoning_parser_kwargs=reasoning_kwargs,
        ),
    )


async def render_completions(state: ServerState, body: bytes, send: Send, headers: Headers) -> None:
    """``POST /v1/completions/render`` → a list of ``GenerateRequest``, one per prompt (ids
    ``cmpl-<id>`` for one prompt, ``cmpl-<id>-<i>`` for several, as vLLM's)."""
    req = structure(parse_json(body), CompletionRequest)
    _refuse_beam_search(req)
    prepared = await completions.prepare(state, req, headers)
    base, prompts = prepared.request_id, prepared.prompts
    out = []
    for i, item in enumerate(prompts):
        sampling = vllm_sampling_params(
            item.params, n=req.n, stop=req.stop, stop_token_ids=req.stop_token_ids, bad_words=req.bad_words
        )
        out.append(
            generate_request(
                request_id=base if len(prompts) == 1 else f"{base}-{i}",
                token_ids=list(item.prompt_ids),
                sampling_params=sampling,
                model=req.model,
                stream=bool(req.stream),
                stream_options=req.stream_options,
                cache_salt=req.cache_salt,
                priority=req.priority,
            )
        )
    await send_json(send, 200, out)
