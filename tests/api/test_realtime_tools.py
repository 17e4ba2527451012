"""Function calling (and reasoning) in the Realtime API, on the scripted mock engine.

The mock answers prompts carrying a marker with scripted model output (hermes ``<tool_call>`` markup, a
``required`` call list, a named call's arguments). The server runs with a chat template that renders the
tools, assistant ``tool_calls`` and ``tool`` messages visibly, so the prompt a response was generated from
(recorded at the mock) shows exactly how function-call items were rendered.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import MODEL
from .ws_fixtures import Client, WSServer, open_client, running_server

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
SCRIPT = {  # the first rule whose marker is in the prompt wins: later turns' markers come first
    "AFTER-TOOL": "It is sunny.",
    "TEXT-CALL": "Let me check." + CALL,
    "THINK-CALL": "Need data.</think>\n\n" + CALL,
    "NAMED-LONG": '{"city": "' + "Llanfairpwll " * 200 + '"}',
    "NAMED": '{"city": "Rome"}',
    "REQUIRED": '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
    "PLAIN": "Just text, no call.",
}
# Renders what the tiny model's own template drops: tools, calls and call ids.
TEMPLATE = (
    "{% if tools %}[TOOLS{% for t in tools %} {{ t.function.name }}{% endfor %}]\n{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>{% if m.tool_call_id %}[{{ m.tool_call_id }}]{% endif %}\n"
    "{{ m.content or '' }}{% for c in m.tool_calls or [] %}"
    "[CALL {{ c.id }} {{ c.function.name }} {{ c.function.arguments | tojson }}]{% endfor %}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
HERMES = {"enable_auto_tool_choice": True, "tool_call_parser": "hermes"}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def write_script(tmp: Path) -> str:
    path = tmp / "script.json"
    rules = [{"when": key, "text": text} for key, text in SCRIPT.items()]
    path.write_text(json.dumps({"tokenizer": str(MODEL), "rules": rules}))
    return str(path)


class PromptRecorder:
    """Stands in for the mock's script: records every prompt, then matches as the script does."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.prompts: list[list[int]] = []

    def match(self, prompt_ids: Sequence[int]) -> Any:
        self.prompts.append(list(prompt_ids))
        return self.script.match(prompt_ids)


def record_requests(server: WSServer) -> list[dict[str, Any]]:
    """Wraps the engine client's ``generate``: each engine request's params and reasoning hints."""
    sent: list[dict[str, Any]] = []
    engine = server.app.engine
    generate = engine.generate

    def spy(prompt_ids: list[int], params: Any, **kwargs: Any) -> Any:
        sent.append({"params": params, **kwargs})
        return generate(prompt_ids, params, **kwargs)

    engine.generate = spy  # type: ignore[method-assign]
    return sent


def schema_sent(request: dict[str, Any]) -> Any:
    constraint = request["params"].structured_outputs
    if constraint is None:
        return None
    return json.loads(constraint.json) if isinstance(constraint.json, str) else constraint.json


@asynccontextmanager
async def tool_server(tmp: Path, frontend: dict[str, Any] = HERMES, **mock: Any) -> AsyncIterator[WSServer]:
    # a file: server.py's _read_template stats its value as a path first (a long text is ENAMETOOLONG)
    template = tmp / "template.jinja"
    template.write_text(TEMPLATE)
    frontend = {"chat_template": str(template), **frontend}
    async with running_server(script=write_script(tmp), frontend=frontend, **mock) as server:
        server.mock.core.script = PromptRecorder(server.mock.core.script)
        yield server


@asynccontextmanager
async def realtime(server: WSServer, **kwargs: Any) -> AsyncIterator[Client]:
    async with open_client(f"{server.ws_url}/v1/realtime?model=tiny-llama", **kwargs) as conn:
        c = Client(conn)
        assert (await c.recv())["type"] == "session.created"
        yield c


async def update(c: Client, **session: Any) -> dict[str, Any]:
    """``session.update``; the ``session.updated`` or ``error`` reply."""
    await c.send({"type": "session.update", "session": session})
    reply = await c.recv()
    assert reply["type"] in ("session.updated", "error"), reply
    return reply


async def turn(c: Client, text: str, **response: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A user message, then a response: (``response.done``'s response, the events before it)."""
    await c.send({"type": "conversation.item.create", "item": user(text)})
    await c.until("conversation.item.done")
    await c.send({"type": "response.create", "response": {"max_output_tokens": 300, **response}})
    done, seen = await c.until("response.done")
    return done["response"], seen


def shape(response: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in response["output"]:
        if item["type"] == "function_call":
            out.append(("function_call", item["name"], json.loads(item["arguments"]), item["status"]))
        else:
            out.append(("message", item["content"][0]["text"], item["status"]))
    return out


def check_events(events: list[dict[str, Any]], final: dict[str, Any], *, beta: bool = False) -> None:
    """Every output item's events: added → deltas → done, in output order, deltas == the final item."""
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created"
    position = 0
    for index, item in enumerate(final["output"]):
        mine = [
            (n, e)
            for n, e in enumerate(events)
            if item["id"] in (e.get("item_id"), e.get("item", {}).get("id"))
        ]
        names = [e["type"] for _, e in mine]
        assert mine[0][0] > position, "items are announced in output order"
        position = mine[-1][0]
        added = mine[0][1]
        assert added["type"] == "response.output_item.added" and added["output_index"] == index
        assert names[-1] == ("response.output_item.done" if beta else "conversation.item.done")
        assert names.count("response.output_item.done") == 1
        assert names[1] == ("conversation.item.created" if beta else "conversation.item.added")
        if item["type"] == "function_call":
            assert added["item"] == {
                "id": item["id"], "object": "realtime.item", "type": "function_call", "status": "in_progress",
                "call_id": item["call_id"], "name": item["name"], "arguments": "",
            }  # fmt: skip
            deltas = [e for _, e in mine if e["type"] == "response.function_call_arguments.delta"]
            assert deltas and all(
                e["call_id"] == item["call_id"]
                and e["output_index"] == index
                and e["response_id"] == final["id"]
                for e in deltas
            )
            if item["status"] == "completed":
                [args_done] = [e for _, e in mine if e["type"] == "response.function_call_arguments.done"]
                assert args_done["name"] == item["name"] and args_done["call_id"] == item["call_id"]
                assert args_done["arguments"] == item["arguments"] and args_done["output_index"] == index
            assert "".join(e["delta"] for e in deltas) == item["arguments"]
            assert item["call_id"].startswith("chatcmpl-tool-")
        else:
            delta_kind = "response.text.delta" if beta else "response.output_text.delta"
            text = "".join(e["delta"] for _, e in mine if e["type"] == delta_kind)
            assert text == item["content"][0]["text"]


def rendered(
    server: WSServer, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[int]:
    state = server.app.state
    prompt = state.renderer.render(messages, add_generation_prompt=True, tools=tools).prompt
    return state.tokenizer.encode(prompt, add_special_tokens=False)


def chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {k: tool[k] for k in ("name", "description", "parameters")}}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[WSServer]:
    async with tool_server(tmp_path) as s:
        yield s


async def test_auto_call_after_text(server) -> None:
    async with realtime(server) as c:
        assert (await update(c, tools=[WEATHER]))["session"]["tools"] == [WEATHER]
        final, events = await turn(c, "TEXT-CALL")
    check_events(events, final)
    assert final["status"] == "completed"
    assert shape(final) == [
        ("message", "Let me check.", "completed"),
        ("function_call", "get_weather", {"city": "Paris"}, "completed"),
    ]
    assert not any("tool_call>" in json.dumps(e) for e in events[1:] if "delta" in e)  # no markup leaks


async def test_required_and_named(server) -> None:
    sent = record_requests(server)
    async with realtime(server) as c:
        await update(c, tools=[WEATHER], tool_choice="required")
        required, events = await turn(c, "REQUIRED")
        check_events(events, required)
        assert shape(required) == [("function_call", "get_weather", {"city": "Oslo"}, "completed")]
        # per-response override of the session's choice
        named, events = await turn(c, "NAMED", tool_choice={"type": "function", "name": "get_weather"})
        check_events(events, named)
        assert shape(named) == [("function_call", "get_weather", {"city": "Rome"}, "completed")]
        await turn(c, "PLAIN", tool_choice="auto")
    # the grammars the engine was given: a list of calls, then get_weather's (closed) parameters, then none
    required_schema, named_schema, auto_schema = (schema_sent(r) for r in sent)
    assert required_schema["type"] == "array"
    assert required_schema["items"]["anyOf"][0]["properties"]["name"] == {
        "type": "string",
        "enum": ["get_weather"],
    }
    assert named_schema == {**WEATHER["parameters"], "additionalProperties": False}
    assert auto_schema is None
    # hermes' markers may be special tokens: auto mode keeps them in the text (vLLM's adjust_request)
    assert [r["params"].skip_special_tokens for r in sent] == [True, True, False]


async def test_text_only_and_tool_choice_none(server) -> None:
    async with realtime(server) as c:
        await update(c, tools=[WEATHER])
        final, events = await turn(c, "PLAIN")
        check_events(events, final)
        assert shape(final) == [("message", "Just text, no call.", "completed")]
        assert not any(e["type"].startswith("response.function_call") for e in events)
        # "none": the model's markup is plain text (vLLM's rule), the tools still reach the template
        final, events = await turn(c, "TEXT-CALL", tool_choice="none")
        check_events(events, final)
        assert shape(final) == [("message", "Let me check." + CALL, "completed")]
    state = server.app.state
    assert "[TOOLS get_weather]" in state.tokenizer.decode(server.mock.core.script.prompts[-1])


async def test_function_call_output_round_trip(server) -> None:
    """The response's call stays in the conversation; the client's output joins it; the next prompt
    renders them as an assistant message with tool_calls and a tool message."""
    async with realtime(server) as c:
        await update(c, tools=[WEATHER], instructions="Use tools.")
        first, _ = await turn(c, "TEXT-CALL")
        call = first["output"][1]
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "AFTER-TOOL 21C"}
        await c.send({"type": "conversation.item.create", "item": output})
        added, _ = await c.until("conversation.item.done")
        assert added["item"]["type"] == "function_call_output" and added["item"]["output"] == "AFTER-TOOL 21C"
        assert added["previous_item_id"] == call["id"]
        await c.send({"type": "response.create"})
        done, events = await c.until("response.done")
    second = done["response"]
    check_events(events, second)
    assert shape(second) == [("message", "It is sunny.", "completed")]
    expected = rendered(
        server,
        [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "TEXT-CALL"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": call["call_id"],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call["call_id"], "content": "AFTER-TOOL 21C"},
        ],
        [chat_tool(WEATHER)],
    )
    prompt = server.mock.core.script.prompts[-1]
    assert prompt == expected
    text = server.app.state.tokenizer.decode(prompt)
    assert f'Let me check.[CALL {call["call_id"]} get_weather {{"city": "Paris"}}]' in text
    assert f"<|tool|>[{call['call_id']}]AFTER-TOOL 21C" in text  # trim_blocks eats the newline


async def test_client_function_call_items(server) -> None:
    """A client's function_call and function_call_output items, also as a response's own input."""
    call = {
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Oslo"}',
    }
    output = {"type": "function_call_output", "call_id": "call_1", "output": "AFTER-TOOL snow"}
    async with realtime(server) as c:
        await update(c, tools=[WEATHER])
        for item in (user("weather?"), call, output):
            await c.send({"type": "conversation.item.create", "item": item})
            added, _ = await c.until("conversation.item.done")
            if item is call:
                assert (
                    added["item"]["arguments"] == call["arguments"] and added["item"]["status"] == "completed"
                )
        await c.send({"type": "response.create"})
        done, _ = await c.until("response.done")
        assert shape(done["response"]) == [("message", "It is sunny.", "completed")]
        # out of band, the same items given as input
        oob = {"conversation": "none", "input": [user("weather?"), call, output]}
        await c.send({"type": "response.create", "response": oob})
        await c.until("response.done")
        bad = {"type": "function_call", "name": "get_weather", "arguments": "{}"}
        await c.send({"type": "conversation.item.create", "item": bad})
        error, _ = await c.until("error")
        assert error["error"]["param"] == "item.call_id"
    function = {"name": "get_weather", "arguments": call["arguments"]}
    call_message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": function}],
    }
    expected = rendered(
        server,
        [
            {"role": "user", "content": "weather?"},
            call_message,
            {"role": "tool", "tool_call_id": "call_1", "content": "AFTER-TOOL snow"},
        ],
        [chat_tool(WEATHER)],
    )
    assert server.mock.core.script.prompts[-2:] == [expected, expected]


async def test_cancel_mid_call_aborts_the_engine_request(tmp_path: Path) -> None:
    async with tool_server(tmp_path, step_ms=10) as server:
        async with realtime(server) as c:
            await update(c, tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"})
            await c.send({"type": "conversation.item.create", "item": user("NAMED-LONG")})
            await c.until("conversation.item.done")
            await c.send({"type": "response.create"})
            _, before = await c.until("response.function_call_arguments.delta")
            await c.send({"type": "response.cancel"})
            done, after = await c.until("response.done")
            final = done["response"]
            assert final["status"] == "cancelled"
            [item] = final["output"]
            assert item["type"] == "function_call" and item["status"] == "incomplete"
            # what was generated before the cancel: a proper prefix of the scripted arguments
            assert item["arguments"] and SCRIPT["NAMED-LONG"].startswith(item["arguments"])
            assert len(item["arguments"]) < len(SCRIPT["NAMED-LONG"])
            # a cut call is not a call: no arguments.done
            assert not any(e["type"] == "response.function_call_arguments.done" for e in before + after)
            assert [e["type"] for e in after][-2:] == ["response.output_item.done", "conversation.item.done"]
            await c.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
            retrieved, _ = await c.until("conversation.item.retrieved")
            assert retrieved["item"]["status"] == "incomplete"
        await server.settle()
        assert [server.ends()[rid] for rid in server.adds()] == [["abort"]]
        server.assert_every_request_ended_once()


async def test_named_call_cut_by_max_output_tokens_is_incomplete(server) -> None:
    async with realtime(server) as c:
        choice = {"type": "function", "name": "get_weather"}
        final, events = await turn(c, "NAMED-LONG", tools=[WEATHER], tool_choice=choice, max_output_tokens=6)
    assert final["status"] == "incomplete" and final["status_details"]["reason"] == "max_output_tokens"
    [item] = final["output"]
    assert item["type"] == "function_call" and item["status"] == "incomplete"
    assert SCRIPT["NAMED-LONG"].startswith(item["arguments"]) and item["arguments"]
    assert not any(e["type"] == "response.function_call_arguments.done" for e in events)
    check_events(events, final)


async def test_bad_tools_are_error_events_and_nothing_reaches_the_engine(tmp_path: Path) -> None:
    async with tool_server(tmp_path) as server:
        async with realtime(server) as c:
            mcp = await update(c, tools=[{"type": "mcp", "server_label": "x"}])
            assert mcp["type"] == "error" and "'mcp'" in mcp["error"]["message"]
            assert mcp["error"]["param"] == "session.tools[0].type"
            no_tools = await update(c, tool_choice="required")
            assert no_tools["error"]["message"] == "When using `tool_choice`, `tools` must be set."
            other = await update(c, tools=[WEATHER], tool_choice={"type": "function", "name": "nope"})
            assert "does not match any of the specified `tools`" in other["error"]["message"]
            unnamed = await update(c, tools=[{"type": "function", "description": "x"}])
            assert unnamed["type"] == "error" and unnamed["error"]["param"] == "session.tools[0].name"
            bad_choice = await update(c, tools=[WEATHER], tool_choice="sometimes")
            assert bad_choice["error"]["param"] == "session.tool_choice"
            # an update refused as a whole leaves the session as it was
            unchanged = await update(c, instructions="x")
            assert unchanged["session"]["tools"] == [] and unchanged["session"]["tool_choice"] == "auto"

            await c.send({"type": "conversation.item.create", "item": user("PLAIN")})
            await c.until("conversation.item.done")
            await c.send({"type": "response.create", "event_id": "e1",
                          "response": {"tools": [WEATHER], "tool_choice": "required", "temperature": 0.5,
                                       "conversation": "none", "input": [user("x")],
                                       "max_output_tokens": 5, "tools_extra": 1}})  # fmt: skip
            ok, _ = await c.until("response.done")
            assert ok["response"]["status"] in ("completed", "incomplete")
            adds = len(server.adds())
            await c.send({"type": "response.create", "event_id": "e2",
                          "response": {"tools": [WEATHER], "tool_choice": {"type": "function"}}})  # fmt: skip
            reply = await c.recv()
            assert reply["type"] == "error" and reply["error"]["event_id"] == "e2"
            assert len(server.adds()) == adds
            # the socket stays usable
            final, _ = await turn(c, "PLAIN")
            assert shape(final) == [("message", "Just text, no call.", "completed")]

    # "auto" needs --enable-auto-tool-choice (vLLM's 400); "required" and named do not (ours)
    async with tool_server(tmp_path, frontend={}) as plain:
        async with realtime(plain) as c:
            auto = await update(c, tools=[WEATHER])
            assert auto["type"] == "error" and "--enable-auto-tool-choice" in auto["error"]["message"]
            assert (await update(c, tools=[WEATHER], tool_choice="required"))["type"] == "session.updated"
            final, _ = await turn(c, "REQUIRED")
            assert shape(final) == [("function_call", "get_weather", {"city": "Oslo"}, "completed")]
        assert plain.adds() and len(plain.adds()) == 1


async def test_beta_dialect_function_call_events(server) -> None:
    async with realtime(server, extra_headers=[(b"OpenAI-Beta", b"realtime=v1")]) as c:
        assert (await c.recv())["type"] == "conversation.created"
        await update(c, tools=[WEATHER])
        await c.send({"type": "conversation.item.create", "item": user("TEXT-CALL")})
        await c.until("conversation.item.created")
        await c.send({"type": "response.create"})
        done, events = await c.until("response.done")
    final = done["response"]
    check_events(events, final, beta=True)
    assert [i[0] for i in shape(final)] == ["message", "function_call"]
    assert not any(e["type"].startswith("conversation.item.done") for e in events)


async def test_reasoning_is_in_no_event(tmp_path: Path) -> None:
    frontend = {**HERMES, "reasoning_parser": "qwen3"}
    async with tool_server(tmp_path, frontend=frontend) as server:
        sent = record_requests(server)
        async with realtime(server) as c:
            await update(c, tools=[WEATHER])
            final, events = await turn(c, "THINK-CALL")
            check_events(events, final)
            # the reasoning and the blank text after </think> are not an item
            assert shape(final) == [("function_call", "get_weather", {"city": "Paris"}, "completed")]
            assert not any("Need data" in json.dumps(e) for e in events)
            await c.send({"type": "response.create", "response": {"tools": []}})
            plain, events = await c.until("response.done")
            assert not any("Need data" in json.dumps(e) for e in events)
        # the engine is told where reasoning stands (the prompt opened no <think>: it has not ended)
        assert [r["reasoning_ended"] for r in sent] == [False, False]
        assert all(r["reasoning_parser_kwargs"] == {"chat_template_kwargs": {}} for r in sent)


async def test_sdk_reads_function_call_events(server) -> None:
    """The unmodified openai SDK (GA) parses every event of a response with a call."""
    from openai import OpenAI

    def run() -> list[Any]:
        client = OpenAI(
            api_key="unused", base_url=f"{server.http_url}/v1", websocket_base_url=f"{server.ws_url}/v1"
        )
        with client.realtime.connect(model="tiny-llama") as conn:
            conn.session.update(session={"type": "realtime", "tools": [WEATHER], "tool_choice": "auto"})
            conn.conversation.item.create(item=user("TEXT-CALL"))
            conn.response.create()
            events = []
            for event in conn:
                events.append(event)
                if event.type == "response.done":
                    return events
        raise AssertionError("closed early")

    events = await trio.to_thread.run_sync(run)
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.name == "get_weather" and json.loads(done.arguments) == {"city": "Paris"}
    final = events[-1].response
    assert [o.type for o in final.output] == ["message", "function_call"]
    assert final.output[1].call_id == done.call_id
