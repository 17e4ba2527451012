"""``--workers 2``: every scrape, whichever worker answers it, shows both workers' traffic; the supervisor's
metrics directory is gone after it exits."""

from __future__ import annotations

import glob
import signal
import subprocess
import sys
import tempfile

import httpx
import trio

from trio_front.engine.launch import pick_free_port, wait_for_http_health

from ..api.conftest import MODEL
from .promtext import samples, value

REQUESTS = 40


def metric_dirs() -> set[str]:
    return set(glob.glob(f"{tempfile.gettempdir()}/trio-front-metrics-*"))


async def test_two_workers_metrics_add_up() -> None:
    dirs_before = metric_dirs()
    engine_port, http_port = pick_free_port(), pick_free_port()
    url = f"http://127.0.0.1:{http_port}"
    front = subprocess.Popen(
        [sys.executable, "-m", "trio_front.cli", "run", "--workers", "2", "--engine-addr",
         f"tcp://127.0.0.1:{engine_port}", "--model", str(MODEL), "--port", str(http_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    mock = subprocess.Popen(
        [sys.executable, "-m", "trio_front.cli", "mock-engine", "--engine-addr",
         f"tcp://127.0.0.1:{engine_port}", "--step-ms", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await trio.to_thread.run_sync(wait_for_http_health, f"{url}/health", 60)
        assert len(metric_dirs() - dirs_before) == 1, "the supervisor made its metrics directory"

        async def one(i: int) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=20) as client:
                r = await client.post("/v1/completions", json={"prompt": [1, 7, i + 4], "max_tokens": 4})
                assert r.status_code == 200, r.text

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(REQUESTS):
                    nursery.start_soon(one, i)
        # Fresh connections: the kernel spreads them over both workers; each must report the sum.
        for _ in range(8):
            async with httpx.AsyncClient(base_url=url, timeout=20) as client:
                page = samples((await client.get("/metrics")).text)
            assert value(page, "vllm:request_success_total", finished_reason="length") == REQUESTS
            assert value(page, "vllm:generation_tokens_total") == 4 * REQUESTS
            assert value(page, "vllm:prompt_tokens_total") == 3 * REQUESTS
            assert value(page, "vllm:e2e_request_latency_seconds_count") == REQUESTS
            assert value(page, "vllm:request_params_n_count") == REQUESTS
            assert value(page, "trio_front_requests_submitted_total") == REQUESTS
            assert value(page, "trio_front_requests_open") == 0
            # Scheduler stats reach one worker; a gauge, not a sum over workers.
            assert value(page, "vllm:num_requests_running") == 0
    finally:
        front.send_signal(signal.SIGTERM)
        try:
            front.wait(timeout=20)
        finally:
            stderr = front.stderr.read().decode() if front.stderr else ""
        mock.terminate()
        mock.wait(timeout=10)
    assert front.returncode == 0, stderr[-3000:]
    assert metric_dirs() - dirs_before == set(), "the supervisor removed its metrics directory"
