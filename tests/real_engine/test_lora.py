"""LoRA on the real vLLM 0.32 CPU engine, differentially against ``vllm serve``: both load the same tiny
adapter (built by :mod:`.lora_adapter`) with ``--lora-modules`` and let adapters be loaded at run time
(``VLLM_ALLOW_RUNTIME_LORA_UPDATING``). Greedy output under an adapter must differ from the base model's
and equal vLLM's, for completions, chat and Responses; the runtime endpoints answer as vLLM's do."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from trio_front.engine.launch import (
    EngineProcess,
    full_vllm_serve_command,
    pick_free_port,
    wait_for_http_health,
)

from .conftest import MODEL, require_engine, start_engine
from .lora_adapter import build_adapter

pytestmark = pytest.mark.real_engine
NAME = "tiny"
LORA_ARGS = ("--enable-lora", "--max-lora-rank", "8", "--max-loras", "2")
PROMPTS = ["def hello(", "The capital of France is", "import numpy as np\n"]
RUNTIME_ENV = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1"}


def _wait_for_model(base: str, model: str, timeout: float, process: EngineProcess) -> None:
    """trio-front answers /health once the engine is ready; its --lora-modules load right after."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ids = [card["id"] for card in httpx.get(f"{base}/v1/models", timeout=5).json()["data"]]
            if model in ids:
                return
        except httpx.HTTPError:
            pass
        if process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{model} never appeared in /v1/models:\n{process.read_log(tail=3000)}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora")
    return {
        "sql": build_adapter(root / "sql", MODEL, seed=0),
        "rt": build_adapter(root / "rt", MODEL, seed=1),
    }


@pytest.fixture(scope="module")
def servers(adapters: dict[str, Path]) -> Iterator[tuple[str, str]]:
    """(trio-front base URL, vllm serve base URL), both serving ``sql`` from ``--lora-modules``."""
    require_engine()
    engine_port, ours_port, theirs_port = pick_free_port(), pick_free_port(), pick_free_port()
    modules = ("--lora-modules", f"sql={adapters['sql']}")
    ours = EngineProcess(
        [
            sys.executable, "-m", "trio_front.cli", "run",
            "--engine-addr", f"tcp://127.0.0.1:{engine_port}",
            "--model", str(MODEL), "--served-model-name", NAME, "--port", str(ours_port), *modules,
        ],
        env=None,
    )  # fmt: skip
    ours.env.pop("VLLM_HOST_IP", None)
    ours.env.update(RUNTIME_ENV)
    theirs = EngineProcess(
        full_vllm_serve_command(
            MODEL, "127.0.0.1", theirs_port, served_model_name=NAME, extra_args=(*LORA_ARGS, *modules)
        )
    )
    theirs.env.update(RUNTIME_ENV)
    engine = None
    ours_url, theirs_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{theirs_port}"
    try:
        ours.start()
        engine = start_engine(engine_port, extra_args=LORA_ARGS)
        theirs.start()
        wait_for_http_health(f"{ours_url}/health", 300, process=ours)
        _wait_for_model(ours_url, "sql", 120, ours)
        wait_for_http_health(f"{theirs_url}/health", 300, process=theirs)
        yield ours_url, theirs_url
    finally:
        for proc in (ours, theirs, engine):
            if proc is not None:
                proc.terminate()
        if ours.returncode not in (0, None, -15):
            print(ours.read_log(tail=3000))


def _post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, timeout=120)


def _completion(base: str, model: str, prompt: str) -> str:
    r = _post(base, "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model
    return r.json()["choices"][0]["text"]


def _chat(base: str, model: str, prompt: str) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 12,
        "temperature": 0,
    }
    r = _post(base, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model
    return r.json()["choices"][0]["message"]["content"]


def test_models_list_the_adapter_like_vllm(servers: tuple[str, str], adapters: dict[str, Path]) -> None:
    ours, theirs = (httpx.get(f"{base}/v1/models").json()["data"] for base in servers)
    assert [c["id"] for c in ours] == [c["id"] for c in theirs] == [NAME, "sql"]
    for key in ("object", "owned_by", "root", "parent", "max_model_len"):
        assert ours[1][key] == theirs[1][key], key
    assert ours[1]["root"] == str(adapters["sql"])


@pytest.mark.parametrize("kind", ["completion", "chat"])
def test_adapter_output_differs_from_base_and_equals_vllm(servers: tuple[str, str], kind: str) -> None:
    ask = _completion if kind == "completion" else _chat
    ours, theirs = servers
    for prompt in PROMPTS:
        with_adapter = ask(ours, "sql", prompt)
        assert with_adapter == ask(theirs, "sql", prompt), prompt
        assert with_adapter != ask(ours, NAME, prompt), prompt  # the adapter really is applied


def test_responses_route_the_adapter(servers: tuple[str, str]) -> None:
    ours, theirs = servers
    prompt = PROMPTS[1]
    r = _post(
        ours, "/v1/responses", {"model": "sql", "input": prompt, "max_output_tokens": 12, "temperature": 0}
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "sql"
    text = "".join(
        part["text"] for item in r.json()["output"] if item["type"] == "message" for part in item["content"]
    )
    assert text == _chat(theirs, "sql", prompt)


def test_runtime_load_and_unload_like_vllm(servers: tuple[str, str], adapters: dict[str, Path]) -> None:
    ours, theirs = servers

    def both(path: str, body: dict[str, Any]) -> tuple[httpx.Response, httpx.Response]:
        return _post(ours, path, body), _post(theirs, path, body)

    load = {"lora_name": "rt", "lora_path": str(adapters["rt"])}
    for r in both("/v1/load_lora_adapter", load):
        assert r.status_code == 200 and r.text == "Success: LoRA adapter 'rt' added successfully.", r.text
    prompt = PROMPTS[0]
    assert _completion(ours, "rt", prompt) == _completion(theirs, "rt", prompt)
    assert _completion(ours, "rt", prompt) != _completion(ours, "sql", prompt)
    # the same refusals, statuses and messages
    for body in (
        load,
        {"lora_name": "bad", "lora_path": "/nonexistent/adapter"},
        {"lora_name": NAME, "lora_path": "/x"},
    ):
        a, b = both("/v1/load_lora_adapter", body)
        assert (
            a.status_code == b.status_code and a.json()["error"]["message"] == b.json()["error"]["message"]
        ), body
    for r in both("/v1/unload_lora_adapter", {"lora_name": "rt"}):
        assert r.status_code == 200 and r.text == "Success: LoRA adapter 'rt' removed successfully."
    a, b = both("/v1/unload_lora_adapter", {"lora_name": "rt"})
    assert (
        a.status_code == b.status_code == 404 and a.json()["error"]["message"] == b.json()["error"]["message"]
    )
    a, b = both("/v1/completions", {"model": "rt", "prompt": prompt, "max_tokens": 2})
    assert a.status_code == b.status_code == 404
    # the engine survived all of it
    assert _completion(ours, "sql", prompt) == _completion(theirs, "sql", prompt)
