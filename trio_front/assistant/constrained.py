"""Reading calls out of grammar-constrained output (``tool_choice`` required / named; see ``tools.py``).

``required``: the output is a JSON array of ``{"name", "arguments"}`` objects. :class:`RequiredCalls`
scans it incrementally and emits each call the moment its object closes; whatever does not fit (an
output cut by ``max_tokens``) is released as content at the end, in streaming and non-streaming alike.

Named choice needs no parser: the whole output is the arguments (``output.py`` streams it as such).
"""

from __future__ import annotations

import json

from trio_front.parsers.tools import Content, ToolCall, ToolEvent, ToolParser


class RequiredCalls(ToolParser):
    def __init__(self) -> None:
        super().__init__(None)
        self._buf = ""  # text not yet consumed (from the start of the current object, or stray text)
        self._pos = 0  # scan position in _buf
        self._depth = 0
        self._in_string = self._escape = False
        self._obj_start: int | None = None
        self._broken = False  # the output stopped looking like a list of calls: the rest is content
        self._calls = 0

    def feed(self, text: str) -> list[ToolEvent]:
        if self._broken:
            return [Content(text)] if text else []
        self._buf += text
        events: list[ToolEvent] = []
        buf, i = self._buf, self._pos
        while i < len(buf):
            ch = buf[i]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "[{":
                if self._depth == 1 and ch == "{":
                    self._obj_start = i
                elif self._depth == 0 and ch != "[":
                    return self._break(events)
                self._depth += 1
            elif ch in "]}":
                self._depth -= 1
                if self._depth == 1 and ch == "}" and self._obj_start is not None:
                    call = _call(buf[self._obj_start : i + 1])
                    if call is None:
                        return self._break(events)
                    events.append(call)
                    self._calls += 1
                    # What follows the last call is all that may still become content.
                    buf, i = buf[i + 1 :], -1
                    self._buf, self._obj_start = buf, None
                elif self._depth < 0:
                    return self._break(events)
            elif self._depth <= 1 and not ch.isspace() and ch != ",":
                return self._break(events)
            i += 1
        self._pos = i
        return events

    def _break(self, events: list[ToolEvent]) -> list[ToolEvent]:
        self._broken = True
        rest, self._buf = self._buf, ""
        return [*events, Content(rest)] if rest else events

    def finish(self) -> list[ToolEvent]:
        rest, self._buf = self._buf, ""
        if self._broken or not rest:
            return []
        if self._calls and self._depth == 0 and set(rest) <= set(" \t\r\n,]"):
            return []  # the list's closing bracket
        return [Content(rest)]


def _call(text: str) -> ToolCall | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or "arguments" not in obj:
        return None
    return ToolCall(obj["name"], json.dumps(obj["arguments"], ensure_ascii=False))
