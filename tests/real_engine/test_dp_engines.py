"""Two real vLLM 0.32 CPU engine ranks behind one ``trio-front run --data-parallel-size 2``.

One engine group start (``vllm serve MODEL --headless -dp 2 -dpl 2``: two engine-core processes, ranks 0
and 1, ~1 GiB KV cache each). Completions through the openai SDK are served by both ranks (the per-rank
``engine`` label of ``vllm:request_success_total`` proves it), the ``X-data-parallel-rank`` header pins a
rank, and an out-of-range one is a 400, as vLLM answers.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from trio_front.engine.launch import EngineProcess, pick_free_port, wait_for_http_health

from .conftest import MODEL, require_engine, start_engine

pytestmark = pytest.mark.real_engine
NAME = "tiny"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    require_engine()
    engine_port, http_port = pick_free_port(), pick_free_port()
    ours = EngineProcess(
        [
            sys.executable, "-m", "trio_front.cli", "run",
            "--engine-addr", f"tcp://127.0.0.1:{engine_port}", "--model", str(MODEL),
            "--served-model-name", NAME, "--port", str(http_port), "--data-parallel-size", "2",
        ],
        env=None,
    )  # fmt: skip
    engine = None
    url = f"http://127.0.0.1:{http_port}"
    try:
        ours.start()
        engine = start_engine(engine_port, data_parallel_size=2)
        wait_for_http_health(f"{url}/health", 400, process=ours)
        yield url
    finally:
        for proc in (ours, engine):
            if proc is not None:
                proc.terminate()
        if ours.returncode not in (0, None, -15):
            print(ours.read_log(tail=3000))


def successes(url: str) -> dict[str, float]:
    """``vllm:request_success_total`` summed over finish reasons, per ``engine`` label."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    per_rank: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total{"):
            rank = re.search(r'engine="(\d+)"', line).group(1)  # type: ignore[union-attr]
            per_rank[rank] = per_rank.get(rank, 0.0) + float(line.rsplit(" ", 1)[1])
    return per_rank


def test_completions_are_served_by_both_ranks(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0, timeout=120)

    def one(i: int) -> str:
        result = client.completions.create(model=NAME, prompt=f"def f{i}(", max_tokens=16, temperature=0)
        assert result.choices[0].finish_reason == "length" and result.usage.completion_tokens == 16
        return result.choices[0].text

    before = successes(server)
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(one, range(16)))
    assert len(texts) == 16
    after = successes(server)
    spread = {rank: after.get(rank, 0) - before.get(rank, 0) for rank in ("0", "1")}
    print(f"requests per rank for 16 concurrent completions: {spread}")
    assert spread["0"] >= 1 and spread["1"] >= 1 and sum(spread.values()) == 16, spread

    # The header pins a rank; greedy output is the same whichever rank serves it (same weights, seed).
    pinned = []
    for rank in ("0", "1"):
        r = httpx.post(
            f"{server}/v1/completions",
            json={"model": NAME, "prompt": "def f0(", "max_tokens": 16, "temperature": 0},
            headers={"X-data-parallel-rank": rank},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        pinned.append(r.json()["choices"][0]["text"])
    assert pinned == [texts[0], texts[0]]
    final = successes(server)
    assert {r: final[r] - after.get(r, 0) for r in ("0", "1")} == {"0": 1, "1": 1}

    r = httpx.post(
        f"{server}/v1/completions",
        json={"model": NAME, "prompt": "x", "max_tokens": 2},
        headers={"X-data-parallel-rank": "2"},
        timeout=30,
    )
    assert r.status_code == 400 and "out of range [0, 2)" in r.json()["error"]["message"]
    assert httpx.get(f"{server}/health", timeout=10).status_code == 200
