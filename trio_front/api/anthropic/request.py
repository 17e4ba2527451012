"""An Anthropic Messages request → our :class:`ChatCompletionRequest`, as vLLM 0.32 maps it
(``vllm/entrypoints/anthropic/serving.py::to_chat_completion_request``); checked by hand (plain dicts).

Every top-level field is honoured or refused by name (a 400); so is every content-block type:

* ``system`` (string or text blocks, joined; Claude Code's ``x-anthropic-billing-header`` blocks dropped)
  becomes the leading system message; ``system``-role messages stay in place (vLLM merges them into the
  leading one only for templates that refuse inline system messages; ours then answer the template's 400).
* ``text`` / ``thinking`` (the message's ``reasoning``) / ``redacted_thinking`` (opaque: skipped, as vLLM)
  / ``tool_use`` (assistant ``tool_calls``, ``input`` as JSON arguments) / ``tool_result`` (a ``tool``
  message before the user's text; string or text blocks joined with newlines; ``is_error`` is accepted as
  vLLM does: the error is the result's text, chat templates have no flag for it). ``image`` and
  ``document`` blocks are refused: trio-front serves text-only models.
* ``max_tokens`` (required, > 0) → ``max_tokens``; ``stop_sequences`` → ``stop``; ``temperature``,
  ``top_p``, ``top_k``; ``tools`` (``input_schema``) and ``tool_choice`` auto / any (required) / none /
  tool (named), ``disable_parallel_tool_use`` → ``parallel_tool_calls=false``;
  ``output_config.format`` json_schema → ``response_format``; ``output_config.effort`` →
  ``reasoning_effort``; ``metadata`` accepted as vLLM does (it identifies the end user to Anthropic; no
  sampling meaning); vLLM's extras (``cache_salt``, ``vllm_xargs``, ``chat_template_kwargs``,
  ``kv_transfer_params``...) go to the chat request, which honours or refuses each by name.
* ``thinking``: ``disabled`` → ``reasoning_effort`` = the ``--anthropic-disabled-thinking-effort`` value
  (:mod:`.effort`); ``adaptive`` pins nothing (as vLLM); ``enabled`` is refused by ``budget_tokens``
  (after vLLM's own checks): vLLM turns it into ``thinking_token_budget``, which the engine enforces only
  with its ``reasoning_config`` and which our engine wire (``SamplingParams``) cannot carry, so the budget
  could not be kept. Reasoning itself is on without ``thinking`` (the model's template default).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import APIError
from ..models import ChatCompletionRequest, structure

_BILLING_HEADER = "x-anthropic-billing-header"
_ANTHROPIC = {
    "model", "messages", "max_tokens", "metadata", "output_config", "thinking", "stop_sequences",
    "stream", "system", "temperature", "tool_choice", "tools", "top_k", "top_p",
}  # fmt: skip
#: vLLM's AnthropicMessagesRequest extras, passed to the chat request (which honours or refuses each)
_VLLM_EXTRAS = (
    "mm_payload", "return_mm_kwargs", "cache_salt", "watermarking", "kv_transfer_params",
    "ec_transfer_params", "vllm_xargs", "chat_template_kwargs",
)  # fmt: skip
_COUNT_FIELDS = {"model", "messages", "output_config", "system", "thinking", "tool_choice", "tools",
                 "chat_template_kwargs"}  # fmt: skip
EFFORTS = ("low", "medium", "high", "xhigh", "max")


def bad(message: str) -> APIError:
    return APIError(400, message)


def _check_fields(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad(f"unsupported field(s) for this endpoint: {', '.join(unknown)}")


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise bad(f"{where}: expected an object")
    return value


def _block_type(block: Any, where: str) -> str:
    block = _obj(block, where)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise bad(f"{where}.type: expected a string")
    return kind


def _text_of(block: Mapping[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise bad(f"{where}.text: expected a string")
    return text


def _refuse_media(kind: str, where: str) -> None:
    if kind in ("image", "document", "search_result", "container_upload"):
        raise bad(f"{where}: {kind} content blocks are not supported (trio-front serves text-only models)")


def _system_text(blocks: Any, where: str) -> str:
    """System blocks' text, joined, without Claude Code's billing-header blocks (vLLM's rule)."""
    if isinstance(blocks, str):
        return "" if blocks.startswith(_BILLING_HEADER) else blocks
    if not isinstance(blocks, list):
        raise bad(f"{where}: expected a string or a list of text blocks")
    parts = []
    for i, block in enumerate(blocks):
        kind = _block_type(block, f"{where}[{i}]")
        if kind != "text":
            raise bad(f"{where}[{i}]: only text blocks are allowed in a system prompt, got {kind!r}")
        text = _text_of(block, f"{where}[{i}]")
        if text and not text.startswith(_BILLING_HEADER):
            parts.append(text)
    return "".join(parts)


def _tool_result_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise bad(f"{where}.content: expected a string or a list of blocks")
    texts = []
    for i, item in enumerate(content):
        kind = _block_type(item, f"{where}.content[{i}]")
        _refuse_media(kind, f"{where}.content[{i}]")
        if kind != "text":
            raise bad(f"{where}.content[{i}]: {kind!r} blocks are not supported in a tool_result")
        texts.append(_text_of(item, f"{where}.content[{i}]"))
    return "\n".join(texts)


def _message(msg: Any, i: int, out: list[dict[str, Any]]) -> None:
    """Append message *i*'s chat messages to *out* (a user's tool results come first, as vLLM's)."""
    where = f"messages[{i}]"
    msg = _obj(msg, where)
    role, content = msg.get("role"), msg.get("content")
    if role not in ("user", "assistant", "system"):
        raise bad(f"{where}.role: expected 'user', 'assistant' or 'system', got {role!r}")
    extra = sorted(set(msg) - {"role", "content"})
    if extra:
        raise bad(f"{where}: unsupported field(s): {', '.join(extra)}")
    if role == "system":
        text = _system_text(content, f"{where}.content")
        if text:
            out.append({"role": "system", "content": text})
        return
    if isinstance(content, str):
        out.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        raise bad(f"{where}.content: expected a string or a list of content blocks")
    chat: dict[str, Any] = {"role": role}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = _block_type(block, at)
        _refuse_media(kind, at)
        if kind == "text":
            text = _text_of(block, at)
            if text:
                texts.append(text)
        elif kind == "thinking":
            thinking = block.get("thinking")
            if not isinstance(thinking, str):
                raise bad(f"{at}.thinking: expected a string")
            reasoning.append(thinking)
        elif kind == "redacted_thinking":
            pass  # opaque (encrypted by Anthropic): nothing a local model can read; vLLM skips it too
        elif kind == "tool_use":
            args = block.get("input") or {}
            if not isinstance(args, Mapping) or not isinstance(block.get("name"), str):
                raise bad(f"{at}: a tool_use block needs a name and an input object")
            call_id = block.get("id")
            if not isinstance(call_id, str) or not call_id:
                raise bad(f"{at}.id: expected a non-empty string")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": block["name"], "arguments": json.dumps(args)},
                }
            )
        elif kind == "tool_result":
            text = _tool_result_text(block.get("content"), at)
            if not isinstance(block.get("is_error", False), (bool, type(None))):
                raise bad(f"{at}.is_error: expected a boolean")
            if role == "user":
                tool_use_id = block.get("tool_use_id")
                if not isinstance(tool_use_id, str):
                    raise bad(f"{at}.tool_use_id: expected a string")
                out.append({"role": "tool", "tool_call_id": tool_use_id, "content": text})
            else:
                texts.append(f"Tool result: {text}")
        else:
            raise bad(f"{at}: content blocks of type {kind!r} are not supported")
    if reasoning:
        chat["reasoning"] = "".join(reasoning)
    if calls:
        chat["tool_calls"] = calls
    if texts:
        chat["content"] = texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]
    if role == "user" and "content" not in chat:
        return  # only tool results: their tool messages are the turn
    out.append(chat)


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad("tools: expected a list")
    out = []
    for i, tool in enumerate(tools):
        tool = _obj(tool, f"tools[{i}]")
        if tool.get("type", "custom") != "custom":
            raise bad(f"tools[{i}]: server tools ({tool.get('type')!r}) are not supported")
        extra = sorted(set(tool) - {"type", "name", "description", "input_schema", "strict", "defer_loading"})
        if extra:
            raise bad(f"tools[{i}]: unsupported field(s): {', '.join(extra)}")
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping):
            raise bad(f"tools[{i}].input_schema: expected a JSON schema object")
        if not isinstance(tool.get("name"), str):
            raise bad(f"tools[{i}].name: expected a string")
        function: dict[str, Any] = {
            "name": tool["name"],
            "description": tool.get("description"),
            "parameters": {"type": "object", **schema},  # vLLM defaults the schema's type to object
        }
        for key in ("strict", "defer_loading"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    choice = _obj(choice, "tool_choice")
    kind = choice.get("type")
    extra = sorted(set(choice) - {"type", "name", "disable_parallel_tool_use"})
    if extra:
        raise bad(f"tool_choice: unsupported field(s): {', '.join(extra)}")
    if kind not in ("auto", "any", "tool", "none"):
        raise bad(f"tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got {kind!r}")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise bad("tool_choice.disable_parallel_tool_use: expected a boolean")
    chat["parallel_tool_calls"] = not disable
    if kind == "tool":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise bad("tool_choice.name is required when type is 'tool'")
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]


def _output_config(config: Any, chat: dict[str, Any]) -> None:
    config = _obj(config, "output_config")
    extra = sorted(set(config) - {"effort", "format"})
    if extra:
        raise bad(f"output_config: unsupported field(s): {', '.join(extra)}")
    fmt = config.get("format")
    if fmt is not None:
        fmt = _obj(fmt, "output_config.format")
        if fmt.get("type", "json_schema") != "json_schema" or set(fmt) - {"type", "schema"}:
            raise bad("output_config.format: only {'type': 'json_schema', 'schema': {...}} is supported")
        if fmt.get("schema") is not None:
            schema = _obj(fmt["schema"], "output_config.format.schema")
            chat["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "json_schema", "schema": schema},
            }
    effort = config.get("effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise bad(f"output_config.effort: expected one of {', '.join(EFFORTS)}, got {effort!r}")
        chat["reasoning_effort"] = effort


def thinking_type(body: Mapping[str, Any], max_tokens: int | None) -> str | None:
    """Check ``thinking``; its type (``None`` without one). ``enabled`` is refused (module docstring)."""
    thinking = body.get("thinking")
    if thinking is None:
        return None
    thinking = _obj(thinking, "thinking")
    kind = thinking.get("type")
    if kind == "disabled":
        allowed = {"type"}
    elif kind in ("enabled", "adaptive"):
        allowed = {"type", "display"} | ({"budget_tokens"} if kind == "enabled" else set())
        if thinking.get("display") not in (None, "summarized", "omitted", "updates"):
            raise bad("thinking.display: expected 'summarized', 'omitted' or 'updates'")
    else:
        raise bad(f"thinking.type: expected 'enabled', 'disabled' or 'adaptive', got {kind!r}")
    extra = sorted(set(thinking) - allowed)
    if extra:
        raise bad(f"thinking: unsupported field(s): {', '.join(extra)}")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if type(budget) is not int or budget < 1024:
            raise bad("thinking.budget_tokens: expected an integer >= 1024")
        if max_tokens is not None and budget >= max_tokens:
            raise bad("thinking.budget_tokens must be less than max_tokens")
    return kind


def refuse_budget() -> APIError:
    return APIError(
        400,
        "thinking.budget_tokens is not supported by trio-front: the engine link cannot carry a thinking "
        "token budget, so it could not be kept. Omit `thinking` (the model reasons by its template's "
        "default) or use {'type': 'adaptive'}.",
        param="thinking",
    )


def to_chat(body: Any, *, count_tokens: bool = False) -> tuple[dict[str, Any], str | None]:
    """The chat request body for an Anthropic request body, and its ``thinking.type``. Raises a 400
    :class:`APIError`. ``reasoning_effort`` for ``thinking.disabled`` is the caller's (:mod:`.effort`)."""
    body = _obj(body, "the request body")
    _check_fields(body, _COUNT_FIELDS if count_tokens else _ANTHROPIC | set(_VLLM_EXTRAS))
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad("model: a non-empty string is required")
    if not isinstance(body.get("messages"), list):
        raise bad("messages: a list of messages is required")
    chat: dict[str, Any] = {"model": body["model"]}
    max_tokens = None
    if not count_tokens:
        max_tokens = body.get("max_tokens")
        if type(max_tokens) is not int:
            raise bad("max_tokens: an integer is required")
        if max_tokens <= 0:
            raise bad("max_tokens must be positive")
        chat["max_tokens"] = max_tokens
        if body.get("metadata") is not None:
            _obj(body["metadata"], "metadata")
        for key in ("temperature", "top_p", "top_k", "stream"):
            if body.get(key) is not None:
                chat[key] = body[key]
        stop = body.get("stop_sequences")
        if stop is not None:
            if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
                raise bad("stop_sequences: expected a list of strings")
            chat["stop"] = stop
        for key in _VLLM_EXTRAS:
            if key in body:
                chat[key] = body[key]
    elif body.get("chat_template_kwargs") is not None:
        chat["chat_template_kwargs"] = body["chat_template_kwargs"]
    messages: list[dict[str, Any]] = []
    if body.get("system") is not None:
        text = _system_text(body["system"], "system")
        if text:
            messages.append({"role": "system", "content": text})
    for i, msg in enumerate(body["messages"]):
        _message(msg, i, messages)
    chat["messages"] = messages
    if body.get("output_config") is not None:
        _output_config(body["output_config"], chat)
    kind = thinking_type(body, max_tokens)
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    if body.get("tools") is not None:
        chat["tools"] = _tools(body["tools"])
        chat.setdefault("tool_choice", "auto")
    return chat, kind


def chat_request(chat: dict[str, Any]) -> ChatCompletionRequest:
    return structure(chat, ChatCompletionRequest)
