"""The Responses API against the mock engine: POST (JSON and SSE, with the official SDK too) and
WebSocket mode (``client.responses.connect()``, previous_response_id, stream_id lanes)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import trio
from openai import OpenAI

from trio_front.api.ws import WSOptions
from trio_front.engine.mock import eos_seed, mock_token

from .ws_fixtures import Client, WSServer, open_client, running_server

MODEL = "tiny-llama"
EVENT_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
CLOSING = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def expected_text(server: WSServer, messages: list[dict[str, str]], k: int) -> str:
    state = server.app.state
    prompt = state.renderer.render(messages, add_generation_prompt=True).prompt
    ids = state.tokenizer.encode(prompt, add_special_tokens=False)
    return state.tokenizer.decode([mock_token(ids, i, 4096) for i in range(k)])


def sdk(server: WSServer) -> OpenAI:
    return OpenAI(
        api_key="unused", base_url=f"{server.http_url}/v1", websocket_base_url=f"{server.ws_url}/v1"
    )


async def post(server: WSServer, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as client:
        return await client.post("/v1/responses", json=body)


async def test_post_json_response() -> None:
    async with running_server() as server:
        body = {"model": MODEL, "input": "hello", "instructions": "Be brief.", "seed": eos_seed(5),
                "metadata": {"a": "b"}}  # fmt: skip
        r = await post(server, body)
        assert r.status_code == 200, r.text
        resp = r.json()
        assert resp["object"] == "response" and resp["id"].startswith("resp_")
        assert resp["status"] == "completed" and resp["metadata"] == {"a": "b"}
        message = resp["output"][0]
        assert (
            message["type"] == "message"
            and message["role"] == "assistant"
            and message["status"] == "completed"
        )
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
        assert message["content"][0]["text"] == expected_text(server, messages, 5)
        usage = resp["usage"]
        assert usage["output_tokens"] == 6 and usage["total_tokens"] == usage["input_tokens"] + 6


def sdk_stream(server: WSServer) -> dict[str, Any]:
    client = sdk(server)
    events = list(
        client.responses.create(
            model=MODEL,
            input=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes?"},
                   {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}],
            stream=True,
            extra_body={"seed": eos_seed(4)},
        )
    )  # fmt: skip
    plain = client.responses.create(model=MODEL, input="plain", max_output_tokens=3)
    return {"events": events, "plain": plain}


async def test_sdk_streaming_and_plain() -> None:
    async with running_server() as server:
        out = await trio.to_thread.run_sync(sdk_stream, server)
        events = out["events"]
        kinds = [e.type for e in events]
        assert kinds[:4] == EVENT_ORDER and kinds[-4:] == [*CLOSING, "response.completed"]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        messages = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yes?"},
            {"role": "user", "content": "go"},
        ]
        assert text == expected_text(server, messages, 4) == events[-1].response.output_text
        plain = out["plain"]
        assert plain.status == "incomplete" and plain.incomplete_details.reason == "max_output_tokens"
        assert plain.output_text == expected_text(server, [{"role": "user", "content": "plain"}], 3)


async def test_sse_framing_and_keep_alive() -> None:
    async with running_server(step_ms=150, keep_alive_interval=0.05) as server:
        raw = b""
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as client:
            body = {"model": MODEL, "input": "x", "max_output_tokens": 2, "stream": True}
            async with client.stream("POST", "/v1/responses", json=body) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                async for chunk in r.aiter_bytes():
                    raw += chunk
        assert b": keep-alive\n\n" in raw
        frames = [f for f in raw.split(b"\n\n") if f.startswith(b"event: ")]
        names = [f.split(b"\n")[0][7:].decode() for f in frames]
        assert names[-1] == "response.incomplete" and b"[DONE]" not in raw
        for frame in frames:
            name, data = frame.split(b"\n", 1)
            assert orjson.loads(data[6:])["type"] == name[7:].decode()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "x", "tools": [{"type": "function", "name": "f"}]}, "tool_choice"),  # no auto parser
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({"input": [{"type": "item_reference", "id": "c"}]}, "input[0]"),
        ({"input": [{"type": "function_call", "call_id": "c"}]}, "input[0].name"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input[0].content",
        ),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "max_output_tokens": 10**6}, "max_output_tokens"),
        ({"input": "x", "temperature": 5}, "temperature"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format"),
        ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"input": []}, "input"),
        ({}, "input"),
    ],
)
async def test_post_validation(body: dict[str, Any], param: str) -> None:
    async with running_server() as server:
        r = await post(server, body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
        r = await post(server, {"model": "gpt-nothing", "input": "x"})
        assert r.status_code == 404


async def test_post_stream_disconnect_aborts() -> None:
    async with running_server() as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as client:
            body = {"model": MODEL, "input": "x", "stream": True}
            async with client.stream("POST", "/v1/responses", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("event: response.output_text.delta"):
                        break
        await server.settle()
        assert [server.ends()[rid] for rid in server.adds()] == [["abort"]]


def sdk_websocket(server: WSServer) -> dict[str, Any]:
    """Runs in a worker thread: responses.connect(), two chained turns, then an unknown previous id."""
    out: dict[str, Any] = {}

    def until_done(conn) -> list[Any]:  # type: ignore[no-untyped-def]
        events = []
        for event in conn:
            events.append(event)
            if event.type in ("response.completed", "response.incomplete", "response.failed", "error"):
                return events
        raise AssertionError("socket closed")

    with sdk(server).responses.connect() as conn:
        conn.send({"type": "response.create", "model": MODEL, "input": "first", "seed": eos_seed(3)})
        out["turn1"] = until_done(conn)
        first_id = out["turn1"][-1].response.id
        conn.send({"type": "response.create", "model": MODEL, "previous_response_id": first_id,
                   "input": [{"role": "user", "content": "second"}], "seed": eos_seed(2)})  # fmt: skip
        out["turn2"] = until_done(conn)
        conn.send({"type": "response.create", "model": MODEL, "previous_response_id": "resp_unknown",
                   "input": "x"})  # fmt: skip
        out["missing"] = until_done(conn)
    return out


async def test_sdk_websocket_mode_with_previous_response_id() -> None:
    async with running_server() as server:
        out = await trio.to_thread.run_sync(sdk_websocket, server)
        turn1, turn2 = out["turn1"], out["turn2"]
        assert [e.type for e in turn1][:4] == EVENT_ORDER and turn1[-1].type == "response.completed"
        assert [e.sequence_number for e in turn2] == list(range(len(turn2)))
        text1 = turn1[-1].response.output_text
        assert text1 == expected_text(server, [{"role": "user", "content": "first"}], 3)
        assert turn2[-1].response.previous_response_id == turn1[-1].response.id
        history = [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": text1},
            {"role": "user", "content": "second"},
        ]
        assert turn2[-1].response.output_text == expected_text(server, history, 2)
        missing = out["missing"][-1]
        assert missing.type == "error" and missing.error.code == "previous_response_not_found"
        await server.settle()
        server.assert_every_request_ended_once()


async def test_websocket_stream_ids_run_in_parallel() -> None:
    async with running_server(step_ms=5) as server:
        async with open_client(f"{server.ws_url}/v1/responses") as conn:
            c = Client(conn)
            for lane in ("a", "b"):
                await c.send({"type": "response.create", "model": MODEL, "input": lane, "stream_id": lane,
                              "max_output_tokens": 20})  # fmt: skip
            await c.send({"type": "response.create", "model": MODEL, "input": "again", "stream_id": "a"})
            events: list[dict[str, Any]] = []
            finished: set[str] = set()
            with trio.fail_after(10):
                while finished != {"a", "b"}:
                    event = await c.recv()
                    events.append(event)
                    if event["type"] == "response.incomplete":
                        finished.add(event["stream_id"])
            busy = [e for e in events if e["type"] == "error"]
            assert len(busy) == 1 and busy[0]["error"]["code"] == "response_already_in_flight"
            assert busy[0]["stream_id"] == "a" and busy[0]["status"] == 409
            deltas = [e["stream_id"] for e in events if e["type"] == "response.output_text.delta"]
            first_b = deltas.index("b")
            assert "a" in deltas[first_b:], "the two lanes interleave"
            for lane in ("a", "b"):
                mine = [e for e in events if e.get("stream_id") == lane and e["type"] != "error"]
                assert [e["sequence_number"] for e in mine] == list(range(len(mine)))


async def test_websocket_keeps_a_bounded_number_of_responses() -> None:
    async with running_server(ws=WSOptions(max_stored_responses=2)) as server:
        async with open_client(f"{server.ws_url}/v1/responses") as conn:
            c = Client(conn)
            ids = []
            for i in range(3):
                await c.send(
                    {"type": "response.create", "model": MODEL, "input": str(i), "max_output_tokens": 2}
                )
                done, _ = await c.until("response.incomplete")
                ids.append(done["response"]["id"])
            await c.send(
                {"type": "response.create", "model": MODEL, "previous_response_id": ids[0], "input": "x"}
            )
            error, _ = await c.until("error")
            assert error["error"]["code"] == "previous_response_not_found"
            continued = {"previous_response_id": ids[2], "input": "x", "max_output_tokens": 2}
            await c.send({"type": "response.create", "model": MODEL, **continued})
            await c.until("response.incomplete")
            # warm-up turn: no generation, but a context to continue from
            await c.send({"type": "response.create", "model": MODEL, "input": "ctx", "generate": False})
            warm, seen = await c.until("response.completed")
            assert warm["response"]["output"] == [] and [e["type"] for e in seen] == ["response.created"]
            continued = {
                "previous_response_id": warm["response"]["id"],
                "input": "go",
                "max_output_tokens": 2,
            }
            await c.send({"type": "response.create", "model": MODEL, **continued})
            await c.until("response.incomplete")
            await c.send("{broken")
            assert (await c.recv())["error"]["code"] == "invalid_json"
            await c.send({"type": "response.cancel"})
            assert (await c.recv())["error"]["code"] == "unknown_event"
        # The turn after the warm-up saw the warm-up's input.
        state = server.app.state
        both = [{"role": "user", "content": "ctx"}, {"role": "user", "content": "go"}]
        prompt = state.renderer.render(both, add_generation_prompt=True).prompt
        expected = len(state.tokenizer.encode(prompt, add_special_tokens=False))
        assert server.mock.log.named("add")[-1]["prompt_tokens"] == expected
