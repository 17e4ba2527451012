"""vLLM's --enable-scale-out routes on the mock engine: the 403 gate, render, token-in/token-out generate
(tokens and text, streamed and not), abort by request id, and validation before the engine."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import trio

from tests.vllm_oracle import run_in_engine_venv
from trio_front.api.models import ChatCompletionRequest, structure
from trio_front.api.scale_out import DISABLED_MESSAGE, ROUTES
from trio_front.engine.mock import core as mock_core
from trio_front.engine.mock import eos_seed, mock_token

from .conftest import Server, start_server

VOCAB = 4096
MESSAGES = [{"role": "user", "content": "Say hello"}]


def expected_tokens(prompt: list[int], n: int) -> list[int]:
    return [mock_token(prompt, i, VOCAB) for i in range(n)]


@pytest.fixture
async def scale_server():
    async with trio.open_nursery() as nursery:
        yield await start_server(nursery, frontend={"enable_scale_out": True})
        nursery.cancel_scope.cancel()


@pytest.fixture
def seen_adds(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every request the mock engine decodes (full ADD payloads), in order."""
    seen: list[Any] = []
    original = mock_core.decode_add

    def decode(payload: bytes) -> Any:
        req = original(payload)
        seen.append(req)
        return req

    monkeypatch.setattr(mock_core, "decode_add", decode)
    return seen


async def post(server: Server, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.post(path, content=orjson.dumps(body), headers=headers or {})


async def sse(server: Server, path: str, body: dict) -> list[dict]:
    events: list[dict] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        async with client.stream("POST", path, json=body) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    data = line[6:]
                    events.append({"done": True} if data == "[DONE]" else orjson.loads(data))
    assert events[-1] == {"done": True}
    return events[:-1]


def assemble(events: list[dict], text_mode: bool) -> dict[int, dict[str, Any]]:
    """Per choice index: token_ids, text, logprobs content and the finish, as a client adds them up."""
    out: dict[int, dict[str, Any]] = {}
    for event in events:
        for choice in event["choices"]:
            acc = out.setdefault(
                choice["index"], {"token_ids": [], "text": "", "logprobs": None, "finish_reason": None}
            )
            acc["token_ids"] += choice["token_ids"]
            if text_mode:
                acc["text"] += choice["text"]
            if choice["logprobs"] is not None:
                acc["logprobs"] = (acc["logprobs"] or []) + choice["logprobs"]["content"]
            if choice["finish_reason"] is not None:
                acc["finish_reason"] = choice["finish_reason"]
                acc["stop_reason"] = choice["stop_reason"]
    return out


# ------------------------------------------------------------------------------------- the 403 gate


async def test_every_route_is_403_without_the_flag(server: Server) -> None:
    for path in ROUTES:
        r = await post(server, path, {"token_ids": [1, 2], "sampling_params": {}})
        assert r.status_code == 403, (path, r.text)
        assert r.json() == {
            "error": {
                "message": DISABLED_MESSAGE,
                "type": "PermissionDeniedError",
                "param": None,
                "code": 403,
            }
        }
    assert server.adds() == []


async def test_unimplemented_routes_say_so_with_the_flag(scale_server: Server) -> None:
    r = await post(scale_server, "/v1/messages/render", {"messages": MESSAGES, "max_tokens": 5})
    assert r.status_code == 501 and "not supported by trio-front" in r.json()["error"]["message"]


# ------------------------------------------------------------------------------------- generate


async def test_generate_tokens_non_streamed(scale_server: Server) -> None:
    prompt = [1, 50, 60, 70]
    r = await post(
        scale_server,
        "/inference/v1/generate",
        {
            "token_ids": prompt,
            "sampling_params": {"max_tokens": 6},
            "request_id": "abc",
            "return_token_ids": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == [
        "request_id", "model", "created", "usage", "prompt_logprobs", "prompt_token_id_logprobs",
        "prompt_token_ids", "mm_placeholders", "metrics", "kv_transfer_params", "ec_transfer_params",
        "output_mode", "choices",
    ]  # fmt: skip
    assert body["request_id"] == "generate-tokens-abc"
    assert body["model"] == scale_server.app.state.served_model_name
    assert body["output_mode"] == "tokens" and body["prompt_token_ids"] == prompt
    assert body["usage"] == {
        "prompt_tokens": 4,
        "total_tokens": 10,
        "completion_tokens": 6,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    (choice,) = body["choices"]
    assert choice == {
        "index": 0,
        "finish_reason": "length",
        "stop_reason": None,
        "token_ids": expected_tokens(prompt, 6),
        "routed_experts": None,
        "sampling_mask": None,
        "weight_versions": [{"version": "default", "start": 0, "end": 6}],
        "logprobs": None,
    }
    # The engine request carries the external id vLLM would use, and SamplingParams' own defaults.
    (add,) = scale_server.mock.log.named("add")
    assert add["request_id"].startswith("generate-tokens-abc-") and add["max_tokens"] == 6


async def test_generate_defaults_are_samplingparams_defaults_and_max_tokens_fills_the_context(
    scale_server: Server, seen_adds: list[Any]
) -> None:
    seen = seen_adds
    r = await post(
        scale_server,
        "/inference/v1/generate",
        {"token_ids": [1, 5], "sampling_params": {"seed": eos_seed(3)}},
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["token_ids"][-1] == 2  # EOS is a token id here
    (req,) = seen
    params = req.sampling_params
    assert params.max_tokens == scale_server.app.engine.max_model_len - 2
    assert (params.temperature, params.top_p, params.top_k) == (1.0, 1.0, 0)
    assert req.external_req_id.startswith("generate-tokens-")


async def test_generate_text_mode_and_stop_string(scale_server: Server) -> None:
    tok = scale_server.app.state.tokenizer
    prompt = [1, 50, 60]
    ids = expected_tokens(prompt, 8)
    full = tok.decode(ids)
    r = await post(
        scale_server,
        "/inference/v1/generate",
        {"token_ids": prompt, "sampling_params": {"max_tokens": 8}, "output_mode": "text"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output_mode"] == "text"
    choice = body["choices"][0]
    assert list(choice) == [
        "index", "finish_reason", "stop_reason", "token_ids", "routed_experts", "sampling_mask",
        "weight_versions", "text", "logprobs",
    ]  # fmt: skip
    assert choice["text"] == full and choice["token_ids"] == ids


@pytest.mark.parametrize("mode", ["tokens", "text"])
async def test_streamed_assembled_equals_non_streamed(scale_server: Server, mode: str) -> None:
    base = {
        "token_ids": [1, 80, 81, 82],
        "sampling_params": {"max_tokens": 9, "logprobs": 2, "n": 2, "seed": 7},
        "output_mode": mode,
        "request_id": "same",
    }
    r = await post(scale_server, "/inference/v1/generate", base)
    assert r.status_code == 200, r.text
    whole = r.json()
    events = await sse(
        scale_server,
        "/inference/v1/generate",
        {**base, "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}},
    )
    *chunks, final = events
    assert final == {
        "request_id": "generate-tokens-same",
        "usage": {"prompt_tokens": 4, "total_tokens": 22, "completion_tokens": 18},
        "output_mode": mode,
        "choices": [],
    }
    for chunk in chunks:
        assert list(chunk) == ["request_id", "usage", "output_mode", "choices"]
        assert chunk["output_mode"] == mode and len(chunk["choices"]) == 1
        assert chunk["usage"]["prompt_tokens"] == 4
    assembled = assemble(chunks, mode == "text")
    assert sorted(assembled) == [0, 1]
    for choice in whole["choices"]:
        acc = assembled[choice["index"]]
        assert acc["token_ids"] == choice["token_ids"] and len(choice["token_ids"]) == 9
        assert acc["finish_reason"] == choice["finish_reason"] == "length"
        assert acc["logprobs"] == choice["logprobs"]["content"]
        if mode == "text":
            assert acc["text"] == choice["text"] != ""
    # Two samples with seeds 7 and 8 (vLLM's child seeds), one engine request each.
    adds = scale_server.mock.log.named("add")
    assert len(adds) == 4 and all("generate-tokens-same" in a["request_id"] for a in adds)


async def test_tokens_logprobs_shape(scale_server: Server) -> None:
    prompt = [1, 90]
    r = await post(
        scale_server,
        "/inference/v1/generate",
        {"token_ids": prompt, "sampling_params": {"max_tokens": 2, "logprobs": 2}},
    )
    content = r.json()["choices"][0]["logprobs"]["content"]
    ln2 = 0.6931471805599453
    t = expected_tokens(prompt, 2)[0]
    # The mock's row: sampled t (rank 1), then the top-2 t, alt(t, 2); vLLM's dict has t once.
    assert content[0] == {
        "token_id": t,
        "logprob": pytest.approx(-ln2),
        "rank": 1,
        "top_logprobs": [
            {"token_id": t, "logprob": pytest.approx(-ln2), "rank": 1},
            {"token_id": t + 1, "logprob": pytest.approx(-2 * ln2), "rank": 2},
        ],
    }


async def test_x_request_id_header_names_the_request(scale_server: Server) -> None:
    r = await post(
        scale_server,
        "/inference/v1/generate",
        {"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 1}, "request_id": "body"},
        headers={"X-Request-Id": "hdr"},
    )
    assert r.json()["request_id"] == "generate-tokens-hdr"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"sampling_params": {"max_tokens": 3}}, "token_ids"),
        ({"token_ids": [], "sampling_params": {}}, "token_ids"),
        ({"token_ids": [1, -2], "sampling_params": {}}, "token_ids"),
        ({"token_ids": [1, VOCAB], "sampling_params": {}}, "token_ids"),
        ({"token_ids": [1, 2.5], "sampling_params": {}}, "token_ids"),
        ({"token_ids": [1, 2]}, "sampling_params"),
        ({"token_ids": [1, 2], "sampling_params": {"temperature": -1.0}}, "sampling_params.temperature"),
        ({"token_ids": [1, 2], "sampling_params": {"top_p": 0.0}}, "sampling_params.top_p"),
        ({"token_ids": [1, 2], "sampling_params": {"temperature": "hot"}}, "sampling_params.temperature"),
        ({"token_ids": [1, 2], "sampling_params": {"max_tokens": 0}}, "sampling_params.max_tokens"),
        ({"token_ids": [1, 2], "sampling_params": {"bogus": 1}}, "sampling_params.bogus"),
        ({"token_ids": [1, 2], "sampling_params": {"_eos_token_id": 3}}, "sampling_params._eos_token_id"),
        ({"token_ids": [1, 2], "sampling_params": {"watermarking": True}}, "sampling_params.watermarking"),
        ({"token_ids": [1, 2], "sampling_params": {"flat_logprobs": True}}, "sampling_params.flat_logprobs"),
        (
            {"token_ids": [1, 2], "sampling_params": {"stop": ["x"], "detokenize": False}},
            "sampling_params.stop",
        ),
        (
            {"token_ids": [1, 2], "sampling_params": {"stop_token_ids": [VOCAB]}},
            "sampling_params.stop_token_ids",
        ),
        (
            {"token_ids": [1, 2], "sampling_params": {"logit_bias": {"99999": 1.0}}},
            "sampling_params.logit_bias",
        ),
        ({"token_ids": [1, 2], "sampling_params": {"logprobs": 1000}}, "sampling_params.logprobs"),
        (
            {"token_ids": [1, 2], "sampling_params": {"min_tokens": 5, "max_tokens": 2}},
            "sampling_params.min_tokens",
        ),
        ({"token_ids": [1, 2], "sampling_params": {"n": 2, "temperature": 0.0}}, "sampling_params.n"),
        ({"token_ids": [1, 2], "sampling_params": {"output_kind": 7}}, "sampling_params.output_kind"),
        (
            {"token_ids": [1, 2], "sampling_params": {"structured_outputs": {"regex": "a", "json": {}}}},
            "sampling_params.structured_outputs",
        ),
        (
            {"token_ids": [1, 2], "sampling_params": {"detokenize": False}, "output_mode": "text"},
            "output_mode",
        ),
        ({"token_ids": [1, 2], "sampling_params": {}, "output_mode": "logits"}, "output_mode"),
        ({"token_ids": [1, 2], "sampling_params": {}, "kv_transfer_params": {"a": 1}}, "kv_transfer_params"),
        ({"token_ids": [1, 2], "sampling_params": {}, "features": {"mm_hashes": {}}}, "features"),
        ({"token_ids": [1, 2], "sampling_params": {}, "cache_salt": "a/b"}, "cache_salt"),
        (
            {"token_ids": [1, 2], "sampling_params": {}, "reasoning_parser_kwargs": {"x": 1}},
            "reasoning_parser_kwargs",
        ),
        ({"token_ids": [1, 2], "sampling_params": {}, "model": "nope"}, "model"),
        ({"token_ids": [1, 2], "sampling_params": {"stream_interval": 4}}, "sampling_params.stream_interval"),
        (
            {"token_ids": [1, 2], "sampling_params": {"prompt_logprobs": 1}, "stream": True},
            "sampling_params.prompt_logprobs",
        ),
    ],
)
async def test_bad_requests_are_400_before_the_engine(scale_server: Server, body: dict, param: str) -> None:
    r = await post(scale_server, "/inference/v1/generate", body)
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["param"] == param, r.text
    assert scale_server.adds() == []


async def test_render_only_fields_are_accepted_as_vllm_treats_them(scale_server: Server) -> None:
    """``output_kind`` and ``skip_clone`` are overwritten by vLLM's generate too; ``bad_words: []`` and
    ``skip_reading_prefix_cache: false`` are SamplingParams' normalized defaults that render emits."""
    sp = {
        "max_tokens": 2,
        "output_kind": 2,
        "skip_clone": True,
        "bad_words": [],
        "skip_reading_prefix_cache": False,
    }
    events = await sse(
        scale_server, "/inference/v1/generate", {"token_ids": [1, 2], "sampling_params": sp, "stream": True}
    )
    assert sum(len(e["choices"][0]["token_ids"]) for e in events) == 2


# ------------------------------------------------------------------------------------- abort_requests


async def test_abort_requests_ends_a_running_stream() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend={"enable_scale_out": True}, step_ms=20)
        body = {
            "token_ids": [1, 2, 3],
            "sampling_params": {"max_tokens": 500},
            "stream": True,
            "request_id": "r1",
        }
        events: list[dict] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async with client.stream("POST", "/inference/v1/generate", json=body) as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        events.append(orjson.loads(line[6:]))
                        break
                r = await client.post(
                    "/inference/v1/abort_requests", json={"request_ids": ["generate-tokens-r1"]}
                )
                assert r.status_code == 200 and r.content == b""
                async for line in lines:
                    if line.startswith("data: "):
                        data = line[6:]
                        events.append({"done": True} if data == "[DONE]" else orjson.loads(data))
        assert events[-1] == {"done": True}
        last = events[-2]["choices"][0]
        assert last["finish_reason"] == "abort" and last["stop_reason"] is None
        tokens = sum(len(e["choices"][0]["token_ids"]) for e in events[:-1])
        assert 0 < tokens < 500
        await server.settle()
        assert server.aborts() == server.adds()  # the one engine request, aborted once
        # Unknown ids are fine (vLLM answers 200 too); a body without request_ids is not.
        r = await post(server, "/inference/v1/abort_requests", {"request_ids": ["nope"]})
        assert r.status_code == 200
        r = await post(server, "/inference/v1/abort_requests", {"ids": []})
        assert r.status_code == 400 and "request_ids" in r.json()["error"]["message"]
        nursery.cancel_scope.cancel()


async def test_abort_requests_ends_a_non_streamed_request_with_its_tokens() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend={"enable_scale_out": True}, step_ms=20)
        result: dict[str, Any] = {}

        async def generate() -> None:
            r = await post(
                server,
                "/inference/v1/generate",
                {"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 500, "n": 2}, "request_id": "r2"},
            )
            result.update(r.json())

        nursery.start_soon(generate)
        with trio.fail_after(5):
            while len(server.adds()) < 2:
                await trio.sleep(0.01)
        await trio.sleep(0.1)
        r = await post(server, "/inference/v1/abort_requests", {"request_ids": ["generate-tokens-r2"]})
        assert r.status_code == 200
        with trio.fail_after(5):
            while not result:
                await trio.sleep(0.01)
        assert [c["finish_reason"] for c in result["choices"]] == ["abort", "abort"]
        assert all(len(c["token_ids"]) < 500 for c in result["choices"])
        await server.settle()
        assert sorted(server.aborts()) == sorted(server.adds())
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------------- render


def vllm_sampling_dicts(cases: list[tuple[dict, int]]) -> list[dict]:
    """vLLM 0.32's own ``ChatCompletionRequest.to_sampling_params`` JSON for each (body, max_tokens)."""
    script = (
        "import json, sys\n"
        "from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest\n"
        "from vllm.v1.serial_utils import PydanticMsgspecMixin\n"
        "out = []\n"
        "for body, max_tokens in json.loads(sys.stdin.read()):\n"
        "    p = ChatCompletionRequest(**body).to_sampling_params(max_tokens, {})\n"
        "    out.append(PydanticMsgspecMixin._serialize_msgspec(p))\n"
        "print(json.dumps(out))\n"
    )
    return run_in_engine_venv(["-c", script], cases)


RENDER_CASES: list[dict[str, Any]] = [
    {},
    {"max_tokens": 16},
    {"max_completion_tokens": 7, "temperature": 0.0, "top_p": 0.5, "top_k": 5},
    {"temperature": 0.001, "seed": -1},
    {"top_k": -1, "seed": 11, "stop": "x", "stop_token_ids": [5, 5, 6], "min_tokens": 2},
    {"logprobs": True, "top_logprobs": 3, "ignore_eos": True, "include_stop_str_in_output": True},
    {"logit_bias": {"5": 200.0, "7": -3.5}, "skip_special_tokens": False, "n": 2, "seed": 3},
    {"stream": True, "stream_options": {"include_usage": True}, "presence_penalty": 0.5},
    {"response_format": {"type": "json_object"}, "repetition_penalty": 1.2, "frequency_penalty": -0.5},
    {"allowed_token_ids": [5, 6, 7], "spaces_between_special_tokens": False},
]


async def test_chat_render_matches_vllm_and_the_chat_route(scale_server: Server) -> None:
    state = scale_server.app.state
    rendered = []
    for extra in RENDER_CASES:
        r = await post(scale_server, "/v1/chat/completions/render", {"messages": MESSAGES, **extra})
        assert r.status_code == 200, (extra, r.text)
        rendered.append(r.json())
    assert scale_server.adds() == []  # render never reaches the engine
    first = rendered[0]
    assert list(first) == [
        "request_id", "token_ids", "token_offsets", "features", "content_parts", "sampling_params", "model",
        "reasoning_ended", "reasoning_parser_kwargs", "return_token_ids", "output_mode", "stream",
        "stream_options", "cache_salt", "priority", "kv_transfer_params", "ec_transfer_params",
    ]  # fmt: skip
    assert first["request_id"].startswith("chatcmpl-") and first["output_mode"] == "tokens"
    assert first["reasoning_ended"] is None and first["reasoning_parser_kwargs"] is None
    assert rendered[7]["stream"] is True
    assert rendered[7]["stream_options"] == {"include_usage": True, "continuous_usage_stats": False}
    # The prompt is the chat route's own.
    req = structure({"messages": MESSAGES}, ChatCompletionRequest)
    from trio_front.api import chat

    gen, _, _ = await chat.prepare(state, req, stream=False)
    assert first["token_ids"] == gen.prompt_ids
    # sampling_params equal vLLM's serialization of the same request.
    cases = [({"model": "m", "messages": MESSAGES, **extra}, out["sampling_params"].get("max_tokens", 16))
             for extra, out in zip(RENDER_CASES, rendered, strict=True)]  # fmt: skip
    expected = await trio.to_thread.run_sync(vllm_sampling_dicts, cases)
    for extra, out, want in zip(RENDER_CASES, rendered, expected, strict=True):
        assert out["sampling_params"] == want, extra


async def test_render_then_generate_is_the_chat_completion(
    scale_server: Server, seen_adds: list[Any]
) -> None:
    """The rendered request, sent to generate, makes the engine do what the chat route makes it do."""
    seen = seen_adds
    body = {
        "messages": MESSAGES,
        "max_tokens": 6,
        "seed": 5,
        "stop_token_ids": [9],
        "response_format": {"type": "json_object"},
    }
    r = await post(scale_server, "/v1/chat/completions/render", body)
    assert r.status_code == 200, r.text
    gen_req = {**r.json(), "output_mode": "text"}
    r = await post(scale_server, "/inference/v1/generate", gen_req)
    assert r.status_code == 200, r.text
    generated = r.json()["choices"][0]
    r = await post(scale_server, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == generated["text"]
    via_generate, via_chat = seen
    assert via_generate.prompt_token_ids == via_chat.prompt_token_ids
    assert via_generate.sampling_params == via_chat.sampling_params


async def test_render_refuses_what_the_route_refuses(scale_server: Server) -> None:
    r = await post(
        scale_server, "/v1/chat/completions/render", {"messages": MESSAGES, "use_beam_search": True}
    )
    assert (
        r.status_code == 400
        and r.json()["error"]["message"] == "Beam search is not supported by the render endpoint"
    )
    r = await post(scale_server, "/v1/chat/completions/render", {"messages": MESSAGES, "temperature": 9.0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
    r = await post(scale_server, "/v1/chat/completions/render", {"messages": []})
    assert r.status_code == 400
    assert scale_server.adds() == []


async def test_completions_render_one_request_per_prompt(scale_server: Server) -> None:
    from trio_front.api import completions

    if not hasattr(completions, "prepare"):
        pytest.skip("completions.prepare does not exist yet")
    tok = scale_server.app.state.tokenizer
    r = await post(
        scale_server,
        "/v1/completions/render",
        {"prompt": ["Hello there", [1, 7, 8]], "max_tokens": 4},
        headers={"X-Request-Id": "xyz"},
    )
    assert r.status_code == 200, r.text
    items = r.json()
    assert [i["request_id"] for i in items] == ["cmpl-xyz-0", "cmpl-xyz-1"]
    assert items[0]["token_ids"] == tok.encode("Hello there")
    assert items[1]["token_ids"] == [1, 7, 8]
    assert all(i["sampling_params"]["max_tokens"] == 4 for i in items)
    r = await post(scale_server, "/v1/completions/render", {"prompt": "Hi", "max_tokens": 4})
    assert r.json()[0]["request_id"].startswith("cmpl-") and len(r.json()) == 1
    assert scale_server.adds() == []


async def test_prompt_logprobs_and_prompt_token_ids(scale_server: Server) -> None:
    prompt = [1, 30, 31]
    r = await post(
        scale_server,
        "/inference/v1/generate",
        {
            "token_ids": prompt,
            "sampling_params": {"max_tokens": 2, "prompt_logprobs": 1},
            "return_token_ids": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt_token_ids"] == prompt
    field = body["prompt_logprobs"]
    # vLLM's raw shape: None for the first prompt token, then {"<id>": {"logprob", "rank", "decoded_token"}}.
    assert field[0] is None and len(field) == 3
    assert str(prompt[1]) in field[1] and set(field[1][str(prompt[1])]) == {
        "logprob",
        "rank",
        "decoded_token",
    }
    # Streamed: the prompt ids ride on the first chunk only.
    events = await sse(
        scale_server,
        "/inference/v1/generate",
        {"token_ids": prompt, "sampling_params": {"max_tokens": 3}, "return_token_ids": True, "stream": True},
    )
    assert events[0]["prompt_token_ids"] == prompt
    assert all("prompt_token_ids" not in e for e in events[1:])


async def test_client_disconnect_aborts_the_engine_request() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend={"enable_scale_out": True}, step_ms=20)
        body = {"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 500}, "stream": True}
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async with client.stream("POST", "/inference/v1/generate", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        break
        await server.settle()
        assert server.aborts() == server.adds() and len(server.adds()) == 1
        nursery.cancel_scope.cancel()


async def test_weight_version_spans_follow_the_engine() -> None:
    """The engine labels each step with its weight version; a change mid-request splits the span (vLLM's
    ``weight_versions``, on the last stream chunk only)."""
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend={"enable_scale_out": True}, step_ms=20)
        body = {"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 12}, "stream": True}
        events: list[dict] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async with client.stream("POST", "/inference/v1/generate", json=body) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    events.append(orjson.loads(line[6:]))
                    if len(events) == 3:
                        server.mock.core.weight_version = "v2"
        seen = sum(len(e["choices"][0]["token_ids"]) for e in events[:3])
        assert all(e["choices"][0]["weight_versions"] is None for e in events[:-1])
        spans = events[-1]["choices"][0]["weight_versions"]
        assert spans[0] == {"version": "default", "start": 0, "end": spans[1]["start"]}
        assert spans[1]["version"] == "v2" and spans[1]["end"] == 12
        assert seen <= spans[1]["start"] <= seen + 2  # steps in flight may still carry the old label
        nursery.cancel_scope.cancel()


async def test_generate_counts_toward_server_load() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(
            nursery, frontend={"enable_scale_out": True, "enable_server_load_tracking": True}, step_ms=20
        )
        body = {"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 20}, "stream": True}
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async with client.stream("POST", "/inference/v1/generate", json=body) as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        break
                assert (await client.get("/load")).json() == {"server_load": 1}
                async for _ in lines:
                    pass
            with trio.fail_after(5):  # the handler returns just after the last byte
                while (await client.get("/load")).json() != {"server_load": 0}:
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
