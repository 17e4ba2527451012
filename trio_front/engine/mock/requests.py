"""Decoding and validating what arrives on the mock engine's input sockets, as vLLM 0.32's engine would.

The real engine decodes ADD payloads into its own ``EngineCoreRequest``; ``SamplingParams.__post_init__``
(and with it ``_verify_args``) runs *during* that decode, in the engine's input thread, so an invalid
value kills that thread. :func:`decode_add` therefore reports a decode failure and a parameter error the
same way (:class:`InputDecodeError`), and the engine layer treats both as that hazard.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from .. import wire

#: vLLM's ``VLLM_MAX_N_SEQUENCES`` default.
MAX_N = 16384
_SAMPLING_EPS = 1e-5


class MockRequest(msgspec.Struct, array_like=True, gc=False, kw_only=True):
    """``EngineCoreRequest`` with the fields the mock ignores typed loosely (multimodal, hints),
    so that a request the real engine would decode is never rejected by the mock for those."""

    request_id: str
    prompt_token_ids: list[int] | None
    mm_features: Any = None
    sampling_params: wire.SamplingParams | None
    pooling_params: Any = None
    arrival_time: float
    #: typed as the engine's decoder has it: a malformed one is a decode failure (input thread death)
    lora_request: wire.LoRARequest | None = None
    cache_salt: str | None = None
    data_parallel_rank: int | None = None
    prompt_embeds: Any = None
    prompt_is_token_ids: Any = None
    client_index: int = 0
    current_wave: int = 0
    priority: int = 0
    trace_headers: dict[str, str] | None = None
    resumable: bool = False
    external_req_id: str | None = None
    reasoning_ended: bool | None = None
    reasoning_parser_kwargs: Any = None
    abort_immediately: bool = False
    session_id: str | None = None
    kv_hints: Any = None


class InputDecodeError(Exception):
    """The real engine's input thread would have raised (and died) on this message."""


_add_decoder = msgspec.msgpack.Decoder(MockRequest)
_ids_decoder = msgspec.msgpack.Decoder(list[str])
_utility_decoder = msgspec.msgpack.Decoder(tuple[int, int, str, list[Any]])


def decode_add(payload: bytes) -> MockRequest:
    """Decode an ADD payload and run the checks of vLLM's ``SamplingParams.__post_init__``."""
    try:
        request = _add_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise InputDecodeError(f"undecodable ADD: {exc}") from None
    lora = request.lora_request
    if lora is not None and (lora.lora_int_id < 1 or not lora.lora_path):  # LoRARequest.__post_init__
        raise InputDecodeError(f"invalid lora_request for {request.request_id!r}: {lora}")
    if request.sampling_params is not None:
        problem = sampling_params_error(request.sampling_params)
        if problem is not None:
            raise InputDecodeError(f"invalid sampling params for {request.request_id!r}: {problem}")
    return request


def decode_abort(payload: bytes) -> list[str]:
    try:
        return _ids_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise InputDecodeError(f"undecodable ABORT: {exc}") from None


def decode_utility(payload: bytes) -> tuple[int, int, str, list[Any]]:
    """``[client_index, call_id, method, args]``."""
    try:
        return _utility_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise InputDecodeError(f"undecodable UTILITY: {exc}") from None


def sampling_params_error(p: wire.SamplingParams) -> str | None:
    """The message vLLM's ``SamplingParams._verify_args`` would raise for *p*, or ``None``."""
    if not 1 <= p.n <= MAX_N:
        return f"n must be in [1, {MAX_N}], got {p.n}."
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(p, name)
        if not -2.0 <= value <= 2.0:
            return f"{name} must be in [-2, 2], got {value}."
    if not math.isfinite(p.repetition_penalty) or p.repetition_penalty <= 0.0:
        return f"repetition_penalty must be a finite number greater than zero, got {p.repetition_penalty}."
    if not math.isfinite(p.temperature) or not 0.0 <= p.temperature <= 2.0:
        return f"temperature must be in [0, 2], got {p.temperature}."
    if not 0.0 < p.top_p <= 1.0:
        return f"top_p must be in (0, 1], got {p.top_p}."
    if p.top_k < -1:
        return f"top_k must be 0 (disable), or at least 1, got {p.top_k}."
    if not 0.0 <= p.min_p <= 1.0:
        return f"min_p must be in [0, 1], got {p.min_p}."
    if p.max_tokens is not None and p.max_tokens < 1:
        return f"max_tokens must be at least 1, got {p.max_tokens}."
    if p.min_tokens < 0:
        return f"min_tokens must be greater than or equal to 0, got {p.min_tokens}."
    if p.max_tokens is not None and p.min_tokens > p.max_tokens:
        return f"min_tokens must be less than or equal to max_tokens={p.max_tokens}, got {p.min_tokens}."
    if p.logprobs is not None and p.logprobs < -1:
        return f"logprobs must be non-negative or -1, got {p.logprobs}."
    if p.prompt_logprobs is not None and p.prompt_logprobs < -1:
        return f"prompt_logprobs must be non-negative or -1, got {p.prompt_logprobs}."
    if p.temperature < _SAMPLING_EPS and p.n > 1:
        return f"n must be 1 when using greedy sampling, got {p.n}."
    return None
