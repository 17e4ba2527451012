"""Data-parallel engines through the HTTP API: two mock engines (ranks 0, 1) behind one in-process server.

``/health`` is 200 only once both ranks registered; n > 1 children spread over the ranks;
``X-data-parallel-rank`` pins them (400 out of range, ignored when not an integer, as vLLM); the
``engine`` label shows each rank; a rank killed mid-stream ends the streams with an error at once and
``/health`` names the dead rank.
"""

from __future__ import annotations

import httpx
import hypercorn.config
import hypercorn.trio
import trio

from trio_front.engine.mock import MockEngine, MockEngineConfig
from trio_front.server import FrontendConfig, build_app

from ..api.conftest import MODEL, engine_ipc_addr, free_port


def rank_of(engines: list[MockEngine]) -> list[int]:
    """Requests each mock received so far."""
    return [len(e.log.named("add")) for e in engines]


async def test_two_ranks_over_http() -> None:
    addr, port = engine_ipc_addr(), free_port()
    app = build_app(FrontendConfig(engine_addr=addr, model=MODEL, ping_interval=0, data_parallel_size=2))
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 1
    async with (
        trio.open_nursery() as nursery,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
    ):
        await nursery.start(hypercorn.trio.serve, app, config)
        engines = [await nursery.start(MockEngine(MockEngineConfig(addr, step_ms=2, rank=0)).run)]
        with trio.fail_after(10):
            while 0 not in app.engine.registrations:
                await trio.sleep(0.01)
        health = await http.get("/health")
        assert health.status_code == 503 and "1 of 2 ranks registered" in health.json()["detail"]
        engines.append(await nursery.start(MockEngine(MockEngineConfig(addr, step_ms=2, rank=1)).run))
        with trio.fail_after(10):
            await app.engine.wait_ready()
        assert (await http.get("/health")).status_code == 200

        body = {"model": "tiny-llama", "prompt": "hello", "max_tokens": 5, "n": 4, "temperature": 0.8}
        r = await http.post("/v1/completions", json=body)
        assert r.status_code == 200 and len(r.json()["choices"]) == 4
        assert rank_of(engines) == [2, 2]  # n > 1 children route like any request: spread

        r = await http.post("/v1/completions", json=body, headers={"X-data-parallel-rank": "1"})
        assert r.status_code == 200 and rank_of(engines) == [2, 6]
        r = await http.post("/v1/completions", json=body, headers={"X-data-parallel-rank": "2"})
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "data_parallel_rank 2 is out of range [0, 2)."
        r = await http.post("/v1/completions", json={**body, "n": 2}, headers={"X-data-parallel-rank": "x"})
        assert r.status_code == 200 and sum(rank_of(engines)) == 10  # not an integer: ignored

        metrics = (await http.get("/metrics")).text
        for rank in ("0", "1"):
            assert f'engine="{rank}"' in metrics
            assert f'trio_front_engine_rank_up{{engine="{rank}",model_name="tiny-llama"}} 1.0' in metrics

        # A rank dies (kill -9: no sentinel) while streams run on both ranks.
        stream_body = {**body, "n": 1, "max_tokens": 1500, "stream": True}
        outcomes: list[tuple[str, float]] = []
        streaming = trio.Event()
        killed_at = 0.0

        async def stream_one() -> None:
            text = ""
            async with http.stream("POST", "/v1/completions", json=stream_body) as resp:
                async for chunk in resp.aiter_text():
                    text += chunk
                    if text.count("data:") >= 5:
                        streaming.set()
            outcomes.append((text, trio.current_time() - killed_at))

        async with trio.open_nursery() as streams:
            for _ in range(4):
                streams.start_soon(stream_one)
            with trio.fail_after(10):
                await streaming.wait()
                print(
                    "DBG",
                    app.engine.balancer.counts,
                    app.engine.balancer.inflight,
                    [len(e.live_request_ids) for e in engines],
                )
                while min(len(e.live_request_ids) for e in engines) < 2:
                    await trio.sleep(0.01)
            killed_at = trio.current_time()
            engines[1].die(sentinel=False)
        assert len(outcomes) == 4
        for text, after in outcomes:
            assert after < 5, after
            assert '"error"' in text and "[DONE]" in text, text[-300:]
        with trio.fail_after(5):
            while not app.engine.dead_ranks:
                await trio.sleep(0.02)
        health = await http.get("/health")
        assert health.status_code == 503 and "dead engine rank(s): 1" in health.json()["detail"]
        metrics = (await http.get("/metrics")).text
        assert 'trio_front_engine_rank_up{engine="1",model_name="tiny-llama"} 0.0' in metrics
        assert 'trio_front_engine_rank_up{engine="0",model_name="tiny-llama"} 1.0' in metrics
        nursery.cancel_scope.cancel()
