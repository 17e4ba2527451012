"""Hostile and malformed HTTP requests (hypothesis) against every POST endpoint that reaches the tokenizer
or the engine: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/responses``, ``/tokenize``,
``/detokenize``, and (``--enable-scale-out``) ``/inference/v1/generate``, ``/v1/completions/render``,
``/v1/chat/completions/render``.

Each example is a valid request mutated (``fuzz_support``: wrong types, huge/non-finite numbers, lone
surrogates, invalid UTF-8, deep nesting, huge strings, duplicate keys, odd content types). It must get an
answer below 500 within the timeout (a 4xx for the malformed ones; a mutation can leave a request valid, and
then a 200 is right, its stream read to the end with no 5xx error in it); the engine must record no hazard,
stay alive, and the server log no ERROR; and the next valid request must still answer 200. One server for
the module; examples are derandomized, so every run sends the same requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings

from .fuzz_support import FUZZ, TIMEOUT, ThreadedServer, describe, examples, fuzz_server, hostile_body

MODEL = "tiny-llama"
MESSAGES = [{"role": "user", "content": "Hi there"}]
#: examples per endpoint (the module's total stays well under a minute on a loaded 2-core machine)
EXAMPLES = {
    "/v1/completions": 100,
    "/v1/chat/completions": 100,
    "/v1/responses": 80,
    "/tokenize": 60,
    "/detokenize": 60,
    "/inference/v1/generate": 70,
    "/v1/completions/render": 50,
    "/v1/chat/completions/render": 50,
}

SAMPLING = [
    "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "seed", "n", "stop", "stop_token_ids", "ignore_eos", "min_tokens", "max_tokens", "logprobs",
    "logit_bias", "allowed_token_ids", "stream", "stream_options", "priority", "cache_salt", "request_id",
    "echo", "best_of", "use_beam_search", "length_penalty", "truncate_prompt_tokens", "prompt_logprobs",
    "structured_outputs", "response_format", "bad_words", "vllm_xargs", "min_p", "skip_special_tokens",
    "return_token_ids", "guided_json", "guided_regex", "guided_choice", "guided_grammar", "suffix", "user",
    "kv_transfer_params", "thinking_token_budget", "repetition_detection", "add_special_tokens",
]  # fmt: skip
CHAT = [
    "messages", "tools", "tool_choice", "parallel_tool_calls", "top_logprobs", "max_completion_tokens",
    "chat_template", "chat_template_kwargs", "add_generation_prompt", "continue_final_message",
    "documents", "reasoning_effort", "include_reasoning", "mm_processor_kwargs", "modalities",
]  # fmt: skip
RESPONSES = [
    "input", "instructions", "max_output_tokens", "tools", "tool_choice", "text", "reasoning", "store",
    "previous_response_id", "background", "include", "top_logprobs", "truncation", "metadata",
    "parallel_tool_calls", "conversation", "prompt", "service_tier", "max_tool_calls",
]  # fmt: skip
GENERATE = ["token_ids", "sampling_params", "request_id", "output_mode", "stream", "model", "cache_salt"]

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

BASES: dict[str, tuple[list[Any], list[str]]] = {
    "/v1/completions": (
        [
            {"model": MODEL, "prompt": "def hello(", "max_tokens": 3},
            {"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 2, "stream": True, "logprobs": 2},
            {
                "model": MODEL,
                "prompt": ["a", "b"],
                "max_tokens": 2,
                "n": 2,
                "temperature": 0.5,
                "stop": ["x"],
            },
            {
                "prompt": "x",
                "max_tokens": 2,
                "logit_bias": {"5": 1.0},
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            {"prompt": "x", "max_tokens": 2, "structured_outputs": {"choice": ["a", "b"]}, "seed": 1},
            {"prompt": "x", "max_tokens": 2, "response_format": {"type": "json_object"}, "echo": True},
        ],
        SAMPLING,
    ),
    "/v1/chat/completions": (
        [
            {"model": MODEL, "messages": MESSAGES, "max_tokens": 3},
            {
                "messages": MESSAGES,
                "max_completion_tokens": 2,
                "stream": True,
                "logprobs": True,
                "top_logprobs": 2,
            },
            {"messages": [{"role": "system", "content": "s"}, *MESSAGES], "max_tokens": 2, "tools": [TOOL]},
            {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "max_tokens": 2,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            },
            {
                "messages": [
                    *MESSAGES,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                ],
                "max_tokens": 2,
                "tool_choice": "auto",
                "tools": [TOOL],
            },
        ],
        SAMPLING + CHAT,
    ),
    "/v1/responses": (
        [
            {"model": MODEL, "input": "Hi", "max_output_tokens": 3},
            {"input": [{"role": "user", "content": "Hi"}], "max_output_tokens": 2, "stream": True},
            {
                "input": [
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
                ],
                "max_output_tokens": 2,
                "instructions": "be brief",
                "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            },
            {
                "input": "Hi",
                "max_output_tokens": 2,
                "tools": [{"type": "function", "name": "f", "parameters": {}}],
            },
            {"input": "Hi", "max_output_tokens": 2, "temperature": 0.3, "top_p": 0.9, "store": False},
        ],
        SAMPLING + RESPONSES,
    ),
    "/tokenize": (
        [
            {"model": MODEL, "prompt": "hello world"},
            {"messages": MESSAGES, "add_generation_prompt": True, "return_token_strs": True},
            {"prompt": "x", "add_special_tokens": False},
        ],
        ["prompt", "messages", "add_special_tokens", "return_token_strs", "tools", "chat_template", "model"],
    ),
    "/detokenize": (
        [{"model": MODEL, "tokens": [1, 2, 3]}, {"tokens": []}],
        ["tokens", "model", "skip_special_tokens"],
    ),
    "/inference/v1/generate": (
        [
            {"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 3}},
            {"token_ids": [5, 6], "sampling_params": {"max_tokens": 2, "temperature": 0.5}, "stream": True},
            {
                "token_ids": [5],
                "sampling_params": {"max_tokens": 2, "n": 2, "logprobs": 1},
                "output_mode": "text",
            },
        ],
        GENERATE,
    ),
    "/v1/completions/render": (
        [{"model": MODEL, "prompt": "def hello(", "max_tokens": 3}, {"prompt": [1, 2], "max_tokens": 2}],
        SAMPLING,
    ),
    "/v1/chat/completions/render": (
        [{"model": MODEL, "messages": MESSAGES, "max_tokens": 3}, {"messages": MESSAGES, "tools": [TOOL]}],
        SAMPLING + CHAT,
    ),
}
#: scale-out for its routes; tool calling (hermes), so tools and tool_choice reach the parsers
FRONTEND = {"enable_scale_out": True, "enable_auto_tool_choice": True, "tool_call_parser": "hermes"}
VALID = {path: bases[0] for path, (bases, _) in BASES.items()}


@pytest.fixture(scope="module")
def fuzz() -> Iterator[ThreadedServer]:
    with fuzz_server(FRONTEND) as server:
        yield server


@pytest.fixture(scope="module")
def client(fuzz: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz.url, timeout=TIMEOUT) as http:
        yield http


def send(client: httpx.Client, path: str, body: bytes, content_type: str | None) -> tuple[int, bytes]:
    """POST *body*, read the whole answer (a stream to its end); status and bytes."""
    headers = {} if content_type is None else {"content-type": content_type}
    with client.stream("POST", path, content=body, headers=headers) as response:
        return response.status_code, response.read()


def check_answer(status: int, data: bytes, what: str) -> None:
    assert status < 500, f"{what}: {status} {data[:500]!r}"
    if status >= 400:
        error = orjson.loads(data)["error"]
        assert isinstance(error["message"], str) and error["message"], what
        return
    for line in data.split(b"\n"):  # an SSE stream: no event may carry a server error
        if line.startswith(b"data: {"):
            event = orjson.loads(line[6:])
            error = event.get("error") if isinstance(event, dict) else None
            if isinstance(error, dict):
                assert not str(error.get("code", "")).startswith("5"), f"{what}: {event}"
                assert error.get("type") != "server_error", f"{what}: {event}"


def run_example(
    fuzz: ThreadedServer, client: httpx.Client, path: str, body: bytes, ctype: str | None
) -> None:
    what = f"POST {path} content-type={ctype!r} body={describe(body)}"
    fuzz.begin()
    status, data = send(client, path, body, ctype)
    check_answer(status, data, what)
    fuzz.tally[path][str(status)] += 1
    fuzz.settle()
    fuzz.check_engine(what)
    status, data = send(client, path, orjson.dumps(VALID[path]), "application/json")
    assert status == 200, f"the valid request after {what} got {status} {data[:300]!r}"
    fuzz.check_engine(f"the valid request after {what}")


def _fuzz_test(path: str):
    bases, fields = BASES[path]

    @settings(FUZZ, max_examples=examples(EXAMPLES[path]))
    @given(case=hostile_body(bases, fields))
    def test(fuzz: ThreadedServer, client: httpx.Client, case: tuple[bytes, str | None]) -> None:
        run_example(fuzz, client, path, *case)

    test.__name__ = "test_fuzz_" + path.strip("/").replace("/", "_").replace(".", "_")
    test.__doc__ = f"{EXAMPLES[path]} hostile bodies against POST {path}: below 500, the engine unharmed."
    return test


test_fuzz_completions = _fuzz_test("/v1/completions")
test_fuzz_chat = _fuzz_test("/v1/chat/completions")
test_fuzz_responses = _fuzz_test("/v1/responses")
test_fuzz_tokenize = _fuzz_test("/tokenize")
test_fuzz_detokenize = _fuzz_test("/detokenize")
test_fuzz_generate = _fuzz_test("/inference/v1/generate")
test_fuzz_completions_render = _fuzz_test("/v1/completions/render")
test_fuzz_chat_render = _fuzz_test("/v1/chat/completions/render")


def test_the_valid_bases_are_valid(fuzz: ThreadedServer, client: httpx.Client) -> None:
    """Every unmutated base request answers 200: the fuzz starts from requests the server accepts, so a
    4xx for a mutation is the mutation's doing."""
    for path, (bases, _) in BASES.items():
        for base in bases:
            status, data = send(client, path, orjson.dumps(base), "application/json")
            assert status == 200, f"{path} {base}: {status} {data[:300]!r}"
    fuzz.settle()
    fuzz.check_engine("the valid bases")
