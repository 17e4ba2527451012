"""Assistant events → the Responses API's output items and their streaming events (pure, no I/O).

Items open lazily, when their first event arrives, and close when an event of another item arrives (or
at the end): a ``reasoning`` item (``rs_``), a ``message`` item (``msg_``), one ``function_call`` item
(``fc_``, ``call_id`` = the assistant's call id) per call. Their events, per kind::

    reasoning:  output_item.added, content_part.added (reasoning_text), reasoning_text.delta ...,
                reasoning_text.done, content_part.done, output_item.done
    message:    output_item.added, content_part.added (output_text), output_text.delta ...,
                output_text.done, content_part.done, output_item.done
    call:       output_item.added (arguments ""), function_call_arguments.delta ...,
                function_call_arguments.done, output_item.done

An item closed before the end is ``completed``; the one open at the end gets the response's item
status. A response with no item at all still gets an (empty) message, as before tools existed.
Events are returned as dicts without ``sequence_number`` (the emitter numbers them); ``*.delta`` events
carry their text under ``"delta"``.
"""

from __future__ import annotations

import secrets
from typing import Any

from trio_front.assistant import (
    AssistantEvent,
    ContentDelta,
    ReasoningDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
)


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = (
        [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    )
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def reasoning_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": [], "content": content, "status": status}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}  # fmt: skip


class ResponseOutput:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []  # closed items, in output order
        self._kind: str | None = None  # "reasoning" | "message" | "call" | None
        self._item_id = ""
        self._text: list[str] = []
        self._call: tuple[str, str] = ("", "")  # (call id, name)

    @property
    def _index(self) -> int:
        return len(self.items)

    def feed(self, events: list[AssistantEvent]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, ReasoningDelta):
                out += self._text_delta("reasoning", event.text)
            elif isinstance(event, ContentDelta):
                out += self._text_delta("message", event.text)
            elif isinstance(event, ToolCallStarted):
                out += self._close("completed")
                self._open("call", "fc")
                self._call = (event.id, event.name)
                item = call_item(self._item_id, event.id, event.name, "", "in_progress")
                out.append({"type": "response.output_item.added", "output_index": self._index, "item": item})
            elif isinstance(event, ToolCallArgumentsDelta):
                if event.delta:
                    self._text.append(event.delta)
                    out.append({"type": "response.function_call_arguments.delta", **self._where(),
                                "delta": event.delta})  # fmt: skip
            elif isinstance(event, ToolCallDone):
                out += self._close("completed", arguments=event.arguments)
        return out

    def close(self, status: str) -> list[dict[str, Any]]:
        """The end: close the open item with *status*; add an empty message if there is no item."""
        out = self._close(status)
        if not self.items:
            self._open("message", "msg")
            out = self._open_events("message") + self._close(status)
        return out

    # ----------------------------------------------------------------------------------- internals

    def _where(self) -> dict[str, Any]:
        return {"item_id": self._item_id, "output_index": self._index}

    def _open(self, kind: str, prefix: str) -> None:
        self._kind, self._item_id, self._text = kind, _id(prefix), []

    def _open_events(self, kind: str) -> list[dict[str, Any]]:
        where = {**self._where(), "content_index": 0}
        if kind == "reasoning":
            item = reasoning_item(self._item_id, None, "in_progress")
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = message_item(self._item_id, None, "in_progress")
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            {"type": "response.output_item.added", "output_index": where["output_index"], "item": item},
            {"type": "response.content_part.added", **where, "part": part},
        ]

    def _text_delta(self, kind: str, text: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._kind != kind:
            out += self._close("completed")
            self._open(kind, "rs" if kind == "reasoning" else "msg")
            out += self._open_events(kind)
        if text:
            self._text.append(text)
            delta = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
            event: dict[str, Any] = {"type": delta, **self._where(), "content_index": 0, "delta": text}
            if kind == "message":
                event["logprobs"] = []
            out.append(event)
        return out

    def _close(self, status: str, *, arguments: str | None = None) -> list[dict[str, Any]]:
        kind, text = self._kind, "".join(self._text)
        if kind is None:
            return []
        where = self._where()
        self._kind = None
        if kind == "call":
            call_id, name = self._call
            arguments = text if arguments is None else arguments
            item = call_item(self._item_id, call_id, name, arguments, status)
            self.items.append(item)
            return [
                {"type": "response.function_call_arguments.done", **where, "arguments": arguments,
                 "name": name},
                {"type": "response.output_item.done", "output_index": where["output_index"], "item": item},
            ]  # fmt: skip
        where["content_index"] = 0
        if kind == "reasoning":
            item = reasoning_item(self._item_id, text, status)
            done: dict[str, Any] = {"type": "response.reasoning_text.done", **where, "text": text}
            part = item["content"][0]
        else:
            item = message_item(self._item_id, text, status)
            done = {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
            part = item["content"][0]
        self.items.append(item)
        return [
            done,
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": where["output_index"], "item": item},
        ]
