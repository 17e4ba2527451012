"""/tokenize, /detokenize, GET /v1/models/{id}, /ping and /load against the mock engine.

Expected token ids come from the tokenizer and the chat renderer directly (never hard-coded), and every
test checks that the engine saw no request where none should reach it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import trio

from trio_front.engine.launch import find_engine_python
from trio_front.engine.mock import MockEngineConfig, run_mock_engine
from trio_front.server import FrontendConfig, build_app
from trio_front.text.tokenizer import Tokenizer

from .conftest import MODEL, Server, free_port, start_server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http


async def post(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    return await client.post(path, json=body)


async def get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.get(path)


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["code"] == status
    return body


# ------------------------------------------------------------------------------------------ /tokenize


async def test_tokenize_completion_form(server: Server, client: httpx.AsyncClient) -> None:
    tok = server.app.state.tokenizer
    text = "Hello world, héllo <s> 🤖\n\n x"
    r = await post(client, "/tokenize", {"prompt": text})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = tok.encode(text)
    assert list(body) == ["count", "max_model_len", "tokens", "token_strs"]
    assert body == {"count": len(ids), "max_model_len": 2048, "tokens": ids, "token_strs": None}
    assert ids[0] == tok.bos_token_id  # add_special_tokens defaults to true for the completion form

    r = await post(
        client,
        "/tokenize",
        {"model": "tiny-llama", "prompt": text, "add_special_tokens": False, "return_token_strs": True},
    )
    body = r.json()
    plain = tok.encode(text, add_special_tokens=False)
    assert body["tokens"] == plain and body["count"] == len(plain) and plain[0] != tok.bos_token_id
    assert body["token_strs"] == [tok.backend.id_to_token(i) for i in plain]
    assert "".join(body["token_strs"]).startswith("H")  # vocabulary strings, not decoded text
    assert server.adds() == []


_VLLM_TOKEN_STRS = """
import json, sys
from vllm.tokenizers import get_tokenizer
tokenizer = get_tokenizer(sys.argv[1])
print(json.dumps(tokenizer.convert_ids_to_tokens(json.loads(sys.stdin.read()))))
"""


@pytest.mark.real_engine
def test_token_strs_match_vllms_tokenizer_over_the_whole_vocabulary() -> None:
    """``return_token_strs`` is ``convert_ids_to_tokens`` of vLLM's own (cached HF) tokenizer: every id."""
    from tests.real_engine.conftest import require_engine

    require_engine()
    tok = Tokenizer.from_pretrained(MODEL)
    ids = list(range(tok.vocab_size))
    result = subprocess.run(
        [str(find_engine_python()), "-c", _VLLM_TOKEN_STRS, str(MODEL)],
        input=json.dumps(ids),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(theirs) == len(ids) and theirs == tok.convert_ids_to_tokens(ids)


async def test_tokenize_has_no_length_limit(server: Server, client: httpx.AsyncClient) -> None:
    """vLLM tokenizes with ``max_total_tokens=None``: a prompt longer than the context is counted."""
    tok = server.app.state.tokenizer
    text = "word, " * 3000
    r = await post(client, "/tokenize", {"prompt": text, "return_token_strs": True})
    assert r.status_code == 200, r.text
    ids = tok.encode(text)
    assert r.json()["count"] == len(ids) > 4096  # token strings made in a worker thread
    assert r.json()["token_strs"] == tok.convert_ids_to_tokens(ids)
    # ... and a long id list decoded in one
    r = await post(client, "/detokenize", {"tokens": ids})
    assert r.json()["prompt"] == tok.decode(ids, skip_special_tokens=False)


async def test_tokenize_chat_form(server: Server, client: httpx.AsyncClient) -> None:
    state = server.app.state
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    r = await post(client, "/tokenize", {"messages": messages, "return_token_strs": True})
    assert r.status_code == 200, r.text
    body = r.json()
    prompt = state.renderer.render(messages, add_generation_prompt=True).prompt
    ids = state.tokenizer.encode(prompt, add_special_tokens=False)  # chat default: no extra BOS
    assert prompt.endswith("<|assistant|>\n")
    assert body["tokens"] == ids and body["count"] == len(ids)
    assert body["token_strs"] == state.tokenizer.convert_ids_to_tokens(ids)

    r = await post(client, "/tokenize", {"messages": messages, "add_generation_prompt": False})
    prompt = state.renderer.render(messages, add_generation_prompt=False).prompt
    assert "<|assistant|>" not in prompt
    assert r.json()["tokens"] == state.tokenizer.encode(prompt, add_special_tokens=False)

    r = await post(client, "/tokenize", {"messages": messages, "add_special_tokens": True})
    assert r.json()["tokens"] == state.tokenizer.encode(
        state.renderer.render(messages).prompt, add_special_tokens=True
    )

    # continue_final_message: the last (assistant) message stays open, no EOS after it.
    open_messages = [*messages, {"role": "assistant", "content": "Sure, the"}]
    r = await post(
        client,
        "/tokenize",
        {"messages": open_messages, "add_generation_prompt": False, "continue_final_message": True},
    )
    prompt = state.renderer.render(
        open_messages, add_generation_prompt=False, continue_final_message=True
    ).prompt
    assert prompt.endswith("Sure, the")
    assert r.json()["tokens"] == state.tokenizer.encode(prompt, add_special_tokens=False)
    assert server.adds() == []


async def test_tokenize_chat_with_template_tools_and_kwargs(
    server: Server, client: httpx.AsyncClient
) -> None:
    tok = server.app.state.tokenizer
    template = (
        "{% for t in tools %}[{{ t.function.name }}:{{ t.function.description }}]{% endfor %}"
        "{{ greeting }}{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}"
        "{% if add_generation_prompt %}GO{% endif %}"
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = {
        "messages": [{"role": "user", "content": "rain?"}],
        "chat_template": template,
        "chat_template_kwargs": {"greeting": "hey ", "add_generation_prompt": False},
        "tools": tools,
    }
    r = await post(client, "/tokenize", body)
    assert r.status_code == 400 and "--trust-request-chat-template" in r.text, r.text  # vLLM's refusal
    server.app.state.trust_request_chat_template = True
    r = await post(client, "/tokenize", body)
    assert r.status_code == 200, r.text
    # The explicit add_generation_prompt (default true) beats the kwargs' copy, as in vLLM.
    expected = "[get_weather:None]hey user=rain?;GO"
    assert r.json()["tokens"] == tok.encode(expected, add_special_tokens=False)


async def test_tokenize_form_selection_and_errors(server: Server, client: httpx.AsyncClient) -> None:
    state = server.app.state
    messages = [{"role": "user", "content": "x"}]
    # vLLM's union resolves a body with both fields to the chat form.
    r = await post(client, "/tokenize", {"prompt": "ignored", "messages": messages})
    chat_ids = state.tokenizer.encode(state.renderer.render(messages).prompt, add_special_tokens=False)
    assert r.json()["tokens"] == chat_ids

    for both in (
        {"messages": messages, "continue_final_message": True, "add_generation_prompt": True},
        {"messages": messages, "continue_final_message": True},  # add_generation_prompt defaults to true
        {
            "model": "gpt-4",
            "messages": messages,
            "continue_final_message": True,
            "add_generation_prompt": True,
        },
    ):
        assert error(await post(client, "/tokenize", both), 400)["message"] == (
            "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
        )
    both = {"messages": messages, "continue_final_message": True, "add_generation_prompt": False}
    assert (await post(client, "/tokenize", both)).status_code == 200

    assert error(await post(client, "/tokenize", {}), 400)["param"] == "prompt"
    assert error(await post(client, "/tokenize", {"prompt": ["a"]}), 400)["param"] == "prompt"
    assert error(await post(client, "/tokenize", {"prompt": "a", "add_special_tokens": 1}), 400)
    assert error(await post(client, "/tokenize", {"messages": "hi"}), 400)["param"] == "messages"
    assert (
        error(await post(client, "/tokenize", {"messages": [{"content": "x"}]}), 400)["param"] == "messages"
    )
    assert (
        error(await post(client, "/tokenize", {"messages": messages, "tools": {}}), 400)["param"] == "tools"
    )
    bad_tool = [{"type": "function", "function": {"description": "no name"}}]
    assert error(await post(client, "/tokenize", {"messages": messages, "tools": bad_tool}), 400)
    kwargs = {"messages": messages, "chat_template_kwargs": ["x"]}
    assert error(await post(client, "/tokenize", kwargs), 400)["param"] == "chat_template_kwargs"
    mm = {"messages": messages, "mm_processor_kwargs": {"size": 3}}
    assert error(await post(client, "/tokenize", mm), 400)["param"] == "mm_processor_kwargs"
    assert (await post(client, "/tokenize", {**mm, "mm_processor_kwargs": {}})).status_code == 200
    assert error(await client.post("/tokenize", content=b"{nope"), 400)
    assert error(await client.get("/tokenize"), 405)
    unknown = error(await post(client, "/tokenize", {"model": "gpt-4", "prompt": "x"}), 404)
    assert unknown["param"] == "model" and "gpt-4" in unknown["message"]
    assert error(await post(client, "/tokenize", {"model": "gpt-4", "messages": messages}), 404)
    assert server.adds() == []


async def test_tokenize_before_the_engine_registered_is_503(nursery: trio.Nursery) -> None:
    import hypercorn.config
    import hypercorn.trio

    port, engine_port = free_port(), free_port()
    engine_addr = f"tcp://127.0.0.1:{engine_port}"
    app = build_app(FrontendConfig(engine_addr=engine_addr, model=MODEL, ping_interval=0))
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    await nursery.start(hypercorn.trio.serve, app, config)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        assert (await client.post("/tokenize", json={"prompt": "x"})).status_code == 503
        # /detokenize needs nothing from the engine.
        r = await client.post("/detokenize", json={"tokens": [1, 300]})
        assert r.status_code == 200 and r.json()["prompt"] == app.state.tokenizer.decode([1, 300], False)
        assert (await client.get("/ping")).status_code == 503
        # The model card exists, without max_model_len yet.
        assert (await client.get("/v1/models/tiny-llama")).json()["max_model_len"] is None
        await nursery.start(run_mock_engine, MockEngineConfig(engine_addr, step_ms=2, max_model_len=777))
        with trio.fail_after(10):
            await app.engine.wait_ready()
        r = await client.post("/tokenize", json={"prompt": "x"})
        assert r.status_code == 200 and r.json()["max_model_len"] == 777
        assert (await client.get("/ping")).status_code == 200
    nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- /detokenize


async def test_detokenize(server: Server, client: httpx.AsyncClient) -> None:
    tok = server.app.state.tokenizer
    ids = tok.encode("Hello there, héllo 🤖!")
    r = await post(client, "/detokenize", {"model": "tiny-llama", "tokens": ids})
    assert r.status_code == 200, r.text
    # Special tokens stay (vLLM decodes with skip_special_tokens=False).
    assert r.json() == {"prompt": tok.decode(ids, skip_special_tokens=False)}
    assert r.json()["prompt"].startswith("<s>")
    assert (await post(client, "/detokenize", {"tokens": []})).json() == {"prompt": ""}

    vocab = tok.vocab_size
    for bad in (vocab, -1, 2**40):
        body = error(await post(client, "/detokenize", {"tokens": [5, bad]}), 400)
        assert body["param"] == "tokens" and body["message"] == f"Token id {bad} is out of vocabulary"
    # the last id in the vocabulary is fine
    assert (await post(client, "/detokenize", {"tokens": [vocab - 1]})).status_code == 200
    for shape in ({"tokens": "12"}, {"tokens": [1.0]}, {"tokens": [True]}, {"tokens": [10**30]}, {}):
        assert error(await post(client, "/detokenize", shape), 400)
    assert error(await post(client, "/detokenize", {"model": "nope", "tokens": [1]}), 404)["param"] == "model"
    assert server.adds() == []


# ------------------------------------------------------------------------------------------- models


async def test_model_retrieve_matches_the_list(server: Server, client: httpx.AsyncClient) -> None:
    listed = (await get(client, "/v1/models")).json()
    assert listed["object"] == "list" and len(listed["data"]) == 1
    card = (await get(client, "/v1/models/tiny-llama")).json()
    assert card["id"] == "tiny-llama" and card["object"] == "model" and card["max_model_len"] == 2048
    assert card["root"] == server.app.state.model_path and card["parent"] is None
    # Same card, but for vLLM's per-response permission id.
    strip = {k: v for k, v in card.items() if k != "permission"}
    assert strip == {k: v for k, v in listed["data"][0].items() if k != "permission"}
    [permission] = card["permission"]
    assert permission["object"] == "model_permission" and permission["id"].startswith("modelperm-")

    missing = error(await get(client, "/v1/models/gpt-4"), 404)
    assert (
        missing["type"] == "NotFoundError" and missing["param"] == "model" and "gpt-4" in missing["message"]
    )
    assert error(await get(client, "/v1/models/tiny-llama/x"), 404)
    assert error(await client.post("/v1/models/tiny-llama"), 405)


async def test_openai_sdk_models_retrieve(server: Server) -> None:
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    try:
        model = await client.models.retrieve("tiny-llama")
        assert model.id == "tiny-llama" and model.object == "model" and model.owned_by == "vllm"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("no-such-model")
        listed = await client.models.list()
        assert [m.id for m in listed.data] == ["tiny-llama"]
    finally:
        await client.close()


class _FakeLoRA:
    """What ``serving/lora.py`` provides to these routes: ``cards(created)`` and ``resolve(name)``."""

    def cards(self, created: int) -> list[dict[str, Any]]:
        return [{"id": "my-adapter", "object": "model", "root": "/adapters/a", "parent": "tiny-llama"}]

    def resolve(self, name: str) -> object | None:
        return object() if name == "my-adapter" else None


async def test_lora_cards_are_listed_and_retrievable(server: Server, client: httpx.AsyncClient) -> None:
    server.app.state.lora = _FakeLoRA()
    ids = [c["id"] for c in (await get(client, "/v1/models")).json()["data"]]
    assert ids == ["tiny-llama", "my-adapter"]
    card = (await get(client, "/v1/models/my-adapter")).json()
    assert card["parent"] == "tiny-llama" and card["root"] == "/adapters/a"
    # An adapter's name is a valid model for the tokenizer routes (the base tokenizer applies).
    r = await post(client, "/tokenize", {"model": "my-adapter", "prompt": "hi"})
    assert r.json()["tokens"] == server.app.state.tokenizer.encode("hi")


# ---------------------------------------------------------------------------------------- /ping /load


async def test_ping_is_health(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        health = await client.get("/health")
        for r in (await client.get("/ping"), await client.post("/ping"), await client.post("/ping", json={})):
            assert r.status_code == health.status_code == 200 and r.content == health.content
        assert (await client.post("/health")).status_code == 405
        server.mock.die()
        with trio.fail_after(5):
            while (await client.get("/health")).status_code != 503:
                await trio.sleep(0.02)
        assert (await client.get("/ping")).status_code == 503
        assert (await client.post("/ping")).status_code == 503


async def test_load_is_zero_without_tracking(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        async with client.stream(
            "POST", "/v1/completions", json={"prompt": "x", "max_tokens": 200, "stream": True}
        ) as response:
            lines = response.aiter_lines()
            await anext(lines)
            assert server.app.engine.open_requests == 1
            assert (await client.get("/load")).json() == {"server_load": 0}


async def _load(client: httpx.AsyncClient) -> int:
    r = await client.get("/load")
    assert r.status_code == 200 and list(r.json()) == ["server_load"]
    return r.json()["server_load"]


async def _wait_load(client: httpx.AsyncClient, expected: int) -> None:
    with trio.fail_after(5):
        while await _load(client) != expected:
            await trio.sleep(0.01)


async def test_load_counts_generate_requests_in_flight(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, frontend={"enable_server_load_tracking": True}, step_ms=20)
    stream_body = {"prompt": "x", "max_tokens": 100, "stream": True}
    chat_body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 100, "stream": True}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        assert await _load(client) == 0
        # Keep the line iterators referenced: a collected one closes its connection (a disconnect).
        async with client.stream("POST", "/v1/completions", json=stream_body) as first:
            first_lines = first.aiter_lines()
            await anext(first_lines)
            assert await _load(client) == 1
            async with client.stream("POST", "/v1/chat/completions", json=chat_body) as second:
                second_lines = second.aiter_lines()
                await anext(second_lines)
                assert await _load(client) == 2
                # Non-generate routes are not counted.
                assert (await client.post("/tokenize", json={"prompt": "x"})).status_code == 200
                assert await _load(client) == 2
            # The chat stream was closed early (a disconnect): its count is gone.
            await _wait_load(client, 1)
        await _wait_load(client, 0)

        # A stream read to its end, a non-streamed request and an error leave nothing behind.
        async with client.stream("POST", "/v1/completions", json={**stream_body, "max_tokens": 3}) as r:
            async for _ in r.aiter_lines():
                pass
        r = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert r.status_code == 200
        assert (await client.post("/v1/completions", json={"prompt": 5})).status_code == 400
        assert (await client.post("/v1/responses", json={"input": "x", "max_output_tokens": 2})).status_code
        assert await _load(client) == 0
    await server.settle()
    nursery.cancel_scope.cancel()


async def test_load_counts_a_non_streamed_request_while_it_runs(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, frontend={"enable_server_load_tracking": True}, step_ms=20)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        seen: list[int] = []

        async def completion() -> None:
            r = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 30})
            assert r.status_code == 200

        async with trio.open_nursery() as inner:
            inner.start_soon(completion)
            with trio.fail_after(5):
                while not server.adds():
                    await trio.sleep(0.005)
            seen.append(await _load(client))
        assert seen == [1]
        assert await _load(client) == 0
    nursery.cancel_scope.cancel()
