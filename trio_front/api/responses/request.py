"""``POST /v1/responses`` bodies (and WebSocket ``response.create`` events): validation and planning.

Supported: ``input`` as a string or a list of messages (``{"role", "content"}`` with a string or
``input_text``/``output_text`` parts, with or without ``"type": "message"``; roles ``user``,
``assistant``, ``system`` and ``developer``, the latter treated as ``system``), ``instructions`` (a
system message first; as at OpenAI it is not carried over by ``previous_response_id``),
``max_output_tokens``, ``temperature``, ``top_p``, ``truncation`` (``"auto"`` drops the oldest messages
when the prompt does not fit), ``metadata`` and ``user`` (echoed), and vLLM's sampling extras (``top_k``,
``seed``, ``stop``...). ``store``, ``reasoning``, ``include``, ``service_tier``, ``parallel_tool_calls``,
``prompt_cache_key`` and ``safety_identifier`` are accepted and ignored.

Refused with a 400 that names the field: ``tools`` (non-empty), ``tool_choice`` other than
``auto``/``none``, structured ``text.format``, ``background``, ``conversation``, ``prompt`` templates,
``top_logprobs`` > 0, non-text input (images, files, function calls, item references), and
``previous_response_id`` over HTTP (nothing is stored; WebSocket mode keeps responses per socket).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import attrs

from trio_front.serving.generation import Generation
from trio_front.serving.params import ParamError, build_params

from ..errors import APIError
from ..models import SamplingFields
from ..prompt import build_prompt
from ..state import ServerState, param_error

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text", "text")


@attrs.define(kw_only=True)
class ResponsesRequest(SamplingFields):
    input: Any = None
    instructions: Any = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    text: Any = None
    tools: Any = None
    tool_choice: Any = None
    truncation: Any = None
    metadata: Any = None
    store: Any = None
    background: Any = None
    conversation: Any = None
    prompt: Any = None
    top_logprobs: int | None = None
    generate: bool | None = None  # WebSocket mode: false = only set up the context (warm-up)


@attrs.define(eq=False)
class Plan:
    """A validated request, ready to run: the conversation it continues and its generation."""

    req: ResponsesRequest
    response_id: str
    model: str
    #: history + this request's input (without instructions): the context a continuation builds on
    messages: list[dict[str, str]]
    generation: Generation | None  # None when generate is false
    created_at: int = attrs.field(factory=lambda: int(time.time()))


def new_response_id() -> str:
    return f"resp_{secrets.token_hex(24)}"


def input_messages(value: Any) -> list[dict[str, str]]:
    """The ``input`` field as chat messages; raises a 400 :class:`APIError`."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise APIError(400, "input must be a string or a list of input items", param="input")
    messages = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise APIError(400, f"{where} must be an object", param=where)
        kind = item.get("type", "message")
        if kind != "message":
            raise APIError(
                400, f"input items of type {kind!r} are not supported (text messages only)", param=where
            )
        role = ROLES.get(item.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise APIError(400, f"{where}.role must be one of {sorted(ROLES)}", param=f"{where}.role")
        messages.append({"role": role, "content": _content_text(item.get("content"), where)})
    return messages


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where}.content must be a string or a list of parts", param=f"{where}.content")
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise APIError(
                400,
                f"content parts of type {kind!r} are not supported (input_text/output_text only)",
                param=f"{where}.content",
            )
        texts.append(part["text"])
    return "".join(texts)


def check_supported(req: ResponsesRequest, *, websocket: bool) -> None:
    """Refuse what this server does not implement, naming the field."""
    if req.instructions is not None and not isinstance(req.instructions, str):
        raise APIError(400, "instructions must be a string", param="instructions")
    if req.tools:
        raise APIError(400, "tools are not supported yet", param="tools")
    if req.tool_choice not in (None, "auto", "none"):
        raise APIError(400, "tool_choice other than 'auto' or 'none' is not supported", param="tool_choice")
    fmt = req.text.get("format") if isinstance(req.text, dict) else None
    if req.text is not None and (not isinstance(req.text, dict) or fmt not in (None, {"type": "text"})):
        raise APIError(400, "only text.format {'type': 'text'} is supported", param="text.format")
    if req.background:
        raise APIError(400, "background responses are not supported", param="background")
    if req.conversation is not None:
        raise APIError(400, "conversation objects are not supported", param="conversation")
    if req.prompt is not None:
        raise APIError(400, "prompt templates are not supported", param="prompt")
    if req.top_logprobs:
        raise APIError(400, "top_logprobs is not supported yet", param="top_logprobs")
    if req.truncation not in (None, "auto", "disabled"):
        raise APIError(400, "truncation must be 'auto' or 'disabled'", param="truncation")
    if req.metadata is not None and not isinstance(req.metadata, dict):
        raise APIError(400, "metadata must be an object", param="metadata")
    if req.max_output_tokens is not None and req.max_output_tokens < 1:
        raise APIError(400, "max_output_tokens must be at least 1", param="max_output_tokens")
    if req.previous_response_id is not None and not websocket:
        raise APIError(
            400,
            "previous_response_id is only supported in WebSocket mode: this server does not store responses",
            param="previous_response_id",
        )
    if req.generate is False and not websocket:
        raise APIError(400, "generate: false is only supported in WebSocket mode", param="generate")


async def plan(
    state: ServerState,
    req: ResponsesRequest,
    response_id: str,
    *,
    history: list[dict[str, str]] | None = None,
    websocket: bool = False,
) -> Plan:
    """Validate *req*, render and tokenize it (after *history*); raise a 400/404/503 :class:`APIError`."""
    state.check_model(req.model)
    check_supported(req, websocket=websocket)
    messages = [*(history or ()), *input_messages(req.input)]
    model = req.model or state.served_model_name
    if req.generate is False:
        return Plan(req, response_id, model, messages, None)
    if not messages:
        raise APIError(400, "input must not be empty", param="input")
    state.check_engine()
    try:
        prompt = await build_prompt(
            state,
            req.instructions,
            messages,
            max_tokens=req.max_output_tokens,
            truncate=req.truncation == "auto",
        )
        params, text_params = build_params(
            req, limits=state.limits, max_tokens=prompt.max_tokens, stream=True
        )
    except APIError as exc:
        if exc.param == "max_tokens":
            exc.param = "max_output_tokens"
        raise
    except ParamError as exc:
        raise param_error(exc) from None
    generation = Generation(
        state.engine,
        state.tokenizer,
        prompt.ids,
        params,
        text_params,
        id_prefix=response_id,
        priority=req.priority,
        cache_salt=req.cache_salt,
    )
    return Plan(req, response_id, model, messages, generation)
