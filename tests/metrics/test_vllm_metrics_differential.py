"""The issue's differential: the same traffic through vLLM's own frontend and through trio-front, each on
its own mock engine, then ``/metrics`` compared series by series.

Traffic: completions and chat, streamed and not, n > 1, an EOS finish, stop strings (streamed and not),
clients leaving mid-stream. Counts must be equal; sums where they are deterministic (tokens, n,
max_tokens); the generated-token totals within a small slack, because a client that leaves (or a stop
string found a step later) lets one or two more engine steps through on either frontend (vLLM itself
varies by ±1 between identical runs, docs/vllm_features.md appendix B).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from trio_front.engine.launch import (
    EngineProcess,
    pick_free_port,
    python_frontend_command,
    wait_for_http_health,
)
from trio_front.engine.mock import eos_seed

from ..real_engine.conftest import MODEL, require_engine
from .promtext import Samples, samples, value

pytestmark = [pytest.mark.real_engine, pytest.mark.slow]

MAX_MODEL_LEN = 2048
CHAT = [{"role": "user", "content": "hi there"}]
LEAVERS = 2
STOPPERS = 2


def mock_command(engine_port: int) -> list[str]:
    addr = f"tcp://127.0.0.1:{engine_port}"
    return [sys.executable, "-m", "trio_front.cli", "mock-engine", "--engine-addr", addr,
            "--max-model-len", str(MAX_MODEL_LEN), "--step-ms", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    require_engine()
    tmp = tmp_path_factory.mktemp("metrics-differential")
    ports = {name: (pick_free_port(), pick_free_port()) for name in ("vllm", "trio")}
    vllm_front = python_frontend_command(
        MODEL, "127.0.0.1", ports["vllm"][0], "127.0.0.1", ports["vllm"][1], max_model_len=MAX_MODEL_LEN
    )
    trio_addr = f"tcp://127.0.0.1:{ports['trio'][0]}"
    trio_front = [sys.executable, "-m", "trio_front.cli", "run", "--engine-addr", trio_addr, "--model",
                  str(MODEL), "--served-model-name", "tiny", "--port", str(ports["trio"][1])]  # fmt: skip
    procs = [
        EngineProcess(mock_command(ports["vllm"][0]), log_path=tmp / "mock-vllm.log"),
        EngineProcess(vllm_front, log_path=tmp / "vllm-frontend.log"),
        EngineProcess(mock_command(ports["trio"][0]), log_path=tmp / "mock-trio.log"),
        EngineProcess(trio_front, log_path=tmp / "trio-front.log"),
    ]
    try:
        for proc in procs:
            proc.start()
        out = {}
        for name, (_, http_port) in ports.items():
            out[name] = f"http://127.0.0.1:{http_port}"
            wait_for_http_health(f"{out[name]}/health", 240)
        yield out
    finally:
        for proc in reversed(procs):
            proc.terminate(timeout=10)


def post(client: httpx.Client, path: str, body: dict) -> dict:
    r = client.post(path, json={"model": "tiny", **body})
    assert r.status_code == 200, r.text
    return r.json()


def stream(client: httpx.Client, path: str, body: dict, leave_after: int | None = None) -> None:
    with client.stream("POST", path, json={"model": "tiny", "stream": True, **body}) as r:
        assert r.status_code == 200
        lines = 0
        for line in r.iter_lines():
            lines += bool(line)
            if leave_after is not None and lines >= leave_after:
                return  # closing the response closes the connection: the client left


def traffic(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        post(client, "/v1/completions", {"prompt": "Hello there", "max_tokens": 5})
        stream(client, "/v1/completions", {"prompt": "Stream this", "max_tokens": 6})
        post(client, "/v1/chat/completions", {"messages": CHAT, "max_tokens": 4})
        stream(client, "/v1/chat/completions", {"messages": CHAT, "max_tokens": 7})
        post(client, "/v1/completions", {"prompt": "Two samples", "max_tokens": 3, "n": 2})
        stream(client, "/v1/chat/completions", {"messages": CHAT, "max_tokens": 2, "n": 3})
        post(client, "/v1/completions", {"prompt": "EOS soon", "max_tokens": 50, "seed": eos_seed(2)})
        text = post(client, "/v1/completions", {"prompt": "stop here", "max_tokens": 10})["choices"][0][
            "text"
        ]
        stop = text[len(text) // 2 : len(text) // 2 + 2]
        answer = post(client, "/v1/completions", {"prompt": "stop here", "max_tokens": 300, "stop": [stop]})
        assert answer["choices"][0]["finish_reason"] == "stop"
        stream(client, "/v1/completions", {"prompt": "stop here", "max_tokens": 300, "stop": [stop]})
        stream(client, "/v1/completions", {"prompt": "Leave early", "max_tokens": 1500}, leave_after=4)
        stream(client, "/v1/chat/completions", {"messages": CHAT, "max_tokens": 1500}, leave_after=4)


def settled(url: str) -> Samples:
    """/metrics once the counters stopped moving (the engine sends no SchedulerStats after an abort
    that left it idle, so the running gauge may keep its last value)."""
    last, same, seen = None, 0, []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = samples(httpx.get(f"{url}/metrics", timeout=10).text)
        key = (value(page, "vllm:generation_tokens_total"), value(page, "vllm:request_success_total"))
        seen.append(key)
        same = same + 1 if key == last else 0
        if same >= 2:
            return page
        last = key
        time.sleep(0.5)
    raise AssertionError(f"{url}/metrics did not settle: {seen}")


EXACT = [
    "vllm:prompt_tokens_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
    "vllm:request_prompt_tokens_count",
    "vllm:request_prompt_tokens_sum",
    "vllm:request_generation_tokens_count",
    "vllm:request_max_num_generation_tokens_count",
    "vllm:request_params_n_count",
    "vllm:request_params_n_sum",
    "vllm:request_params_max_tokens_count",
    "vllm:request_params_max_tokens_sum",
    "vllm:request_prefill_kv_computed_tokens_count",
    "vllm:request_prefill_kv_computed_tokens_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:request_queue_time_seconds_count",
    "vllm:request_prefill_time_seconds_count",
    "vllm:request_decode_time_seconds_count",
    "vllm:request_inference_time_seconds_count",
    "vllm:request_time_per_output_token_seconds_count",
    "vllm:request_num_preemptions_count",
]
#: one or two steps more or less per leaving client and per stop string, on either side
SLACK = 3 * (LEAVERS + STOPPERS)
NEAR = ["vllm:generation_tokens_total", "vllm:inter_token_latency_seconds_count",
        "vllm:request_generation_tokens_sum", "vllm:request_max_num_generation_tokens_sum"]  # fmt: skip


def test_same_traffic_same_metrics(urls: dict[str, str]) -> None:
    pages = {}
    for name, url in urls.items():
        traffic(url)
        pages[name] = settled(url)
    vllm, ours = pages["vllm"], pages["trio"]
    problems = []
    for reason in ("stop", "length", "abort", "error"):
        a = value(vllm, "vllm:request_success_total", finished_reason=reason)
        b = value(ours, "vllm:request_success_total", finished_reason=reason)
        if a != b:
            problems.append(f"request_success{{{reason}}}: vLLM {a}, trio-front {b}")
    for name in EXACT:
        if value(vllm, name) != value(ours, name):
            problems.append(f"{name}: vLLM {value(vllm, name)}, trio-front {value(ours, name)}")
    for name in NEAR:
        if abs(value(vllm, name) - value(ours, name)) > SLACK:
            problems.append(
                f"{name}: vLLM {value(vllm, name)}, trio-front {value(ours, name)} (slack {SLACK})"
            )
    # Every histogram and counter vLLM shows with these labels, we show too (same names, same buckets).
    for (name, labels), _ in vllm.items():
        if name.startswith("vllm:") and "le" in dict(labels):
            le = dict(labels)["le"]
            if not any(n == name and dict(ls).get("le") == le for n, ls in ours):
                problems.append(f"{name} bucket le={le} missing")
    print("\nseries: vLLM / trio-front")
    for name in ["vllm:request_success_total", *EXACT, *NEAR]:
        print(f"  {name}: {value(vllm, name)} / {value(ours, name)}")
    assert not problems, "\n".join(problems)
    assert value(vllm, "vllm:request_success_total", finished_reason="stop") == 1 + STOPPERS  # EOS + stops
