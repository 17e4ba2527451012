"""``POST /v1/responses`` bodies (and WebSocket ``response.create`` events): validation and planning.

Supported: ``input`` as a string or a list of items (:mod:`.items`: messages, ``function_call``,
``function_call_output``, ``reasoning``), ``instructions`` (a system message first; as at OpenAI it is
not carried over by ``previous_response_id``), ``max_output_tokens``, ``temperature``, ``top_p``,
``truncation`` (``"auto"`` drops the oldest messages when the prompt does not fit), ``metadata`` and
``user`` (echoed), function ``tools`` / ``tool_choice`` / ``parallel_tool_calls`` (:mod:`.tools`, planned
by :mod:`trio_front.assistant`), ``text.format`` (structured outputs: ``json_schema`` / ``json_object`` /
``text``), ``reasoning.effort`` (the chat template's ``reasoning_effort``), and vLLM's sampling extras
(``top_k``, ``seed``, ``stop``...). ``store``, ``include``, ``service_tier``, ``prompt_cache_key``,
``safety_identifier`` and ``reasoning.summary`` are accepted and ignored.

Refused with a 400 that names the field: non-function tools, ``background``, ``conversation``, ``prompt``
templates, ``top_logprobs`` > 0, non-text content (images, files), item references, and
``previous_response_id`` over HTTP (nothing is stored; WebSocket mode keeps responses per socket).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import attrs

from trio_front.assistant import plan_tools
from trio_front.assistant.setup import AssistantSetup
from trio_front.serving import structured
from trio_front.serving.generation import Generation
from trio_front.serving.params import ParamError

from ..assistant_request import assistant_generation, assistant_params
from ..errors import APIError
from ..models import SamplingFields
from ..prompt import build_prompt
from ..state import ServerState, param_error
from .items import input_messages
from .tools import chat_tool_choice, chat_tools, echo_tools

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


@attrs.define(kw_only=True)
class ResponsesRequest(SamplingFields):
    input: Any = None
    instructions: Any = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    text: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    reasoning: Any = None
    truncation: Any = None
    metadata: Any = None
    store: Any = None
    background: Any = None
    conversation: Any = None
    prompt: Any = None
    top_logprobs: int | None = None
    generate: bool | None = None  # WebSocket mode: false = only set up the context (warm-up)
    #: vLLM's field; read only for its trust check (:meth:`ServerState.check_chat_template`), then refused
    chat_template_kwargs: Any = None


@attrs.define(eq=False)
class Plan:
    """A validated request, ready to run: the conversation it continues and its generation."""

    req: ResponsesRequest
    response_id: str
    model: str
    #: history + this request's input (without instructions): the context a continuation builds on
    messages: list[dict[str, Any]]
    generation: Generation | None  # None when generate is false
    setup: AssistantSetup | None = None
    #: the Response object's echo of tools, tool_choice, parallel_tool_calls, text and reasoning
    echo: dict[str, Any] = attrs.field(factory=dict)
    created_at: int = attrs.field(factory=lambda: int(time.time()))


def new_response_id() -> str:
    return f"resp_{secrets.token_hex(24)}"


def check_supported(req: ResponsesRequest, *, websocket: bool) -> None:
    """Refuse what this server does not implement, naming the field."""
    if req.instructions is not None and not isinstance(req.instructions, str):
        raise APIError(400, "instructions must be a string", param="instructions")
    if req.text is not None and not isinstance(req.text, dict):
        raise APIError(400, "text must be an object", param="text")
    if req.reasoning is not None:
        effort = req.reasoning.get("effort") if isinstance(req.reasoning, dict) else None
        if not isinstance(req.reasoning, dict) or effort not in (None, *EFFORTS):
            raise APIError(
                400, f"reasoning.effort must be one of {', '.join(EFFORTS)}", param="reasoning.effort"
            )
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
    if req.chat_template_kwargs:
        raise APIError(
            400,
            "chat_template_kwargs is not supported by trio-front on /v1/responses",
            param="chat_template_kwargs",
        )


def _check_item_keys(value: Any) -> None:
    """An input item's ``type`` and ``role`` are strings when given (``items.py`` looks them up in
    tables: a list or object there would be a 500, not the 400 it is)."""
    if not isinstance(value, list):
        return
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            continue  # items.py refuses it by position
        for key in ("type", "role"):
            if key in item and not isinstance(item[key], str):
                where = f"input[{index}].{key}"
                raise APIError(400, f"{where} must be a string", param=where)


def _assistant(
    state: ServerState, req: ResponsesRequest
) -> tuple[AssistantSetup, list[dict[str, Any]] | None, dict[str, Any]]:
    """(the assistant setup, the chat-form tools, the Response object's echo of these fields)."""
    tools = chat_tools(req.tools)
    choice = chat_tool_choice(req.tool_choice, bool(tools))
    fmt = req.text.get("format") if isinstance(req.text, dict) else None
    try:
        plan_ = plan_tools(tools, choice, req.parallel_tool_calls, state.assistant)
        constraint = structured.from_text_format(fmt, config=state.structured)
        setup = AssistantSetup.build(
            plan_,
            constraint,
            config=state.assistant,
            structured_config=state.structured,
            tokenizer=state.tokenizer,
            chat_template_kwargs=state.chat_template_kwargs(None),  # --default-chat-template-kwargs
            constraint_param="text.format",
        )
    except ParamError as exc:
        raise param_error(exc) from None
    effort = req.reasoning.get("effort") if isinstance(req.reasoning, dict) else None
    echo = {
        "tools": echo_tools(tools),
        "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "text": {"format": fmt or {"type": "text"}},
        "reasoning": (
            {"effort": effort, "summary": req.reasoning.get("summary")}
            if isinstance(req.reasoning, dict)
            else None
        ),
    }
    return setup, plan_.render_tools, echo


async def plan(
    state: ServerState,
    req: ResponsesRequest,
    response_id: str,
    *,
    history: list[dict[str, Any]] | None = None,
    websocket: bool = False,
) -> Plan:
    """Validate *req*, render and tokenize it (after *history*); raise a 400/404/503 :class:`APIError`."""
    state.check_model(req.model)
    # vLLM refuses an untrusted template (in chat_template_kwargs) before anything else about the input
    kwargs = req.chat_template_kwargs
    state.check_chat_template(None, kwargs if isinstance(kwargs, dict) else None)
    check_supported(req, websocket=websocket)
    _check_item_keys(req.input)
    messages = input_messages(req.input, history or ())
    # vLLM's model_name(lora_request): the adapter's name, else the first served name
    model = state.response_model(state.resolve_lora(req.model))
    setup, render_tools, echo = _assistant(state, req)
    if req.generate is False:
        return Plan(req, response_id, model, messages, None, None, echo)
    if not messages:
        raise APIError(400, "input must not be empty", param="input")
    state.check_engine()
    effort = echo["reasoning"]["effort"] if echo["reasoning"] else None
    try:
        prompt = await build_prompt(
            state,
            req.instructions,
            messages,
            max_tokens=req.max_output_tokens,
            truncate=req.truncation == "auto",
            tools=render_tools,
            reasoning_effort=effort,
        )
        params, text_params = assistant_params(
            setup, req, limits=state.limits, max_tokens=prompt.max_tokens, stream=True
        )
    except APIError as exc:
        if exc.param == "max_tokens":
            exc.param = "max_output_tokens"
        raise
    except ParamError as exc:
        raise param_error(exc) from None
    generation = assistant_generation(
        state,
        setup,
        prompt.ids,
        params,
        text_params,
        id_prefix=response_id,
        # resolved here, right before the generation exists: an adapter unloaded meanwhile is a 404
        lora_request=state.resolve_lora(req.model),
        priority=req.priority,
        cache_salt=req.cache_salt,
    )
    return Plan(req, response_id, model, messages, generation, setup, echo)
