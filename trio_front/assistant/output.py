"""Drive one generation's text through the reasoning parser, then the tool stage, into assistant events.

Per request, inside the request's scope (no tasks, no I/O)::

    out = AssistantOutput(plan, reasoning_parser, include_reasoning=...)
    for chunk in generation:  events = out.push(chunk.text, chunk.token_ids)
    events = out.finish();    out.result  # the non-streamed message

Reasoning text never reaches the tool stage; content text goes to the plan's stage: plain content
(mode none), the family parser (auto), the call-list scanner (required), or the arguments of the named
call (named: streamed as argument deltas as they arrive). A complete call becomes
``ToolCallStarted``, ``ToolCallArgumentsDelta`` (its whole arguments), ``ToolCallDone``.
Without parallel tool calls only the first call is kept (vLLM's ``maybe_filter_parallel_tool_calls``).
In auto mode, content that is only whitespace is held until it turns out to be followed by real text
(then it is released) or by a call (then it is dropped): vLLM's non-streamed answer has no content beside
calls when the content is blank (typically the ``"\n\n"`` after ``</think>``), and a stream cannot
take back what it sent.
``include_reasoning=False`` drops reasoning events (the text is still split off, never shown as content).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import attrs

from trio_front.parsers import reasoning as rp
from trio_front.parsers.tools import Content, ToolCall, ToolParser

from .constrained import RequiredCalls
from .events import (
    AssistantEvent,
    ContentDelta,
    ReasoningDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
)
from .tools import ToolPlan


def tool_call_id() -> str:
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


@attrs.define
class AssistantResult:
    reasoning: str | None = None
    content: str = ""
    tool_calls: list[ToolCallDone] = attrs.field(factory=list)


class AssistantOutput:
    def __init__(
        self,
        plan: ToolPlan,
        reasoning: rp.ReasoningParser | None = None,
        *,
        include_reasoning: bool = True,
        make_id: Callable[[], str] = tool_call_id,
    ) -> None:
        self.plan = plan
        self._reasoning = reasoning
        self._include_reasoning = include_reasoning
        self._make_id = make_id
        self._tools: ToolParser | None = None
        if plan.mode == "auto" and plan.parser_cls is not None:
            self._tools = plan.parser_cls(plan.tools)
        elif plan.mode == "required":
            self._tools = RequiredCalls()
        self._blank: str | None = ""  # auto mode: blank content held back; None once real text came
        self._named_started = False
        self._named_held = ""  # leading whitespace of a named call, held until the arguments start
        self._reasoning_text: list[str] = []
        self._content: list[str] = []
        self._calls: list[ToolCallDone] = []
        self._output_ids: list[int] = []
        self._finished = False

    # ------------------------------------------------------------------------------------------ input

    def push(self, text: str, token_ids: Sequence[int] = ()) -> list[AssistantEvent]:
        self._output_ids.extend(token_ids)
        if not text:
            return []
        if self._reasoning is None:
            return self._content_stage(text)
        return self._route(self._reasoning.feed(text))

    def finish(self) -> list[AssistantEvent]:
        """The generation ended (or was cut): flush every stage. Idempotent."""
        if self._finished:
            return []
        self._finished = True
        events = self._route(self._reasoning.finish()) if self._reasoning is not None else []
        if self._tools is not None:
            events += self._tool_events(self._tools.finish())
            if self._blank and not self._calls:
                events += self._text(self._blank)
            self._blank = None
        elif self.plan.mode == "named" and self._named_started:
            call = self._calls_in_progress_named()
            events.append(call)
        return events

    # -------------------------------------------------------------------------------------- results

    @property
    def result(self) -> AssistantResult:
        return AssistantResult(
            "".join(self._reasoning_text) or None, "".join(self._content), list(self._calls)
        )

    @property
    def called(self) -> bool:
        return bool(self._calls)

    def reasoning_tokens(self) -> int | None:
        """``completion_tokens_details.reasoning_tokens`` (``None`` without a reasoning parser)."""
        if self._reasoning is None:
            return None
        return self._reasoning.count_reasoning_tokens(self._output_ids)

    # ------------------------------------------------------------------------------------- stages

    def _route(self, events: Sequence[rp.ReasoningEvent]) -> list[AssistantEvent]:
        out: list[AssistantEvent] = []
        for event in events:
            if isinstance(event, rp.Reasoning):
                if event.text and self._include_reasoning:
                    self._reasoning_text.append(event.text)
                    out.append(ReasoningDelta(event.text))
            elif event.text:
                out += self._content_stage(event.text)
        return out

    def _content_stage(self, text: str) -> list[AssistantEvent]:
        if self._tools is not None:
            return self._tool_events(self._tools.feed(text))
        if self.plan.mode == "named":
            return self._named(text)
        self._content.append(text)
        return [ContentDelta(text)]

    def _tool_events(self, events: Sequence[Content | ToolCall]) -> list[AssistantEvent]:
        out: list[AssistantEvent] = []
        for event in events:
            if isinstance(event, ToolCall):
                if self._calls and not self.plan.parallel:
                    continue
                index, call_id = len(self._calls), event.id or self._make_id()
                done = ToolCallDone(index, call_id, event.name, event.arguments)
                self._calls.append(done)
                out += [
                    ToolCallStarted(index, call_id, event.name),
                    ToolCallArgumentsDelta(index, event.arguments),
                    done,
                ]
            elif event.text:
                text = event.text
                if self._blank is not None and self.plan.mode == "auto":
                    if not text.strip():
                        self._blank += text
                        continue
                    text, self._blank = self._blank + text, None
                out += self._text(text)
        return out

    def _text(self, text: str) -> list[AssistantEvent]:
        self._content.append(text)
        return [ContentDelta(text)]

    def _named(self, text: str) -> list[AssistantEvent]:
        if not self._named_started:
            held = self._named_held + text
            if not held.strip():
                self._named_held = held
                return []
            self._named_started, self._named_held = True, ""
            self._named_id = self._make_id()
            self._named_args = [held]
            assert self.plan.name is not None
            return [ToolCallStarted(0, self._named_id, self.plan.name), ToolCallArgumentsDelta(0, held)]
        self._named_args.append(text)
        return [ToolCallArgumentsDelta(0, text)]

    def _calls_in_progress_named(self) -> ToolCallDone:
        assert self.plan.name is not None
        done = ToolCallDone(0, self._named_id, self.plan.name, "".join(self._named_args))
        self._calls.append(done)
        return done
