"""Assistant events → Anthropic content blocks and their stream events (pure, no I/O).

Blocks open lazily, in the order the events come, and close when an event of another block arrives (or at
the end): ``thinking`` (its ``signature`` sent as a ``signature_delta`` just before it closes), ``text``,
one ``tool_use`` per call (``input_json_delta`` carries the arguments). The non-streamed message is built
by the same machine from the same events, so a stream, assembled as the anthropic SDK does, is the
non-streamed message by construction (ids and signatures are random, as vLLM's).

With the parsers in use (hermes and most others), the events come as reasoning, content, calls; that is
also the order of vLLM's non-streamed ``content`` (thinking, text, tool_use...). Content after a call (a
parser that keeps text between calls) becomes a new text block after it, as vLLM's stream has it.
A message with no block at all gets one empty text block, as vLLM's non-streamed answer (the stream sends
it too, so both agree).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from trio_front.assistant import (
    AssistantEvent,
    ContentDelta,
    ReasoningDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
)


def _input(arguments: str) -> dict[str, Any]:
    """A call's ``input`` object: its JSON arguments; ``{}`` for empty or non-object arguments (a call cut
    short by ``max_tokens``; vLLM's own ``json.loads`` would fail the request)."""
    try:
        value = json.loads(arguments) if arguments else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


class MessageBlocks:
    """Feed assistant events; get stream events (``{"type": ..., ...}`` dicts) back; :attr:`content` is
    the message's blocks once :meth:`close` was called."""

    def __init__(self) -> None:
        self.content: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the block being built
        self._parts: list[str] = []
        #: the arguments of the last call (only it can be cut short)
        self.last_arguments: str | None = None

    def feed(self, events: list[AssistantEvent]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, ReasoningDelta):
                out += self._text_delta("thinking", event.text)
            elif isinstance(event, ContentDelta):
                out += self._text_delta("text", event.text)
            elif isinstance(event, ToolCallStarted):
                out += self._close()
                out += self._start({"type": "tool_use", "id": event.id, "name": event.name, "input": {}})
            elif isinstance(event, ToolCallArgumentsDelta):
                if event.delta and self._open is not None and self._open["type"] == "tool_use":
                    self._parts.append(event.delta)
                    out.append(self._delta({"type": "input_json_delta", "partial_json": event.delta}))
            elif isinstance(event, ToolCallDone):
                self.last_arguments = event.arguments
                out += self._close(arguments=event.arguments)
        return out

    def close(self) -> list[dict[str, Any]]:
        """The end: close the open block; an empty text block if there was none."""
        out = self._close()
        if not self.content:
            out += self._start({"type": "text", "text": ""}) + self._close()
        return out

    @property
    def tool_used(self) -> bool:
        return self.last_arguments is not None

    # ----------------------------------------------------------------------------------- internals

    def _start(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        self._open, self._parts = block, []
        start = {**block, "input": {}} if block["type"] == "tool_use" else dict(block)
        return [{"type": "content_block_start", "index": len(self.content), "content_block": start}]

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": len(self.content), "delta": delta}

    def _text_delta(self, kind: str, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        out: list[dict[str, Any]] = []
        if self._open is None or self._open["type"] != kind:
            out += self._close()
            out += self._start({"type": kind, kind: ""})
        self._parts.append(text)
        out.append(self._delta({"type": f"{kind}_delta", kind: text}))
        return out

    def _close(self, *, arguments: str | None = None) -> list[dict[str, Any]]:
        block = self._open
        if block is None:
            return []
        out: list[dict[str, Any]] = []
        index = len(self.content)
        text = "".join(self._parts)
        if block["type"] == "thinking":
            signature = uuid.uuid4().hex  # vLLM's: an opaque random value, nothing to verify
            out.append(self._delta({"type": "signature_delta", "signature": signature}))
            block = {"type": "thinking", "thinking": text, "signature": signature}
        elif block["type"] == "text":
            block = {"type": "text", "text": text}
        else:
            block = {**block, "input": _input(text if arguments is None else arguments)}
        self.content.append(block)
        self._open, self._parts = None, []
        out.append({"type": "content_block_stop", "index": index})
        return out


def stop_reason(
    finish_reason: str | None, engine_stop: int | str | None, blocks: MessageBlocks
) -> tuple[str | None, str | None]:
    """vLLM's ``_to_anthropic_stop_reason``: ``(stop_reason, stop_sequence)`` from the chat finish reason
    and the engine's stop reason. ``max_tokens`` always wins; complete calls give ``tool_use``; a matched
    stop string (a str) gives ``stop_sequence`` unless the calls are complete; an aborted request none."""
    if finish_reason == "length":
        return "max_tokens", None
    if finish_reason not in ("stop", "tool_calls"):
        return None, None
    used = blocks.tool_used
    if used and is_json(blocks.last_arguments or ""):
        return "tool_use", None
    if isinstance(engine_stop, str):
        return "stop_sequence", engine_stop
    if finish_reason == "tool_calls" or used:
        return "tool_use", None
    return "end_turn", None
