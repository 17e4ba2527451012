"""The OpenAI HTTP surface against the mock engine: shapes, validation, and token-exact output."""

from __future__ import annotations

import httpx
import orjson
import pytest

from trio_front.engine.mock import eos_seed, mock_token

from .conftest import Server


def expected_tokens(prompt: list[int], n: int) -> list[int]:
    return [mock_token(prompt, i, 4096) for i in range(n)]


async def post(server: Server, path: str, body: dict | bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return await client.post(path, content=content, headers={"content-type": "application/json"})


async def sse(server: Server, path: str, body: dict) -> list[dict]:
    events: list[dict] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        async with client.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    data = line[6:]
                    events.append({"done": True} if data == "[DONE]" else orjson.loads(data))
    assert events[-1] == {"done": True}
    return events[:-1]


async def test_completion_text_matches_the_mock_rule(server: Server) -> None:
    tok = server.app.state.tokenizer
    r = await post(server, "/v1/completions", {"prompt": "def hello(", "max_tokens": 7, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = tok.encode("def hello(")
    assert body["choices"][0]["text"] == tok.decode(expected_tokens(ids, 7))
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": len(ids),
        "completion_tokens": 7,
        "total_tokens": len(ids) + 7,
        "prompt_tokens_details": None,  # vLLM's keys, null when there is nothing to say
        "completion_tokens_details": None,
    }
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    add = server.mock.log.named("add")[-1]
    assert add["request_id"].startswith(body["id"] + "-")  # engine ids trace back to the response id


async def test_token_id_prompts_and_batches(server: Server) -> None:
    r = await post(server, "/v1/completions", {"prompt": [[1, 50, 60], [1, 70]], "max_tokens": 3})
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert r.json()["usage"]["prompt_tokens"] == 5


async def test_streaming_completion_with_usage(server: Server) -> None:
    events = await sse(
        server,
        "/v1/completions",
        {"prompt": [1, 5, 6], "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}},
    )
    text_events = [e for e in events if e["choices"]]
    assert text_events[-1]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 5
    tok = server.app.state.tokenizer
    assert "".join(e["choices"][0]["text"] for e in text_events) == tok.decode(expected_tokens([1, 5, 6], 5))


async def test_eos_finish_and_stop_reason(server: Server) -> None:
    r = await post(server, "/v1/completions", {"prompt": [1, 5], "max_tokens": 20, "seed": eos_seed(3)})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] is None
    assert r.json()["usage"]["completion_tokens"] == 4  # three ordinary tokens, then EOS (counted, not shown)
    tok = server.app.state.tokenizer
    assert choice["text"] == tok.decode(expected_tokens([1, 5], 3))


async def test_stop_string_aborts_the_engine_request(server: Server) -> None:
    tok = server.app.state.tokenizer
    full = tok.decode(expected_tokens([1, 5, 6], 30))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    r = await post(server, "/v1/completions", {"prompt": [1, 5, 6], "max_tokens": 30, "stop": [stop]})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == stop
    assert choice["text"] == full[: full.index(stop)]
    await server.settle()
    assert server.aborts() == server.adds()[-1:]  # the stop string aborted the engine request once


async def test_chat_completion_and_stream(server: Server) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    r = await post(server, "/v1/chat/completions", {"messages": msgs, "max_tokens": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] == 4
    events = await sse(server, "/v1/chat/completions", {"messages": msgs, "max_tokens": 4, "stream": True})
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text == body["choices"][0]["message"]["content"]
    assert events[-1]["choices"][0]["finish_reason"] == "length"


async def test_logprobs_shapes(server: Server) -> None:
    r = await post(server, "/v1/completions", {"prompt": [1, 5], "max_tokens": 3, "logprobs": 2})
    lp = r.json()["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 3 and len(lp["token_logprobs"]) == 3 and len(lp["top_logprobs"]) == 3
    r = await post(
        server,
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 2,
            "logprobs": True,
            "top_logprobs": 2,
        },
    )
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 2 and len(content[0]["top_logprobs"]) == 2


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        ({"prompt": "x", "max_tokens": "12"}, 400, "max_tokens"),
        ({"prompt": "x", "max_tokens": 12.9}, 400, "max_tokens"),
        ({"prompt": "x", "max_tokens": True}, 400, "max_tokens"),
        ({"prompt": "x", "temperature": 5}, 400, "temperature"),
        ({"prompt": "x", "top_p": 0}, 400, "top_p"),
        ({"prompt": "x", "top_k": -2}, 400, "top_k"),
        ({"prompt": "x", "presence_penalty": 3}, 400, "presence_penalty"),
        ({"prompt": "x", "repetition_penalty": 0}, 400, "repetition_penalty"),
        ({"prompt": "x", "min_tokens": 20, "max_tokens": 5}, 400, "min_tokens"),
        ({"prompt": "x", "logprobs": 50}, 400, "logprobs"),
        ({"prompt": "x", "stop": ["a", ""]}, 400, "stop"),
        ({"prompt": "x", "stop_token_ids": [99999]}, 400, "stop_token_ids"),
        ({"prompt": "x", "logit_bias": {"99999": 1}}, 400, "logit_bias"),
        ({"prompt": "x", "n": 2, "temperature": 0}, 400, "n"),
        ({"prompt": "x", "model": "other"}, 404, "model"),
        ({"prompt": []}, 400, "prompt"),
        ({"prompt": [1, 99999]}, 400, "prompt"),
        ({"prompt": [1, -1]}, 400, "prompt"),
        ({"prompt": [1, True]}, 400, "prompt"),
        ({"prompt": [1, 2.0]}, 400, "prompt"),
        ({"prompt": [[1, 2], [3, False]]}, 400, "prompt"),
        ({"prompt": [1, "a"]}, 400, "prompt"),
        ({"prompt": [True, 1]}, 400, "prompt"),
        ({"prompt": [[1, 2], [99999]]}, 400, "prompt"),
        ({"prompt": ["a", []]}, 400, "prompt"),
        ({"prompt": [1] * 2048}, 400, "input_tokens"),
        ({"prompt": "x", "max_tokens": 4000}, 400, "max_tokens"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ],
)
async def test_bad_completion_requests_get_openai_errors_and_never_reach_the_engine(
    server: Server, body, status: int, param: str | None
) -> None:
    r = await post(server, "/v1/completions", body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == status and error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param
    assert server.adds() == []
    assert server.mock.log.named("hazard") == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, "tool_choice"),
        (
            {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 30, "logprobs": True},
            "top_logprobs",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            None,
        ),
    ],
)
async def test_bad_chat_requests(server: Server, body, param) -> None:
    r = await post(server, "/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    if param:
        assert r.json()["error"]["param"] == param
    assert server.adds() == []


async def test_too_large_body_is_413(server: Server) -> None:
    r = await post(server, "/v1/completions", b'{"prompt": "' + b"x" * (33 * 1024 * 1024) + b'"}')
    assert r.status_code == 413


async def test_admin_endpoints(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/health")).status_code == 200
        models = (await client.get("/v1/models")).json()
        assert models["data"][0]["id"] == "tiny-llama" and models["data"][0]["max_model_len"] == 2048
        assert (await client.get("/version")).json()["version"] == "0.32.0"
        metrics = (await client.get("/metrics")).text
        assert "trio_front_requests_open" in metrics and "trio_front_engine_up" in metrics
        assert (await client.get("/nope")).status_code == 404
        assert (await client.get("/v1/completions")).status_code == 405


async def test_health_is_503_before_the_engine_and_after_it_dies(nursery) -> None:
    import hypercorn.config
    import hypercorn.trio
    import trio

    from trio_front.server import FrontendConfig, build_app

    from .conftest import MODEL, free_port

    port = free_port()
    engine_addr = f"tcp://127.0.0.1:{free_port()}"
    app = build_app(FrontendConfig(engine_addr=engine_addr, model=MODEL, ping_interval=0))
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    await nursery.start(hypercorn.trio.serve, app, config)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/health")).status_code == 503
        r = await client.post("/v1/completions", json={"prompt": "x"})
        assert r.status_code == 503
        from trio_front.engine.mock import MockEngineConfig, run_mock_engine

        mock = await nursery.start(run_mock_engine, MockEngineConfig(engine_addr, step_ms=2))
        with trio.fail_after(10):
            await app.engine.wait_ready()
        assert (await client.get("/health")).status_code == 200
        mock.die()
        with trio.fail_after(5):
            while (await client.get("/health")).status_code != 503:
                await trio.sleep(0.02)
        assert "ENGINE_CORE_DEAD" in (await client.get("/health")).json()["detail"]
    nursery.cancel_scope.cancel()
