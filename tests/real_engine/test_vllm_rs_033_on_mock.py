"""The mock engine in vLLM 0.33 mode, driven by vLLM 0.33's own Rust frontend and by trio-front.

``vllm-rs`` (from the PyPI ``vllm==0.33.0`` wheel, ``bench/peers.py``) is a real 0.33 frontend that runs
here: it owns the handshake, the mock (``--vllm-version 0.33.0``: 0.33's registration and 19-position
outputs) attaches, and its HTTP API must serve completions and chat, streamed and not, and abort a request
whose client went away, with the mock's event log showing each request. trio-front gets the same requests
against a fresh mock in the same mode. Each pair is started once per module parameter (~2 s each: no
model weights, only the tokenizer).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.peers import EngineConfig, frontend_command, frontend_unavailable
from trio_front.engine.launch import EngineProcess, pick_free_port, wait_for_http_health

pytestmark = [pytest.mark.real_engine]

MAX_MODEL_LEN = 2048
VERSION = "0.33.0"


class Stack:
    def __init__(self, name: str, url: str, events: Path) -> None:
        self.name, self.url, self.events_path = name, url, events

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        lines = self.events_path.read_text().splitlines()
        found = [json.loads(line) for line in lines if line.strip()]
        return [e for e in found if event is None or e["event"] == event]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.url}{path}", json={"model": "tiny", **body}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    def stream(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = []
        body = {"model": "tiny", **body, "stream": True}
        with httpx.stream("POST", f"{self.url}{path}", json=body, timeout=60) as r:
            assert r.status_code == 200, r.read()
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(json.loads(line[len("data: ") :]))
        return chunks

    def wait_events(self, event: str, count: int, **match: Any) -> list[dict[str, Any]]:
        """The mock's *event* records matching *match*, once there are *count* (10 s at most)."""
        deadline = time.monotonic() + 10
        while True:
            found = [e for e in self.events(event) if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@pytest.fixture(scope="module", params=["vllm-rs", "trio-front"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = request.param
    problem = frontend_unavailable(name)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} unavailable in CI: {problem}")
        pytest.skip(f"{name} unavailable: {problem}")
    tmp = tmp_path_factory.mktemp(f"{name}-on-mock-033")
    rpc_port, http_port = pick_free_port(), pick_free_port()
    events = tmp / "events.jsonl"
    mock = EngineProcess(
        [
            sys.executable, "-m", "trio_front.cli", "mock-engine",
            "--engine-addr", f"tcp://127.0.0.1:{rpc_port}",
            "--max-model-len", str(MAX_MODEL_LEN), "--step-ms", "2",
            "--vllm-version", VERSION, "--event-log", str(events),
        ],
        log_path=tmp / "mock.log",
    )  # fmt: skip
    front = EngineProcess(
        frontend_command(name, rpc_port, http_port, EngineConfig(max_model_len=MAX_MODEL_LEN)),
        log_path=tmp / f"{name}.log",
    )
    try:
        front.start()  # the handshake owner binds first; the mock's HELLO would be queued anyway
        mock.start()
        try:
            wait_for_http_health(f"http://127.0.0.1:{http_port}/health", 120, process=front)
        except Exception:
            print(f"mock log:\n{mock.read_log(tail=3000)}\n{name} log:\n{front.read_log(tail=3000)}")
            raise
        yield Stack(name, f"http://127.0.0.1:{http_port}", events)
        print(f"{name} log tail:\n{front.read_log(tail=2000)}")
    finally:
        front.terminate(timeout=10)
        mock.terminate(timeout=10)


def test_the_front_sees_a_033_engine(stack: Stack) -> None:
    assert stack.events("ready"), "the mock never completed the handshake"
    response = httpx.get(f"{stack.url}/version", timeout=10)
    assert response.status_code == 200 and response.json()["version"] == VERSION
    assert not stack.events("hazard")


def test_completion_streamed_equals_whole(stack: Stack) -> None:
    body = {"prompt": "def hello(", "max_tokens": 9}
    whole = stack.post("/v1/completions", body)
    (choice,) = whole["choices"]
    assert choice["finish_reason"] == "length" and whole["usage"]["completion_tokens"] == 9
    chunks = stack.stream("/v1/completions", body)
    choices = [c for chunk in chunks for c in chunk["choices"]]
    assert "".join(c.get("text", "") for c in choices) == choice["text"]
    assert [c["finish_reason"] for c in choices if c.get("finish_reason")] == ["length"]
    adds = stack.wait_events("add", 2, max_tokens=9)
    assert len(adds) == 2 and {a["prompt_tokens"] for a in adds} == {whole["usage"]["prompt_tokens"]}
    finishes = [stack.wait_events("finish", 1, request_id=a["request_id"]) for a in adds]
    assert [(f["reason"], f["tokens"]) for (f,) in finishes] == [("length", 9), ("length", 9)]


def test_chat_streamed_equals_whole(stack: Stack) -> None:
    body = {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 7}
    whole = stack.post("/v1/chat/completions", body)
    (choice,) = whole["choices"]
    assert choice["finish_reason"] == "length" and whole["usage"]["completion_tokens"] == 7
    chunks = stack.stream("/v1/chat/completions", body)
    text = "".join(c["delta"].get("content") or "" for chunk in chunks for c in chunk["choices"])
    assert text == choice["message"]["content"]
    adds = stack.wait_events("add", 2, max_tokens=7)
    assert len(adds) == 2 and {a["prompt_tokens"] for a in adds} == {whole["usage"]["prompt_tokens"]}


def test_client_disconnect_aborts_in_the_engine(stack: Stack) -> None:
    body = {"model": "tiny", "prompt": "a long one", "max_tokens": 1500, "stream": True}
    with httpx.stream("POST", f"{stack.url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data: ")
            if seen == 3:
                break  # leaving the block drops the connection mid-stream
    (add,) = stack.wait_events("add", 1, max_tokens=1500)
    aborts = stack.wait_events("abort", 1, request_id=add["request_id"])
    assert len(aborts) == 1 and 0 < aborts[0]["tokens"] < 1500
    assert not stack.events("finish") or not [
        e for e in stack.events("finish") if e["request_id"] == add["request_id"]
    ]
