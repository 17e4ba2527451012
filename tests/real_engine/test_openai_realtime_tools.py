"""Function calling in the Realtime API on the real vLLM engine (random weights), through the unmodified
``openai`` SDK (``client.realtime.connect``).

A random model cannot be asked for meaning, only for form: ``tool_choice: "required"`` and a named choice
send a grammar to the engine, so whatever the model samples is a call to a declared tool whose arguments
match its schema. The schema bounds every value (a string pattern, an integer range): an unbounded value
lets a random model write until ``max_output_tokens``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.real_engine
NAME = "tiny"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "pattern": "^[A-Z][a-z]{0,8}$"},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
        },
        "required": ["city", "days"],
    },
}


def _valid_arguments(arguments: str) -> None:
    args = json.loads(arguments)
    assert set(args) == {"city", "days"}, args
    assert re.fullmatch(r"[A-Z][a-z]{0,8}", args["city"]) and 1 <= args["days"] <= 14, args


def _until(conn: Any, kind: str) -> tuple[Any, list[Any]]:
    seen = []
    for event in conn:
        if event.type == "error":
            raise AssertionError(event)
        if event.type == kind:
            return event, seen
        seen.append(event)
    raise AssertionError(f"socket closed before {kind}")


def _check_calls(done: Any, events: list[Any]) -> list[Any]:
    """Every function_call item of the response: its deltas join to its arguments.done, which is valid."""
    calls = [item for item in done.response.output if item.type == "function_call"]
    for call in calls:
        deltas = [
            e.delta
            for e in events
            if e.type == "response.function_call_arguments.delta" and e.item_id == call.id
        ]
        [args_done] = [
            e for e in events if e.type == "response.function_call_arguments.done" and e.item_id == call.id
        ]
        assert deltas and "".join(deltas) == args_done.arguments == call.arguments
        assert args_done.call_id == call.call_id and args_done.name == call.name == "get_weather"
        assert call.status == "completed"
        _valid_arguments(call.arguments)
    return calls


def test_required_call_then_its_output(structured_stack: str) -> None:
    ws_url = structured_stack.replace("http://", "ws://")
    client = openai.OpenAI(
        base_url=structured_stack, websocket_base_url=ws_url, api_key="none", max_retries=0
    )
    with client.realtime.connect(model=NAME) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(
            session={"type": "realtime", "tools": [WEATHER], "tool_choice": "required", "seed": 4}
        )
        updated, _ = _until(conn, "session.updated")
        assert updated.session.tool_choice == "required"
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]}
        )
        _until(conn, "conversation.item.done")

        conn.response.create(response={"max_output_tokens": 300})
        first, events = _until(conn, "response.done")
        assert first.response.status == "completed", first.response.status_details
        calls = _check_calls(first, events)
        assert calls and all(item.type == "function_call" for item in first.response.output)

        # named choice: the whole output is get_weather's arguments
        conn.response.create(
            response={"max_output_tokens": 200, "tool_choice": {"type": "function", "name": "get_weather"}}
        )
        named, events = _until(conn, "response.done")
        assert named.response.status == "completed", named.response.status_details
        assert len(_check_calls(named, events)) == 1

        conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 21C"}
        )
        added, _ = _until(conn, "conversation.item.done")
        assert added.item.type == "function_call_output" and added.item.call_id == calls[0].call_id
        conn.response.create(response={"max_output_tokens": 8, "tool_choice": "none"})
        answer, events = _until(conn, "response.done")
        assert answer.response.status in ("completed", "incomplete")  # EOS or the token limit
        [message] = answer.response.output
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert message.type == "message" and message.content[0].text == text
        assert 1 <= answer.response.usage.output_tokens <= 8
        # the calls and their output are in the prompt: it grew by more than the tool output alone
        assert answer.response.usage.input_tokens > first.response.usage.input_tokens + 5
