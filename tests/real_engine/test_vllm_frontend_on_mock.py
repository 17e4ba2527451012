"""vLLM's own Python frontend (``vllm serve --data-parallel-size-local 0``) attached to our mock engine.

This is the mock's faithfulness check: an unchanged vLLM 0.32 API server must handshake with it, make its
start-up utility calls, and serve ``/v1/completions`` (plain and streaming) and ``/v1/chat/completions``
with exactly the tokens the mock's rule predicts. Needs the engine venv (scripts/setup_engine.sh) for
vLLM's frontend; no model weights are loaded (the frontend only reads config and tokenizer).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from trio_front.engine import wire
from trio_front.engine.launch import (
    EngineProcess,
    pick_free_port,
    python_frontend_command,
    wait_for_http_health,
)
from trio_front.engine.mock import eos_seed, expected_output, mock_token

from .conftest import MODEL, require_engine

pytestmark = [pytest.mark.real_engine, pytest.mark.slow]

MAX_MODEL_LEN = 2048
VOCAB = 4096
EOS = 2


class Stack:
    def __init__(self, url: str, events: Path) -> None:
        self.url = url
        self.events_path = events

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]

    def completion(self, **body) -> dict:
        body = {"model": "tiny", "return_token_ids": True, **body}
        response = httpx.post(f"{self.url}/v1/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_engine()
    tmp = tmp_path_factory.mktemp("vllm-on-mock")
    engine_port, http_port = pick_free_port(), pick_free_port()
    events = tmp / "events.jsonl"
    mock = EngineProcess(
        [
            sys.executable, "-m", "trio_front.cli", "mock-engine",
            "--engine-addr", f"tcp://127.0.0.1:{engine_port}",
            "--max-model-len", str(MAX_MODEL_LEN), "--vocab", str(VOCAB),
            "--step-ms", "2", "--event-log", str(events),
        ],
        log_path=tmp / "mock.log",
    )  # fmt: skip
    front = EngineProcess(
        python_frontend_command(
            MODEL, "127.0.0.1", engine_port, "127.0.0.1", http_port, max_model_len=MAX_MODEL_LEN
        ),
        log_path=tmp / "vllm-frontend.log",
    )
    try:
        mock.start()
        front.start()
        try:
            wait_for_http_health(f"http://127.0.0.1:{http_port}/health", 240, process=front)
        except Exception:
            print(f"mock log:\n{mock.read_log(tail=3000)}")
            raise
        yield Stack(f"http://127.0.0.1:{http_port}", events)
    finally:
        front.terminate(timeout=10)
        mock.terminate(timeout=10)


def test_handshake_and_startup_utilities(stack: Stack) -> None:
    events = stack.events()
    assert events[0]["event"] == "ready"
    called = {e["method"] for e in events if e["event"] == "utility"}
    assert {"get_supported_tasks", "reset_mm_cache"} <= called
    assert all(e["ok"] for e in events if e["event"] == "utility")
    assert not [e for e in events if e["event"] in ("hazard", "warning")]


def test_completion_tokens_follow_the_mock_rule(stack: Stack) -> None:
    answer = stack.completion(prompt="Hello there, mock engine", max_tokens=12)
    (choice,) = answer["choices"]
    prompt_ids = choice["prompt_token_ids"]
    assert choice["token_ids"] == [mock_token(prompt_ids, i, VOCAB) for i in range(12)]
    assert choice["finish_reason"] == "length"
    assert answer["usage"] == {
        **answer["usage"],
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": 12,
    }
    assert isinstance(choice["text"], str) and choice["text"]


def test_eos_seed_and_stop_token_id(stack: Stack) -> None:
    answer = stack.completion(prompt="stop soon", max_tokens=50, seed=eos_seed(4))
    (choice,) = answer["choices"]
    prompt_ids = choice["prompt_token_ids"]
    params = wire.SamplingParams(max_tokens=50, eos_token_id=EOS, seed=eos_seed(4))
    expected = expected_output(prompt_ids, params, vocab=VOCAB, max_model_len=MAX_MODEL_LEN)
    assert choice["token_ids"] == expected.token_ids and expected.token_ids[-1] == EOS
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] is None

    probe = stack.completion(prompt="stop token", max_tokens=1)["choices"][0]
    stop_id = mock_token(probe["prompt_token_ids"], 2, VOCAB)
    choice = stack.completion(prompt="stop token", max_tokens=50, stop_token_ids=[stop_id])["choices"][0]
    assert choice["token_ids"] == [mock_token(choice["prompt_token_ids"], i, VOCAB) for i in range(3)]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == stop_id


def test_streaming_completion_matches_non_streaming(stack: Stack) -> None:
    body = {"model": "tiny", "prompt": "stream me", "max_tokens": 8}
    whole = stack.completion(**body)["choices"][0]
    text, finish = "", None
    with httpx.stream("POST", f"{stack.url}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            for choice in chunk["choices"]:
                text += choice["text"]
                finish = choice["finish_reason"] or finish
    assert text == whole["text"]
    assert finish == "length"


def test_chat_completion(stack: Stack) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 6,
        "logprobs": True,
        "top_logprobs": 2,
    }
    response = httpx.post(f"{stack.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "length"
    assert isinstance(choice["message"]["content"], str)
    assert answer["usage"]["completion_tokens"] == 6
    content = choice["logprobs"]["content"]
    assert len(content) == 6 and all(len(c["top_logprobs"]) == 2 for c in content)
    assert content[0]["logprob"] == pytest.approx(-0.6931, abs=1e-3)


def test_client_disconnect_is_one_abort_in_the_mock(stack: Stack) -> None:
    body = {"model": "tiny", "prompt": "a long one", "max_tokens": 1500, "stream": True}
    with httpx.stream("POST", f"{stack.url}/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        chunks = 0
        for line in lines:
            if line.startswith("data: "):
                chunks += 1
            if chunks == 3:
                break
    # Closing the stream drops the connection; vLLM's frontend aborts the request in the engine.
    deadline = time.monotonic() + 10
    while True:
        events = stack.events()
        adds = [e for e in events if e["event"] == "add" and e["max_tokens"] == 1500]
        aborts = [
            e for e in events if e["event"] == "abort" and adds and e["request_id"] == adds[-1]["request_id"]
        ]
        if aborts or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(adds) == 1 and len(aborts) == 1
    assert not [e for e in events if e["event"] == "finish" and e["request_id"] == adds[0]["request_id"]]
