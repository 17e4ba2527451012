"""vLLM's deployment settings around the model, end to end through the mock engine: several
``--served-model-name`` names, ``--response-role``, ``--trust-request-chat-template`` and the generation
config's sampling defaults (the params each engine request carries, seen by a spy on the engine client)."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import trio

from .conftest import MODEL, Server, start_server

NAMES = {"served_model_name": "first", "served_model_aliases": ("second", "third")}
MSG = [{"role": "user", "content": "hi"}]
UNTRUSTED = (
    "Chat template is passed with request, but --trust-request-chat-template is not set. Refused request "
    "with untrusted chat template."
)


@asynccontextmanager
async def running(frontend: dict[str, Any] | None = None, **mock: Any) -> AsyncIterator[Server]:
    async with trio.open_nursery() as nursery:
        yield await start_server(nursery, frontend=frontend, **mock)
        nursery.cancel_scope.cancel()


async def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.post(
            path, content=orjson.dumps(body), headers={"content-type": "application/json"}
        )


async def sse(server: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        async with client.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    events.append(orjson.loads(line[6:]))
    return events


def record_params(server: Server) -> list[Any]:
    """Every engine request's SamplingParams, as the engine client sends them."""
    sent: list[Any] = []
    engine = server.app.engine
    generate = engine.generate

    def spy(prompt_ids: list[int], params: Any, **kwargs: Any) -> Any:
        sent.append(params)
        return generate(prompt_ids, params, **kwargs)

    engine.generate = spy  # type: ignore[method-assign]
    return sent


# --------------------------------------------------------------------------------------------------
# --served-model-name A B C


async def test_models_lists_a_card_per_served_name() -> None:
    async with running(NAMES) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            cards = (await client.get("/v1/models")).json()["data"]
            one = (await client.get("/v1/models/third")).json()
        assert [c["id"] for c in cards] == ["first", "second", "third"]
        assert all(c["root"] == str(MODEL) and c["parent"] is None for c in cards)
        assert one["id"] == "third"


async def test_every_name_is_accepted_and_answers_with_the_first() -> None:
    """vLLM's responses carry ``models.model_name()`` (the first name), not the name the client sent."""
    async with running(NAMES) as server:
        for name in ("first", "second", "third", None):
            extra = {} if name is None else {"model": name}
            r = await post(server, "/v1/completions", {"prompt": "x", "max_tokens": 2, **extra})
            assert r.status_code == 200 and r.json()["model"] == "first", r.text
            r = await post(server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2, **extra})
            assert r.status_code == 200 and r.json()["model"] == "first", r.text
            r = await post(server, "/v1/responses", {"input": "hi", "max_output_tokens": 2, **extra})
            assert r.status_code == 200 and r.json()["model"] == "first", r.text
        chunks = await sse(
            server,
            "/v1/chat/completions",
            {"messages": MSG, "max_tokens": 2, "stream": True, "model": "third"},
        )
        assert chunks and {c["model"] for c in chunks} == {"first"}


async def test_an_unknown_name_is_vllms_404_listing_the_names() -> None:
    async with running(NAMES) as server:
        r = await post(server, "/v1/chat/completions", {"messages": MSG, "model": "fourth"})
        assert r.status_code == 404
        assert r.json()["error"] == {
            "message": "The model `fourth` does not exist. Valid aliases: first, second, third.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
        assert server.adds() == []


# --------------------------------------------------------------------------------------------------
# --response-role


async def test_response_role_in_plain_and_streamed_chat() -> None:
    async with running({"response_role": "bot"}) as server:
        r = await post(server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2})
        assert r.json()["choices"][0]["message"]["role"] == "bot"
        chunks = await sse(
            server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2, "stream": True, "n": 2}
        )
        roles = [c["choices"][0]["delta"].get("role") for c in chunks if c["choices"]]
        assert roles[:2] == ["bot", "bot"] and set(roles[2:]) == {None}
        beam = {"messages": MSG, "max_tokens": 2, "use_beam_search": True, "n": 2}
        r = await post(server, "/v1/chat/completions", beam)
        assert {c["message"]["role"] for c in r.json()["choices"]} == {"bot"}


async def test_without_a_generation_prompt_the_role_is_the_last_messages() -> None:
    """vLLM's ``get_chat_request_role``: the answer continues the last message; with ``echo`` that
    message's text (its role equals the answer's) is echoed."""
    async with running({"response_role": "bot"}) as server:
        messages = [*MSG, {"role": "critic", "content": "Well"}]
        body = {"messages": messages, "max_tokens": 2, "add_generation_prompt": False, "echo": True}
        r = await post(server, "/v1/chat/completions", body)
        assert r.status_code == 200, r.text
        message = r.json()["choices"][0]["message"]
        assert message["role"] == "critic" and message["content"].startswith("Well")
        chunks = await sse(server, "/v1/chat/completions", {**body, "stream": True})
        assert chunks[0]["choices"][0]["delta"] == {"role": "critic", "content": ""}


# --------------------------------------------------------------------------------------------------
# --trust-request-chat-template


TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


async def test_a_request_template_is_refused_unless_trusted() -> None:
    async with running() as server:
        for extra in ({"chat_template": TEMPLATE}, {"chat_template_kwargs": {"chat_template": TEMPLATE}}):
            r = await post(server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2, **extra})
            assert r.status_code == 400
            assert r.json()["error"] == {
                "message": UNTRUSTED,
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        r = await post(
            server, "/v1/responses", {"input": "hi", "chat_template_kwargs": {"chat_template": TEMPLATE}}
        )
        assert r.status_code == 400 and r.json()["error"]["message"] == UNTRUSTED
        # other kwargs are not a template
        r = await post(
            server,
            "/v1/chat/completions",
            {"messages": MSG, "max_tokens": 2, "chat_template_kwargs": {"x": 1}},
        )
        assert r.status_code == 200, r.text
        assert len(server.adds()) == 1
    async with running({"trust_request_chat_template": True}) as server:
        r = await post(
            server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2, "chat_template": TEMPLATE}
        )
        assert r.status_code == 200, r.text
        tok = server.app.state.tokenizer
        # the request's template rendered the prompt: just the message text (chat adds no BOS)
        assert server.mock.log.named("add")[-1]["prompt_tokens"] == len(
            tok.encode("hi", add_special_tokens=False)
        )


# --------------------------------------------------------------------------------------------------
# generation-config sampling defaults, end to end

QWEN = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05, "max_new_tokens": 40}


def qwen_like(tmp_path: Path) -> Path:
    target = tmp_path / "qwen-like"
    shutil.copytree(MODEL, target)
    base = json.loads((MODEL / "generation_config.json").read_text())
    (target / "generation_config.json").write_text(json.dumps({**base, **QWEN}))
    return target


async def test_qwen_like_defaults_reach_the_engine(tmp_path: Path) -> None:
    async with running(model=qwen_like(tmp_path)) as server:
        sent = record_params(server)
        r = await post(server, "/v1/chat/completions", {"messages": MSG})
        assert r.status_code == 200, r.text
        p = sent[-1]
        assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.max_tokens) == (
            0.7,
            0.8,
            20,
            1.05,
            40,
        )
        assert server.mock.log.named("add")[-1]["max_tokens"] == 40
        r = await post(
            server, "/v1/chat/completions", {"messages": MSG, "temperature": 0.2, "max_tokens": 60}
        )
        p = sent[-1]
        assert (p.temperature, p.top_k, p.max_tokens) == (0.2, 20, 60)  # the request wins where it speaks
        await post(server, "/v1/completions", {"prompt": "x"})
        assert (sent[-1].temperature, sent[-1].max_tokens) == (0.7, 16)  # completions' own max_tokens
        r = await post(server, "/v1/responses", {"input": "hi"})
        assert r.status_code == 200, r.text
        assert (sent[-1].top_p, sent[-1].max_tokens) == (0.8, 40)
        r = await post(
            server,
            "/v1/chat/completions",
            {"messages": MSG, "use_beam_search": True, "n": 2, "max_tokens": 2},
        )
        assert r.status_code == 200, r.text
        assert {p.temperature for p in sent[-2:]} == {0.7}  # beam steps: only the temperature applies
        assert {p.top_k for p in sent[-2:]} == {0}


async def test_generation_config_vllm_and_the_override(tmp_path: Path) -> None:
    model = qwen_like(tmp_path)
    frontend = {
        "generation_config": "vllm",
        "override_generation_config": '{"top_k": 5, "max_new_tokens": 9}',
    }
    async with running(frontend, model=model) as server:
        sent = record_params(server)
        r = await post(server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 30})
        assert r.status_code == 200, r.text
        p = sent[-1]
        # vllm: the file is ignored; the override's max_new_tokens caps even an explicit max_tokens
        assert (p.temperature, p.top_p, p.top_k, p.max_tokens) == (1.0, 1.0, 5, 9)


# --------------------------------------------------------------------------------------------------
# --return-tokens-as-token-ids (the server default a request may override)


async def test_the_server_default_for_tokens_as_token_ids() -> None:
    async with running() as server:
        server.app.state.return_tokens_as_token_ids = True  # FrontendConfig wiring: the coordinator's
        chat = {"messages": MSG, "max_tokens": 3, "logprobs": True, "top_logprobs": 1}
        r = await post(server, "/v1/chat/completions", chat)
        content = r.json()["choices"][0]["logprobs"]["content"]
        assert all(c["token"].startswith("token_id:") for c in content), content
        r = await post(server, "/v1/completions", {"prompt": "x", "max_tokens": 3, "logprobs": 1})
        tokens = r.json()["choices"][0]["logprobs"]["tokens"]
        assert all(t.startswith("token_id:") for t in tokens), tokens
        chunks = await sse(
            server, "/v1/completions", {"prompt": "x", "max_tokens": 3, "logprobs": 1, "stream": True}
        )
        streamed = [t for c in chunks if c["choices"] for t in c["choices"][0]["logprobs"]["tokens"]]
        assert streamed == tokens
        # a request's own false wins over the server default
        r = await post(server, "/v1/chat/completions", {**chat, "return_tokens_as_token_ids": False})
        content = r.json()["choices"][0]["logprobs"]["content"]
        assert not any(c["token"].startswith("token_id:") for c in content), content
    async with running() as server:  # without the flag: token strings
        r = await post(server, "/v1/completions", {"prompt": "x", "max_tokens": 3, "logprobs": 1})
        assert not any(t.startswith("token_id:") for t in r.json()["choices"][0]["logprobs"]["tokens"])


# --------------------------------------------------------------------------------------------------
# --default-chat-template-kwargs (the renderer's default_kwargs): also what the reasoning parser sees


async def test_default_chat_template_kwargs_reach_the_template_and_the_reasoning_parser() -> None:
    flagged = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if flag %} FLAG{% endif %}"
    frontend = {"reasoning_parser": "qwen3", "chat_template": flagged}
    async with running(frontend) as server:
        state = server.app.state
        state.renderer = attrs.evolve(state.renderer, default_kwargs={"flag": True, "enable_thinking": False})
        sent: list[dict[str, Any]] = []
        generate = server.app.engine.generate

        def spy(prompt_ids: list[int], params: Any, **kwargs: Any) -> Any:
            sent.append({"prompt": prompt_ids, **kwargs})
            return generate(prompt_ids, params, **kwargs)

        server.app.engine.generate = spy  # type: ignore[method-assign]
        tok = state.tokenizer
        r = await post(server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2})
        assert r.status_code == 200, r.text
        assert sent[-1]["prompt"] == tok.encode("hi FLAG", add_special_tokens=False)
        want = {"flag": True, "enable_thinking": False}
        assert sent[-1]["reasoning_parser_kwargs"] == {"chat_template_kwargs": want}
        # the request's own values win; its None does not override a default (vLLM's merge_kwargs)
        body = {
            "messages": MSG,
            "max_tokens": 2,
            "chat_template_kwargs": {"flag": False, "enable_thinking": None},
        }
        r = await post(server, "/v1/chat/completions", body)
        assert sent[-1]["prompt"] == tok.encode("hi", add_special_tokens=False)
        assert sent[-1]["reasoning_parser_kwargs"] == {
            "chat_template_kwargs": {"flag": False, "enable_thinking": False}
        }
        r = await post(server, "/v1/responses", {"input": "hi", "max_output_tokens": 2})
        assert r.status_code == 200, r.text
        assert sent[-1]["reasoning_parser_kwargs"] == {"chat_template_kwargs": want}


# --------------------------------------------------------------------------------------------------
# stream_options.continuous_usage_stats and --enable-force-include-usage (vLLM's should_include_usage)


def _running(chunks: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    return [
        (c["usage"]["prompt_tokens"], c["usage"]["completion_tokens"], c["usage"]["total_tokens"])
        for c in chunks
    ]


async def test_continuous_usage_stats_put_running_usage_on_every_chunk() -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    async with running() as server:
        body = {"prompt": "x", "max_tokens": 4, "stream": True, "stream_options": options}
        chunks = await sse(server, "/v1/completions", body)
        *text, final = chunks
        prompt = final["usage"]["prompt_tokens"]
        assert final["choices"] == [] and final["usage"]["completion_tokens"] == 4
        assert _running(text) == [(prompt, i, prompt + i) for i in range(1, 5)]
        assert all("completion_tokens_details" not in c["usage"] for c in text)  # vLLM leaves it unset
        chat = {"messages": MSG, "max_tokens": 3, "stream": True, "stream_options": options}
        role, *deltas, final = await sse(server, "/v1/chat/completions", chat)
        prompt = final["usage"]["prompt_tokens"]
        assert role["usage"] == {
            "prompt_tokens": prompt,
            "total_tokens": prompt,
            "completion_tokens": 0,
            "completion_tokens_details": None,  # vLLM sets it explicitly: null without a reasoning parser
        }
        assert _running(deltas) == [(prompt, i, prompt + i) for i in range(1, 4)]
        # without continuous_usage_stats only the final event carries usage
        chunks = await sse(server, "/v1/completions", {**body, "stream_options": {"include_usage": True}})
        assert [("usage" in c) for c in chunks] == [False] * 4 + [True]
        r = await post(
            server, "/v1/completions", {**body, "stream_options": {"continuous_usage_stats": "yes"}}
        )
        assert r.status_code == 400 and "continuous_usage_stats" in r.json()["error"]["message"]


async def test_force_include_usage_needs_no_stream_options() -> None:
    async with running() as server:
        server.app.state.enable_force_include_usage = True  # FrontendConfig wiring: the coordinator's
        chunks = await sse(server, "/v1/completions", {"prompt": "x", "max_tokens": 2, "stream": True})
        assert all("usage" in c for c in chunks) and chunks[-1]["choices"] == []
        body = {"messages": MSG, "max_tokens": 2, "stream": True, "stream_options": {"include_usage": False}}
        chunks = await sse(server, "/v1/chat/completions", body)
        assert all("usage" in c for c in chunks) and chunks[-1]["choices"] == []
        beam = {"messages": MSG, "max_tokens": 2, "stream": True, "use_beam_search": True, "n": 2}
        chunks = await sse(server, "/v1/chat/completions", beam)
        assert all("usage" in c for c in chunks)
        assert [c["usage"]["completion_tokens"] for c in chunks[:-1]] == [0, 0, 2, 2]


async def test_running_usage_counts_reasoning_tokens_with_a_reasoning_parser() -> None:
    async with running({"reasoning_parser": "qwen3"}) as server:
        options = {"include_usage": True, "continuous_usage_stats": True}
        chat = {"messages": MSG, "max_tokens": 3, "stream": True, "stream_options": options}
        role, *deltas, final = await sse(server, "/v1/chat/completions", chat)
        assert role["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
        assert all(
            isinstance(c["usage"]["completion_tokens_details"]["reasoning_tokens"], int) for c in deltas
        )
        last = deltas[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"]
        assert last == final["usage"]["completion_tokens_details"]["reasoning_tokens"]
