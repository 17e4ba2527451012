"""``n > 1`` on completions and chat against the mock engine: child requests as vLLM builds them, choices
by index, usage with the prompt counted once, streamed == non-streamed, and leaving early aborting every
live child in one ABORT.

The mock's EOS rule makes children distinguishable: ``seed = EOS_SEED_BASE + K`` emits EOS after K tokens,
so child *i* (seeded ``seed + i``, as vLLM seeds them) stops after ``K + i`` tokens.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx
import orjson
import pytest
import trio

from trio_front.engine.mock.rules import EOS_SEED_BASE

from .conftest import Server
from .test_disconnect import open_request, read_until

PROMPT = [1, 755, 3001, 40, 1200]


def present(usage: dict[str, Any]) -> dict[str, Any]:
    """Usage without vLLM's null detail keys (a non-streamed answer has them, the usage event not)."""
    return {k: v for k, v in usage.items() if v is not None}


async def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        return await client.post(path, json=body)


async def stream_events(server: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = await post(server, path, {**body, "stream": True})
    assert response.status_code == 200, response.text
    events = []
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(orjson.loads(line[6:]))
    return events


async def test_completions_children_are_seeded_and_indexed(server: Server) -> None:
    body = {"prompt": PROMPT, "max_tokens": 50, "n": 3, "seed": EOS_SEED_BASE + 2}
    response = await post(server, "/v1/completions", body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert [c["finish_reason"] for c in data["choices"]] == ["stop"] * 3
    # child i stops after 2 + i tokens, plus the EOS itself
    assert present(data["usage"]) == {"prompt_tokens": 5, "completion_tokens": 3 + 4 + 5, "total_tokens": 17}
    adds = server.adds()
    assert len(adds) == 3
    parents = {rid.split("_", 1)[1] for rid in adds}
    assert len(parents) == 1, adds
    assert sorted(rid.split("_", 1)[0] for rid in adds) == ["0", "1", "2"]
    assert parents.pop().startswith(data["id"] + "-0-")


async def test_completions_stream_assembles_to_the_same_choices(server: Server) -> None:
    body = {"prompt": PROMPT, "max_tokens": 12, "n": 3, "seed": EOS_SEED_BASE + 3, "logprobs": 1}
    whole = (await post(server, "/v1/completions", body)).json()
    events = await stream_events(
        server, "/v1/completions", {**body, "stream_options": {"include_usage": True}}
    )
    text: dict[int, str] = defaultdict(str)
    tokens: dict[int, list[str]] = defaultdict(list)
    finish: dict[int, str] = {}
    for event in events:
        for choice in event["choices"]:
            text[choice["index"]] += choice["text"]
            if choice["logprobs"]:
                tokens[choice["index"]] += choice["logprobs"]["tokens"]
            if choice["finish_reason"]:
                finish[choice["index"]] = choice["finish_reason"]
    for choice in whole["choices"]:
        i = choice["index"]
        assert text[i] == choice["text"]
        assert tokens[i] == choice["logprobs"]["tokens"]
        assert finish[i] == choice["finish_reason"]
    assert events[-1]["usage"] == present(whole["usage"])


async def test_several_prompts_times_n(server: Server) -> None:
    body = {"prompt": [PROMPT, PROMPT[:3]], "max_tokens": 4, "n": 2, "temperature": 0.8}
    data = (await post(server, "/v1/completions", body)).json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    assert data["usage"]["prompt_tokens"] == 5 + 3  # each prompt once, not once per child
    assert data["usage"]["completion_tokens"] == 4 * 4
    # The two children of a prompt see the same prompt (the mock's tokens depend on it only).
    assert data["choices"][0]["text"] == data["choices"][1]["text"]
    assert data["choices"][0]["text"] != data["choices"][2]["text"]


async def test_chat_n_streamed_equals_non_streamed(server: Server) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
        "n": 2,
        "seed": EOS_SEED_BASE + 1,
    }
    whole = (await post(server, "/v1/chat/completions", body)).json()
    assert [c["index"] for c in whole["choices"]] == [0, 1]
    events = await stream_events(
        server, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}}
    )
    roles = [c["index"] for e in events for c in e["choices"] if c["delta"].get("role")]
    assert roles == [0, 1]  # the role chunk once per choice, first
    content: dict[int, str] = defaultdict(str)
    for event in events:
        for choice in event["choices"]:
            content[choice["index"]] += choice["delta"].get("content") or ""
    for choice in whole["choices"]:
        assert content[choice["index"]] == choice["message"]["content"]
    assert events[-1]["usage"] == present(whole["usage"])
    assert whole["usage"]["completion_tokens"] == 2 + 3


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2, "temperature": 0}, "n"),
        ({"n": 0}, "n"),
        ({"n": 16385}, "n"),
    ],
)
async def test_n_refusals(server: Server, body: dict[str, Any], param: str) -> None:
    for path, extra in (
        ("/v1/completions", {"prompt": PROMPT}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
    ):
        response = await post(server, path, {**extra, "max_tokens": 4, **body})
        assert response.status_code == 400, response.text
    assert server.adds() == []


@pytest.mark.parametrize("server", [{"step_ms": 100}], indirect=True)
async def test_leaving_aborts_every_live_child_in_one_abort(server: Server) -> None:
    """Child 0 ends by itself (EOS after one token, child 1 one step later); the client then leaves: the
    three live children go in one ABORT message, the finished one is not aborted, nothing stays live."""
    stream = await open_request(
        server,
        "/v1/completions",
        {"prompt": PROMPT, "max_tokens": 1000, "n": 4, "seed": EOS_SEED_BASE + 1, "stream": True},
    )
    await read_until(stream, b'"finish_reason":"stop"')
    await stream.aclose()
    await server.settle()
    adds, aborts = server.adds(), server.aborts()
    assert len(adds) == 4
    finished = [e["request_id"] for e in server.mock.log.named("finish")]
    # The mock decides a step's tokens before it sleeps the step time, so child 1 (one step behind child
    # 0) may have finished before the ABORT arrived; children 2 and 3 cannot have.
    assert any(rid.startswith("0_") for rid in finished) and len(finished) <= 2
    assert sorted(aborts) == sorted(set(adds) - set(finished))
    times = {e["t"] for e in server.mock.log.named("abort")}
    assert len(times) == 1, "one ABORT message for all live children"
    assert not server.mock.live_request_ids
    assert server.app.engine.open_requests == 0


async def test_chat_n_disconnect_aborts_all(server: Server) -> None:
    stream = await open_request(
        server,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000, "n": 4, "stream": True},
    )
    await read_until(stream, b'"content":"')
    with trio.fail_after(5):
        while len(server.adds()) < 4:
            await trio.sleep(0.01)
    await stream.aclose()
    await server.settle()
    assert sorted(server.aborts()) == sorted(server.adds())
    assert len({e["t"] for e in server.mock.log.named("abort")}) == 1
