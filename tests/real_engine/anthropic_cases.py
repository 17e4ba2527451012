"""The Anthropic Messages cases the differential runs on the scripted mock, and how answers are compared.

Each case is a request (``CASES[name].body()``) whose conversation holds the user message ``case:NAME``
and a scripted "model" output (``CASES[name].output``) that the mock emits when the prompt holds
``case:NAME</s>``. :func:`from_message` and :func:`from_events` turn a non-streamed answer and a stream of
SSE events (assembled as the anthropic SDK's stream helper does) into the same comparable view; ids and
signatures are kept apart (:func:`formats`) because they are random and compared only by format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .test_vllm_tools_on_mock import SEARCH, WEATHER

#: Anthropic-shaped versions of the tools test's two tools.
TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_weather",
        "description": "Current weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
    {
        "name": "search",
        "description": "Search the web",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
]
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}
PARIS = {"city": "Paris", "unit": "celsius"}


def _think(thought: str, rest: str = "") -> str:
    return f"<think>\n{thought}\n</think>\n\n{rest}"


def _tool_turn(name: str, result: str | list[dict[str, Any]], *, is_error: bool | None = None):
    """A conversation whose last turn is the user's tool_result for an earlier get_weather call."""
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": "toolu_01", "content": result}
    if is_error is not None:
        block["is_error"] = is_error
    return [
        {"role": "user", "content": f"case:{name}"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I need the weather.", "signature": "sig-1"},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": PARIS},
            ],
        },
        {"role": "user", "content": [block]},
    ]


@dataclass(frozen=True)
class Case:
    """One request: the scripted output plus what the body adds to ``model/messages/max_tokens``."""

    output: str
    extra: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None
    max_tokens: int = 200

    def body(self, name: str, *, stream: bool = False) -> dict[str, Any]:
        messages = self.messages or [{"role": "user", "content": f"case:{name}"}]
        return {"model": "tiny", "messages": messages, "max_tokens": self.max_tokens, **self.extra} | (
            {"stream": True} if stream else {}
        )

    def count_body(self, name: str) -> dict[str, Any]:
        """The same request for ``/v1/messages/count_tokens`` (only the fields that endpoint takes)."""
        keep = ("model", "messages", "system", "tools", "tool_choice", "thinking", "output_config")
        return {k: v for k, v in self.body(name).items() if k in keep}


AUTO = {"tools": TOOLS, "tool_choice": {"type": "auto"}}

CASES: dict[str, Case] = {
    "plain": Case("The capital of France is Paris."),
    "thinking_text": Case(_think("The user wants a greeting.", "Hello! How can I help you today?")),
    "thinking_tool": Case(_think("I should look up the weather.", WEATHER), AUTO),
    "several_tools": Case(_think("Two lookups.", WEATHER + "\n" + SEARCH), AUTO),
    "tool_result_string": Case(
        _think("It answered.", "It is 18 degrees in Paris."),
        AUTO,
        _tool_turn("tool_result_string", "18 degrees, sunny"),
    ),
    "tool_result_blocks": Case(
        _think("Two parts.", "Sunny and 18 degrees."),
        AUTO,
        _tool_turn(
            "tool_result_blocks",
            [{"type": "text", "text": "18 degrees"}, {"type": "text", "text": "sunny"}],
            is_error=False,
        ),
    ),
    "tool_result_error": Case(
        _think("The tool failed.", "Sorry, I could not get the weather."),
        AUTO,
        _tool_turn("tool_result_error", "city not found", is_error=True),
    ),
    "stop_sequence": Case(_think("Counting.", "One, two, STOP three, four."), {"stop_sequences": ["STOP"]}),
    "max_tokens": Case(_think("A long thought that goes on and on and on.", "Answer."), max_tokens=6),
    # tool_choice "any" becomes "required": vLLM constrains the output to a JSON list of calls.
    "tool_any": Case(
        _think("Must call a tool.", json.dumps([{"name": "get_weather", "parameters": PARIS}])),
        {"tools": TOOLS, "tool_choice": {"type": "any"}},
    ),
    # A named tool: the output is that tool's arguments.
    "tool_named": Case(
        _think("Forced.", json.dumps(PARIS)),
        {"tools": TOOLS, "tool_choice": {"type": "tool", "name": "get_weather"}},
    ),
    "tool_none": Case(
        _think("No tools allowed.", WEATHER), {"tools": TOOLS, "tool_choice": {"type": "none"}}
    ),
    "no_parallel": Case(
        _think("Two lookups, one allowed.", WEATHER + "\n" + SEARCH),
        {"tools": TOOLS, "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
    ),
    "json_format": Case(
        _think("JSON it is.", json.dumps({"answer": "Paris"})),
        {"output_config": {"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}}},
    ),
    "system_string": Case(_think("Be terse.", "OK."), {"system": "You are terse."}),
    "system_blocks": Case(
        _think("Still terse.", "OK."),
        {"system": [{"type": "text", "text": "You are "}, {"type": "text", "text": "terse."}]},
    ),
    "thinking_disabled": Case("The answer is 4.", {"thinking": {"type": "disabled"}}),
    "thinking_history": Case(
        _think("Second turn.", "Still sunny."),
        {},
        [
            {"role": "user", "content": "case:thinking_history"},
            {
                "role": "assistant",
                "content": [
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "thinking", "thinking": "First thoughts.", "signature": "sig-0"},
                    {"type": "text", "text": "It is sunny."},
                ],
            },
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
        ],
    ),
}


def script_rules() -> list[dict[str, str]]:
    """The mock script's rules (the tiny chat template ends each message with ``</s>``)."""
    return [{"when": f"case:{name}</s>", "text": case.output} for name, case in CASES.items()]


# ------------------------------------------------------------------------------------------ views


def _block(block: dict[str, Any]) -> tuple[Any, ...]:
    kind = block["type"]
    if kind == "text":
        return ("text", block["text"])
    if kind == "thinking":
        return ("thinking", block["thinking"])
    if kind == "tool_use":
        return ("tool_use", block["name"], block["input"])
    return (kind,)


def from_message(message: dict[str, Any]) -> dict[str, Any]:
    """The comparable view of a Messages answer: blocks, stop reason/sequence, token usage."""
    usage = message.get("usage") or {}
    return {
        "content": [_block(b) for b in message["content"]],
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
        "usage": (usage.get("input_tokens"), usage.get("output_tokens")),
    }


def formats(message: dict[str, Any]) -> dict[str, Any]:
    """The random parts of an answer (message id, tool_use ids, thinking signatures), for format checks."""
    blocks = message["content"]
    return {
        "id": message.get("id"),
        "tool_ids": [b.get("id") for b in blocks if b["type"] == "tool_use"],
        "signatures": [b.get("signature") for b in blocks if b["type"] == "thinking"],
    }


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` for each SSE event; the data's ``type`` must equal the event name."""
    events = []
    for raw in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in raw.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name = next((x[len("event:") :].strip() for x in lines if x.startswith("event:")), None)
        data = "\n".join(x[len("data:") :].strip() for x in lines if x.startswith("data:"))
        payload = json.loads(data)
        assert payload.get("type") == name, (name, payload)
        events.append((name, payload))
    return events


def assemble(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A message from its stream, as the SDK's ``MessageStream`` accumulates it: ``message_start`` gives
    the shell, blocks are started, their deltas appended (``input_json_delta`` parsed at the end),
    ``message_delta`` sets stop_reason/stop_sequence and updates usage. Checks the sequence on the way:
    one start and one stop, deltas only inside an open block of their kind, indices in order."""
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    assert names.count("message_delta") == 1 and names[-2] == "message_delta", names
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    open_index: int | None = None
    kinds = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "thinking"}
    kinds["input_json_delta"] = "tool_use"
    for name, data in events:
        if name == "message_start":
            message = dict(data["message"])
            message["content"] = []
        elif name == "content_block_start":
            assert open_index is None and data["index"] == len(message["content"]), (open_index, data)
            open_index = data["index"]
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            assert data["index"] == open_index, (open_index, data)
            block, delta = message["content"][open_index], data["delta"]
            assert block["type"] == kinds[delta["type"]], (block, delta)
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                partial[open_index] = partial.get(open_index, "") + delta["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == open_index, (open_index, data)
            if open_index in partial:
                message["content"][open_index]["input"] = json.loads(partial[open_index])
            open_index = None
        elif name == "message_delta":
            assert open_index is None, "message_delta inside an open block"
            message["stop_reason"] = data["delta"].get("stop_reason")
            message["stop_sequence"] = data["delta"].get("stop_sequence")
            message["usage"] = {**(message.get("usage") or {}), **(data.get("usage") or {})}
        elif name == "error":
            raise AssertionError(f"error event: {data}")
    return message


def from_events(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return from_message(assemble(events))


#: vLLM's formats: the chat completion's id, the tool-call id, ``uuid4().hex``.
VLLM_MESSAGE_ID = re.compile(r"chatcmpl-[0-9a-f]{16,32}")
TOOL_ID = re.compile(r"chatcmpl-tool-[0-9a-f]{16,32}")
SIGNATURE = re.compile(r"[0-9a-f]{32}")
