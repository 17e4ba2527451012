"""Responses API input items → chat messages (for the chat template), and output items → the same.

Contract (pure, no I/O; raises a 400 :class:`APIError` naming ``input[i]``):

* ``message`` items (``{"role", "content"}``, with or without ``"type": "message"``): roles ``user``,
  ``assistant``, ``system``, ``developer`` (→ ``system``); content a string or text parts.
* ``function_call`` ``{call_id, name, arguments}`` → an assistant message with ``tool_calls``; a call
  right after an assistant message (or another call) joins that message, as vLLM merges them.
* ``function_call_output`` ``{call_id, output}`` → a ``tool`` message with ``tool_call_id``.
* ``reasoning`` ``{content: [{"type": "reasoning_text", "text"}]}`` (or ``summary`` text) → the
  ``reasoning`` of the assistant message that follows it (its text or calls join that message).

Deviation from vLLM 0.32: vLLM attaches a reasoning item to the *previous* assistant message when that
one has no reasoning yet; reasoning is produced before the output it explains, so here it always opens
the next assistant message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import APIError

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text", "text")
ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


def input_messages(value: Any, history: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """*history* followed by the ``input`` field as chat messages."""
    messages = [dict(m) for m in history]
    if value is None:
        return messages
    if isinstance(value, str):
        return [*messages, {"role": "user", "content": value}]
    if not isinstance(value, list):
        raise APIError(400, "input must be a string or a list of input items", param="input")
    for index, item in enumerate(value):
        add_item(messages, item, f"input[{index}]")
    return messages


def add_item(messages: list[dict[str, Any]], item: Any, where: str) -> None:
    """Append (or merge) one input/output item into *messages*."""
    if not isinstance(item, dict):
        raise APIError(400, f"{where} must be an object", param=where)
    kind = item.get("type", "message")
    last = messages[-1] if messages and messages[-1].get("role") == "assistant" else None
    if kind == "message":
        role = ROLES.get(item.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise APIError(400, f"{where}.role must be one of {sorted(ROLES)}", param=f"{where}.role")
        text = _content_text(item.get("content"), where)
        if role == "assistant" and last is not None and last.get("content") is None:
            last["content"] = text  # after its reasoning: one assistant turn
        else:
            messages.append({"role": role, "content": text})
    elif kind == "function_call":
        call_id, name, arguments = (_string(item, key, where) for key in ("call_id", "name", "arguments"))
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        if last is not None:
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        call_id = _string(item, "call_id", where)
        output = item.get("output")
        text = output if isinstance(output, str) else _content_text(output, f"{where}.output")
        messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
    elif kind == "reasoning":
        if item.get("encrypted_content"):
            raise APIError(400, "encrypted reasoning content is not supported", param=where)
        messages.append({"role": "assistant", "content": None, "reasoning": _reasoning_text(item, where)})
    else:
        raise APIError(
            400,
            f"input items of type {kind!r} are not supported (supported: {', '.join(ITEM_TYPES)})",
            param=where,
        )


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or (key != "arguments" and not value):
        raise APIError(400, f"{where}.{key} must be a non-empty string", param=f"{where}.{key}")
    return value


def _reasoning_text(item: dict[str, Any], where: str) -> str:
    for key, part_type in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if parts:
            if not isinstance(parts, list) or not all(
                isinstance(p, dict) and p.get("type") == part_type and isinstance(p.get("text"), str)
                for p in parts
            ):
                raise APIError(
                    400, f"{where}.{key} must be a list of {part_type} parts", param=f"{where}.{key}"
                )
            return "".join(p["text"] for p in parts)
    return ""


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
