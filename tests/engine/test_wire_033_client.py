"""A vLLM 0.33 engine behind trio-front's engine client and HTTP API (the mock's 0.33 mode): the client picks
0.33's layout from the registration, and 0.33's ``EngineCoreOutput.error`` reaches the stream layer, which
answers as vLLM 0.33's server does (``engine_paused`` is a 503 with the engine's message).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio

from tests.api.conftest import start_server
from tests.engine.raw_frontend import unique_ipc_addr
from trio_front.engine import wire
from trio_front.engine.client import EngineClient, LinkConfig
from trio_front.engine.mock import MockEngine, MockEngineConfig, mock_token, run_mock_engine

PAUSED = "Generation is paused. Please retry after it resumes."


@asynccontextmanager
async def linked(version: str) -> AsyncIterator[tuple[MockEngine, EngineClient]]:
    addr = unique_ipc_addr()
    async with trio.open_nursery() as nursery:
        engine = await nursery.start(run_mock_engine, MockEngineConfig(addr, step_ms=1, vllm_version=version))
        client = EngineClient(LinkConfig(addr, ping_interval=0))
        await nursery.start(client.run)
        with trio.fail_after(10):
            await client.wait_ready()
        yield engine, client
        nursery.cancel_scope.cancel()


async def run_one(
    client: EngineClient, prompt: list[int]
) -> tuple[list[int], wire.FinishReason | None, object]:
    tokens: list[int] = []
    last = None
    with trio.fail_after(10):
        async with client.generate(prompt, wire.SamplingParams(max_tokens=3), id_prefix="t") as stream:
            async for delta in stream:
                tokens += delta.token_ids
                last = delta
    assert last is not None
    return tokens, last.finish_reason, last.error


async def test_client_speaks_each_version_and_sees_033_errors() -> None:
    for version, layout in (("0.32.0", wire.WireVersion.V0_32), ("0.33.0", wire.WireVersion.V0_33)):
        async with linked(version) as (engine, client):
            assert client.wire_version is layout
            tokens, reason, error = await run_one(client, [5, 6])
            assert tokens == [mock_token([5, 6], i, engine.config.vocab) for i in range(3)]
            assert (reason, error) == (wire.FinishReason.LENGTH, None)
            if layout is wire.WireVersion.V0_33:
                engine.core._u_pause_generation(0, 0, "abort")
                tokens, reason, error = await run_one(client, [7])
                assert tokens == [] and reason is wire.FinishReason.ERROR
                assert error == wire.RequestError("engine_paused", PAUSED, retryable=True)


async def test_http_answers_engine_paused_as_vllm_033() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, vllm_version="0.33.0")
        server.mock.core._u_pause_generation(0, 0, "abort")
        body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 4}
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            whole = await http.post("/v1/completions", json=body)
            assert whole.status_code == 503 and whole.json()["error"]["message"] == PAUSED
            chat = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            assert (await http.post("/v1/chat/completions", json=chat)).status_code == 503
            streamed = await http.post("/v1/completions", json={**body, "stream": True})
            assert streamed.status_code == 200 and PAUSED in streamed.text and '"code":503' in streamed.text
            server.mock.core._u_resume_scheduler(0, 0)
            after = await http.post("/v1/completions", json=body)
            assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] == 4
        nursery.cancel_scope.cancel()


async def test_beam_search_and_scale_out_answer_engine_paused_as_the_other_routes() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, vllm_version="0.33.0", frontend={"enable_scale_out": True})
        server.mock.core._u_pause_generation(0, 0, "abort")
        beam = {"model": "tiny-llama", "prompt": "hi", "use_beam_search": True, "n": 2, "max_tokens": 3}
        generate = {"token_ids": [5, 6, 7], "sampling_params": {"max_tokens": 3}}
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            whole = await http.post("/v1/completions", json=beam)
            assert whole.status_code == 503 and whole.json()["error"]["message"] == PAUSED
            chat = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
            chat_beam = {**chat, "use_beam_search": True, "n": 2, "stream": True}
            streamed = await http.post("/v1/chat/completions", json=chat_beam)  # completions do not stream it
            assert streamed.status_code == 200, streamed.text
            assert PAUSED in streamed.text and '"code":503' in streamed.text
            tokens = await http.post("/inference/v1/generate", json=generate)
            assert tokens.status_code == 503 and tokens.json()["error"]["message"] == PAUSED
            streamed = await http.post("/inference/v1/generate", json={**generate, "stream": True})
            assert streamed.status_code == 200 and PAUSED in streamed.text and '"code":503' in streamed.text
        nursery.cancel_scope.cancel()


async def test_realtime_response_fails_with_the_engines_reason() -> None:
    from tests.api.ws_fixtures import Client, open_client, start_ws_server

    async with trio.open_nursery() as nursery:
        server = await start_ws_server(nursery, vllm_version="0.33.0")
        server.mock.core._u_pause_generation(0, 0, "abort")
        async with open_client(f"{server.ws_url}/v1/realtime?model=tiny-llama") as conn:
            c = Client(conn)
            await c.until("session.created")
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
            await c.send({"type": "conversation.item.create", "item": item})
            await c.until("conversation.item.done")
            await c.send({"type": "response.create"})
            done, _ = await c.until("response.done")
            assert done["response"]["status"] == "failed"
            assert done["response"]["status_details"]["error"]["message"] == PAUSED
        nursery.cancel_scope.cancel()
