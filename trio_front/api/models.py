"""OpenAI request models (attrs) and a strict cattrs converter.

cattrs' default hooks coerce (``"12"`` → 12, ``12.9`` → 12); ours do not: an ``int`` field takes only a
JSON integer, a ``float`` field an integer or a number, a ``bool`` only ``true``/``false``, a ``str`` only a
string, a ``list`` only an array. Fields whose OpenAI type is a union (``prompt``, ``stop``, ``content``...)
are typed ``Any`` here and checked by hand in the endpoint modules, which is clearer than teaching cattrs
each union.

Unknown fields are ignored, as vLLM does. Responses are plain dicts encoded with orjson: building them per
token with cattrs would cost several microseconds each.
"""

from __future__ import annotations

from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
import orjson

from .errors import APIError

T = TypeVar("T")


def _strict(kind: type, accept: tuple[type, ...], name: str):
    def hook(value: Any, _: type) -> Any:
        if type(value) in accept:
            return kind(value)
        raise TypeError(f"expected {name}, got {type(value).__name__} {_short(value)}")

    return hook


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


converter = cattrs.Converter(forbid_extra_keys=False)
converter.register_structure_hook(int, _strict(int, (int,), "an integer"))
converter.register_structure_hook(float, _strict(float, (int, float), "a number"))
converter.register_structure_hook(bool, _strict(bool, (bool,), "a boolean"))
converter.register_structure_hook(str, _strict(str, (str,), "a string"))
converter.register_structure_hook(Any, lambda value, _: value)


def _list_hook_factory(kind: Any) -> Any:
    """A ``list[X]`` field takes only a JSON array: cattrs would iterate a string (``"ab"`` → ``["a",
    "b"]``) or a mapping's keys."""
    args = get_args(kind)
    inner = args[0] if args else Any
    element = converter.get_structure_hook(inner)

    def hook(value: Any, _: type) -> list[Any]:
        if type(value) is not list:
            raise TypeError(f"expected a list, got {type(value).__name__} {_short(value)}")
        return [element(v, inner) for v in value]

    return hook


converter.register_structure_hook_factory(lambda t: get_origin(t) is list, _list_hook_factory)


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"malformed JSON body: {exc}") from None


def structure(data: Any, cls: type[T]) -> T:
    """Validate a decoded JSON body into *cls*, raising a 400 :class:`APIError` that names the field."""
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return converter.structure(data, cls)
    except cattrs.ClassValidationError as exc:
        messages = cattrs.transform_error(exc, path="")
        first = messages[0] if messages else str(exc)
        param = first.rsplit("@ ", 1)[-1].lstrip(".$") or None if "@" in first else None
        raise APIError(400, "invalid request: " + "; ".join(messages), param=param) from None
    except (TypeError, ValueError) as exc:
        raise APIError(400, f"invalid request: {exc}") from None


@attrs.define(kw_only=True)
class SamplingFields:
    """Sampling parameters shared by completions, chat and the realtime/responses APIs."""

    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    n: int = 1
    stop: Any = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    logit_bias: dict[str, float] | None = None
    allowed_token_ids: list[int] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    priority: int = 0
    cache_salt: str | None = None
    request_id: str | None = None
    echo: bool = False


@attrs.define(kw_only=True)
class VLLMFields(SamplingFields):
    """vLLM's extra request fields shared by ``/v1/completions`` and ``/v1/chat/completions`` (not by
    Responses or Realtime).

    Every field here is either honoured or refused with a 400 naming it (``tests/api/test_request_fields.py``
    walks vLLM 0.32's own request models to prove it)."""

    use_beam_search: bool = False
    length_penalty: float = 1.0
    truncate_prompt_tokens: int | None = None
    truncation_side: str | None = None
    prompt_logprobs: int | None = None
    bad_words: list[str] | None = None
    return_tokens_as_token_ids: bool | None = None
    return_token_ids: bool | None = None
    vllm_xargs: dict[str, Any] | None = None
    kv_transfer_params: dict[str, Any] | None = None
    ec_transfer_params: dict[str, Any] | None = None
    # Declared so that a non-default value is refused by name rather than silently dropped:
    watermarking: Any = None
    logprob_token_ids: Any = None
    session_id: Any = None
    routed_experts_prompt_start: Any = 0
    return_token_offsets: Any = False
    mm_payload: Any = "tensors"
    return_mm_kwargs: Any = None
    repetition_detection: Any = None
    thinking_token_budget: Any = None
    stream_interval: Any = None


@attrs.define(kw_only=True)
class CompletionRequest(VLLMFields):
    """``POST /v1/completions`` (OpenAI's fields plus vLLM's extras)."""

    prompt: Any = None
    max_tokens: int | None = 16
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None
    add_special_tokens: bool = True
    prompt_embeds: Any = None
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None


@attrs.define(kw_only=True)
class ChatCompletionRequest(VLLMFields):
    """``POST /v1/chat/completions`` (OpenAI's fields plus vLLM's extras)."""

    messages: Any = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    include_reasoning: bool = True
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    documents: list[dict[str, Any]] | None = None
    reasoning_effort: str | None = None
    media_io_kwargs: Any = None
    mm_processor_kwargs: Any = None
    return_prompt_text: Any = None
