"""The conversation a Realtime socket holds: items in order, bounded in count and size.

Item types: ``message`` with text content (roles ``system``, ``user``, ``assistant``), ``function_call``
(``call_id``, ``name``, ``arguments``: the assistant's call, from a client or from a response) and
``function_call_output`` (``call_id``, ``output``: the client's result). Audio and images are refused
with a clear error. Limits (``WSOptions``): at most ``max_items`` items and ``max_chars`` characters of
text from the client; the assistant's own output is always admitted (it is bounded by
``max_output_tokens`` and the model's context).

Rendering (:func:`chat_messages`): a ``function_call`` becomes a ``tool_calls`` entry of an assistant
message — of the assistant message or call right before it when there is one (one assistant turn, as
vLLM merges them), else of a new assistant message with no content; a ``function_call_output`` becomes
a ``tool`` message with ``tool_call_id``. :mod:`trio_front.text.chat_messages` does the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from .protocol import Dialect, EventError, Ids

ROLES = ("system", "user", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text")
ITEM_TYPES = ("message", "function_call", "function_call_output")


@attrs.define(eq=False)
class Item:
    id: str
    role: str  # messages only ("" otherwise)
    #: content parts as ``(type, text)`` (messages only)
    parts: list[tuple[str, str]]
    status: str = "completed"
    type: str = "message"
    call_id: str = ""  # function_call / function_call_output
    name: str = ""  # function_call
    arguments: str = ""  # function_call: the JSON arguments string
    output: str = ""  # function_call_output

    @classmethod
    def function_call(cls, item_id: str, call_id: str, name: str, arguments: str = "", **kw: Any) -> Item:
        return cls(item_id, "", [], type="function_call", call_id=call_id, name=name, arguments=arguments,
                   **kw)  # fmt: skip

    @classmethod
    def function_call_output(cls, item_id: str, call_id: str, output: str) -> Item:
        return cls(item_id, "", [], type="function_call_output", call_id=call_id, output=output)

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.parts)

    @property
    def chars(self) -> int:
        return sum(len(text) for _, text in self.parts) + len(self.name + self.arguments + self.output)

    def wire(self) -> dict[str, Any]:
        head = {"id": self.id, "object": "realtime.item", "type": self.type}
        if self.type == "function_call":
            return {**head, "status": self.status, "call_id": self.call_id, "name": self.name,
                    "arguments": self.arguments}  # fmt: skip
        if self.type == "function_call_output":
            return {**head, "status": self.status, "call_id": self.call_id, "output": self.output}
        return {
            **head,
            "role": self.role,
            "status": self.status,
            "content": [{"type": kind, "text": text} for kind, text in self.parts],
        }


def chat_messages(items: Iterable[Item]) -> list[dict[str, Any]]:
    """Items → the chat messages the template renders (see the module docstring)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        last = messages[-1] if messages and messages[-1]["role"] == "assistant" else None
        if item.type == "function_call":
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}  # fmt: skip
            if last is not None:
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.type == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        else:
            messages.append({"role": item.role, "content": item.text})
    return messages


def _string(data: dict[str, Any], key: str, *, empty: bool = False) -> str:
    value = data.get(key, "" if empty else None)
    if not isinstance(value, str) or (not empty and not value):
        kind = "a string" if empty else "a non-empty string"
        raise EventError(f"item.{key} must be {kind}", "invalid_value", param=f"item.{key}")
    return value


def parse_item(data: Any, ids: Ids, dialect: Dialect) -> Item:
    """A client's ``item`` object → :class:`Item`; raises :class:`EventError`."""
    if not isinstance(data, dict):
        raise EventError("item must be an object", "invalid_value", param="item")
    item_id = data.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not item_id or len(item_id) > 64):
        raise EventError("item.id must be a non-empty string of at most 64 characters", "invalid_value",
                         param="item.id")  # fmt: skip
    item_id = item_id or ids.new("item")
    kind = data.get("type", "message")
    if kind == "function_call":
        return Item.function_call(
            item_id, _string(data, "call_id"), _string(data, "name"), _string(data, "arguments", empty=True)
        )
    if kind == "function_call_output":
        return Item.function_call_output(
            item_id, _string(data, "call_id"), _string(data, "output", empty=True)
        )
    if kind != "message":
        raise EventError(
            f"items of type {kind!r} are not supported (supported: {', '.join(ITEM_TYPES)})",
            "unsupported_item_type",
            param="item.type",
        )
    role = data.get("role")
    if role not in ROLES:
        raise EventError(
            f"item.role must be one of {list(ROLES)}, got {role!r}", "invalid_value", param="item.role"
        )
    content = data.get("content", [])
    if not isinstance(content, list):
        raise EventError(
            "item.content must be a list of content parts", "invalid_value", param="item.content"
        )
    parts: list[tuple[str, str]] = []
    for part in content:
        if not isinstance(part, dict):
            raise EventError("each content part must be an object", "invalid_value", param="item.content")
        ptype, text = part.get("type"), part.get("text")
        if ptype not in TEXT_PARTS:
            raise EventError(
                f"content parts of type {ptype!r} are not supported: this server serves text models",
                "unsupported_content_type",
                param="item.content",
            )
        if not isinstance(text, str):
            raise EventError(
                "a text content part needs a string 'text'", "invalid_value", param="item.content"
            )
        if role == "assistant" and ptype == "input_text":
            ptype = dialect.assistant_text
        parts.append((ptype, text))
    return Item(item_id, role, parts)


class Conversation:
    """Items in order, with an id index."""

    def __init__(self, conversation_id: str, *, max_items: int, max_chars: int) -> None:
        self.id = conversation_id
        self.items: list[Item] = []
        self._by_id: dict[str, Item] = {}
        self._max_items = max_items
        self._max_chars = max_chars
        self.chars = 0

    def get(self, item_id: Any) -> Item:
        item = self._by_id.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise EventError(f"Item with item_id not found: {item_id}", "item_not_found", param="item_id")
        return item

    def insert(self, item: Item, previous_item_id: str | None = None, *, admit: bool = False) -> str | None:
        """Insert after *previous_item_id* (``None``: at the end; ``"root"``: first); return the id of
        the item now before it. ``admit`` skips the size limits (the assistant's own output)."""
        if item.id in self._by_id:
            raise EventError(f"an item with id {item.id!r} already exists", "duplicate_item_id",
                             param="item.id")  # fmt: skip
        if not admit:
            if len(self.items) >= self._max_items:
                raise EventError(
                    f"the conversation already holds {self._max_items} items (the limit); delete some first",
                    "conversation_too_large",
                )
            if self.chars + item.chars > self._max_chars:
                raise EventError(
                    f"the conversation would exceed {self._max_chars} characters (the limit); delete some "
                    "items first",
                    "conversation_too_large",
                )
        if previous_item_id is None:
            index = len(self.items)
        elif previous_item_id == "root":
            index = 0
        else:
            index = self.items.index(self.get(previous_item_id)) + 1
        self.items.insert(index, item)
        self._by_id[item.id] = item
        self.chars += item.chars
        return self.items[index - 1].id if index > 0 else None

    def delete(self, item_id: Any) -> Item:
        item = self.get(item_id)
        self.items.remove(item)
        del self._by_id[item.id]
        self.chars -= item.chars
        return item

    def holds(self, item: Item) -> bool:
        return self._by_id.get(item.id) is item

    def set_text(self, item: Item, index: int, text: str) -> None:
        kind, old = item.parts[index]
        item.parts[index] = (kind, text)
        if self.holds(item):
            self.chars += len(text) - len(old)

    def set_arguments(self, item: Item, arguments: str) -> None:
        old, item.arguments = item.arguments, arguments
        if self.holds(item):
            self.chars += len(arguments) - len(old)

    def messages(self) -> list[dict[str, Any]]:
        return chat_messages(self.items)
