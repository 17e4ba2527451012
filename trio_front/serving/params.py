"""Validate sampling parameters and turn them into the engine's ``SamplingParams`` and our ``TextParams``.

The engine re-validates ``SamplingParams`` when it decodes a request and **its input thread dies silently**
if that fails; a prompt of ``max_model_len`` tokens or more crashes its worker. So everything the engine
would reject is rejected here first, with vLLM's ranges and an OpenAI-style 400 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from trio_front.engine import wire
from trio_front.text.detokenizer import TextParams
from trio_front.text.tokenizer import Tokenizer

#: vLLM's default ``--max-logprobs``.
MAX_LOGPROBS = 20
_INT64 = (-(2**63), 2**63 - 1)


class ParamError(ValueError):
    """An invalid parameter; ``param`` names it for the OpenAI error body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class SamplingLike(Protocol):
    """The request fields this module reads (the API models provide them)."""

    temperature: float | None
    top_p: float | None
    top_k: int | None
    min_p: float | None
    presence_penalty: float | None
    frequency_penalty: float | None
    repetition_penalty: float | None
    seed: int | None
    n: int
    stop: Any
    stop_token_ids: list[int] | None
    ignore_eos: bool
    min_tokens: int
    include_stop_str_in_output: bool
    skip_special_tokens: bool
    spaces_between_special_tokens: bool
    logit_bias: dict[str, float] | None
    allowed_token_ids: list[int] | None


@attrs.frozen
class ModelLimits:
    """What validation needs to know about the model and the engine."""

    max_model_len: int
    vocab_size: int
    eos_token_id: int | None
    generation_eos_ids: tuple[int, ...] = ()
    #: Sampling defaults from generation_config.json (vLLM's ``--generation-config auto``).
    defaults: dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, max_model_len: int) -> ModelLimits:
        files = tokenizer.files
        gen = files.generation_config or {}
        defaults = {
            k: gen[k]
            for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
            if isinstance(gen.get(k), (int, float)) and not isinstance(gen.get(k), bool)
        }
        vocab = max(files.vocab_size or 0, tokenizer.max_token_id + 1)
        return cls(
            max_model_len, vocab, tokenizer.eos_token_id, tuple(files.generation_eos_token_ids), defaults
        )


def check_prompt(prompt_len: int, limits: ModelLimits, max_tokens: int | None) -> int:
    """Validate the prompt length; return the effective ``max_tokens`` (vLLM's default: what fits)."""
    if prompt_len == 0:
        raise ParamError("The decoder prompt cannot be empty", "prompt")
    room = limits.max_model_len - prompt_len
    if room < 1:
        raise ParamError(
            f"This model's maximum context length is {limits.max_model_len} tokens. However, your request "
            f"has {prompt_len} input tokens. Please reduce the length of the input messages.",
            "input_tokens",
        )
    if max_tokens is None:
        return room
    if max_tokens < 1:
        raise ParamError(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
    if max_tokens > room:
        raise ParamError(
            f"'max_tokens' is too large: {max_tokens}. This model's maximum context length is "
            f"{limits.max_model_len} tokens and your request has {prompt_len} input tokens "
            f"({max_tokens} > {limits.max_model_len} - {prompt_len}).",
            "max_tokens",
        )
    return max_tokens


def stop_strings(value: Any) -> tuple[str, ...]:
    """OpenAI's ``stop``: a string, a list of strings, or null."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ParamError("stop must be a string or a list of strings", "stop")
    if any(not s for s in value):
        raise ParamError("stop cannot contain an empty string.", "stop")
    return tuple(dict.fromkeys(value))


def _token_ids(values: Sequence[int] | None, limits: ModelLimits, param: str) -> list[int] | None:
    if values is None:
        return None
    for tid in values:
        if not 0 <= tid < limits.vocab_size:
            raise ParamError(f"{param} contains out-of-vocab token id {tid}", param)
    return list(dict.fromkeys(values))


def _range(value: float | None, low: float, high: float, param: str, *, low_open: bool = False) -> None:
    if value is None:
        return
    if value != value or value in (float("inf"), float("-inf")):
        raise ParamError(f"{param} must be a finite number, got {value}.", param)
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ParamError(f"{param} must be in {bracket}{low:g}, {high:g}], got {value}.", param)


def build_params(
    req: SamplingLike,
    *,
    limits: ModelLimits,
    max_tokens: int,
    logprobs: int | None = None,
    stream: bool = False,
    structured_outputs: wire.StructuredOutputsParams | None = None,
    skip_special_tokens: bool | None = None,
) -> tuple[wire.SamplingParams, TextParams]:
    """Validate *req* and return ``(engine params, frontend text params)``; raises :class:`ParamError`.

    *structured_outputs* is an already validated constraint (``serving/structured.py``);
    *skip_special_tokens* overrides the request's (a tool or reasoning format whose markers are special
    tokens must see them, as vLLM's ``adjust_request`` does)."""
    skip_special = req.skip_special_tokens if skip_special_tokens is None else skip_special_tokens
    d = limits.defaults
    temperature = req.temperature if req.temperature is not None else float(d.get("temperature", 1.0))
    top_p = req.top_p if req.top_p is not None else float(d.get("top_p", 1.0))
    top_k = req.top_k if req.top_k is not None else int(d.get("top_k", 0))
    min_p = req.min_p if req.min_p is not None else float(d.get("min_p", 0.0))
    repetition = (
        req.repetition_penalty if req.repetition_penalty is not None else d.get("repetition_penalty", 1.0)
    )
    presence = req.presence_penalty or 0.0
    frequency = req.frequency_penalty or 0.0

    if req.n != 1:
        raise ParamError("Only n=1 is supported", "n")
    _range(temperature, 0.0, 2.0, "temperature")
    _range(top_p, 0.0, 1.0, "top_p", low_open=True)
    _range(min_p, 0.0, 1.0, "min_p")
    _range(presence, -2.0, 2.0, "presence_penalty")
    _range(frequency, -2.0, 2.0, "frequency_penalty")
    _range(float(repetition), 0.0, float("inf"), "repetition_penalty", low_open=True)
    if top_k < -1:
        raise ParamError(f"top_k must be 0 (disable), or at least 1, got {top_k}.", "top_k")
    if req.seed is not None and not _INT64[0] <= req.seed <= _INT64[1]:
        raise ParamError("seed must be a 64-bit integer", "seed")
    if req.min_tokens < 0:
        raise ParamError(
            f"min_tokens must be greater than or equal to 0, got {req.min_tokens}.", "min_tokens"
        )
    if req.min_tokens > max_tokens:
        raise ParamError(
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {req.min_tokens}.",
            "min_tokens",
        )
    if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
        raise ParamError(f"logprobs must be between 0 and {MAX_LOGPROBS}, got {logprobs}.", "logprobs")
    stops = stop_strings(req.stop)
    stop_ids = _token_ids(req.stop_token_ids, limits, "stop_token_ids") or []
    allowed = _token_ids(req.allowed_token_ids, limits, "allowed_token_ids")
    if allowed is not None and not allowed:
        raise ParamError("allowed_token_ids cannot be empty", "allowed_token_ids")
    bias = None
    if req.logit_bias:
        bias = {}
        for key, value in req.logit_bias.items():
            try:
                tid = int(key)
            except ValueError:
                raise ParamError(f"logit_bias key {key!r} is not a token id", "logit_bias") from None
            if not 0 <= tid < limits.vocab_size:
                raise ParamError(f"logit_bias contains out-of-vocab token id {tid}", "logit_bias")
            bias[tid] = max(-100.0, min(100.0, float(value)))

    # EOS handling as vLLM's SamplingParams.update_from_generation_config does it.
    eos = limits.eos_token_id
    all_stop = set(stop_ids)
    if eos is not None:
        all_stop.add(eos)
    extra_eos = [e for e in limits.generation_eos_ids if e != eos]
    if extra_eos:
        all_stop.update(extra_eos)
        if not req.ignore_eos:
            stop_ids = list(dict.fromkeys([*extra_eos, *stop_ids]))

    params = wire.SamplingParams(
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(top_k),
        min_p=float(min_p),
        presence_penalty=float(presence),
        frequency_penalty=float(frequency),
        repetition_penalty=float(repetition),
        seed=None if req.seed == -1 else req.seed,
        max_tokens=max_tokens,
        min_tokens=req.min_tokens,
        stop_token_ids=stop_ids or None,
        ignore_eos=req.ignore_eos,
        logprobs=logprobs,
        output_kind=wire.OutputKind.DELTA if stream else wire.OutputKind.FINAL_ONLY,
        eos_token_id=None if req.ignore_eos else eos,
        all_stop_token_ids=sorted(all_stop),
        logit_bias=bias,
        allowed_token_ids=allowed,
        skip_special_tokens=skip_special,
        spaces_between_special_tokens=req.spaces_between_special_tokens,
        include_stop_str_in_output=req.include_stop_str_in_output,
        structured_outputs=structured_outputs,
    )
    text = TextParams(
        stop=stops,
        min_tokens=req.min_tokens,
        include_stop_str_in_output=req.include_stop_str_in_output,
        skip_special_tokens=skip_special,
        spaces_between_special_tokens=req.spaces_between_special_tokens,
    )
    return params, text
