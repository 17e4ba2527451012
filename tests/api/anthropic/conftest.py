"""A trio-front on the scripted mock engine with hermes tool calls and qwen3 reasoning, for the anthropic
SDK; the mock answers a prompt containing a marker with that marker's text (the first matching rule wins:
a later turn's marker comes first)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import pytest
import trio

from ..conftest import MODEL, Server, start_server

CALL = '<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call>'
SCRIPT = {
    "AFTER-TOOL": "</think>It is sunny in Paris.",
    "THINK-CALL": "I should look it up.</think>\n\n" + CALL.format(city="Paris"),
    "THINK-TWO": "Two cities.</think>\n\nLet me check both."
    + CALL.format(city="Paris")
    + "\n"
    + CALL.format(city="Oslo"),
    "THINK-TEXT": "Pondering.</think>\n\nThe answer is 42.",
    "STOP-SEQ": "</think>Counting: one two STOP three four",
    "LONG": "</think>" + " ".join(["word"] * 200),
    "NAMED": '</think>{"city": "Rome"}',
}
FRONTEND = {"enable_auto_tool_choice": True, "tool_call_parser": "hermes", "reasoning_parser": "qwen3"}
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def write_script(tmp: Path) -> str:
    path = tmp / "script.json"
    rules = [{"when": key, "text": text} for key, text in SCRIPT.items()]
    path.write_text(json.dumps({"tokenizer": str(MODEL), "rules": rules}))
    return str(path)


def sdk(server: Server, api_key: str = "unused") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.url, api_key=api_key, max_retries=0, timeout=30)


@pytest.fixture
async def msg_server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    extra = getattr(request, "param", {})
    async with trio.open_nursery() as nursery:
        yield await start_server(nursery, script=write_script(tmp_path), frontend={**FRONTEND, **extra})
        nursery.cancel_scope.cancel()
