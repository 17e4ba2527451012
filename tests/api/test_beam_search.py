"""``use_beam_search`` through HTTP on the mock engine: vLLM's response shapes for completions and chat,
the refusals (nothing reaches the engine), and a client that leaves midway (every step request it
started is aborted, in one ABORT message)."""

from __future__ import annotations

import struct
from typing import Any

import httpx
import orjson
import pytest
import trio

from trio_front.engine.mock.rules import logprob_row, mock_token
from trio_front.serving.beam_search import BeamParams, BeamResult, BeamSearch, step_logprobs

from .conftest import Server, start_server
from .test_disconnect import open_request, wait_adds

VOCAB = 4096  # the mock's


def present(usage: dict[str, Any]) -> dict[str, Any]:
    """Usage without vLLM's null detail keys (a non-streamed answer has them, the usage event not)."""
    return {k: v for k, v in usage.items() if v is not None}


async def post(server: Server, path: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        return await client.post(path, json=body)


async def sse(server: Server, path: str, body: dict) -> list[Any]:
    events: list[Any] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        async with client.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    data = line[6:]
                    events.append("[DONE]" if data == "[DONE]" else orjson.loads(data))
    assert events[-1] == "[DONE]"
    return events[:-1]


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def expected(server: Server, prompt: list[int], width: int, max_tokens: int, **params: Any) -> BeamResult:
    """The search on the mock's rules, computed without the engine (``mock/rules.py``)."""
    tok = server.app.state.tokenizer
    search = BeamSearch(
        prompt, BeamParams(beam_width=width, max_tokens=max_tokens, **params), tok.eos_token_id
    )
    while not search.done:
        answers = []
        for p in search.step_prompts():
            ids, lps = logprob_row(mock_token(p, 0, VOCAB), 2 * width, VOCAB)
            answers.append(step_logprobs(ids, [_f32(v) for v in lps]))
        search.advance(answers)
    return search.result(tok)


def steps_of(server: Server) -> list[int]:
    """Engine requests per step, from the ids the mock saw (``{request_id}-{uuid}-beam-{i}-{suffix}``)."""
    batches = [rid.rsplit("-beam-", 1)[0] for rid in server.adds()]
    return [batches.count(b) for b in dict.fromkeys(batches)]


# ------------------------------------------------------------------------------------------ completions


async def test_completions_answer_is_the_best_beams(server: Server) -> None:
    tok = server.app.state.tokenizer
    body = {"prompt": "Hello world", "use_beam_search": True, "n": 3, "max_tokens": 4, "temperature": 0}
    r = await post(server, "/v1/completions", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    ids = tok.encode("Hello world")
    want = expected(server, ids, 3, 4, temperature=0.0)
    assert [c["text"] for c in answer["choices"]] == [o.text for o in want.outputs]
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    assert {(c["finish_reason"], c["stop_reason"], c["logprobs"]) for c in answer["choices"]} == {
        ("length", None, None)
    }
    assert present(answer["usage"]) == {
        "prompt_tokens": len(ids),
        "total_tokens": len(ids) + 12,
        "completion_tokens": 12,
    }
    assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-")
    # One engine request for the first step, then one per beam: every one of max_tokens=1.
    assert steps_of(server) == [1, 3, 3, 3]
    assert all(rid.startswith(answer["id"] + "-") for rid in server.adds())
    assert {e["max_tokens"] for e in server.mock.log.named("add")} == {1}
    await server.settle()
    assert server.aborts() == []


async def test_completions_logprobs_are_each_steps_alternatives(server: Server) -> None:
    tok = server.app.state.tokenizer
    body = {"prompt": [1, 22, 33], "use_beam_search": True, "n": 2, "max_tokens": 3, "logprobs": 2}
    r = await post(server, "/v1/completions", body)
    assert r.status_code == 200, r.text
    want = expected(server, [1, 22, 33], 2, 3)
    for choice, out in zip(r.json()["choices"], want.outputs, strict=True):
        lp = choice["logprobs"]
        assert lp["tokens"] == [tok.decode([t], skip_special_tokens=False) for t in out.token_ids]
        assert lp["token_logprobs"] == [step[t] for t, step in zip(out.token_ids, out.logprobs, strict=True)]
        # vLLM: the first logprobs + 1 entries of the step's answer (sampled token first).
        assert [list(top.values()) for top in lp["top_logprobs"]] == [
            list(step.values())[:3] for step in out.logprobs
        ]
        offsets = [0]
        for t in lp["tokens"][:-1]:
            offsets.append(offsets[-1] + len(t))
        assert lp["text_offset"] == offsets


async def test_completions_batch_and_echo(server: Server) -> None:
    tok = server.app.state.tokenizer
    body = {"prompt": ["one", [1, 7, 8]], "use_beam_search": True, "n": 2, "max_tokens": 2, "echo": True}
    r = await post(server, "/v1/completions", body)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    first = expected(server, tok.encode("one"), 2, 2)
    second = expected(server, [1, 7, 8], 2, 2)
    assert [c["text"] for c in choices[:2]] == ["one" + o.text for o in first.outputs]
    echoed = tok.decode([1, 7, 8], skip_special_tokens=False)
    assert [c["text"] for c in choices[2:]] == [echoed + o.text for o in second.outputs]
    usage = r.json()["usage"]
    assert usage["completion_tokens"] == 8 and usage["prompt_tokens"] == len(tok.encode("one")) + 3


REFUSED = [
    ({"stream": True}, "Streaming is not currently supported with beam search", None),
    (
        {"echo": True, "logprobs": 1},
        "`echo` with `logprobs` is not supported with beam search because beam search does not compute "
        "prompt logprobs.",
        "echo",
    ),
    # refused for every request (params.refuse_unsupported) before beam search looks at it
    ({"logprob_token_ids": [5], "logprobs": 1}, None, "logprob_token_ids"),
    ({"n": 11}, "Requested sample logprobs of 22, which is greater than max allowed: 20", "n"),
    ({"n": 0}, "beam_width must be at least 1, got 0.", "n"),
    ({"top_p": 0.5}, "top_p is not supported with beam search", "top_p"),
    ({"seed": 3}, "seed is not supported with beam search", "seed"),
    ({"stop": ["x"]}, "stop is not supported with beam search", "stop"),
    ({"min_tokens": 1}, "min_tokens is not supported with beam search", "min_tokens"),
    (
        {"repetition_penalty": 1.2},
        "repetition_penalty is not supported with beam search",
        "repetition_penalty",
    ),
    ({"response_format": {"type": "json_object"}}, "response_format is not supported with beam search", None),
]


@pytest.mark.parametrize(("extra", "message", "param"), REFUSED, ids=[next(iter(e)) for e, _, _ in REFUSED])
async def test_completions_refusals_reach_no_engine(server: Server, extra: dict, message: str, param) -> None:
    body = {"prompt": "hi", "use_beam_search": True, "n": 2, "max_tokens": 3, **extra}
    r = await post(server, "/v1/completions", body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    if message is not None:
        assert error["message"] == message
    if param is not None:
        assert error["param"] == param
    assert server.adds() == []


@pytest.mark.parametrize("server", [{"frontend": {"max_logprobs": 40}}], indirect=True)
async def test_max_logprobs_bounds_the_width(server: Server) -> None:
    r = await post(
        server, "/v1/completions", {"prompt": [1, 5], "use_beam_search": True, "n": 11, "max_tokens": 2}
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 11
    assert steps_of(server) == [1, 11]


# ------------------------------------------------------------------------------------------ chat

CHAT = {"messages": [{"role": "user", "content": "Say something"}], "use_beam_search": True, "n": 2}


async def test_chat_answer_and_stream_agree(server: Server) -> None:
    body = {**CHAT, "max_tokens": 3, "logprobs": True, "top_logprobs": 2}
    r = await post(server, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["object"] == "chat.completion"
    choices = answer["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert all(c["message"]["role"] == "assistant" and c["finish_reason"] == "length" for c in choices)
    assert all("tool_calls" not in c["message"] for c in choices)  # vLLM drops an empty list
    assert choices[0]["message"]["content"] != choices[1]["message"]["content"]
    assert answer["usage"]["completion_tokens"] == 6
    prompt_ids = server.mock.log.named("add")[0]["prompt_tokens"]
    assert answer["usage"]["prompt_tokens"] == prompt_ids
    for c in choices:
        content = c["logprobs"]["content"]
        assert len(content) == 3
        assert all(len(e["top_logprobs"]) == 2 for e in content)
        # Deliberate difference: vLLM's beam logprobs have "bytes": null (its steps skip detokenizing).
        assert all(e["bytes"] == list(e["token"].encode()) for e in content)
    assert steps_of(server) == [1, 2, 2]

    events = await sse(
        server, "/v1/chat/completions", {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    roles = [e for e in events if e["choices"] and e["choices"][0]["delta"].get("role")]
    assert [e["choices"][0]["index"] for e in roles] == [0, 1]
    streamed: dict[int, str] = {}
    finish: dict[int, str] = {}
    for e in events:
        for c in e["choices"]:
            streamed[c["index"]] = streamed.get(c["index"], "") + (c["delta"].get("content") or "")
            if c["finish_reason"]:
                finish[c["index"]] = c["finish_reason"]
                assert c["logprobs"] == choices[c["index"]]["logprobs"]
    assert streamed == {c["index"]: c["message"]["content"] for c in choices}
    assert finish == {0: "length", 1: "length"}
    assert events[-1]["choices"] == [] and events[-1]["usage"] == present(answer["usage"])


CHAT_REFUSED = [
    ({"top_k": 5}, "top_k is not supported with beam search", "top_k"),
    # refused for every request (params.refuse_unsupported) before beam search looks at it
    ({"logprob_token_ids": [5], "logprobs": True}, None, "logprob_token_ids"),
    (
        {"response_format": {"type": "json_object"}},
        "response_format is not supported with beam search",
        "response_format",
    ),
    (
        {
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
        },
        "tool_choice 'required' is not supported with beam search",
        "tool_choice",
    ),
    ({"n": 12}, "Requested sample logprobs of 24, which is greater than max allowed: 20", "n"),
]


@pytest.mark.parametrize(
    ("extra", "message", "param"), CHAT_REFUSED, ids=[next(iter(e)) for e, _, _ in CHAT_REFUSED]
)
async def test_chat_refusals_reach_no_engine(server: Server, extra: dict, message: str, param) -> None:
    for stream in (False, True):
        r = await post(server, "/v1/chat/completions", {**CHAT, "max_tokens": 3, "stream": stream, **extra})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        if message is not None:
            assert error["message"] == message
        if param is not None:
            assert error["param"] == param
    assert server.adds() == []


# ------------------------------------------------------------------------------------------ disconnect


async def _assert_last_step_aborted_in_one_message(server: Server) -> None:
    await server.settle()
    adds = server.adds()
    aborts = [e for kind in ("abort", "abort_unknown") for e in server.mock.log.named(kind)]
    assert aborts, "the step in flight was aborted"
    # Exactly the requests of the last step, all in one ABORT message (one receive time).
    last_batch = adds[-1].rsplit("-beam-", 1)[0]
    assert sorted(e["request_id"] for e in aborts) == sorted(
        a for a in adds if a.startswith(last_batch + "-")
    )
    assert len({e["t"] for e in aborts}) == 1
    assert server.app.engine.open_requests == 0
    assert not server.mock.live_request_ids


@pytest.mark.parametrize("server", [{"step_ms": 20, "max_num_seqs": 2}], indirect=True)
async def test_a_client_leaving_a_completions_beam_search_aborts_its_step(server: Server) -> None:
    body = {"prompt": [1, 2, 3], "use_beam_search": True, "n": 4, "max_tokens": 500}
    stream = await open_request(server, "/v1/completions", body)
    await wait_adds(server, 1 + 4 + 2)  # in the third step
    await stream.aclose()
    await _assert_last_step_aborted_in_one_message(server)
    assert len(server.adds()) < 1 + 4 * 10


@pytest.mark.parametrize("server", [{"step_ms": 20, "max_num_seqs": 2}], indirect=True)
async def test_a_client_leaving_a_streamed_chat_beam_search_aborts_its_step(server: Server) -> None:
    body = {**CHAT, "n": 3, "max_tokens": 500, "stream": True}
    stream = await open_request(server, "/v1/chat/completions", body)
    await wait_adds(server, 1 + 3 + 1)
    await stream.aclose()
    await _assert_last_step_aborted_in_one_message(server)


async def test_two_prompts_searching_together_are_both_cut() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, step_ms=20)
        body = {"prompt": [[1, 2, 3], [1, 4, 5]], "use_beam_search": True, "n": 2, "max_tokens": 500}
        stream = await open_request(server, "/v1/completions", body)
        await wait_adds(server, 8)
        await stream.aclose()
        await server.settle()
        assert server.app.engine.open_requests == 0 and not server.mock.live_request_ids
        aborts = [e for k in ("abort", "abort_unknown") for e in server.mock.log.named(k)]
        # Whatever was live of either search's step went out in one ABORT message.
        assert aborts and len({e["t"] for e in aborts}) == 1
        nursery.cancel_scope.cancel()


async def test_an_engine_error_in_one_prompts_search_is_a_500_and_stops_the_other(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trio_front.engine import wire
    from trio_front.serving import beam_search

    answer = beam_search._answer

    async def failing(stream):  # the engine fails every step request of the second prompt
        if stream.request.prompt_token_ids[:3] == [1, 4, 5]:
            return wire.FinishReason.ERROR, None, None
        return await answer(stream)

    monkeypatch.setattr(beam_search, "_answer", failing)
    body = {"prompt": [[1, 2, 3], [1, 4, 5]], "use_beam_search": True, "n": 2, "max_tokens": 50}
    r = await post(server, "/v1/completions", body)
    assert r.status_code == 500, r.text
    assert r.json()["error"]["message"] == "the engine failed to process this request"
    await server.settle()
    assert len(server.adds()) < 1 + 2 * 50, "the other prompt's search was cut short"
    assert server.app.engine.open_requests == 0 and not server.mock.live_request_ids


async def test_a_streamed_chat_search_keeps_alive_and_reports_an_engine_error_in_band(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio_front.engine import wire
    from trio_front.serving import beam_search

    answer = beam_search._answer
    calls = []

    async def failing_late(stream):  # the third step fails
        calls.append(1)
        if len(calls) > 1 + 2:
            return wire.FinishReason.ERROR, None, None
        return await answer(stream)

    monkeypatch.setattr(beam_search, "_answer", failing_late)
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, step_ms=30, keep_alive_interval=0.01)
        raw = b""
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            body = {**CHAT, "max_tokens": 5, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_bytes():
                    raw += chunk
        assert b": keep-alive\n\n" in raw, "the long wait said something"
        events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert [orjson.loads(e) for e in events[:-1]] == [
            {
                "error": {
                    "message": "the engine failed to process this request",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
            }
        ]
        await server.settle()
        assert server.app.engine.open_requests == 0 and not server.mock.live_request_ids
        nursery.cancel_scope.cancel()


async def test_return_token_ids(server: Server) -> None:
    body = {"prompt": [1, 22, 33], "use_beam_search": True, "n": 2, "max_tokens": 3, "return_token_ids": True}
    r = await post(server, "/v1/completions", {**body, "echo": True})
    assert r.status_code == 200, r.text
    want = expected(server, [1, 22, 33], 2, 3)
    for choice, out in zip(r.json()["choices"], want.outputs, strict=True):
        assert choice["prompt_token_ids"] == [1, 22, 33] and choice["token_ids"] == out.token_ids
        assert choice["text"] == out.text  # vLLM: the echo is in prompt_token_ids then
    chat = {**CHAT, "max_tokens": 2, "return_token_ids": True}
    answer = (await post(server, "/v1/chat/completions", chat)).json()
    assert len(answer["prompt_token_ids"]) == answer["usage"]["prompt_tokens"]
    assert [len(c["token_ids"]) for c in answer["choices"]] == [2, 2]
    events = await sse(server, "/v1/chat/completions", {**chat, "stream": True})
    assert events[0]["prompt_token_ids"] == answer["prompt_token_ids"]
    final = [c for e in events for c in e["choices"] if c["finish_reason"]]
    assert [c["token_ids"] for c in final] == [c["token_ids"] for c in answer["choices"]]


@pytest.mark.parametrize("server", [{"frontend": {"reasoning_parser": "qwen3"}}], indirect=True)
async def test_chat_beams_go_through_the_reasoning_parser(server: Server) -> None:
    body = {**CHAT, "n": 3, "max_tokens": 4, "return_token_ids": True}
    answer = (await post(server, "/v1/chat/completions", body)).json()
    state = server.app.state
    parser = state.assistant.reasoning_parser_cls(state.tokenizer, {})
    counted = sum(parser.count_reasoning_tokens(c["token_ids"]) for c in answer["choices"])
    assert answer["usage"]["completion_tokens_details"] == {"reasoning_tokens": counted}
    events = await sse(server, "/v1/chat/completions", {**body, "stream": True})
    streamed: dict[int, dict[str, str]] = {}
    for e in events:
        for c in e["choices"]:
            got = streamed.setdefault(c["index"], {"reasoning": "", "content": ""})
            for key in got:
                got[key] += c["delta"].get(key) or ""
    for c in answer["choices"]:
        message = c["message"]
        assert streamed[c["index"]] == {
            "reasoning": message["reasoning"] or "",
            "content": message["content"] or "",
        }
    assert any(c["message"]["reasoning"] for c in answer["choices"]), "the parser saw the beams' text"
