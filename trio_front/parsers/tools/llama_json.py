"""Llama 3.x / 4 JSON tool calls (``llama3_json``, ``llama4_json``): bare JSON objects, optionally
after ``<|python_tag|>``, several separated by ``;`` or newlines::

    <|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": ...}

vLLM 0.32's non-streaming ``Llama3JsonToolParser.extract_tool_calls`` decodes every top-level ``{`` of
the output: each must be an object with a string ``name`` and ``arguments`` (else ``parameters``),
re-serialised with ``json.dumps(..., ensure_ascii=False)``. If all are calls, the answer is those calls
and ``content`` is ``None`` (surrounding text is dropped); if any ``{`` fails (malformed, truncated, not
a call), the whole output is content. We follow it: a ``{`` starts a candidate, held until its braces
balance (string-aware); a call candidate becomes a :class:`ToolCall`, anything else is released
verbatim as content. After the first call, text outside candidates is dropped as in vLLM; whitespace
and ``<|python_tag|>`` just before a call are dropped too.

Deliberate deviations, because streamed text and calls cannot be taken back:

* text *before* the first call is content (vLLM drops it once a call follows, which only the end of
  the output tells);
* a failing candidate does not turn the calls around it into content: it is released as content and
  the calls stay (a brace that plainly starts no JSON object, ``{x``, is prose: dropped after a call);
* ``{...}{...}`` with nothing between is two calls (vLLM skips a ``{`` right at the end of the previous
  object, then fails on its inner object and returns everything as content — an off-by-one).

:class:`JsonSpan` is shared with ``mistral.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Content, ToolCall, ToolEvent, ToolParser, partial_marker_len

PYTHON_TAG = "<|python_tag|>"
_OUTSIDE = re.compile(r'[{}\[\]"]')
_INSIDE = re.compile(r'["\\]')
_LEAD = re.compile(r"(?:\s|<\|python_tag\|>)*\Z")
_NONSPACE = re.compile(r"\S")


class JsonSpan:
    """Finds where a JSON object/array that starts at ``text[start]`` ends, across growing *text*
    (string-aware bracket depth; it does not validate — ``json.loads`` does). Each call scans only
    what arrived since the last one."""

    def __init__(self, start: int = 0) -> None:
        self.start = start
        self.pos = start
        self.depth = 0
        self.in_string = False

    def end(self, text: str) -> int | None:
        """Index just past the closing bracket, or ``None`` if *text* does not close it yet."""
        while True:
            if self.in_string:
                m = _INSIDE.search(text, self.pos)
                if m is None:
                    self.pos = len(text)
                    return None
                if m.group() == "\\":
                    if m.end() >= len(text):
                        self.pos = m.start()  # the escaped character has not arrived
                        return None
                    self.pos = m.end() + 1
                    continue
                self.in_string = False
                self.pos = m.end()
                continue
            m = _OUTSIDE.search(text, self.pos)
            if m is None:
                self.pos = len(text)
                return None
            self.pos = m.end()
            c = m.group()
            if c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth <= 0:
                    return self.pos


def llama_call(obj: Any) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    if "arguments" in obj:
        args = obj["arguments"]
    elif "parameters" in obj:
        args = obj["parameters"]
    else:
        return None
    return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False))


class Llama3JsonToolParser(ToolParser):
    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(tools)
        self._buf = ""  # text not yet released; an open candidate starts at _buf[_lead]
        self._lead = 0  # length of the held whitespace / python_tag run before the candidate
        self._span: JsonSpan | None = None
        self._checked = False  # the candidate's first token was seen and may start an object
        self._called = False

    def feed(self, text: str) -> list[ToolEvent]:
        self._buf += text
        out: list[ToolEvent] = []
        while self._buf:
            if self._span is None:
                i = self._buf.find("{")
                if i < 0:
                    self._release_text(out, final=False)
                    break
                start = _lead_start(self._buf, i)
                self._emit_text(out, self._buf[:start])
                self._buf = self._buf[start:]
                self._lead, self._span, self._checked = i - start, JsonSpan(i - start), False
            if not self._checked:
                m = _NONSPACE.search(self._buf, self._lead + 1)
                if m is None:
                    break
                if m.group() not in '"}':  # prose braces: a JSON object starts with a key or is empty
                    self._reject(out, self._lead + 1, prose=True)
                    continue
                self._checked = True
            end = self._span.end(self._buf)
            if end is None:
                break
            self._close(out, self._buf[self._lead : end], end)
        return out

    def finish(self) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        if self._span is not None:
            self._reject(out, len(self._buf))  # never closed: truncated or malformed
        self._release_text(out, final=True)
        return out

    # -----------------------------------------------------------------------------------------------

    def _emit_text(self, out: list[ToolEvent], text: str) -> None:
        if text and not self._called:  # after a call, vLLM drops the text around calls
            out.append(Content(text))

    def _release_text(self, out: list[ToolEvent], *, final: bool) -> None:
        """No candidate open: release text, holding what may still turn out to precede a call (a
        trailing run of whitespace / python_tag, and a partial python_tag)."""
        keep = 0
        if not final:
            n = len(self._buf) - partial_hold(self._buf, PYTHON_TAG)
            keep = len(self._buf) - _lead_start(self._buf, n)
        self._emit_text(out, self._buf[: len(self._buf) - keep])
        self._buf = self._buf[len(self._buf) - keep :]

    def _close(self, out: list[ToolEvent], candidate: str, end: int) -> None:
        try:
            call = llama_call(json.loads(candidate))
        except ValueError:
            call = None
        if call is None:
            self._reject(out, end)
            return
        out.append(call)  # the held lead before it is dropped, as vLLM drops all surrounding text
        self._called = True
        self._buf = self._buf[end:]
        self._span = None

    def _reject(self, out: list[ToolEvent], end: int, *, prose: bool = False) -> None:
        """The candidate is not a call: ``_buf[:end]`` is released verbatim. After a call its lead, and
        a brace that is plainly prose, are text between calls, dropped; a failed JSON-like candidate
        (a truncated second call, say) is still released."""
        text = "" if self._called and prose else self._buf[self._lead if self._called else 0 : end]
        if text:
            out.append(Content(text))
        self._buf = self._buf[end:]
        self._span = None


def partial_hold(text: str, marker: str) -> int:
    """``partial_marker_len``, with a fast answer when the marker's first character is not near the end."""
    if marker[0] not in text[1 - len(marker) :]:
        return 0
    return partial_marker_len(text, marker)


def _lead_start(text: str, end: int) -> int:
    """Start of the whitespace / python_tag run that ends at *end*."""
    if not end or not (text[end - 1].isspace() or text[end - 1] == ">"):
        return end  # the common case, without the regex
    m = _LEAD.search(text, 0, end)
    return m.start() if m else end


class Llama4JsonToolParser(Llama3JsonToolParser):
    """The same format (vLLM maps ``llama4_json`` to the same class)."""
