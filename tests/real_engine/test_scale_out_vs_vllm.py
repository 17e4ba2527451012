"""The --enable-scale-out routes, trio-front (real engine) against ``vllm serve --enable-scale-out`` on the
tiny model: render answers are equal as JSON, and generate gives the same tokens, text and shapes."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from .vllm_pair import shared_pair

pytestmark = pytest.mark.real_engine
NAME = "tiny"
MESSAGES = [{"role": "user", "content": "Write a haiku about the sea."}]


@pytest.fixture(scope="module")
def pair(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(trio-front root URL, vllm serve root URL): the session's shared pair, both with
    --enable-scale-out (``vllm_pair.py``)."""
    shared = shared_pair(request)
    return shared.ours, shared.theirs


def both(
    pair: tuple[str, str], path: str, body: Any, headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    return [httpx.post(root + path, json=body, headers=headers or {}, timeout=120) for root in pair]


def stream_events(root: str, path: str, body: dict) -> list[Any]:
    events: list[Any] = []
    with httpx.stream("POST", root + path, json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:] if line[6:] == "[DONE]" else orjson.loads(line[6:]))
    assert events[-1] == "[DONE]"
    return events[:-1]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"max_tokens": 12, "temperature": 0.0, "seed": 3, "stop": ["\n"]},
        {"max_completion_tokens": 20, "top_p": 0.9, "top_k": 5, "logprobs": True, "top_logprobs": 2},
        {
            "response_format": {"type": "json_object"},
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        {"logit_bias": {"100": 3.0}, "min_tokens": 2, "stop_token_ids": [13], "skip_special_tokens": False},
    ],
)
def test_chat_render_equals_vllms(pair: tuple[str, str], extra: dict) -> None:
    ours, theirs = both(
        pair,
        "/v1/chat/completions/render",
        {"model": NAME, "messages": MESSAGES, **extra},
        {"X-Request-Id": "r"},
    )
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.json() == theirs.json()


def test_completions_render_equals_vllms(pair: tuple[str, str]) -> None:
    body = {
        "model": NAME,
        "prompt": ["def hello(", "x = 1"],
        "max_tokens": 9,
        "seed": 1,
        "echo": False,
    }
    ours, theirs = both(pair, "/v1/completions/render", body, {"X-Request-Id": "c"})
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.json() == theirs.json()


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out.pop("created", None)
    for choice in out.get("choices", []):
        if choice.get("logprobs"):
            for entry in choice["logprobs"]["content"]:
                entry["logprob"] = round(entry["logprob"], 2)
                for top in entry["top_logprobs"]:
                    top["logprob"] = round(top["logprob"], 2)
    return out


@pytest.mark.parametrize("mode", ["tokens", "text"])
def test_rendered_request_generates_the_same_on_both(pair: tuple[str, str], mode: str) -> None:
    (rendered, _) = both(pair, "/v1/chat/completions/render", {"model": NAME, "messages": MESSAGES})
    gen = {
        **rendered.json(),
        "request_id": f"g-{mode}",
        "output_mode": mode,
        "return_token_ids": True,
        "sampling_params": {"temperature": 0.0, "max_tokens": 16, "logprobs": 2},
    }
    ours, theirs = both(pair, "/inference/v1/generate", gen)
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    a, b = comparable(ours.json()), comparable(theirs.json())
    assert list(a) == list(b)
    assert a["model"] == b["model"] == NAME
    assert a == b
    # Streamed, assembled: the same tokens again, in vLLM's chunk shape.
    ours_events = stream_events(pair[0], "/inference/v1/generate", {**gen, "stream": True})
    theirs_events = stream_events(pair[1], "/inference/v1/generate", {**gen, "stream": True})
    for events in (ours_events, theirs_events):
        assert [t for e in events for t in e["choices"][0]["token_ids"]] == a["choices"][0]["token_ids"]
        assert events[-1]["choices"][0]["finish_reason"] == a["choices"][0]["finish_reason"]
    assert list(ours_events[0]) == list(theirs_events[0])
    assert list(ours_events[0]["choices"][0]) == list(theirs_events[0]["choices"][0])


def test_generate_refusals_and_abort(pair: tuple[str, str]) -> None:
    for sampling in ({"temperature": -1.0}, {"max_tokens": 0}, {"top_p": 0.0}):
        ours, theirs = both(
            pair, "/inference/v1/generate", {"token_ids": [1, 2, 3], "sampling_params": sampling}
        )
        assert ours.status_code == theirs.status_code == 400, sampling
    ours, theirs = both(pair, "/inference/v1/abort_requests", {"request_ids": ["generate-tokens-nothing"]})
    assert ours.status_code == theirs.status_code == 200
    assert ours.content == theirs.content == b""
    # The engine kept serving.
    ours, _ = both(
        pair, "/inference/v1/generate", {"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 2}}
    )
    assert ours.status_code == 200 and len(ours.json()["choices"][0]["token_ids"]) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"token_ids": [1, 2, 3, 4], "sampling_params": {"n": 2, "seed": 5, "max_tokens": 6}},
        {
            "token_ids": [1, 2, 3, 4],
            "sampling_params": {"temperature": 0, "max_tokens": 30, "stop": ["owner"]},
            "output_mode": "text",
        },
        {
            "token_ids": [1, 2, 3, 4],
            "sampling_params": {"temperature": 0, "max_tokens": 3, "prompt_logprobs": 1},
        },
        {
            "token_ids": [1, 2, 3, 4],
            "sampling_params": {"temperature": 0, "max_tokens": 3, "detokenize": False},
        },
    ],
)
def test_generate_equals_vllms(pair: tuple[str, str], body: dict) -> None:
    ours, theirs = both(pair, "/inference/v1/generate", body, {"X-Request-Id": "same"})
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert comparable(ours.json()) == comparable(theirs.json())


def test_abort_requests_ends_the_stream_as_vllms_does(pair: tuple[str, str]) -> None:
    body = {
        "token_ids": [1, 2, 3],
        "sampling_params": {"max_tokens": 1500, "ignore_eos": True},
        "stream": True,
    }

    def aborted_final(root: str) -> dict:
        with httpx.Client(timeout=60) as client:
            with client.stream(
                "POST", root + "/inference/v1/generate", json={**body, "request_id": "ab"}
            ) as resp:
                lines = resp.iter_lines()
                next(line for line in lines if line.startswith("data: "))
                r = client.post(
                    root + "/inference/v1/abort_requests", json={"request_ids": ["generate-tokens-ab"]}
                )
                assert r.status_code == 200 and r.content == b""
                events = [line[6:] for line in lines if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        final = orjson.loads(events[-2])
        spans = final["choices"][0].pop("weight_versions")
        assert [s["version"] for s in spans] == ["default"] and spans[0]["start"] == 0
        return final

    ours = aborted_final(pair[0])
    assert ours["choices"][0]["finish_reason"] == "abort"
    # vLLM's abort can lose the race with its own 1500-token generation on a loaded 2-core machine (seen
    # in CI: "length" with the last token): the reference is the run where its abort arrived in time.
    for _ in range(3):
        theirs = aborted_final(pair[1])
        if theirs["choices"][0]["finish_reason"] == "abort":
            break
    assert ours == theirs  # {"finish_reason": "abort", "token_ids": [], ...} on both
