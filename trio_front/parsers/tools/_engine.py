"""A marker state machine for tool-call formats, with vLLM 0.32's parser-engine semantics (sans-IO).

vLLM 0.32 parses qwen3_coder/qwen3_xml, kimi_k2 and glm45 with one declarative engine: markers are
lexed (longest literal first), each ``(state, marker)`` pair may switch state and emit call events,
and text is routed by state — content, the call's name, its raw argument body, or dropped (between a
call's wrapper markers). A subclass declares the markers, the transition table and
:meth:`EngineToolParser.build_call` (raw name + raw body → :class:`ToolCall`).

Streaming contract (``base.py``): a call is emitted at its end event (closing marker, or the end of the
output for one left open — vLLM finishes an open call at the end too). Content follows vLLM's
non-streaming answer:

* text before the first call start is content; with calls, trailing whitespace before the call is
  dropped (``STRIP_WITH_TOOLS``), and whitespace-only content is dropped. Trailing whitespace is held
  back until it is known which;
* text after a call start is content only if the output produced no call at all (then it is released
  at :meth:`finish`); once a call is emitted, later text is dropped, as vLLM drops it.

Deliberate deviation: with calls, vLLM strips *leading* whitespace of the content too; leading
whitespace followed by text has already been streamed by then, so we keep it (vLLM's own streaming
path keeps it too). Reasoning markers are handled as vLLM's combined grammar does when a reasoning
parser is configured (a stray ``</think>`` in content is dropped); with no reasoning parser vLLM would
keep them verbatim, which a tool parser cannot tell.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar

from ._lexer import MarkerLexer
from .base import Content, ToolCall, ToolEvent, ToolParser

CONTENT, PREAMBLE, NAME, ARGS, BETWEEN = "content", "preamble", "name", "args", "between"
REASONING = "reasoning"  # text here is not content (glm45's grammar can re-enter it)
START, END, ARG = "start", "end", "arg"  # events: new call, call complete, marker text into the body
_TOOL_STATES = frozenset((PREAMBLE, NAME, ARGS, BETWEEN))


class EngineToolParser(ToolParser):
    #: marker literal → marker name
    MARKERS: ClassVar[Mapping[str, str]]
    #: (state, marker name) → (next state, events); a marker with no entry is text in its state.
    TRANSITIONS: ClassVar[Mapping[tuple[str, str], tuple[str, tuple[str, ...]]]]
    #: With calls, content loses trailing (vLLM: all) surrounding whitespace.
    STRIP_WITH_TOOLS: ClassVar[bool] = True

    def __init__(self, tools=None) -> None:
        super().__init__(tools)
        self._lexer = MarkerLexer(self.MARKERS.items())
        self._state = CONTENT
        self._name: list[str] = []
        self._body: list[str] = []
        self._open = False  # a call started and not yet ended
        self._started = False  # any call started
        self._called = False  # any call emitted
        self._nonws = False  # non-whitespace content emitted
        self._held = ""  # content not yet emitted (whitespace, or text after a call start)

    @abc.abstractmethod
    def build_call(self, name: str, body: str) -> ToolCall | None:
        """The call for a raw name and raw argument body, or ``None`` if vLLM would drop it."""

    def feed(self, text: str) -> list[ToolEvent]:
        return self._run(self._lexer.feed(text))

    def finish(self) -> list[ToolEvent]:
        out = self._run(self._lexer.flush())
        if self._state in _TOOL_STATES:
            self._end(out)
            self._state = CONTENT
        if not self._called and self._held and (self._nonws or self._held.strip() or not self._started):
            out.append(Content(self._held))
        self._held = ""
        return out

    def _run(self, tokens: list[tuple[str | None, str]]) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        for marker, text in tokens:
            step = self.TRANSITIONS.get((self._state, marker)) if marker else None
            if step is None:
                self._text(text, out)
                continue
            self._state, events = step
            for ev in events:
                if ev == START:
                    self._start(out)
                elif ev == ARG:
                    self._body.append(text)
                else:
                    self._end(out)
        return out

    def _text(self, text: str, out: list[ToolEvent]) -> None:
        state = self._state
        if state == NAME:
            self._name.append(text)
        elif state == ARGS:
            self._body.append(text)
        elif state == CONTENT:
            self._content(text, out)

    def _content(self, text: str, out: list[ToolEvent]) -> None:
        if self._called:
            return
        if self._started:  # content only if no call ever comes: hold until finish
            self._held += text
            return
        text = self._held + text
        body = text.rstrip() if self.STRIP_WITH_TOOLS else text
        if not (self._nonws or body.strip()):
            self._held = text  # whitespace only so far: dropped if a call follows
            return
        self._held = text[len(body) :]
        self._nonws = True
        if body:
            out.append(Content(body))

    def _start(self, out: list[ToolEvent]) -> None:
        if self._open:
            self._end(out)
        self._started = self._open = True
        self._name.clear()
        self._body.clear()

    def _end(self, out: list[ToolEvent]) -> None:
        if not self._open:
            return  # a second end event for the same call (e.g. at finish)
        self._open = False
        call = self.build_call("".join(self._name), "".join(self._body))
        if call is not None:
            self._called = True
            self._held = ""
            out.append(call)
