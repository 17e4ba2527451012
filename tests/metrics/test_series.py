"""vLLM's series and ours on the mock engine, one traffic shape per test (in-process server)."""

from __future__ import annotations

import httpx
import trio

from trio_front.engine.mock import eos_seed

from ..api.conftest import start_server
from .promtext import Samples, samples, value

PROMPT = [1, 17, 29, 31]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/metrics")
    assert r.status_code == 200
    return samples(r.text)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def completion(url: str, **body) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post("/v1/completions", json={"prompt": PROMPT, **body})
    assert r.status_code == 200, r.text
    return r.json()


async def test_one_request_fills_every_series_as_vllm_computes_them() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        before = await scrape(server.url)
        await completion(server.url, max_tokens=5)
        await server.settle()
        after = await scrape(server.url)
        d = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
        labels = {"model_name": server.app.state.served_model_name, "engine": "0"}
        assert d("vllm:request_success_total", finished_reason="length", **labels) == 1
        assert d("vllm:request_success_total", finished_reason="stop") == 0
        assert d("vllm:prompt_tokens_total") == len(PROMPT)
        assert d("vllm:prompt_tokens_by_source_total", source="local_compute") == len(PROMPT)
        assert d("vllm:generation_tokens_total") == 5
        assert d("vllm:request_generation_tokens_count") == 1
        assert d("vllm:request_generation_tokens_sum") == 5
        assert d("vllm:request_prompt_tokens_sum") == len(PROMPT)
        assert d("vllm:request_params_max_tokens_sum") == 5
        assert d("vllm:request_params_n_sum") == 1
        assert d("vllm:request_max_num_generation_tokens_sum") == 5
        assert d("vllm:time_to_first_token_seconds_count") == 1
        assert d("vllm:inter_token_latency_seconds_count") == 4  # every output after the first
        phases = ("e2e_request_latency", "request_queue_time", "request_prefill_time", "request_decode_time",
                  "request_inference_time", "request_time_per_output_token")  # fmt: skip
        for name in phases:
            assert d(f"vllm:{name}_seconds_count") == 1, name
        # the mock's steps are 2 ms apart: 4 inter-token gaps, each at least a step, at most generous
        assert 0.004 <= d("vllm:request_decode_time_seconds_sum") < 5
        assert d("vllm:inter_token_latency_seconds_sum") == d("vllm:request_decode_time_seconds_sum")
        assert d("vllm:prefix_cache_queries_total") == len(PROMPT)
        assert d("vllm:iteration_tokens_total_sum") == len(PROMPT) + 5
        assert value(after, "vllm:num_requests_running", **labels) == 0
        assert value(after, "vllm:kv_cache_usage_perc", **labels) == 0
        assert d("trio_front_requests_submitted_total") == d("trio_front_requests_finished_total") == 1
        assert value(after, "trio_front_requests_open") == 0
        nursery.cancel_scope.cancel()


async def test_n_eos_and_stop_strings_are_finishes_client_aborts_are_not() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        url = server.url
        before = await scrape(url)
        await completion(url, max_tokens=4, n=3)
        await completion(url, max_tokens=50, seed=eos_seed(3))  # EOS after 3 tokens: "stop"
        text = (await completion(url, max_tokens=12))["choices"][0]["text"]
        stop = text[len(text) // 2 : len(text) // 2 + 2]
        assert (await completion(url, max_tokens=400, stop=[stop]))["choices"][0]["finish_reason"] == "stop"
        await server.settle()
        mid = await scrape(url)
        d = lambda name, **labels: delta(before, mid, name, **labels)  # noqa: E731
        assert d("vllm:request_success_total", finished_reason="length") == 3 + 1
        assert d("vllm:request_success_total", finished_reason="stop") == 2
        assert d("vllm:request_success_total", finished_reason="abort") == 0
        assert d("vllm:request_params_n_count") == 4  # one per parent: n=3, then three n=1
        assert d("vllm:request_params_n_sum") == 3 + 1 + 1 + 1
        assert d("vllm:request_max_num_generation_tokens_count") == 4
        assert d("trio_front_engine_aborts_total", cause="stop_string") == 1
        # n=3 x 4 tokens, 12 for the text request; the EOS and stop-string ones at least 1 each
        assert d("vllm:request_generation_tokens_sum") >= 3 * 4 + 12 + 2
        assert d("vllm:request_generation_tokens_count") == 3 + 1 + 1 + 1

        # A client that leaves mid-stream: an abort (ours, by cause), not a vLLM finished request.
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            body = {"prompt": PROMPT, "max_tokens": 1500, "stream": True}
            async with client.stream("POST", "/v1/completions", json=body) as r:
                chunks = 0
                async for _ in r.aiter_lines():
                    chunks += 1
                    if chunks >= 6:
                        break
        await server.settle()
        after = await scrape(url)
        d = lambda name, **labels: delta(mid, after, name, **labels)  # noqa: E731
        assert d("trio_front_engine_aborts_total", cause="client_left") == 1
        assert d("trio_front_client_abort_latency_seconds_count") == 1
        assert 0 <= d("trio_front_client_abort_latency_seconds_sum") < 1
        assert d("vllm:request_success_total") == 0
        assert d("vllm:generation_tokens_total") >= 2  # its tokens still count as generated
        assert d("vllm:time_to_first_token_seconds_count") == 1
        nursery.cancel_scope.cancel()
