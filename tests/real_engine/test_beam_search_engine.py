"""Beam search on the real vLLM engine (through trio-front's HTTP API, the shared ``structured_stack``):
a width of 1 is greedy decoding, wider beams come back best first by vLLM's length-normalized score, and
chat answers in its shape. Short: a few tokens on the tiny model."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.real_engine

PROMPT = "The quick brown fox jumps"


def _post(base: str, path: str, body: dict) -> dict:
    r = httpx.post(f"{base}{path}", json={"model": "tiny", **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_width_one_is_greedy_decoding(structured_stack: str) -> None:
    common = {"prompt": PROMPT, "max_tokens": 6, "ignore_eos": True, "logprobs": 1}
    greedy = _post(structured_stack, "/completions", {**common, "temperature": 0})
    beam = _post(structured_stack, "/completions", {**common, "use_beam_search": True, "n": 1})
    (g,), (b,) = greedy["choices"], beam["choices"]
    assert b["text"] == g["text"]
    assert b["logprobs"]["tokens"] == g["logprobs"]["tokens"]
    assert b["logprobs"]["token_logprobs"] == pytest.approx(g["logprobs"]["token_logprobs"], abs=1e-3)
    assert beam["usage"] == greedy["usage"]


def test_wider_beams_come_back_best_first(structured_stack: str) -> None:
    body = {"prompt": PROMPT, "max_tokens": 4, "ignore_eos": True, "logprobs": 0, "use_beam_search": True}
    answer = _post(structured_stack, "/completions", {**body, "n": 3})
    choices = answer["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["text"] for c in choices}) == 3
    # vLLM's score: cumulative logprob / (prompt + output tokens) ** length_penalty (1.0).
    length = answer["usage"]["prompt_tokens"] + 4
    scores = [sum(c["logprobs"]["token_logprobs"]) / length for c in choices]
    assert scores == sorted(scores, reverse=True)
    assert answer["usage"]["completion_tokens"] == 12
    # The best beam of width 3 is at least as likely as greedy's sequence.
    greedy = _post(structured_stack, "/completions", {**body, "n": 1})
    assert scores[0] >= sum(greedy["choices"][0]["logprobs"]["token_logprobs"]) / length - 1e-4


def test_chat_beam_search(structured_stack: str) -> None:
    body = {
        "messages": [{"role": "user", "content": "Hello"}],
        "use_beam_search": True,
        "n": 2,
        "max_tokens": 3,
        "ignore_eos": True,
    }
    answer = _post(structured_stack, "/chat/completions", body)
    assert [c["index"] for c in answer["choices"]] == [0, 1]
    assert all(c["finish_reason"] == "length" and c["message"]["content"] for c in answer["choices"])
    assert answer["usage"]["completion_tokens"] == 6
