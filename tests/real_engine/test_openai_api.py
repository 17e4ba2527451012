"""`trio-front run` with the real vLLM 0.32 CPU engine: the official `openai` SDK against it, and a
differential test against vLLM's own `vllm serve` on the same tiny model (greedy: same text, finish
reasons and usage)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from .vllm_pair import shared_pair

pytestmark = pytest.mark.real_engine
NAME = "tiny"


@pytest.fixture(scope="module")
def servers(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(trio-front URL, vllm serve URL), both on the tiny model: the session's shared pair
    (``vllm_pair.py``)."""
    shared = shared_pair(request)
    return f"{shared.ours}/v1", f"{shared.theirs}/v1"


@pytest.fixture(scope="module")
def client(servers) -> openai.OpenAI:
    return openai.OpenAI(base_url=servers[0], api_key="none", max_retries=0, timeout=60)


def test_sdk_completion(client: openai.OpenAI) -> None:
    result = client.completions.create(model=NAME, prompt="def hello(", max_tokens=8, temperature=0)
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == 8 and result.usage.prompt_tokens > 1
    assert isinstance(result.choices[0].text, str) and result.choices[0].text


def test_sdk_completion_stream(client: openai.OpenAI) -> None:
    pieces, finish, usage = [], None, None
    for event in client.completions.create(
        model=NAME,
        prompt="import os\n",
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if event.choices:
            pieces.append(event.choices[0].text)
            finish = event.choices[0].finish_reason or finish
        if event.usage:
            usage = event.usage
    assert finish == "length" and usage.completion_tokens == 10
    whole = client.completions.create(model=NAME, prompt="import os\n", max_tokens=10, temperature=0)
    assert "".join(pieces) == whole.choices[0].text


def test_sdk_chat_and_chat_stream(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi"}]
    result = client.chat.completions.create(model=NAME, messages=messages, max_tokens=6, temperature=0)
    assert result.choices[0].message.role == "assistant" and result.usage.completion_tokens == 6
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model=NAME, messages=messages, max_tokens=6, temperature=0, stream=True
        )
        if chunk.choices
    )
    assert text == result.choices[0].message.content


def test_sdk_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=NAME, prompt="x", temperature=5)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x")
    assert [m.id for m in client.models.list().data] == [NAME]


DIFFERENTIAL_CASES = [
    ("completions", {"prompt": "def hello(", "max_tokens": 16}),
    ("completions", {"prompt": "import sys\nclass ", "max_tokens": 24, "stop": ["\n"]}),
    ("completions", {"prompt": [1, 755, 3001, 40, 1200], "max_tokens": 12}),
    ("completions", {"prompt": "for i in range(", "max_tokens": 20, "echo": True}),
    (
        "completions",
        {"prompt": "x = ", "max_tokens": 16, "stop": [" ", "e"], "include_stop_str_in_output": True},
    ),
    ("completions", {"prompt": "print(", "max_tokens": 10, "skip_special_tokens": False}),
    ("completions", {"prompt": "while True:", "max_tokens": 12, "min_tokens": 4, "stop_token_ids": [3116]}),
    ("completions", {"prompt": ["a = 1", "b = 2"], "max_tokens": 6}),
    ("chat", {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}),
    (
        "chat",
        {
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "q?"},
                {"role": "assistant", "content": "a."},
                {"role": "user", "content": "again"},
            ],
            "max_tokens": 12,
            "stop": ["e"],
        },
    ),
    (
        "chat",
        {
            "messages": [{"role": "user", "content": "continue"}, {"role": "assistant", "content": "def f("}],
            "max_tokens": 10,
            "add_generation_prompt": False,
            "continue_final_message": True,
        },
    ),
]


def _summary(kind: str, body: dict) -> list[tuple]:
    out = []
    for choice in body["choices"]:
        text = choice["text"] if kind == "completions" else choice["message"]["content"]
        out.append((choice["index"], text, choice["finish_reason"], choice.get("stop_reason")))
    usage = body["usage"]
    return [*out, (usage["prompt_tokens"], usage["completion_tokens"])]


@pytest.mark.parametrize(
    ("kind", "body"), DIFFERENTIAL_CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(DIFFERENTIAL_CASES)]
)
def test_differential_against_vllm_serve(servers, kind: str, body: dict) -> None:
    import httpx

    path = "/completions" if kind == "completions" else "/chat/completions"
    request = {"model": NAME, "temperature": 0, **body}
    ours = httpx.post(servers[0] + path, json=request, timeout=60)
    theirs = httpx.post(servers[1] + path, json=request, timeout=60)
    assert theirs.status_code == 200, theirs.text
    assert ours.status_code == 200, ours.text
    assert _summary(kind, ours.json()) == _summary(kind, theirs.json())


@pytest.mark.parametrize("kind", ["completions", "chat"])
def test_differential_streaming(servers, kind: str) -> None:
    import httpx
    import orjson

    path = "/completions" if kind == "completions" else "/chat/completions"
    body = (
        {"prompt": "def main():\n", "max_tokens": 20}
        if kind == "completions"
        else {"messages": [{"role": "user", "content": "stream please"}], "max_tokens": 20}
    )
    request = {
        "model": NAME,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["t"],
        **body,
    }

    def run(url: str) -> tuple[str, str | None, dict]:
        text, finish, usage = "", None, None
        with httpx.stream("POST", url + path, json=request, timeout=60) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = orjson.loads(line[6:])
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event["choices"]:
                    text += choice["text"] if kind == "completions" else choice["delta"].get("content") or ""
                    finish = choice.get("finish_reason") or finish
        return text, finish, {k: usage[k] for k in ("prompt_tokens", "completion_tokens")}

    assert run(servers[0]) == run(servers[1])


def _metric(servers: tuple[str, str], name: str) -> float:
    text = httpx.get(servers[0].removesuffix("/v1") + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_sdk_realtime_stream_cancel_stream(servers) -> None:
    """The unmodified SDK's Realtime client on the real engine: a response runs, is cancelled (the engine
    request is aborted), and the next one runs on the same socket and conversation."""
    ws_url = servers[0].replace("http://", "ws://")
    client = openai.OpenAI(base_url=servers[0], websocket_base_url=ws_url, api_key="none", max_retries=0)

    def until(conn, kind: str) -> tuple[Any, list[Any]]:  # type: ignore[no-untyped-def]
        seen = []
        for event in conn:
            if event.type == "error":
                raise AssertionError(event)
            if event.type == kind:
                return event, seen
            seen.append(event)
        raise AssertionError(f"socket closed before {kind}")

    aborted_before = _metric(servers, "trio_front_requests_aborted_total")
    with client.realtime.connect(model=NAME) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "temperature": 0})
        until(conn, "session.updated")
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
        )
        until(conn, "conversation.item.done")

        conn.response.create(response={"max_output_tokens": 1500})
        until(conn, "response.output_text.delta")
        conn.response.cancel()
        cancelled, _ = until(conn, "response.done")
        assert cancelled.response.status == "cancelled"
        assert 1 <= cancelled.response.usage.output_tokens < 1500

        conn.response.create(response={"max_output_tokens": 5})
        done, events = until(conn, "response.done")
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert done.response.status in ("completed", "incomplete")  # EOS or the token limit
        assert 1 <= done.response.usage.output_tokens <= 5
        assert done.response.output[0].content[0].text == text
    assert _metric(servers, "trio_front_requests_aborted_total") >= aborted_before + 1
    deadline = time.monotonic() + 10
    while _metric(servers, "trio_front_requests_open") != 0:
        assert time.monotonic() < deadline, "an engine request stayed open after the socket closed"
        time.sleep(0.05)


def test_sdk_responses_http_and_websocket(servers) -> None:
    ws_url = servers[0].replace("http://", "ws://")
    client = openai.OpenAI(base_url=servers[0], websocket_base_url=ws_url, api_key="none", max_retries=0)
    body: dict[str, Any] = {"model": NAME, "input": "def hello(", "max_output_tokens": 6, "temperature": 0}
    plain = client.responses.create(**body)
    assert plain.status in ("completed", "incomplete") and 1 <= plain.usage.output_tokens <= 6
    streamed = list(client.responses.create(**body, stream=True))
    assert streamed[-1].type in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in streamed if e.type == "response.output_text.delta")
    assert deltas == plain.output[0].content[0].text  # greedy: the same text both ways

    terminal = ("response.completed", "response.incomplete", "response.failed", "error")

    def until_done(conn) -> Any:  # type: ignore[no-untyped-def]
        for event in conn:
            if event.type in terminal:
                return event
        raise AssertionError("socket closed before the response ended")

    with client.responses.connect() as conn:
        conn.send({"type": "response.create", "model": NAME, "input": "first", "max_output_tokens": 4})
        first = until_done(conn)
        assert first.type != "error", first
        conn.send(
            {
                "type": "response.create",
                "model": NAME,
                "previous_response_id": first.response.id,
                "input": [{"role": "user", "content": "second"}],
                "max_output_tokens": 4,
            }
        )
        second = until_done(conn)
        assert second.type != "error", second
        # the second turn's prompt holds the first turn: more input tokens than the first one had
        assert second.response.usage.input_tokens > first.response.usage.input_tokens
