"""Hermes 2 Pro / Qwen 2.5–3 JSON tool calls (``hermes``, ``qwen3_json``)::

    text<tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
    <tool_call>{...}</tool_call>

The answer follows vLLM 0.32's non-streaming ``Hermes2ProToolParser.extract_tool_calls``:

* ``content`` is the text before the first ``<tool_call>``; text between and after calls is dropped;
* each call body is ``json.loads``-ed and must be an object with a string ``name`` and an
  ``arguments`` key; arguments are re-serialised with ``json.dumps(..., ensure_ascii=False)``;
* a last call without ``</tool_call>`` counts if its body is complete JSON (the model stopped early);
* a malformed first call (bad JSON, missing key, truncated by ``max_tokens``) makes the whole output
  content, as vLLM returns it.

Deliberate deviation: vLLM also returns the whole output as content (no calls) when a *later* call is
malformed; calls already streamed cannot be taken back, so we keep them and release the raw text from
the malformed ``<tool_call>`` on as content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .base import Content, ToolCall, ToolEvent, ToolParser, partial_marker_len

START = "<tool_call>"
END = "</tool_call>"


def json_call(body: str) -> ToolCall | None:
    """The call in a ``{"name": ..., "arguments": ...}`` body, or ``None`` where vLLM raises."""
    try:
        obj: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or "arguments" not in obj:
        return None
    return ToolCall(obj["name"], json.dumps(obj["arguments"], ensure_ascii=False))


class HermesToolParser(ToolParser):
    needs_special_tokens = True  # vLLM: <tool_call> is a special token in some vocabularies

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(tools)
        self._buf = ""
        # text: before the first call; call: inside <tool_call>; after: between calls (text dropped);
        # raw: a malformed call was seen, everything from there on is content.
        self._state: Literal["text", "call", "after", "raw"] = "text"

    def feed(self, text: str) -> list[ToolEvent]:
        self._buf += text
        out: list[ToolEvent] = []
        while self._buf:
            if self._state == "raw":
                out.append(Content(self._buf))
                self._buf = ""
            elif self._state in ("text", "after"):
                i = self._buf.find(START)
                if i < 0:
                    keep = partial_marker_len(self._buf, START) if "<" in self._buf[-10:] else 0
                    if self._state == "text" and len(self._buf) > keep:
                        out.append(Content(self._buf[: len(self._buf) - keep]))
                    self._buf = self._buf[len(self._buf) - keep :]
                    break
                if self._state == "text" and i:
                    out.append(Content(self._buf[:i]))
                self._buf = self._buf[i:]  # keeps START: a malformed call is released verbatim
                self._state = "call"
            else:
                j = self._buf.find(END, len(START))
                if j < 0:
                    break
                out.extend(self._close(self._buf[len(START) : j], j + len(END)))
        return out

    def finish(self) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        if self._state == "call":
            out.extend(self._close(self._buf[len(START) :], len(self._buf)))
        if self._buf and self._state in ("text", "raw"):
            out.append(Content(self._buf))
        self._buf = ""
        return out

    def _close(self, body: str, end: int) -> list[ToolEvent]:
        call = json_call(body)
        if call is None:
            self._state = "raw"  # the rest of the buffer is released by the caller's loop / finish
            return []
        self._buf = self._buf[end:]
        self._state = "after"
        return [call]
