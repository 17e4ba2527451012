"""Validate sampling parameters and turn them into the engine's ``SamplingParams`` and our ``TextParams``.

The engine re-validates ``SamplingParams`` when it decodes a request and **its input thread dies silently**
if that fails; a prompt of ``max_model_len`` tokens or more crashes its worker, and token ids outside the
vocabulary (stop ids, logit bias, allowed ids, bad words) or too many logprobs index past its tensors. So
everything the engine would reject is rejected here first, with vLLM 0.32's ranges and messages
(``SamplingParams._verify_args`` / ``verify``, ``InputProcessor._validate_params``, the OpenAI protocol
validators) and an OpenAI-style 400 naming the parameter (:class:`ParamError`).

Entry points (all pure, no I/O, nothing to cancel):

* :func:`build_params` — the single place a request becomes engine params. ``n`` is validated here but
  the wire always carries ``n=1``: parallel samples are separate engine requests, see :func:`child_params`.
* :func:`child_params` — the params of sample *index* of an ``n > 1`` request (vLLM's ``ParentRequest``).
* :func:`check_prompt` — prompt length against ``max_model_len``; the effective ``max_tokens``.
* :func:`truncate_prompt` — ``truncate_prompt_tokens`` / ``truncation_side`` on tokenized prompt ids
  (:func:`added_special_tokens` for text prompts).
* :func:`chat_logprobs` — chat's ``logprobs`` / ``top_logprobs`` pair as the engine's ``logprobs``.
* :func:`refuse_unsupported` — a 400 naming any declared field trio-front does not honour.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import msgspec

from trio_front.engine import wire
from trio_front.serving.sampling_defaults import SamplingDefaults
from trio_front.text.detokenizer import TextParams
from trio_front.text.tokenizer import Tokenizer

#: vLLM's default ``--max-logprobs``.
MAX_LOGPROBS = 20
_INT64 = (-(2**63), 2**63 - 1)
#: vLLM's ``_SAMPLING_EPS`` and ``_MAX_TEMP``: a temperature in (0, 1e-2) is raised to 1e-2 by the engine,
#: so only exactly 0 is greedy.
_SAMPLING_EPS = 1e-5
_MAX_TEMP = 1e-2
_CACHE_SALT_FORBIDDEN = frozenset("@/\\\x00")
_MAX_CACHE_SALT_LENGTH = 128


def _env_int(name: str, default: int) -> int:
    """vLLM reads these from its environment at each use; so do we (same names, same defaults)."""
    return int(os.environ.get(name, str(default)))


def max_n_sequences() -> int:
    return _env_int("VLLM_MAX_N_SEQUENCES", 16384)


class ParamError(ValueError):
    """An invalid parameter; ``param`` names it for the OpenAI error body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class SamplingLike(Protocol):
    """The request fields this module reads (the API models provide them). vLLM-only fields
    (``bad_words``, ``vllm_xargs``, ``cache_salt``...) are read with ``getattr`` and their defaults, so
    the Responses and Realtime field objects, which lack them, work unchanged."""

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
    #: The server's sampling defaults, vLLM's ``default_sampling_params`` (``serving/sampling_defaults.py``:
    #: ``--generation-config`` / ``--override-generation-config``); a request field left unset takes them.
    defaults: dict[str, Any] = attrs.field(factory=dict)
    #: ``--max-logprobs``; ``-1`` means the vocabulary size.
    max_logprobs: int = MAX_LOGPROBS
    #: vLLM's side for ``truncate_prompt_tokens`` when the request names none: its ``get_tokenizer``
    #: passes ``truncation_side="left"`` for generative models, whatever tokenizer_config.json says.
    truncation_side: str = "left"
    #: vLLM's ``override_max_tokens``: caps every request's ``max_tokens`` (:class:`SamplingDefaults`).
    override_max_tokens: int | None = None
    #: the engine runs speculative decoding (``--speculative-config``): min_p and logit_bias are refused
    speculative_decoding: bool = False

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Tokenizer,
        max_model_len: int,
        *,
        max_logprobs: int = MAX_LOGPROBS,
        sampling: SamplingDefaults | None = None,
        speculative_decoding: bool = False,
    ) -> ModelLimits:
        """The limits of *tokenizer*'s model; *sampling* are the server's sampling defaults (none: vLLM's
        own; the tokenizer's folder is not where ``--generation-config`` points)."""
        files = tokenizer.files
        sampling = sampling or SamplingDefaults()
        vocab = max(files.vocab_size or 0, tokenizer.max_token_id + 1)
        return cls(
            max_model_len,
            vocab,
            tokenizer.eos_token_id,
            tuple(files.generation_eos_token_ids),
            dict(sampling.values),
            max_logprobs=max_logprobs,
            override_max_tokens=sampling.override_max_tokens,
            speculative_decoding=speculative_decoding,
        )

    @property
    def logprobs_cap(self) -> int:
        return self.vocab_size if self.max_logprobs == -1 else self.max_logprobs


def check_prompt(
    prompt_len: int, limits: ModelLimits, max_tokens: int | None, *, apply_defaults: bool = True
) -> int:
    """Validate the prompt length and the request's *max_tokens*; return the effective ``max_tokens``.

    That is vLLM's ``get_max_tokens``: the smallest of what fits (``max_model_len - prompt_len``), the
    request's value or, when it has none, the server default's ``max_tokens`` (a generation config's
    ``max_new_tokens``), and ``limits.override_max_tokens``. *apply_defaults* ``False`` leaves the
    server defaults out (only what fits, or the request's value)."""
    if prompt_len == 0:
        raise ParamError("The decoder prompt cannot be empty", "prompt")
    room = limits.max_model_len - prompt_len
    if room < 1:
        raise ParamError(
            f"This model's maximum context length is {limits.max_model_len} tokens. However, your request "
            f"has {prompt_len} input tokens. Please reduce the length of the input messages.",
            "input_tokens",
        )
    if max_tokens is not None:
        if max_tokens < 1:
            raise ParamError(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
        if max_tokens > room:
            raise ParamError(
                f"'max_tokens' is too large: {max_tokens}. This model's maximum context length is "
                f"{limits.max_model_len} tokens and your request has {prompt_len} input tokens "
                f"({max_tokens} > {limits.max_model_len} - {prompt_len}).",
                "max_tokens",
            )
    if not apply_defaults:
        return room if max_tokens is None else max_tokens
    wanted = max_tokens if max_tokens is not None else limits.defaults.get("max_tokens")
    return min(v for v in (room, wanted, limits.override_max_tokens) if v is not None)


def truncate_prompt(
    ids: list[int],
    truncate_prompt_tokens: int | None,
    truncation_side: str | None,
    max_model_len: int,
    *,
    default_side: str = "left",
    max_tokens: int | None = 1,
    special_tokens: tuple[int, int] = (0, 0),
) -> list[int]:
    """vLLM's ``TokenizeParams`` truncation (``vllm/renderers/params.py``) of tokenized prompt *ids*.

    ``None`` keeps the prompt; ``N >= 0`` keeps ``N`` tokens (``0`` leaves an empty prompt, which
    :func:`check_prompt` then refuses, as vLLM does); ``-1`` keeps ``max_model_len - 1`` tokens, or
    ``max_model_len`` when the request asked for no output tokens (*max_tokens* ``0``/``None``, vLLM's
    ``max_output_tokens == 0`` — chat without ``max_tokens`` is that case, and its full-length prompt is
    then refused by :func:`check_prompt`, as in vLLM). ``"right"`` keeps the first tokens, ``"left"``
    the last; ``None`` means *default_side* (vLLM's: ``"left"`` for generative models, see
    :attr:`ModelLimits.truncation_side`).
    Call it after tokenization and before :func:`check_prompt`.

    *special_tokens* is ``(prefix, suffix)``: how many special tokens the tokenizer added around a text
    prompt's ids (:func:`added_special_tokens`; ``(0, 0)`` for token-id prompts). Without a request
    side vLLM lets the tokenizer truncate, which keeps them and cuts the text's tokens to ``N - prefix -
    suffix`` (``[BOS] + last N-1``); with an explicit side it slices the full ids, as here."""
    if truncation_side not in (None, "left", "right"):
        raise ParamError("`truncation_side` must be either 'left' or 'right'.", "truncation_side")
    if truncate_prompt_tokens is None:
        return ids
    if truncate_prompt_tokens < -1:
        raise ParamError(
            "truncate_prompt_tokens: Input should be greater than or equal to -1, got "
            f"{truncate_prompt_tokens}",
            "truncate_prompt_tokens",
        )
    if truncate_prompt_tokens > max_model_len:
        raise ParamError(
            f"truncate_prompt_tokens={truncate_prompt_tokens} cannot be greater than max_model_len "
            f"= {max_model_len}. Please request a smaller truncation size.",
            "truncate_prompt_tokens",
        )
    keep = truncate_prompt_tokens
    if keep == -1:
        keep = max_model_len if not max_tokens else max(0, max_model_len - 1)
    if keep >= len(ids):
        return ids
    if keep == 0:
        return []
    side = truncation_side or default_side
    prefix, suffix = special_tokens if truncation_side is None else (0, 0)
    if prefix or suffix:
        body = ids[prefix : len(ids) - suffix]
        room = max(0, keep - prefix - suffix)
        body = (body[len(body) - room :] if room else []) if side == "left" else body[:room]
        return [*ids[:prefix], *body, *ids[len(ids) - suffix :]]
    return ids[-keep:] if side == "left" else ids[:keep]


@functools.lru_cache(maxsize=8)
def added_special_tokens(tokenizer: Tokenizer, add_special_tokens: bool = True) -> tuple[int, int]:
    """``(prefix, suffix)`` counts of the special tokens *tokenizer* adds around a text when encoding with
    *add_special_tokens* (Llama: ``(1, 0)``, its BOS), for :func:`truncate_prompt`."""
    if not add_special_tokens:
        return (0, 0)
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return (start, len(full) - start - len(plain))
    return (0, 0)


def stop_strings(value: Any) -> tuple[str, ...]:
    """OpenAI's ``stop``: a string, a list of strings (at most ``VLLM_MAX_STOP_STRINGS``), or null."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ParamError("stop must be a string or a list of strings", "stop")
    limit = _env_int("VLLM_MAX_STOP_STRINGS", 4)
    if len(value) > limit:
        raise ParamError(
            f"stop: List should have at most {limit} items after validation, not {len(value)}", "stop"
        )
    if any(not s for s in value):
        raise ParamError("stop cannot contain an empty string.", "stop")
    return tuple(dict.fromkeys(value))


def _out_of_vocab(values: Sequence[int], vocab_size: int) -> list[int]:
    return [t for t in values if t < 0 or t >= vocab_size]


def _range(value: float | None, low: float, high: float, param: str, *, low_open: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        raise ParamError(f"{param} must be a finite number, got {value}.", param)
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ParamError(f"{param} must be in {bracket}{low:g}, {high:g}], got {value}.", param)


def check_n(n: int, temperature: float) -> None:
    """vLLM's ``_verify_num_sequences`` and ``_verify_greedy_sampling`` for the effective temperature."""
    if n < 1:
        raise ParamError(f"n must be at least 1, got {n}.", "n")
    limit = max_n_sequences()
    if n > limit:
        raise ParamError(
            f"n must be at most {limit}, got {n}. To increase this limit, set the VLLM_MAX_N_SEQUENCES "
            "environment variable.",
            "n",
        )
    # The engine raises 0 < t < 1e-2 to 1e-2 before its greedy check: only t == 0 is greedy.
    effective = max(temperature, _MAX_TEMP) if temperature > 0 else temperature
    if effective < _SAMPLING_EPS and n > 1:
        raise ParamError(f"n must be 1 when using greedy sampling, got {n}.", "n")


def _check_logprobs(value: int | None, param: str, limits: ModelLimits, *, prompt: bool = False) -> None:
    """The protocol's sign check and ``SamplingParams._validate_logprobs``' cap (``-1`` = vocab)."""
    if value is None:
        return
    if value < 0 and value != -1:
        raise ParamError(f"`{param}` must be a positive value or -1.", param)
    requested = limits.vocab_size if value == -1 else value
    cap = limits.logprobs_cap
    if requested > cap:
        kind = "prompt logprobs" if prompt else "sample logprobs"
        # vLLM's message; the param is the field the client sent (vLLM says "logprobs" for top_logprobs)
        raise ParamError(f"Requested {kind} of {requested}, which is greater than max allowed: {cap}", param)


def chat_logprobs(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """Chat's ``logprobs`` (bool) and ``top_logprobs`` as the engine's ``logprobs`` (``None``: none),
    with vLLM's protocol checks; pass the result to :func:`build_params` with
    ``logprobs_param="top_logprobs"``."""
    top = 0 if top_logprobs is None else top_logprobs
    if top < 0 and top != -1:
        raise ParamError("`top_logprobs` must be a positive value or -1.", "top_logprobs")
    if (top == -1 or top > 0) and not logprobs:
        raise ParamError("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs")
    return top if logprobs else None


def requested_prompt_logprobs(req: Any) -> int | None:
    """vLLM's ``to_sampling_params`` mapping: the request's ``prompt_logprobs``, else with ``echo`` the
    completions ``logprobs`` or chat's ``top_logprobs`` (``0`` when unset, even without ``logprobs``:
    vLLM asks the engine for prompt logprobs on every chat echo). Pass it as *prompt_logprobs*."""
    value = getattr(req, "prompt_logprobs", None)
    if value is None and getattr(req, "echo", False):
        if hasattr(req, "top_logprobs"):
            return req.top_logprobs or 0
        return req.logprobs
    return value


def check_cache_salt(cache_salt: object) -> None:
    """vLLM's ``validate_cache_salt``."""
    if cache_salt is None:
        return
    if not isinstance(cache_salt, str) or not cache_salt:
        raise ParamError("Parameter 'cache_salt' must be a non-empty string if provided.", "cache_salt")
    if len(cache_salt) > _MAX_CACHE_SALT_LENGTH or any(c in _CACHE_SALT_FORBIDDEN for c in cache_salt):
        raise ParamError(
            "Parameter 'cache_salt' must be at most 128 characters and must not contain '@', '/', '\\\\', "
            "or NUL.",
            "cache_salt",
        )


def _logit_bias(value: dict[str, float] | None, limits: ModelLimits) -> dict[int, float] | None:
    """``SamplingParams.from_optional``'s key conversion and clamp, then ``_validate_logit_bias``."""
    if not value:
        return None
    bias: dict[int, float] = {}
    invalid: list[str] = []
    for key, weight in value.items():
        try:
            tid = int(key)  # vLLM's int(): " 7" and "+7" are 7, "7.0" is not a token id
        except ValueError:
            invalid.append(key)
            continue
        bias[tid] = min(100.0, max(-100.0, float(weight)))
    if invalid:
        raise ParamError(
            f"logit_bias contains key(s) that cannot be converted to integer token IDs: {invalid!r}",
            "logit_bias",
        )
    if bad := _out_of_vocab(list(bias), limits.vocab_size):
        raise ParamError(
            f"token_id(s) {bad} in logit_bias contain out-of-vocab token ids. Vocabulary size: "
            f"{limits.vocab_size}",
            "logit_bias",
        )
    return bias


def bad_words_token_ids(bad_words: Sequence[str], tokenizer: Tokenizer) -> list[list[int]] | None:
    """vLLM's ``SamplingParams.update_from_tokenizer``: each word tokenized as is and with a leading
    space (so it is banned at the start of the text and mid-text); the spaced form only when it is a
    different first token of the same length. ``None`` for no words."""
    words = list(dict.fromkeys(bad_words))
    if not words:
        return None
    if any(not w for w in words):
        raise ParamError(f"bad_words cannot contain an empty string. Got bad_words={words}", "bad_words")
    limit = _env_int("VLLM_MAX_NUM_BAD_WORDS", 128)
    out: list[list[int]] = []
    for word in words:
        for prefix in ("", " "):
            ids = tokenizer.encode(prefix + word.lstrip(), add_special_tokens=False)
            if not ids:
                if not prefix:
                    raise ParamError("bad_words entries must tokenize to at least one token.", "bad_words")
                continue  # the unprefixed form is still enforced
            if not prefix or (ids[0] != out[-1][0] and len(ids) == len(out[-1])):
                out.append(ids)
                if len(out) > limit:
                    raise ParamError(
                        f"Too many bad words after tokenization: {len(out)}. The max number is {limit}.",
                        "bad_words",
                    )
    invalid = [t for ids in out for t in ids if t < 0 or t > tokenizer.max_token_id]
    if invalid:
        raise ParamError(
            f"The model vocabulary size is {tokenizer.max_token_id + 1}, but the following tokens were "
            f"specified as bad: {invalid}. All token id values should be integers satisfying: "
            f"0 <= token_id <= {tokenizer.max_token_id}.",
            "bad_words",
        )
    return out


_XARG_SCALARS = (str, int, float)


def _extra_args(xargs: Any) -> dict[str, Any] | None:
    """``vllm_xargs``: vLLM's type (``dict[str, str | int | float | list[str | int | float]]``; booleans
    become 0/1 as pydantic's lax int does) and ``_verify_extra_args``' int64/uint64 range."""
    if xargs is None:
        return None
    if not isinstance(xargs, dict):
        raise ParamError("vllm_xargs must be an object", "vllm_xargs")

    def scalar(key: str, value: Any) -> str | int | float:
        if isinstance(value, bool):
            return int(value)
        if not isinstance(value, _XARG_SCALARS):
            raise ParamError(
                f"vllm_xargs.{key} must be a string, a number, or a list of strings and numbers",
                "vllm_xargs",
            )
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            raise ParamError("extra_args integers must be between -2**63 and 2**64 - 1.", "extra_args")
        return value

    out: dict[str, Any] = {}
    for key, value in xargs.items():
        out[key] = [scalar(key, v) for v in value] if isinstance(value, list) else scalar(key, value)
    return out or None


_REPETITION_FIELDS = ("max_pattern_size", "min_pattern_size", "min_count")


def repetition_detection(value: Any) -> wire.RepetitionDetectionParams | None:
    """``repetition_detection``: vLLM's ``RepetitionDetectionParams`` (unknown keys ignored, as its
    pydantic dataclass does) and its ``__post_init__`` checks."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ParamError("repetition_detection must be an object", "repetition_detection")
    sizes: dict[str, int] = {}
    for name in _REPETITION_FIELDS:
        v = value.get(name, 0)
        if type(v) is not int or not _INT64[0] <= v <= _INT64[1]:
            raise ParamError(f"repetition_detection.{name} must be an integer", "repetition_detection")
        sizes[name] = v
    if (
        sizes["max_pattern_size"] < 0
        or sizes["min_pattern_size"] < 0
        or (sizes["min_pattern_size"] > sizes["max_pattern_size"])
    ):
        raise ParamError(
            "max_pattern_size, min_pattern_size must be >=0, with min_pattern_size <= max_pattern_size. "
            "Set both to 0 to disable repetitive pattern detection.",
            "repetition_detection",
        )
    if sizes["max_pattern_size"] > 0 and sizes["min_count"] < 2:
        raise ParamError(
            "min_count must be >= 2 to detect repetitive patterns in engine output. If you do not wish to "
            "detect repetitive patterns, set max_pattern_size to 0.",
            "repetition_detection",
        )
    return wire.RepetitionDetectionParams(**sizes)


def _thinking_token_budget(value: Any) -> None:
    """vLLM's ``validate_thinking_token_budget``; ``-1`` is unset. A budget needs the engine's
    ``--reasoning-config`` (start/end think token ids), which an unchanged engine started without it
    lacks and we cannot see, so any budget is refused by name rather than risk it being ignored."""
    if value is None:
        return
    if type(value) is not int or (value < 0 and value != -1):
        raise ParamError(
            "`thinking_token_budget` must be a non-negative integer or -1 for unlimited.",
            "thinking_token_budget",
        )
    if value != -1:
        raise ParamError("thinking_token_budget is not supported by trio-front", "thinking_token_budget")


def _stream_interval(value: Any) -> None:
    """1 is the server's interval (every token is streamed): honoured. Batching is not implemented."""
    if value is None:
        return
    if type(value) is not int or value < 1:
        raise ParamError(f"stream_interval must be at least 1, got {value}.", "stream_interval")
    if value != 1:
        raise ParamError("stream_interval > 1 is not supported by trio-front", "stream_interval")


def build_params(
    req: SamplingLike,
    *,
    limits: ModelLimits,
    max_tokens: int,
    logprobs: int | None = None,
    stream: bool = False,
    structured_outputs: wire.StructuredOutputsParams | None = None,
    skip_special_tokens: bool | None = None,
    prompt_logprobs: int | None = None,
    tokenizer: Tokenizer | None = None,
    logprobs_param: str = "logprobs",
    n: int | None = None,
) -> tuple[wire.SamplingParams, TextParams]:
    """Validate *req* and return ``(engine params, frontend text params)``; raises :class:`ParamError`.

    *logprobs* / *prompt_logprobs* are the effective engine values (the handler resolves chat's
    ``top_logprobs`` and completions' ``echo``; *logprobs_param* names the request field for the sign
    error); ``req.prompt_logprobs`` itself is what the stream check looks at, as vLLM's validator does.
    *tokenizer* tokenizes ``bad_words`` (required when the request has any).
    *structured_outputs* is an already validated constraint (``serving/structured.py``);
    *skip_special_tokens* overrides the request's (a tool or reasoning format whose markers are special
    tokens must see them, as vLLM's ``adjust_request`` does). *n* overrides ``req.n`` (beam search,
    whose ``n`` is a beam width, passes 1). The returned params always carry ``n=1``: build the
    samples' params with :func:`child_params`."""
    skip_special = req.skip_special_tokens if skip_special_tokens is None else skip_special_tokens
    d = limits.defaults
    temperature = req.temperature if req.temperature is not None else float(d.get("temperature", 1.0))
    top_p = req.top_p if req.top_p is not None else float(d.get("top_p", 1.0))
    top_k = req.top_k if req.top_k is not None else int(d.get("top_k", 0))
    min_p = req.min_p if req.min_p is not None else float(d.get("min_p", 0.0))
    repetition = (
        req.repetition_penalty if req.repetition_penalty is not None else d.get("repetition_penalty", 1.0)
    )
    presence = req.presence_penalty if req.presence_penalty is not None else d.get("presence_penalty", 0.0)
    frequency = (
        req.frequency_penalty if req.frequency_penalty is not None else d.get("frequency_penalty", 0.0)
    )
    samples = req.n if n is None else n

    # The protocol validators first (vLLM runs them before building SamplingParams).
    check_cache_salt(getattr(req, "cache_salt", None))
    requested_prompt_logprobs = getattr(req, "prompt_logprobs", None)
    if requested_prompt_logprobs is not None:
        if stream and (requested_prompt_logprobs > 0 or requested_prompt_logprobs == -1):
            raise ParamError("`prompt_logprobs` are not available when `stream=True`.", "prompt_logprobs")
        if requested_prompt_logprobs < -1:
            raise ParamError("`prompt_logprobs` must be a positive value or -1.", "prompt_logprobs")
    _stream_interval(getattr(req, "stream_interval", None))
    # SamplingParams.__post_init__ / _verify_args, in vLLM's order.
    _thinking_token_budget(getattr(req, "thinking_token_budget", None))
    extra_args = _extra_args(getattr(req, "vllm_xargs", None))
    _range(presence, -2.0, 2.0, "presence_penalty")
    _range(frequency, -2.0, 2.0, "frequency_penalty")
    if not math.isfinite(repetition):
        raise ParamError(
            f"repetition_penalty must be a finite number, got {repetition}.", "repetition_penalty"
        )
    if repetition <= 0.0:
        raise ParamError(
            f"repetition_penalty must be greater than zero, got {repetition}.", "repetition_penalty"
        )
    if not math.isfinite(temperature):
        raise ParamError(f"temperature must be a finite number, got {temperature}.", "temperature")
    if temperature < 0.0:
        raise ParamError(f"temperature must be non-negative, got {temperature}.", "temperature")
    _range(temperature, 0.0, 2.0, "temperature")
    _range(top_p, 0.0, 1.0, "top_p", low_open=True)
    if top_k < -1:
        raise ParamError(f"top_k must be 0 (disable), or at least 1, got {top_k}.", "top_k")
    _range(min_p, 0.0, 1.0, "min_p")
    if req.seed is not None and not _INT64[0] <= req.seed <= _INT64[1]:
        raise ParamError("seed must be a 64-bit integer", "seed")
    # Beyond 64 bits msgpack cannot carry these at all (vLLM bounds priority in its protocol).
    if not _INT64[0] <= top_k <= _INT64[1]:
        raise ParamError("top_k must be a 64-bit integer", "top_k")
    if not _INT64[0] <= getattr(req, "priority", 0) <= _INT64[1]:
        raise ParamError("priority must be a 64-bit integer", "priority")
    if req.min_tokens < 0:
        raise ParamError(
            f"min_tokens must be greater than or equal to 0, got {req.min_tokens}.", "min_tokens"
        )
    if req.min_tokens > max_tokens:
        raise ParamError(
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {req.min_tokens}.",
            "min_tokens",
        )
    stops = stop_strings(req.stop)
    bad_words = getattr(req, "bad_words", None) or []
    if any(not w for w in bad_words):
        raise ParamError(
            f"bad_words cannot contain an empty string. Got bad_words={list(dict.fromkeys(bad_words))}",
            "bad_words",
        )
    check_n(samples, temperature)
    repetition_params = repetition_detection(getattr(req, "repetition_detection", None))
    # SamplingParams.verify (InputProcessor._validate_params): caps and vocabulary bounds.
    _check_logprobs(logprobs, logprobs_param, limits)
    _check_logprobs(prompt_logprobs, "prompt_logprobs", limits, prompt=True)
    bias = _logit_bias(req.logit_bias, limits)
    stop_ids = list(dict.fromkeys(req.stop_token_ids or []))
    if bad := _out_of_vocab(stop_ids, limits.vocab_size):
        raise ParamError(
            f"token_id(s) {bad} in stop_token_ids contain out-of-vocab token ids. Vocabulary size: "
            f"{limits.vocab_size}",
            "stop_token_ids",
        )
    allowed = req.allowed_token_ids
    if allowed is not None:
        if not allowed:
            raise ParamError("allowed_token_ids is not None and empty!", "allowed_token_ids")
        if _out_of_vocab(allowed, limits.vocab_size):
            raise ParamError("allowed_token_ids contains out-of-vocab token id!", "allowed_token_ids")
        allowed = list(allowed)
    # SamplingParams._validate_spec_decode: the engine's speculative sampler has neither.
    if limits.speculative_decoding and (float(min_p) > _SAMPLING_EPS or bias):
        raise ParamError(
            "The min_p and logit_bias sampling parameters are not yet supported with speculative decoding."
        )
    bad_ids = None
    if bad_words:
        if tokenizer is None:
            raise ParamError("bad_words is not supported by trio-front on this endpoint", "bad_words")
        bad_ids = bad_words_token_ids(bad_words, tokenizer)

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
        prompt_logprobs=prompt_logprobs,
        output_kind=wire.OutputKind.DELTA if stream else wire.OutputKind.FINAL_ONLY,
        eos_token_id=None if req.ignore_eos else eos,
        all_stop_token_ids=sorted(all_stop),
        logit_bias=bias,
        allowed_token_ids=allowed,
        bad_words_token_ids=bad_ids,
        skip_special_tokens=skip_special,
        spaces_between_special_tokens=req.spaces_between_special_tokens,
        include_stop_str_in_output=req.include_stop_str_in_output,
        structured_outputs=structured_outputs,
        extra_args=extra_args,
        repetition_detection=repetition_params,
    )
    text = TextParams(
        stop=stops,
        min_tokens=req.min_tokens,
        include_stop_str_in_output=req.include_stop_str_in_output,
        skip_special_tokens=skip_special,
        spaces_between_special_tokens=req.spaces_between_special_tokens,
    )
    return params, text


def child_params(params: wire.SamplingParams, index: int) -> wire.SamplingParams:
    """The engine params of sample *index* of an ``n > 1`` request: vLLM's ``ParentRequest`` gives each
    child a copy with ``n=1`` and, when a seed is set, ``seed + index`` (so the samples differ but stay
    reproducible); without a seed the copy is unchanged."""
    if params.seed is None:
        return msgspec.structs.replace(params, n=1)
    return msgspec.structs.replace(params, n=1, seed=params.seed + index)


# --------------------------------------------------------------------------------------------------
# Fields declared on the request models that trio-front does not honour


def _unset(value: Any) -> bool:
    return value is None or value is False or value == {} or value == []


#: ``(field, is the value the default/harmless?, why it is refused)`` for both vLLM request models.
_UNSUPPORTED: tuple[tuple[str, Any, str], ...] = (
    ("watermarking", lambda v: v is None or v is False, "no watermark is configured"),
    ("logprob_token_ids", _unset, ""),
    ("session_id", lambda v: v is None, ""),
    ("routed_experts_prompt_start", lambda v: v == 0, "routed experts are not returned"),
    ("return_token_offsets", _unset, "token offsets are only returned by the render endpoints"),
    ("mm_payload", lambda v: v == "tensors", "it only applies to the render endpoints"),
    ("return_mm_kwargs", lambda v: v is None, "it only applies to the render endpoints"),
    ("kv_transfer_params", _unset, "no KV connector is configured"),
    ("ec_transfer_params", _unset, "no encoder-cache connector is configured"),
    # chat
    ("media_io_kwargs", _unset, "the model takes text only"),
    ("mm_processor_kwargs", _unset, "the model takes text only"),
    ("return_prompt_text", _unset, ""),
    # completions
    ("prompt_embeds", _unset, ""),
    ("suffix", lambda v: v is None, "suffix is only supported for models with FIM completion rendering"),
    ("best_of", lambda v: v is None or v == 1, "vLLM 0.32 has no best_of; use n"),
)


def refuse_unsupported(req: Any) -> None:
    """Raise a 400 :class:`ParamError` naming the first field of *req* that trio-front declares but does
    not honour and that has a non-default value (a field the model lacks is skipped). Call it first
    thing in the completions and chat handlers. ``length_penalty`` without ``use_beam_search`` (vLLM
    accepts and ignores it) is refused too."""
    for name, harmless, why in _UNSUPPORTED:
        if not hasattr(req, name):
            continue
        if not harmless(getattr(req, name)):
            reason = f" ({why})" if why else ""
            raise ParamError(f"{name} is not supported by trio-front{reason}", name)
    length_penalty = getattr(req, "length_penalty", 1.0)
    if length_penalty != 1.0 and not getattr(req, "use_beam_search", False):
        raise ParamError(
            "length_penalty only applies to beam search (use_beam_search=true)", "length_penalty"
        )
