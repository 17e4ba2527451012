"""/v1/messages failures in Anthropic's shape (the SDK's exception types), keys (``x-api-key``), ping
keep-alives, ``thinking`` handling and a client leaving mid-stream."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest
import trio

from trio_front.api import chat

from ..conftest import Server, start_server
from .conftest import WEATHER, sdk

USER = [{"role": "user", "content": "hi"}]


async def raw(server: Server, body: Any, path: str = "/v1/messages", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        if isinstance(body, bytes):
            return await client.post(path, content=body, headers=headers)
        return await client.post(path, json=body, headers=headers)


def anthropic_error(r: httpx.Response, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    data = r.json()
    assert (
        data["type"] == "error"
        and data["error"]["type"] == kind
        and set(data["error"]) == {"type", "message"}
    )
    return data["error"]["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "tiny-llama", "messages": USER}, "max_tokens"),
        ({"model": "tiny-llama", "messages": USER, "max_tokens": 0}, "max_tokens"),
        (
            {
                "model": "tiny-llama",
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}],
                    }
                ],
            },
            "image content blocks are not supported",
        ),
        (
            {"model": "tiny-llama", "max_tokens": 10, "messages": USER, "tool_choice": {"type": "maybe"}},
            "tool_choice",
        ),
        (
            {
                "model": "tiny-llama",
                "max_tokens": 10,
                "messages": USER,
                "tools": [WEATHER],
                "tool_choice": {"type": "tool"},
            },
            "tool_choice.name",
        ),
        ({"model": "tiny-llama", "max_tokens": 10, "messages": USER, "service_tier": "auto"}, "service_tier"),
        ({"model": "tiny-llama", "max_tokens": 10, "messages": USER, "watermarking": True}, "watermarking"),
        (
            {
                "model": "tiny-llama",
                "max_tokens": 2000,
                "messages": USER,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            "thinking.budget_tokens",
        ),
        (
            {
                "model": "tiny-llama",
                "max_tokens": 1000,
                "messages": USER,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            "less than max_tokens",
        ),
    ],
)
async def test_invalid_requests_are_400_invalid_request_error(
    msg_server: Server, body: dict, needle: str
) -> None:
    message = anthropic_error(await raw(msg_server, body), 400, "invalid_request_error")
    assert needle in message
    assert msg_server.mock.log.named("add") == []


async def test_sdk_raises_its_own_exceptions(msg_server: Server) -> None:
    client = sdk(msg_server)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(
            model="tiny-llama", max_tokens=10, messages=USER, tool_choice={"type": "any"}, tools=[]
        )
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(model="nope", max_tokens=10, messages=USER)


async def test_malformed_json_and_a_non_object(msg_server: Server) -> None:
    assert "malformed JSON" in anthropic_error(await raw(msg_server, b"{nope"), 400, "invalid_request_error")
    anthropic_error(await raw(msg_server, [1, 2], "/v1/messages/count_tokens"), 400, "invalid_request_error")


async def test_keys_bearer_and_x_api_key() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend={"api_keys": ("k1",)})
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await sdk(server, api_key="wrong").messages.create(
                model="tiny-llama", max_tokens=2, messages=USER
            )
        assert denied.value.body["error"]["type"] == "authentication_error"
        message = await sdk(server, api_key="k1").messages.create(
            model="tiny-llama", max_tokens=2, messages=USER
        )
        assert message.usage.output_tokens == 2
        body = {"model": "tiny-llama", "max_tokens": 2, "messages": USER}
        anthropic_error(await raw(server, body), 401, "authentication_error")
        assert (await raw(server, body, authorization="Bearer k1")).status_code == 200
        r = await raw(
            server,
            {"model": "tiny-llama", "messages": USER},
            "/v1/messages/count_tokens",
            **{"x-api-key": "k1"},
        )
        assert r.status_code == 200 and r.json()["input_tokens"] > 0
        async with httpx.AsyncClient(base_url=server.url) as client:  # elsewhere only Authorization, as vLLM
            r = await client.get("/v1/models", headers={"x-api-key": "k1"})
            assert r.status_code == 401 and r.json()["error"]["type"] == "AuthenticationError"
        nursery.cancel_scope.cancel()


async def test_ping_keep_alives_while_nothing_comes() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, step_ms=30, keep_alive_interval=0.01)
        body = {"model": "tiny-llama", "max_tokens": 3, "messages": USER, "stream": True}
        r = await raw(server, body)
        assert 'event: ping\ndata: {"type":"ping"}\n\n' in r.text
        assert r.text.rstrip().endswith('event: message_stop\ndata: {"type":"message_stop"}')
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("msg_server", "expected"),
    [({}, "auto"), ({"anthropic_disabled_thinking_effort": "medium"}, "medium")],
    indirect=["msg_server"],
)
async def test_disabled_thinking_sets_the_configured_effort(
    msg_server: Server, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []
    prepare = chat.prepare

    async def spy(state, req, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(req.reasoning_effort)
        return await prepare(state, req, **kwargs)

    monkeypatch.setattr(chat, "prepare", spy)
    body = {"model": "tiny-llama", "max_tokens": 2, "messages": USER, "thinking": {"type": "disabled"},
            "output_config": {"effort": "high"}}  # fmt: skip
    assert (await raw(msg_server, body)).status_code == 200
    assert (await raw(msg_server, {**body, "thinking": {"type": "adaptive"}})).status_code == 200
    # "auto": the tiny model's template ignores reasoning_effort, so "none" renders like an effort: "low"
    assert seen == ["low" if expected == "auto" else expected, "high"]


async def test_disconnect_mid_stream_aborts_the_engine_request(msg_server: Server) -> None:
    body = {"model": "tiny-llama", "max_tokens": 1000, "messages": USER, "stream": True}
    async with httpx.AsyncClient(base_url=msg_server.url, timeout=30) as client:
        async with client.stream("POST", "/v1/messages", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("event: content_block_delta"):
                    break
    await msg_server.settle()
    adds, aborts = msg_server.adds(), msg_server.aborts()
    assert len(adds) == 1 and aborts == adds
    finished = msg_server.mock.log.named("finish")
    assert finished == [] or all(f["request_id"] != adds[0] for f in finished)
