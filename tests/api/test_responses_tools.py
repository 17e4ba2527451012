"""The Responses API with tools, reasoning and text.format on the scripted mock engine: output items and
their events (SSE, WebSocket, the openai SDK), function-call round trips, and JSON == streamed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from openai import OpenAI

from .conftest import MODEL
from .ws_fixtures import Client, open_client, running_server

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
SCRIPT = {  # the first rule whose marker is in the prompt wins: later turns' markers come first
    "AFTER-TOOL": "It is sunny.",
    "TEXT-THEN-CALL": "Checking." + CALL,
    "THINK-CALL": "Need data.</think>\n\n" + CALL,
    "REQUIRED": '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
    "NAMED": '{"city": "Rome"}',
    "JSON": '{"ok": true}',
}
FRONTEND = {"enable_auto_tool_choice": True, "tool_call_parser": "hermes", "reasoning_parser": "qwen3"}


def script(tmp: Path) -> str:
    path = tmp / "script.json"
    rules = [{"when": key, "text": text} for key, text in SCRIPT.items()]
    path.write_text(json.dumps({"tokenizer": str(MODEL), "rules": rules}))
    return str(path)


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


async def create(server, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the JSON response, the streamed events) for the same request."""
    body = {"max_output_tokens": 200, **body}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        r = await client.post("/v1/responses", json=body)
        assert r.status_code == 200, r.text
        s = await client.post("/v1/responses", json={**body, "stream": True})
        assert s.status_code == 200, s.text
    return r.json(), sse_events(s.text)


def shape(response: dict[str, Any]) -> list[tuple]:
    """Output items without their random ids."""
    out = []
    for item in response["output"]:
        if item["type"] == "function_call":
            out.append(("function_call", item["name"], item["arguments"], item["status"]))
        elif item["type"] == "reasoning":
            out.append(("reasoning", item["content"][0]["text"], item["status"]))
        else:
            out.append(("message", item["content"][0]["text"], item["status"]))
    return out


def check_stream(events: list[dict[str, Any]], final: dict[str, Any]) -> None:
    """Sequence numbers, item events bracketing their deltas, and the final object = the JSON one."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    completed = events[-1]["response"]
    assert shape(completed) == shape(final)
    args: dict[str, str] = {}
    texts: dict[str, str] = {}
    for e in events:
        if e["type"] == "response.function_call_arguments.delta":
            args[e["item_id"]] = args.get(e["item_id"], "") + e["delta"]
        elif e["type"] in ("response.output_text.delta", "response.reasoning_text.delta"):
            texts[e["item_id"]] = texts.get(e["item_id"], "") + e["delta"]
        elif e["type"] == "response.function_call_arguments.done":
            assert args[e["item_id"]] == e["arguments"]
    for index, item in enumerate(completed["output"]):
        added = [
            e for e in events if e["type"] == "response.output_item.added" and e["item"]["id"] == item["id"]
        ]
        done = [
            e for e in events if e["type"] == "response.output_item.done" and e["item"]["id"] == item["id"]
        ]
        assert len(added) == len(done) == 1 and added[0]["output_index"] == done[0]["output_index"] == index
        if item["type"] == "function_call":
            assert args[item["id"]] == item["arguments"] and item["call_id"].startswith("chatcmpl-tool-")
        else:
            assert texts.get(item["id"], "") == item["content"][0]["text"]


@pytest.fixture
async def server(tmp_path: Path):
    async with running_server(script=script(tmp_path), frontend=FRONTEND) as s:
        yield s


async def test_reasoning_then_a_call(server) -> None:
    final, events = await create(server, {"input": "THINK-CALL", "tools": [WEATHER]})
    check_stream(events, final)
    assert shape(final) == [
        ("reasoning", "Need data.", "completed"),
        ("function_call", "get_weather", '{"city": "Paris"}', "completed"),
    ]
    assert final["status"] == "completed" and final["tools"][0]["name"] == "get_weather"
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] >= 0


async def test_text_then_a_call(server) -> None:
    # qwen3: text with no </think> before a call is reasoning (vLLM 0.32's non-streamed answer)
    final, events = await create(server, {"input": "TEXT-THEN-CALL", "tools": [WEATHER]})
    check_stream(events, final)
    assert [i[0] for i in shape(final)] == ["reasoning", "function_call"]


@pytest.mark.parametrize(
    ("marker", "choice", "city"),
    [("REQUIRED", "required", "Oslo"), ("NAMED", {"type": "function", "name": "get_weather"}, "Rome")],
)
async def test_required_and_named(server, marker: str, choice: Any, city: str) -> None:
    # the prompt ends reasoning for the grammar: include_reasoning is not a Responses field, so the
    # mock's scripted call (no <think>) is all "reasoning" for qwen3 unless the tool stage sees it —
    # run these on a server without a reasoning parser.
    async with running_server(
        script=server.mock.config.script,
        frontend={"enable_auto_tool_choice": True, "tool_call_parser": "hermes"},
    ) as plain:
        final, events = await create(plain, {"input": marker, "tools": [WEATHER], "tool_choice": choice})
    check_stream(events, final)
    [call] = shape(final)
    assert call[:2] == ("function_call", "get_weather") and json.loads(call[2]) == {"city": city}


async def test_function_call_output_round_trip(server) -> None:
    """The call and its output go back in as items and reach the prompt through the template."""
    final, _ = await create(server, {"input": "THINK-CALL", "tools": [WEATHER]})
    call = next(i for i in final["output"] if i["type"] == "function_call")
    items = [
        {"role": "user", "content": "THINK-CALL"},
        *final["output"],
        {"type": "function_call_output", "call_id": call["call_id"], "output": "AFTER-TOOL sunny 21C"},
    ]
    second, events = await create(server, {"input": items, "tools": [WEATHER]})
    check_stream(events, second)
    # qwen3 without </think>: the scripted answer is reasoning
    assert shape(second)[0][1] == "It is sunny."
    state = server.app.state
    rendered = state.renderer.render(
        [
            {"role": "user", "content": "THINK-CALL"},
            {
                "role": "assistant",
                "content": None,
                "reasoning": "Need data.",
                "tool_calls": [
                    {
                        "id": call["call_id"],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call["call_id"], "content": "AFTER-TOOL sunny 21C"},
        ],
        add_generation_prompt=True,
        tools=[
            {"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}
        ],
    ).prompt
    assert "AFTER-TOOL sunny 21C" in rendered
    prompts = [e["prompt_tokens"] for e in server.mock.log.named("add")]
    assert len(state.tokenizer.encode(rendered, add_special_tokens=False)) in prompts


async def test_text_format_json_schema(server) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    fmt = {"type": "json_schema", "name": "r", "schema": schema, "strict": True}
    async with running_server(script=server.mock.config.script) as plain:
        final, events = await create(plain, {"input": "JSON", "text": {"format": fmt}})
    check_stream(events, final)
    assert final["text"]["format"] == fmt and shape(final) == [("message", '{"ok": true}', "completed")]
    bad = {"type": "json_schema", "name": "r", "schema": {"type": 3}}
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        r = await client.post("/v1/responses", json={"input": "x", "text": {"format": bad}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "text.format"
    assert server.adds() == []


async def test_websocket_continuation_keeps_the_call(server) -> None:
    async with open_client(f"{server.ws_url}/v1/responses") as conn:
        ws = Client(conn)
        await ws.send({"type": "response.create", "input": "THINK-CALL", "tools": [WEATHER]})
        done, _ = await ws.until("response.completed")
        call = next(i for i in done["response"]["output"] if i["type"] == "function_call")
        await ws.send(
            {
                "type": "response.create",
                "previous_response_id": done["response"]["id"],
                "tools": [WEATHER],
                "input": [
                    {"type": "function_call_output", "call_id": call["call_id"], "output": "AFTER-TOOL"}
                ],
            }
        )
        second, _ = await ws.until("response.completed")
    assert second["response"]["status"] == "completed"
    assert second["response"]["output"][0]["content"][0]["text"] == "It is sunny."


def _sdk(server) -> dict[str, Any]:
    client = OpenAI(api_key="unused", base_url=f"{server.http_url}/v1", max_retries=0)
    events = list(
        client.responses.create(model="tiny-llama", input="THINK-CALL", tools=[WEATHER], stream=True)
    )
    return {"types": [e.type for e in events], "final": events[-1].response}


async def test_the_openai_sdk_reads_the_items(server) -> None:
    out = await trio.to_thread.run_sync(_sdk, server)
    assert "response.function_call_arguments.done" in out["types"]
    assert "response.reasoning_text.delta" in out["types"]
    final = out["final"]
    call = next(i for i in final.output if i.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert orjson.loads(orjson.dumps(final.model_dump()))["status"] == "completed"
