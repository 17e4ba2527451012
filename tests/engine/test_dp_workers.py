"""``trio-front run --workers 2 --data-parallel-size 2``: two API processes, two mock engine ranks (separate
processes); every worker talks to every rank, so requests arriving at either worker reach both ranks, and
each rank's ``engine`` label adds up across the workers."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import trio

from trio_front.engine.launch import pick_free_port, wait_for_http_health

from ..api.conftest import MODEL
from ..metrics.promtext import samples, value

REQUESTS = 40


def _mock(engine_port: int, rank: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "trio_front.cli", "mock-engine", "--engine-addr",
         f"tcp://127.0.0.1:{engine_port}", "--step-ms", "2", "--rank", str(rank)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def test_two_workers_two_ranks() -> None:
    engine_port, http_port = pick_free_port(), pick_free_port()
    url = f"http://127.0.0.1:{http_port}"
    front = subprocess.Popen(
        [sys.executable, "-m", "trio_front.cli", "run", "--workers", "2", "--data-parallel-size", "2",
         "--engine-addr", f"tcp://127.0.0.1:{engine_port}", "--model", str(MODEL), "--port", str(http_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    mocks = [_mock(engine_port, rank) for rank in (0, 1)]
    try:
        await trio.to_thread.run_sync(wait_for_http_health, f"{url}/health", 60)

        async def one(i: int) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=20) as client:  # a fresh connection each
                r = await client.post("/v1/completions", json={"prompt": [1, 7, i + 4], "max_tokens": 4})
                assert r.status_code == 200, r.text

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(REQUESTS):
                    nursery.start_soon(one, i)
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            page = samples((await client.get("/metrics")).text)
        per_rank = [value(page, "vllm:request_success_total", engine=str(r)) for r in (0, 1)]
        print(f"requests per rank via 2 workers: {per_rank}")
        assert sum(per_rank) == REQUESTS and min(per_rank) >= REQUESTS // 4, per_rank
        assert value(page, "trio_front_engine_rank_up", engine="1") == 1
        assert value(page, "trio_front_requests_open") == 0
    finally:
        front.send_signal(signal.SIGTERM)
        try:
            front.wait(timeout=20)
        finally:
            stderr = front.stderr.read().decode() if front.stderr else ""
        for mock in mocks:
            mock.terminate()
            mock.wait(timeout=10)
    assert front.returncode == 0, stderr[-3000:]
