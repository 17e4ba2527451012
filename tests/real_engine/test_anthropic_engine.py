"""Anthropic Messages on the real vLLM CPU engine: the constraints that only the engine can enforce.

The tiny model's output is random text, so a valid JSON answer or a valid ``tool_use`` input can only come
from the engine's grammar: ``output_config.format`` (json_schema) and ``tool_choice: {type: tool}`` must reach
the engine as structured outputs, streamed and not, through the unmodified anthropic SDK. (``days`` is an
enum and ``city`` a short pattern: the random weights would otherwise write digits until ``max_tokens``.)
"""

from __future__ import annotations

import json

import anthropic
import pytest

pytestmark = pytest.mark.real_engine

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "pattern": "^[A-Za-z ]{1,12}$"},
        "days": {"enum": [1, 2, 3, 4, 5, 6, 7]},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOL = {"name": "get_weather", "description": "Weather for a city", "input_schema": SCHEMA}
MESSAGES = [{"role": "user", "content": "Weather in Paris for 3 days?"}]


@pytest.fixture(scope="module")
def client(structured_stack: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=structured_stack.removesuffix("/v1"), api_key="none", max_retries=0)


def _valid(value: object) -> None:
    assert isinstance(value, dict) and set(value) == {"city", "days"}, value
    assert isinstance(value["city"], str) and len(value["city"]) <= 12, value
    assert value["days"] in range(1, 8), value


@pytest.mark.parametrize("stream", [False, True])
def test_output_config_json_schema_answer_is_valid_json(client: anthropic.Anthropic, stream: bool) -> None:
    kwargs = dict(
        model="tiny",
        max_tokens=120,
        messages=MESSAGES,
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
    )
    if stream:
        with client.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    texts = [b.text for b in message.content if b.type == "text"]
    assert message.stop_reason == "end_turn", message
    _valid(json.loads("".join(texts)))


@pytest.mark.parametrize("stream", [False, True])
def test_forced_tool_gives_a_valid_tool_use(client: anthropic.Anthropic, stream: bool) -> None:
    kwargs = dict(
        model="tiny",
        max_tokens=120,
        messages=MESSAGES,
        tools=[TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    if stream:
        with client.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    uses = [b for b in message.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather", message
    _valid(uses[0].input)
    assert message.stop_reason == "tool_use", message
