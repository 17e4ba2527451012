"""OpenAI chat messages -> the conversation a chat template sees, as vLLM 0.32 builds it
(``vllm/renderers/chat_utils.py::_parse_chat_message_content`` and ``_postprocess_messages``, plus the
developer-role handling of ``vllm/renderers/hf.py::safe_apply_chat_template``).

* Content: a string, ``None`` or a list of parts (``{"type": "text", "text": ...}``, ``input_text``,
  ``output_text``, ``refusal``, ``thinking`` or plain strings). For ``"string"`` templates the text
  parts are joined with ``"\\n"`` (``None`` -> ``""``); for ``"openai"`` templates the content is a list
  of ``{"type": "text", "text": ...}`` parts (a string becomes one part). Media parts are rejected:
  this frontend serves text-only models.
* Only ``role``, ``content``, ``name``, ``task``, assistant ``tool_calls``/``reasoning`` (also copied to
  ``reasoning_content``), tool ``tool_call_id`` and developer ``tools`` are kept.
* Assistant tool-call ``arguments`` JSON strings are parsed into dicts (malformed -> ``{}``).

The caller's messages are never modified. Errors raise `ChatTemplateError` (a 400).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from trio_front.text.chat_template import ChatTemplateError, ContentFormat

# Text part type -> the field holding its text.
_TEXT_FIELDS: Final = {
    "text": "text",
    "input_text": "text",
    "output_text": "text",
    "refusal": "refusal",
    "thinking": "thinking",
}
_SKIP_IF_NONE: Final = frozenset({"text", "refusal"})
# Fields of a text part that are not copied as "extra" fields into an openai-format part.
_PART_KNOWN_FIELDS: Final = frozenset({"type", "text", "refusal", "thinking", "uuid", "name"})
_BILLING_HEADER: Final = "x-anthropic-billing-header"

Message = dict[str, Any]


def _part_text(part: object) -> tuple[str, Any] | None:
    """``(kind, value)`` for a content part: ``("text", str)``, ``("tool_reference", name)``, or ``None``
    to skip it."""
    if isinstance(part, str):
        return "text", part
    if not isinstance(part, Mapping):
        raise ChatTemplateError(f"Invalid content part: {part!r}")
    part_type = part.get("type")
    if part_type is None:
        raise ChatTemplateError("Missing 'type' field in multimodal part.")
    if not isinstance(part_type, str):
        raise ChatTemplateError("Invalid 'type' field in multimodal part.")
    if part_type == "tool_reference":
        return "tool_reference", part.get("name")
    field = _TEXT_FIELDS.get(part_type)
    if field is None:
        raise ChatTemplateError(f"Unsupported chat content part type: {part_type!r} (text-only model).")
    value = part.get(field)
    if value is None and part_type in _SKIP_IF_NONE:
        return None
    if not isinstance(value, str):
        raise ChatTemplateError(f"Content part of type {part_type!r} has no text.")
    return "text", value


def _strip_billing_header(parts: Sequence[Any]) -> list[Any]:
    # vLLM drops Claude Code's per-request attribution line from system text (it defeats prefix caching).
    out: list[Any] = []
    for part in parts:
        text = part if isinstance(part, str) else part.get("text") if isinstance(part, Mapping) else None
        if not (isinstance(part, str) or (isinstance(part, Mapping) and part.get("type") == "text")):
            text = None
        if not (isinstance(text, str) and text.startswith(_BILLING_HEADER)):
            out.append(part)
            continue
        rest = text.partition("\n")[2]
        if rest:
            out.append(rest if isinstance(part, str) else {**part, "text": rest})
    return out


def _normalize_content(role: str, content: object, content_format: ContentFormat) -> Any:
    if content is None:
        parts: Sequence[Any] = []
    elif isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    elif isinstance(content, Sequence):
        parts = content
    else:
        raise ChatTemplateError(f"Invalid message content of type {type(content).__name__}.")
    if role == "system":
        parts = _strip_billing_header(parts)
    if content_format == "string":
        texts = []
        for part in parts:
            parsed = _part_text(part)
            if parsed is not None and parsed[1] is not None:
                texts.append(parsed[1])
        return "\n".join(texts)
    wrapped: list[dict[str, Any]] = []
    for part in parts:
        parsed = _part_text(part)
        if parsed is None:
            continue
        kind, value = parsed
        if kind == "tool_reference":
            wrapped.append({"type": "tool_reference", "name": value})
            continue
        extra = (
            {k: v for k, v in part.items() if k not in _PART_KNOWN_FIELDS}
            if isinstance(part, Mapping)
            else {}
        )
        wrapped.append({"type": "text", "text": value, **extra})
    return wrapped


def _ordered(item: Mapping[str, Any], first: tuple[str, ...]) -> dict[str, Any]:
    """``item`` with the ``first`` keys leading, in that order: vLLM's request model (pydantic TypedDicts)
    reorders declared keys that way, which shows in templates that ``tojson`` whole objects."""
    out = {key: item[key] for key in first if key in item}
    out.update((key, value) for key, value in item.items() if key not in out)
    return out


def _parse_tool_calls(tool_calls: list[Any]) -> list[Any]:
    parsed_calls = []
    for item in tool_calls:
        if not isinstance(item, Mapping):
            raise ChatTemplateError("assistant tool_calls entries must be objects.")
        function = item.get("function")
        if item.get("type", "function") != "function" or not isinstance(function, Mapping):
            raise ChatTemplateError("chat completions only support assistant tool_calls of type 'function'.")
        arguments = function.get("arguments")
        if not arguments:
            parsed: Any = {}
        elif isinstance(arguments, str):
            try:
                parsed = json.loads(arguments)
            except (ValueError, RecursionError):  # RecursionError: arguments nested 10^4 deep
                parsed = {}  # history must stay renderable even with a malformed call in it
        else:
            parsed = arguments
        function = {
            **_ordered(function, ("arguments", "name")),
            "arguments": parsed if isinstance(parsed, dict) else {},
        }
        parsed_calls.append({**_ordered(item, ("id", "function", "type")), "function": function})
    return parsed_calls


def normalize_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Request ``tools`` in the shape vLLM passes them to templates (``ChatCompletionToolsParam
    .model_dump()``): ``{"type", "function": {"name", "description", "parameters", ...extras}, ...}`` with
    ``description``/``parameters`` present (``None``) even when the request omits them."""
    out = []
    for tool in tools:
        if not isinstance(tool, Mapping):
            raise ChatTemplateError("Each tool must be an object.")
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ChatTemplateError("Each tool needs a function with a name.")
        function = {"name": function["name"], "description": None, "parameters": None, **function}
        out.append({"type": tool.get("type", "function"), **tool, "function": function})
    return out


def normalize_message(message: Mapping[str, Any], content_format: ContentFormat) -> Message:
    """One OpenAI message -> one template message (see the module docstring)."""
    if not isinstance(message, Mapping):
        raise ChatTemplateError(f"Each message must be an object, got {type(message).__name__}.")
    role = message.get("role")
    if not isinstance(role, str):
        raise ChatTemplateError("Each message must have a string 'role'.")
    result: Message = {
        "role": role,
        "content": _normalize_content(role, message.get("content"), content_format),
    }
    if role == "assistant":
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            if not isinstance(tool_calls, list):
                result["tool_calls"] = tool_calls
            elif tool_calls:  # an empty list is dropped so templates take the plain assistant path
                result["tool_calls"] = _parse_tool_calls(tool_calls)
        reasoning = message.get("reasoning")
        if reasoning is not None:
            result["reasoning"] = result["reasoning_content"] = reasoning
    elif role == "tool":
        if "tool_call_id" in message:
            result["tool_call_id"] = message["tool_call_id"]
        content = result["content"]
        if isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" for p in content
        ):
            # Most templates only handle string tool results.
            result["content"] = "\n".join(p.get("text", "") for p in content)
    if isinstance(message.get("name"), str):
        result["name"] = message["name"]
    if isinstance(message.get("task"), str):
        result["task"] = message["task"]
    if role == "developer":
        result["tools"] = message.get("tools")
    return result


def normalize_messages(messages: Sequence[Mapping[str, Any]], content_format: ContentFormat) -> list[Message]:
    """All messages -> the conversation (vLLM's ``parse_chat_messages`` result)."""
    return [normalize_message(m, content_format) for m in messages]


def adapt_developer_role(conversation: list[Message]) -> list[Message]:
    """For templates that do not know the ``developer`` role: developer messages become system messages
    (without their ``tools``) and all system messages are merged, in order, into one leading message."""
    if not any(m["role"] == "developer" for m in conversation):
        return conversation
    return _consolidate_system(_developer_to_system(conversation))


def _developer_to_system(conversation: list[Message]) -> list[Message]:
    out = []
    for message in conversation:
        if message["role"] == "developer":
            message = {k: v for k, v in message.items() if k != "tools"}
            message["role"] = "system"
        out.append(message)
    return out


def _consolidate_system(conversation: list[Message]) -> list[Message]:
    system_texts: list[str] = []
    others: list[Message] = []
    needed = False
    for i, message in enumerate(conversation):
        if message["role"] != "system":
            others.append(message)
            continue
        if i > 0 or system_texts:
            needed = True
        content = message.get("content", "")
        if isinstance(content, list):
            content = "\n".join(
                p["text"] if isinstance(p, dict) and "text" in p else p
                for p in content
                if isinstance(p, str) or (isinstance(p, dict) and "text" in p)
            )
        if content:
            system_texts.append(content)
    if not needed:
        return conversation
    return [{"role": "system", "content": "\n\n".join(system_texts)}, *others]
