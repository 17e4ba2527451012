"""The assistant layer over stand-in parsers: routing, tool choice modes, and streamed == non-streamed."""

from __future__ import annotations

import json
import random

import pytest

from trio_front.assistant import (
    AssistantConfig,
    AssistantOutput,
    ContentDelta,
    ReasoningDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
    plan_tools,
)
from trio_front.assistant.constrained import RequiredCalls
from trio_front.parsers.reasoning import Content as RContent
from trio_front.parsers.reasoning import Reasoning, ReasoningParser
from trio_front.parsers.tools import Content, ToolCall, ToolParser
from trio_front.parsers.tools.base import merge, partial_marker_len
from trio_front.serving.params import ParamError

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "search", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "$defs": {"x": {"type": "string"}}}}},
]  # fmt: skip


class Tagged(ToolParser):
    """A stand-in family: <call>{"name": ..., "arguments": ...}</call>."""

    def __init__(self, tools=None) -> None:
        super().__init__(tools)
        self.buf, self.inside = "", False

    def feed(self, text: str) -> list:
        self.buf += text
        out = []
        while True:
            marker = "</call>" if self.inside else "<call>"
            i = self.buf.find(marker)
            if i < 0:
                if not self.inside:
                    keep = partial_marker_len(self.buf, marker)
                    head, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep :]
                    if head:
                        out.append(Content(head))
                return out
            head, self.buf = self.buf[:i], self.buf[i + len(marker) :]
            if self.inside:
                obj = json.loads(head)
                out.append(ToolCall(obj["name"], json.dumps(obj["arguments"])))
            elif head:
                out.append(Content(head))
            self.inside = not self.inside

    def finish(self) -> list:
        rest, self.buf = self.buf, ""
        return [Content(("<call>" if self.inside else "") + rest)] if rest or self.inside else []


class Think(ReasoningParser):
    def __init__(self, tokenizer=None, kwargs=None) -> None:
        self.buf, self.done = "", False

    def reasoning_ended_in_prompt(self) -> bool:
        return False

    def feed(self, text: str) -> list:
        if self.done:
            return [RContent(text)]
        self.buf += text
        i = self.buf.find("</think>")
        if i >= 0:
            self.done = True
            r, c = self.buf[:i], self.buf[i + 8 :]
            self.buf = ""
            return [e for e in (Reasoning(r), RContent(c)) if e.text]
        keep = partial_marker_len(self.buf, "</think>")
        head, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep :]
        return [Reasoning(head)] if head else []

    def finish(self) -> list:
        rest, self.buf = self.buf, ""
        return [Reasoning(rest)] if rest else []

    def count_reasoning_tokens(self, ids) -> int:
        return len(ids)


def _auto_config() -> AssistantConfig:
    """Auto tool choice with the stand-in family (real families are tested in tests/parsers)."""
    config = AssistantConfig()
    object.__setattr__(config, "enable_auto_tool_choice", True)
    object.__setattr__(config, "tool_parser_cls", Tagged)
    return config


AUTO = _auto_config()


def run(out: AssistantOutput, pieces: list[str]) -> list:
    events = []
    for piece in pieces:
        events += out.push(piece)
    return events + out.finish()


def assemble(events: list) -> dict:
    """As a client assembles a stream."""
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    calls: dict[int, dict] = {}
    for e in events:
        if isinstance(e, ToolCallStarted):
            calls[e.index] = {"id": e.id, "name": e.name, "arguments": ""}
        elif isinstance(e, ToolCallArgumentsDelta):
            calls[e.index]["arguments"] += e.delta
    return {"content": content, "reasoning": reasoning or None, "calls": list(calls.values())}


def splits(text: str) -> list[list[str]]:
    out = [[text], list(text)]
    for seed in range(5):
        rng, pieces, i = random.Random(seed), [], 0
        while i < len(text):
            n = rng.randint(1, 9)
            pieces.append(text[i : i + n])
            i += n
        out.append(pieces)
    return out


def auto_output(parallel: bool = True, reasoning: bool = True) -> AssistantOutput:
    p = plan_tools(TOOLS, "auto", None if parallel else False, AUTO)
    ids = iter(range(100))
    return AssistantOutput(p, Think() if reasoning else None, make_id=lambda: f"id{next(ids)}")


TEXT = (
    'Let me think.</think>Sure: <call>{"name": "get_weather", "arguments": {"city": "Paris"}}</call>'
    '<call>{"name": "search", "arguments": {"q": "é"}}</call>'
)


@pytest.mark.parametrize("pieces", splits(TEXT), ids=range(len(splits(TEXT))))
def test_streamed_equals_non_streamed(pieces: list[str]) -> None:
    whole = auto_output()
    run(whole, [TEXT])
    out = auto_output()
    got = assemble(run(out, pieces))
    result = whole.result
    assert got["content"] == result.content == "Sure: "
    assert got["reasoning"] == result.reasoning == "Let me think."
    assert [(c["name"], c["arguments"]) for c in got["calls"]] == [
        (c.name, c.arguments) for c in result.tool_calls
    ]
    assert [c.name for c in result.tool_calls] == ["get_weather", "search"]


def test_no_parallel_keeps_the_first_call() -> None:
    out = auto_output(parallel=False)
    run(out, [TEXT])
    assert [c.name for c in out.result.tool_calls] == ["get_weather"]


def test_reasoning_hidden_but_never_content() -> None:
    p = plan_tools(None, None, None, AssistantConfig())
    out = AssistantOutput(p, Think(), include_reasoning=False)
    events = run(out, ["abc</th", "ink>xyz"])
    assert events == [ContentDelta("xyz")]
    assert out.result.reasoning is None and out.result.content == "xyz"


def test_events_in_order_for_one_call() -> None:
    out = auto_output(reasoning=False)
    events = run(out, ['<call>{"name": "search", "arguments": {}}</call>'])
    assert events == [
        ToolCallStarted(0, "id0", "search"),
        ToolCallArgumentsDelta(0, "{}"),
        ToolCallDone(0, "id0", "search", "{}"),
    ]


def test_named_streams_arguments() -> None:
    p = plan_tools(TOOLS, {"type": "function", "function": {"name": "get_weather"}}, None, AssistantConfig())
    assert p.mode == "named" and p.schema["additionalProperties"] is False
    out = AssistantOutput(p, None, make_id=lambda: "x")
    events = run(out, [" ", ' {"city"', ': "Oslo"}'])
    assert events[0] == ToolCallStarted(0, "x", "get_weather")
    assert out.result.tool_calls == [ToolCallDone(0, "x", "get_weather", '  {"city": "Oslo"}')]
    assert p.finish_reason("stop", True) == "stop"


def test_named_with_empty_output_has_no_call() -> None:
    p = plan_tools(TOOLS, {"type": "function", "function": {"name": "search"}}, None, AssistantConfig())
    out = AssistantOutput(p)
    assert run(out, ["  "]) == [] and out.result.tool_calls == []


def test_required_schema_is_closed_and_hoists_defs() -> None:
    p = plan_tools(TOOLS, "required", False, AssistantConfig())
    schema = p.schema
    assert (
        schema["maxItems"] == 1 and schema["minItems"] == 1 and schema["$defs"] == {"x": {"type": "string"}}
    )
    variant = schema["items"]["anyOf"][1]
    assert variant["additionalProperties"] is False and variant["required"] == ["name", "arguments"]
    assert variant["properties"]["arguments"]["additionalProperties"] is False
    assert "$defs" not in variant["properties"]["arguments"]
    assert "$defs" in TOOLS[1]["function"]["parameters"]  # the request is not modified
    assert p.finish_reason("stop", True) == "tool_calls" and p.finish_reason("length", False) == "length"


REQUIRED = '[{"name": "get_weather", "arguments": {"city": "a]}\\"b"}}, {"name":"search","arguments":{}}]'


@pytest.mark.parametrize("pieces", splits(REQUIRED), ids=range(len(splits(REQUIRED))))
def test_required_calls_any_chunking(pieces: list[str]) -> None:
    events = []
    parser = RequiredCalls()
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.finish()
    parsed = merge(events)
    assert parsed.content is None
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [
        ("get_weather", {"city": 'a]}"b'}),
        ("search", {}),
    ]


def test_required_cut_short_keeps_complete_calls_and_releases_the_rest() -> None:
    cut = REQUIRED[:70]
    parsed = RequiredCalls().parse(cut)
    assert [c.name for c in parsed.calls] == ["get_weather"]
    assert parsed.content == cut[cut.index("}}") + 2 :]


@pytest.mark.parametrize(
    ("tools", "choice", "message"),
    [
        ([], None, "`tools` must not be an empty array"),
        (None, "auto", "When using `tool_choice`, `tools` must be set."),
        (TOOLS, "sometimes", "Invalid value for `tool_choice`"),
        (TOOLS, {"type": "function"}, "Invalid value for `function`"),
        (TOOLS, {"type": "function", "function": {}}, "Expected field `name`"),
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, "does not match any"),
        ([{"type": "function", "function": {"name": ""}}], "none", "name must be a non-empty string"),
        ([{"type": "retrieval"}], "none", "must be 'function'"),
    ],
)
def test_tool_usage_errors(tools, choice, message) -> None:
    with pytest.raises(ParamError, match=message.replace("`", ".").replace("(", ".")):
        plan_tools(tools, choice, None, AUTO)


def test_auto_needs_the_flag() -> None:
    with pytest.raises(ParamError, match='"auto" tool choice requires --enable-auto-tool-choice'):
        plan_tools(TOOLS, None, None, AssistantConfig())
    assert plan_tools(TOOLS, "none", None, AssistantConfig()).render_tools == TOOLS
    excluded = AssistantConfig(exclude_tools_when_tool_choice_none=True)
    assert plan_tools(TOOLS, "none", None, excluded).render_tools is None


def test_unknown_parser_names_are_listed() -> None:
    with pytest.raises(ValueError, match="known: .*hermes"):
        AssistantConfig(enable_auto_tool_choice=True, tool_call_parser="nope")
    with pytest.raises(ValueError, match="requires --tool-call-parser"):
        AssistantConfig(enable_auto_tool_choice=True)
    with pytest.raises(ValueError, match="known: .*deepseek_r1"):
        AssistantConfig(reasoning_parser="nope")


@pytest.mark.parametrize("pieces", splits("\n\n" + TEXT.split("</think>")[1][6:]), ids=range(7))
def test_blank_content_beside_calls_is_dropped(pieces: list[str]) -> None:
    """vLLM's non-streamed answer: content that is only whitespace next to calls is null."""
    out = auto_output(reasoning=False)
    got = assemble(run(out, pieces))
    assert got["content"] == out.result.content == ""
    assert [c["name"] for c in got["calls"]] == ["get_weather", "search"]


def test_blank_content_without_calls_or_before_text_is_kept() -> None:
    out = auto_output(reasoning=False)
    assert assemble(run(out, ["\n", " \n"]))["content"] == "\n \n"
    out = auto_output(reasoning=False)
    assert (
        assemble(run(out, ["\n\n", "Hi", '<call>{"name": "search", "arguments": {}}</call>']))["content"]
        == "\n\nHi"
    )
