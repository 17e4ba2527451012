"""Chat completions with tools, tool choice, reasoning and structured outputs, on the scripted mock engine.

The mock answers prompts that contain a marker with scripted text (``MockEngineConfig.script``), so the
whole stack runs on realistic model output. Every case is asked non-streamed and streamed; the streamed
chunks, assembled as a client does, must equal the non-streamed message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trio_front.api import chat
from trio_front.api.models import ChatCompletionRequest, structure

from .conftest import MODEL, start_server

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}},
]
HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris"}}\n</tool_call>'
SCRIPT = {
    "REQUIRED-TWO": (
        '[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "search", "arguments": {}}]'
    ),
    "REQUIRED-CUT": '[{"name": "get_weather", "arguments": {"city": "Par',
    "NAMED": '{"city": "Zürich"}',
    "HERMES-TEXT-CALL": "Let me check." + HERMES_CALL,
    "HERMES-TWO": HERMES_CALL + "\n" + HERMES_CALL.replace("Paris", "Oslo"),
    "PLAIN": "Just text, no call.",
    "THINK-CALL": "I should look it up.</think>\n\n" + HERMES_CALL,
    "THINK-TEXT": "Pondering <b>.</think>\n\nThe answer is 42.",
    "THINK-OPEN": "Still thinking when the budget ran out",
}


def write_script(tmp: Path, model: Path = MODEL) -> str:
    path = tmp / "script.json"
    rules = [{"when": key, "text": text} for key, text in SCRIPT.items()]
    path.write_text(json.dumps({"tokenizer": str(model), "rules": rules}))
    return str(path)


def assemble(lines: list[str]) -> dict[str, Any]:
    """A streamed chat completion, assembled as the openai SDK does."""
    content, reasoning, calls, finish, usage = [], [], {}, None, None
    for line in lines:
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        assert "error" not in event, event
        if event.get("usage"):
            usage = event["usage"]
        for choice in event["choices"]:
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning") or "")
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(call["index"], {"id": None, "name": None, "arguments": ""})
                entry["id"] = entry["id"] or call.get("id")
                function = call.get("function") or {}
                entry["name"] = entry["name"] or function.get("name")
                entry["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return {
        "content": "".join(content),
        "reasoning": "".join(reasoning) or None,
        "calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish,
        "usage": usage,
    }


def flatten(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "content": message["content"] or "",
        "reasoning": message.get("reasoning"),
        "calls": [
            {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in message.get("tool_calls", [])
        ],
        "finish_reason": finish,
    }


async def ask(url: str, marker: str, **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(non-streamed message + finish_reason, streamed assembly) for a prompt carrying *marker*."""
    body = {"messages": [{"role": "user", "content": f"{marker} please"}], "max_tokens": 200, **body}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        choice = answer["choices"][0]
        plain = flatten(choice["message"], choice["finish_reason"])
        plain["usage"] = answer["usage"]
        streamed_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with client.stream("POST", "/v1/chat/completions", json=streamed_body) as s:
            lines = [line async for line in s.aiter_lines()]
    return plain, assemble(lines)


def same(plain: dict[str, Any], streamed: dict[str, Any]) -> None:
    strip = lambda d: {**d, "calls": [{**c, "id": None} for c in d["calls"]], "usage": None}  # noqa: E731
    assert strip(streamed) == strip(plain)
    for call in [*plain["calls"], *streamed["calls"]]:
        assert call["id"].startswith("chatcmpl-tool-") and len(call["id"]) > 20


@pytest.fixture
async def tool_server(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        yield await start_server(
            nursery,
            script=write_script(tmp_path),
            frontend={"enable_auto_tool_choice": True, "tool_call_parser": "hermes"},
        )
        nursery.cancel_scope.cancel()


async def test_required_gives_every_call_and_finish_tool_calls(tool_server) -> None:
    plain, streamed = await ask(tool_server.url, "REQUIRED-TWO", tools=TOOLS, tool_choice="required")
    same(plain, streamed)
    assert [(c["name"], json.loads(c["arguments"])) for c in plain["calls"]] == [
        ("get_weather", {"city": "Paris"}),
        ("search", {}),
    ]
    assert plain["content"] == "" and plain["finish_reason"] == "tool_calls"


async def test_required_without_parallel_calls_keeps_one(tool_server) -> None:
    plain, streamed = await ask(
        tool_server.url, "REQUIRED-TWO", tools=TOOLS, tool_choice="required", parallel_tool_calls=False
    )
    same(plain, streamed)
    assert [c["name"] for c in plain["calls"]] == ["get_weather"]


async def test_required_cut_by_max_tokens_is_content(tool_server) -> None:
    plain, streamed = await ask(tool_server.url, "REQUIRED-CUT", tools=TOOLS, tool_choice="required")
    same(plain, streamed)
    assert plain["calls"] == [] and plain["content"] == SCRIPT["REQUIRED-CUT"]


async def test_named_choice_streams_the_arguments(tool_server) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    plain, streamed = await ask(tool_server.url, "NAMED", tools=TOOLS, tool_choice=choice)
    same(plain, streamed)
    assert plain["calls"][0]["name"] == "get_weather"
    assert plain["calls"][0]["arguments"] == SCRIPT["NAMED"]
    assert plain["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("marker", "content", "cities"),
    [
        ("HERMES-TEXT-CALL", "Let me check.", ["Paris"]),
        ("HERMES-TWO", "", ["Paris", "Oslo"]),
        ("PLAIN", "Just text, no call.", []),
    ],
)
async def test_auto_with_hermes(tool_server, marker: str, content: str, cities: list[str]) -> None:
    plain, streamed = await ask(tool_server.url, marker, tools=TOOLS)
    same(plain, streamed)
    assert plain["content"] == content
    assert [json.loads(c["arguments"])["city"] for c in plain["calls"]] == cities
    # vLLM's hermes parser re-serialises the arguments (json.dumps: ", " and ": ").
    assert [c["arguments"] for c in plain["calls"]] == [f'{{"city": "{city}"}}' for city in cities]
    assert plain["finish_reason"] == ("tool_calls" if cities else "stop")


async def test_tool_choice_none_leaves_the_call_as_text(tool_server) -> None:
    plain, streamed = await ask(tool_server.url, "HERMES-TEXT-CALL", tools=TOOLS, tool_choice="none")
    same(plain, streamed)
    assert plain["calls"] == [] and plain["content"] == SCRIPT["HERMES-TEXT-CALL"]


async def test_auto_without_the_flag_is_vllms_400(server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
        )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": []}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        (
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
        ),
    ],
)
async def test_bad_tool_requests_are_400_before_the_engine(tool_server, body, param) -> None:
    async with httpx.AsyncClient(base_url=tool_server.url) as client:
        r = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], **body}
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert tool_server.adds() == []


async def test_required_constraint_reaches_the_engine(tool_server) -> None:
    req = structure(
        {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": "required"},
        ChatCompletionRequest,
    )
    gen, _, setup = await chat.prepare(tool_server.app.state, req, stream=False)
    so = gen.params.structured_outputs
    assert so is not None and so.json is not None
    schema = so.json if isinstance(so.json, dict) else json.loads(so.json)
    assert schema == setup.plan.schema and schema["minItems"] == 1
    assert gen.params.skip_special_tokens is True  # no special-token markers needed for a grammar
    auto = structure({"messages": [{"role": "user", "content": "x"}], "tools": TOOLS}, ChatCompletionRequest)
    gen, _, _ = await chat.prepare(tool_server.app.state, auto, stream=False)
    assert gen.params.structured_outputs is None


@pytest.fixture
async def reasoning_server(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        yield await start_server(
            nursery,
            script=write_script(tmp_path),
            frontend={
                "enable_auto_tool_choice": True,
                "tool_call_parser": "hermes",
                "reasoning_parser": "qwen3",
            },
        )
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("marker", "reasoning", "content", "calls", "with_tools"),
    [
        # vLLM 0.32 streams `<think>`-leaking content when tools and a reasoning parser are both active;
        # its non-streamed answer (the one we match, streamed or not) is the sane one.
        ("THINK-CALL", "I should look it up.", "", ["get_weather"], True),  # blank content: dropped
        ("THINK-TEXT", "Pondering <b>.", "\n\nThe answer is 42.", [], True),
        ("THINK-TEXT", "Pondering <b>.", "\n\nThe answer is 42.", [], False),
        ("THINK-OPEN", SCRIPT["THINK-OPEN"], "", [], True),  # qwen3: no </think> means all reasoning
    ],
)
async def test_reasoning_then_content_or_calls(
    reasoning_server, marker: str, reasoning: str, content: str, calls: list[str], with_tools: bool
) -> None:
    plain, streamed = await ask(reasoning_server.url, marker, **({"tools": TOOLS} if with_tools else {}))
    same(plain, streamed)
    assert plain["reasoning"] == reasoning
    assert plain["content"] == content
    assert [c["name"] for c in plain["calls"]] == calls
    assert plain["usage"]["completion_tokens_details"]["reasoning_tokens"] >= 0
    assert streamed["usage"]["completion_tokens_details"] == plain["usage"]["completion_tokens_details"]


async def test_include_reasoning_false_hides_it(reasoning_server) -> None:
    plain, streamed = await ask(reasoning_server.url, "THINK-TEXT", include_reasoning=False)
    same(plain, streamed)
    assert plain["reasoning"] is None and plain["content"] == "\n\nThe answer is 42."
    req = structure(
        {"messages": [{"role": "user", "content": "x"}], "include_reasoning": False}, ChatCompletionRequest
    )
    gen, _, _ = await chat.prepare(reasoning_server.app.state, req, stream=False)
    assert gen._reasoning_ended is True  # the engine may apply a grammar from the first token


async def test_reasoning_kwargs_reach_the_engine(reasoning_server) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"enable_thinking": True}}
    gen, _, _ = await chat.prepare(
        reasoning_server.app.state, structure(body, ChatCompletionRequest), stream=False
    )
    assert gen._reasoning_ended is False
    assert gen._reasoning_parser_kwargs == {"chat_template_kwargs": {"enable_thinking": True}}
