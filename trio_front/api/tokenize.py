"""``POST /tokenize`` and ``POST /detokenize``, as vLLM 0.32's ``serve/tokenize`` routes.

``/tokenize`` takes vLLM's two request forms: a body with ``messages`` is the chat form (rendered by the
chat template exactly as ``/v1/chat/completions`` renders it, ``add_special_tokens`` false by default),
anything else the completion form (``prompt`` text, ``add_special_tokens`` true by default); vLLM's
pydantic union resolves a body with both to the chat form too. The answer is
``{"count", "max_model_len", "tokens", "token_strs"}``, token strings being the vocabulary entries
(transformers' ``convert_ids_to_tokens``). No prompt-length check: vLLM tokenizes with no length limit.

``/detokenize`` decodes ``tokens`` as vLLM does (``skip_special_tokens=False``) into ``{"prompt"}``.
Unlike vLLM 0.32, which silently drops ids beyond the vocabulary, an out-of-vocabulary id is a 400.

Neither sends anything to the engine. ``/tokenize`` needs ``max_model_len``, which only the engine's
registration gives: before it, a 503 (vLLM's server does not answer at all before its engine is up).
Cancellation: a long text is encoded, a long id list decoded, in a worker thread (``encode_async``,
``_off_loop``); a client leaving abandons it at once (the thread finishes in the background).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar

import attrs
import msgspec
import trio

from trio_front.text.chat_template import ChatTemplateError
from trio_front.text.tokenizer import TOKENIZE_LIMITER

from .errors import APIError
from .http import Headers, Send, send_json
from .models import parse_json, structure
from .state import ServerState

T = TypeVar("T")

#: Id lists up to this long are decoded / turned into token strings on the event loop (~2 ms).
INLINE_IDS: Final = 4096

_BOTH_PROMPT_FLAGS = "Cannot set both `continue_final_message` and `add_generation_prompt` to True."


@attrs.define(kw_only=True)
class TokenizeCompletionRequest:
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


@attrs.define(kw_only=True)
class TokenizeChatRequest:
    # Union-typed or container fields are Any and checked by hand (cattrs would turn a string into a
    # list of characters).
    model: str | None = None
    messages: Any
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    return_token_strs: bool | None = False
    chat_template: str | None = None
    chat_template_kwargs: Any = None
    tools: Any = None
    media_io_kwargs: Any = None
    mm_processor_kwargs: Any = None


@attrs.define(kw_only=True)
class DetokenizeRequest:
    model: str | None = None
    tokens: Any


def _is_chat(data: dict[str, Any]) -> bool:
    """vLLM's union picks the chat form whenever ``messages`` validates, even next to ``prompt``."""
    if "messages" not in data:
        return False
    return "prompt" not in data or isinstance(data["messages"], list)


def _check_tools(tools: Any) -> None:
    """vLLM's ``list[ChatCompletionToolsParam]``: function tools with a name (the renderer normalizes)."""
    if tools is None:
        return
    if not isinstance(tools, list):
        raise APIError(400, "tools must be a list", param="tools")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise APIError(400, f"tools[{i}] must be a function tool object", param="tools")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise APIError(400, f"tools[{i}].function must be an object with a string name", param="tools")
        if not isinstance(function.get("parameters"), (dict, type(None))):
            raise APIError(400, f"tools[{i}].function.parameters must be an object", param="tools")
        if not isinstance(function.get("description"), (str, type(None))):
            raise APIError(400, f"tools[{i}].function.description must be a string", param="tools")


def _check_chat(req: TokenizeChatRequest) -> None:
    if not isinstance(req.messages, list):
        raise APIError(400, "messages must be a list", param="messages")
    if req.chat_template_kwargs is not None and not isinstance(req.chat_template_kwargs, dict):
        raise APIError(400, "chat_template_kwargs must be an object", param="chat_template_kwargs")
    for name in ("media_io_kwargs", "mm_processor_kwargs"):
        value = getattr(req, name)
        if value is not None and not isinstance(value, dict):
            raise APIError(400, f"{name} must be an object", param=name)
        if value:  # multimodal processing is not ours to do; an empty object changes nothing
            raise APIError(400, f"{name} is not supported: this server is text-only", param=name)
    _check_tools(req.tools)


async def _chat_ids(state: ServerState, req: TokenizeChatRequest) -> list[int]:
    state.check_chat_template(req.chat_template, req.chat_template_kwargs)  # vLLM checks here too
    try:
        rendered = state.renderer.render(
            req.messages,
            add_generation_prompt=req.add_generation_prompt,
            continue_final_message=req.continue_final_message,
            tools=req.tools,
            chat_template=req.chat_template,
            chat_template_kwargs=req.chat_template_kwargs,
        )
    except ChatTemplateError as exc:
        raise APIError(400, str(exc), param="messages") from None
    return await state.tokenizer.encode_async(rendered.prompt, add_special_tokens=req.add_special_tokens)


async def handle_tokenize(state: ServerState, body: bytes, send: Send, headers: Headers = ()) -> None:
    data = parse_json(body)
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    req: TokenizeChatRequest | TokenizeCompletionRequest
    if _is_chat(data):
        # vLLM checks this on the raw body, before any other field (and, with add_generation_prompt
        # left at its default, transformers refuses the pair when rendering: a 400 either way).
        if data.get("continue_final_message") and data.get("add_generation_prompt"):
            raise APIError(400, _BOTH_PROMPT_FLAGS)
        req = structure(data, TokenizeChatRequest)
        state.resolve_lora(req.model)  # 404 unless the base model or an adapter
        if req.continue_final_message and req.add_generation_prompt:
            raise APIError(400, _BOTH_PROMPT_FLAGS)
        _check_chat(req)
    else:
        req = structure(data, TokenizeCompletionRequest)
        state.resolve_lora(req.model)
    registration = state.engine.registration
    if registration is None:
        raise APIError(503, "the engine is still starting; retry shortly")
    if isinstance(req, TokenizeChatRequest):
        ids = await _chat_ids(state, req)
    else:
        ids = await state.tokenizer.encode_async(req.prompt, add_special_tokens=req.add_special_tokens)
    token_strs = None
    if req.return_token_strs:
        token_strs = await _off_loop(ids, lambda: state.tokenizer.convert_ids_to_tokens(ids))
    await send_json(
        send,
        200,
        {
            "count": len(ids),
            "max_model_len": registration.max_model_len,
            "tokens": ids,
            "token_strs": token_strs,
        },
    )


def vocab_bound(state: ServerState) -> int:
    """One past the largest id the model knows (the larger of the config's and the tokenizer's)."""
    tokenizer = state.tokenizer
    return max(tokenizer.files.vocab_size or 0, tokenizer.max_token_id + 1)


@functools.cache
def _ids_type(bound: int) -> Any:
    return list[Annotated[int, msgspec.Meta(ge=0, lt=bound)]]


def _checked_tokens(tokens: Any, bound: int) -> list[int]:
    """*tokens* as ids in ``[0, bound)``, checked in one pass in C (msgspec; no bools, no floats)."""
    try:
        return msgspec.convert(tokens, _ids_type(bound), strict=True)
    except msgspec.ValidationError:
        pass
    if not isinstance(tokens, list) or any(type(t) is not int for t in tokens):
        raise APIError(400, "tokens must be a list of integers", param="tokens")
    bad = next(t for t in tokens if not 0 <= t < bound)
    raise APIError(400, f"Token id {bad} is out of vocabulary", param="tokens")


async def _off_loop(ids: list[int], fn: Callable[[], T]) -> T:
    """Run *fn* inline for short id lists, in a tokenizer thread for long ones (200k ids take ~100 ms),
    so a huge request does not stall every other one; a cancelled caller abandons the thread."""
    if len(ids) <= INLINE_IDS:
        return fn()
    return await trio.to_thread.run_sync(fn, limiter=TOKENIZE_LIMITER, abandon_on_cancel=True)


async def handle_detokenize(state: ServerState, body: bytes, send: Send, headers: Headers = ()) -> None:
    req = structure(parse_json(body), DetokenizeRequest)
    state.resolve_lora(req.model)
    tokens = _checked_tokens(req.tokens, vocab_bound(state))
    text = await _off_loop(tokens, lambda: state.tokenizer.decode(tokens, skip_special_tokens=False))
    await send_json(send, 200, {"prompt": text})
