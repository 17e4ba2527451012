"""The conversation a Realtime socket holds: message items in order, bounded in count and size.

Only ``message`` items with text content are supported (roles ``system``, ``user``, ``assistant``);
audio, images and function calls are refused with a clear error. Limits (``WSOptions``): at most
``max_items`` items and ``max_chars`` characters of text from the client; the assistant's own output is
always admitted (it is bounded by ``max_output_tokens`` and the model's context).
"""

from __future__ import annotations

from typing import Any

import attrs

from .protocol import Dialect, EventError, Ids

ROLES = ("system", "user", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text")


@attrs.define(eq=False)
class Item:
    id: str
    role: str
    #: content parts as ``(type, text)``
    parts: list[tuple[str, str]]
    status: str = "completed"

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.parts)

    @property
    def chars(self) -> int:
        return sum(len(text) for _, text in self.parts)

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "realtime.item",
            "type": "message",
            "role": self.role,
            "status": self.status,
            "content": [{"type": kind, "text": text} for kind, text in self.parts],
        }

    def message(self) -> dict[str, str]:
        return {"role": self.role, "content": self.text}


def parse_item(data: Any, ids: Ids, dialect: Dialect) -> Item:
    """A client's ``item`` object → :class:`Item`; raises :class:`EventError`."""
    if not isinstance(data, dict):
        raise EventError("item must be an object", "invalid_value", param="item")
    kind = data.get("type", "message")
    if kind != "message":
        raise EventError(
            f"items of type {kind!r} are not supported: this server serves text messages only",
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
    item_id = data.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not item_id or len(item_id) > 64):
        raise EventError("item.id must be a non-empty string of at most 64 characters", "invalid_value",
                         param="item.id")  # fmt: skip
    return Item(item_id or ids.new("item"), role, parts)


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

    def set_text(self, item: Item, index: int, text: str) -> None:
        kind, old = item.parts[index]
        item.parts[index] = (kind, text)
        if item.id in self._by_id:
            self.chars += len(text) - len(old)

    def messages(self) -> list[dict[str, str]]:
        return [item.message() for item in self.items]
