"""serving/params.py: vLLM 0.32's request validation, messages and engine params.

The parity tests run vLLM's own ``CompletionRequest``/``ChatCompletionRequest`` → ``to_sampling_params`` →
``SamplingParams.verify`` → ``update_from_tokenizer`` in the engine venv (``params_oracle.py``) on the same
bodies and compare: the same first error message, or the same engine-relevant params (bad-word token ids
included). They skip without the engine venv (fail in CI)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.vllm_oracle import run_in_engine_venv
from trio_front.api.errors import APIError
from trio_front.api.models import ChatCompletionRequest, CompletionRequest, structure
from trio_front.engine import wire
from trio_front.serving.params import (
    ModelLimits,
    ParamError,
    added_special_tokens,
    bad_words_token_ids,
    build_params,
    chat_logprobs,
    child_params,
    refuse_unsupported,
    requested_prompt_logprobs,
    truncate_prompt,
)
from trio_front.text.tokenizer import Tokenizer

MODEL = Path(__file__).resolve().parents[2] / "models" / "tiny-llama"
ORACLE = Path(__file__).with_name("params_oracle.py")
TOK = Tokenizer.from_pretrained(MODEL)
LIMITS = ModelLimits.from_tokenizer(TOK, 2048)
MSG = [{"role": "user", "content": "hi"}]


def request(api: str, body: dict[str, Any]) -> CompletionRequest | ChatCompletionRequest:
    if api == "completion":
        return structure({"prompt": "x", **body}, CompletionRequest)
    return structure({"messages": MSG, **body}, ChatCompletionRequest)


def ours(api: str, body: dict[str, Any], *, max_tokens: int = 16, limits: ModelLimits = LIMITS):
    """What the handlers do: refuse, resolve logprobs, build (raises ParamError/APIError)."""
    req = request(api, body)
    refuse_unsupported(req)
    if api == "chat":
        logprobs, param = chat_logprobs(req.logprobs, req.top_logprobs), "top_logprobs"
    else:
        logprobs, param = req.logprobs, "logprobs"
    params, _ = build_params(
        req,
        limits=limits,
        max_tokens=max_tokens,
        logprobs=logprobs,
        prompt_logprobs=requested_prompt_logprobs(req),
        stream=req.stream,
        tokenizer=TOK,
        logprobs_param=param,
    )
    return req, params


def error_of(api: str, body: dict[str, Any], **kw: Any) -> ParamError:
    with pytest.raises(ParamError) as info:
        ours(api, body, **kw)
    return info.value


def _key(case: dict[str, Any]) -> str:
    return json.dumps(case, sort_keys=True)


@functools.cache
def _oracle_answers() -> dict[str, Any]:
    """vLLM's answers for every case of this module, from one engine-venv process (importing vLLM
    takes seconds)."""
    cases = all_cases()
    payload = {"model": str(MODEL), "max_logprobs": 20, "cases": cases}
    answers = run_in_engine_venv([str(ORACLE)], payload, timeout=600)
    return {_key(c): a for c, a in zip(cases, answers, strict=True)}


def vllm(cases: list[dict[str, Any]]) -> list[Any]:
    answers = _oracle_answers()
    return [answers[_key(c)] for c in cases]


# --------------------------------------------------------------------------------------------------
# Parity with vLLM: the first error message, or the params


ERROR_CASES: list[tuple[str, dict[str, Any]]] = [
    ("completion", {"n": 0}),
    ("completion", {"n": 16385}),
    ("completion", {"n": 2, "temperature": 0}),
    ("chat", {"n": 3, "temperature": 0.0}),
    ("completion", {"logprobs": 21}),
    ("completion", {"logprobs": -1}),
    ("completion", {"logprobs": -2}),
    ("completion", {"prompt_logprobs": 21}),
    ("completion", {"prompt_logprobs": -1}),
    ("completion", {"prompt_logprobs": -2}),
    ("completion", {"prompt_logprobs": 1, "stream": True}),
    ("completion", {"echo": True, "logprobs": 25}),
    ("chat", {"logprobs": True, "top_logprobs": 21}),
    ("chat", {"logprobs": True, "top_logprobs": -1}),
    ("chat", {"logprobs": True, "top_logprobs": -2}),
    ("chat", {"top_logprobs": 5}),
    ("chat", {"prompt_logprobs": 3, "stream": True}),
    ("completion", {"logit_bias": {"abc": 1.0, "7": 2.0, "1.5": 0.0}}),
    ("completion", {"logit_bias": {"5000": 1.0, "-3": 1.0, "5": 1.0}}),
    ("completion", {"stop_token_ids": [5, 4096, -1]}),
    ("completion", {"allowed_token_ids": []}),
    ("completion", {"allowed_token_ids": [1, 4096]}),
    ("completion", {"bad_words": ["hello", ""]}),
    ("completion", {"bad_words": ["   "]}),
    ("completion", {"bad_words": ["ok", "\n"]}),
    ("chat", {"bad_words": ["", "x", ""]}),
    ("completion", {"vllm_xargs": {"a": 2**70}}),
    ("completion", {"vllm_xargs": {"a": [1, -(2**63) - 1]}}),
    ("completion", {"cache_salt": ""}),
    ("completion", {"cache_salt": "a/b"}),
    ("chat", {"cache_salt": "x" * 129}),
    ("chat", {"cache_salt": "has@at"}),
    ("completion", {"thinking_token_budget": -2}),
    ("completion", {"repetition_detection": {"max_pattern_size": 2, "min_count": 1}}),
    ("completion", {"repetition_detection": {"max_pattern_size": 1, "min_pattern_size": 2, "min_count": 2}}),
    ("chat", {"repetition_detection": {"max_pattern_size": -1}}),
    ("completion", {"temperature": -0.5}),
    ("completion", {"temperature": 2.5}),
    ("completion", {"top_p": 0}),
    ("completion", {"top_p": 1.5}),
    ("completion", {"top_k": -2}),
    ("completion", {"min_p": 1.5}),
    ("completion", {"presence_penalty": 3}),
    ("completion", {"frequency_penalty": -2.5}),
    ("completion", {"repetition_penalty": 0}),
    ("completion", {"min_tokens": -1}),
    ("completion", {"min_tokens": 17}),
    ("completion", {"stop": ["a", ""]}),
]


def test_error_messages_equal_vllms() -> None:
    answers = vllm([{"api": api, "body": body} for api, body in ERROR_CASES])
    for (api, body), answer in zip(ERROR_CASES, answers, strict=True):
        assert "error" in answer and not answer.get("pydantic"), (body, answer)
        assert str(error_of(api, body)) == answer["error"], body


OK_CASES: list[tuple[str, dict[str, Any]]] = [
    ("completion", {}),
    ("completion", {"n": 4, "seed": 11}),
    ("completion", {"n": 2, "temperature": 1e-6}),  # the engine raises it to 1e-2: not greedy
    ("completion", {"logprobs": 20, "prompt_logprobs": 0}),
    ("completion", {"logprobs": 0}),
    ("completion", {"echo": True, "logprobs": 3}),
    ("completion", {"echo": True, "logprobs": 2, "prompt_logprobs": 5}),
    ("completion", {"prompt_logprobs": 0, "stream": True}),
    ("completion", {"echo": True, "logprobs": 2, "stream": True}),
    ("chat", {"logprobs": True, "top_logprobs": 20, "prompt_logprobs": 4}),
    ("chat", {"logprobs": True}),
    ("chat", {"echo": True, "logprobs": True, "top_logprobs": 2}),
    ("chat", {"top_logprobs": 0}),
    ("completion", {"logit_bias": {"5": 150.0, "6": -200.0, " 7": 0.5, "+8": 1.0}}),
    ("completion", {"allowed_token_ids": [4, 4, 9]}),
    ("completion", {"stop_token_ids": [9, 5, 9]}),
    ("completion", {"vllm_xargs": {"a": 1, "b": [1, "x", 2.5], "c": True, "d": 2**64 - 1}}),
    ("completion", {"vllm_xargs": {}}),
    ("completion", {"thinking_token_budget": -1}),
    ("completion", {"repetition_detection": {"max_pattern_size": 3, "min_pattern_size": 1, "min_count": 2}}),
    ("chat", {"repetition_detection": {"max_pattern_size": 0, "extra": 1}}),
    ("completion", {"cache_salt": "s" * 128}),
    ("completion", {"bad_words": ["hello", "world", " foo", "Hello world", "über", "123", "a", "!!", "a"]}),
    ("chat", {"bad_words": ["  lead", "x y z", "<s>", "日本", "\ttab"]}),
]


def test_params_equal_vllms() -> None:
    answers = vllm([{"api": api, "body": body} for api, body in OK_CASES])
    for (api, body), answer in zip(OK_CASES, answers, strict=True):
        assert "params" in answer, (body, answer)
        want = answer["params"]
        req, params = ours(api, body)
        assert params.n == 1 and req.n == want["n"], body
        assert params.seed == want["seed"], body
        assert params.logprobs == want["logprobs"], body
        assert params.prompt_logprobs == want["prompt_logprobs"], body
        bias = {str(k): v for k, v in (params.logit_bias or {}).items()} or None
        assert bias == want["logit_bias"], body
        assert params.allowed_token_ids == want["allowed_token_ids"], body
        assert params.bad_words_token_ids == want["bad_words_token_ids"], body
        assert params.extra_args == want["extra_args"], body
        rd = params.repetition_detection
        assert (None if rd is None else [rd.max_pattern_size, rd.min_pattern_size, rd.min_count]) == want[
            "repetition_detection"
        ], body
        if body.get("stop_token_ids"):
            assert params.stop_token_ids == want["stop_token_ids"], body


DECODE_BODY = {
    "echo": True,
    "logprobs": 2,
    "bad_words": ["hello"],
    "vllm_xargs": {"k": [1, "v"], "big": 2**64 - 1},
    "repetition_detection": {"max_pattern_size": 4, "min_pattern_size": 2, "min_count": 3},
}


def _payload(params: wire.SamplingParams) -> str:
    request = wire.EngineCoreRequest(
        request_id="cmpl-x-0", prompt_token_ids=[1, 5, 6], sampling_params=params, arrival_time=1.0
    )
    return wire.encode(request).hex()


def decode_cases() -> list[dict[str, Any]]:
    return [
        {"op": "decode", "payload": _payload(ours("completion", DECODE_BODY)[1])},
        {"op": "decode", "payload": _payload(ours("completion", {})[1])},
    ]


def test_the_engine_decodes_our_params_to_the_same_values() -> None:
    """Our ADD bytes through vLLM's own decoder (``__post_init__`` runs: the engine's input thread
    survives) give the values we meant; ``skip_reading_prefix_cache`` is never sent and vLLM derives it."""
    _, params = ours("completion", DECODE_BODY)
    raw = msgspec.msgpack.decode(wire.encode(params))
    assert "skip_reading_prefix_cache" not in raw and "n" not in raw
    assert raw["repetition_detection"] == {"max_pattern_size": 4, "min_pattern_size": 2, "min_count": 3}
    full, plain = vllm(decode_cases())
    got = full["params"]
    assert got["prompt_logprobs"] == 2 and got["logprobs"] == 2
    assert got["skip_reading_prefix_cache"] is True
    assert got["bad_words_token_ids"] == params.bad_words_token_ids
    assert got["extra_args"] == {"k": [1, "v"], "big": 2**64 - 1}
    assert got["repetition_detection"] == [4, 2, 3]
    assert plain["params"]["skip_reading_prefix_cache"] is False


CAP_CASES: list[tuple[str, dict[str, Any]]] = [
    ("completion", {"logprobs": 30}),
    ("completion", {"prompt_logprobs": 31}),
    ("completion", {"logprobs": -1}),
    ("chat", {"logprobs": True, "top_logprobs": 25}),
]
MAX_LOGPROBS_VALUES = (25, -1)


def test_max_logprobs_caps_as_vllm_does() -> None:
    cases = CAP_CASES
    for max_logprobs in MAX_LOGPROBS_VALUES:
        limits = ModelLimits.from_tokenizer(TOK, 2048, max_logprobs=max_logprobs)
        answers = vllm([{"api": a, "body": b, "max_logprobs": max_logprobs} for a, b in cases])
        for (api, body), answer in zip(cases, answers, strict=True):
            if "error" in answer:
                assert str(error_of(api, body, limits=limits)) == answer["error"], (max_logprobs, body)
            else:
                _, params = ours(api, body, limits=limits)
                assert params.logprobs == answer["params"]["logprobs"], (max_logprobs, body)
                assert params.prompt_logprobs == answer["params"]["prompt_logprobs"]


# --------------------------------------------------------------------------------------------------
# Local properties (no engine venv needed)


def test_errors_name_the_parameter() -> None:
    expected = {
        ("completion", "n"): {"n": 0},
        ("completion", "logprobs"): {"logprobs": 21},
        ("chat", "top_logprobs"): {"logprobs": True, "top_logprobs": -3},
        ("completion", "prompt_logprobs"): {"prompt_logprobs": 1, "stream": True},
        ("completion", "bad_words"): {"bad_words": [""]},
        ("completion", "logit_bias"): {"logit_bias": {"x": 1.0}},
        ("completion", "allowed_token_ids"): {"allowed_token_ids": []},
        ("completion", "stop_token_ids"): {"stop_token_ids": [99999]},
        ("completion", "extra_args"): {"vllm_xargs": {"a": 2**64}},
        ("completion", "vllm_xargs"): {"vllm_xargs": {"a": {"nested": 1}}},
        ("chat", "vllm_xargs"): {"vllm_xargs": {"a": None}},
        ("completion", "cache_salt"): {"cache_salt": "a\x00"},
        ("completion", "repetition_detection"): {"repetition_detection": {"min_count": "2"}},
        ("completion", "thinking_token_budget"): {"thinking_token_budget": 100},
        ("chat", "stream_interval"): {"stream_interval": 0},
        ("completion", "stream_interval"): {"stream_interval": 4},
        ("completion", "stop"): {"stop": ["a", "b", "c", "d", "e"]},
        ("completion", "priority"): {"priority": 2**63},
        ("chat", "top_k"): {"top_k": 2**64},
        ("chat", "repetition_detection"): {"repetition_detection": {"max_pattern_size": 2**64}},
    }
    for (api, param), body in expected.items():
        assert error_of(api, body).param == param, body


def test_n_limit_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_MAX_N_SEQUENCES", "3")
    assert str(error_of("completion", {"n": 4})) == (
        "n must be at most 3, got 4. To increase this limit, set the VLLM_MAX_N_SEQUENCES "
        "environment variable."
    )
    _, params = ours("completion", {"n": 3})
    assert params.n == 1


def test_n_override_for_beam_search() -> None:
    req = request("completion", {"n": 4, "temperature": 0})
    params, _ = build_params(req, limits=LIMITS, max_tokens=8, n=1)
    assert params.n == 1 and params.temperature == 0.0


def test_child_params_get_seed_plus_index_or_none() -> None:
    _, seeded = ours("completion", {"n": 3, "seed": 41})
    assert [child_params(seeded, i).seed for i in range(3)] == [41, 42, 43]
    assert all(child_params(seeded, i).n == 1 for i in range(3))
    assert child_params(seeded, 2).max_tokens == seeded.max_tokens  # everything else is shared
    _, unseeded = ours("completion", {"n": 3})
    assert [child_params(unseeded, i).seed for i in range(3)] == [None, None, None]
    assert child_params(unseeded, 1) == unseeded and child_params(unseeded, 1) is not unseeded


def test_bad_words_need_a_tokenizer_and_the_env_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    req = request("completion", {"bad_words": ["hello"]})
    with pytest.raises(ParamError) as info:
        build_params(req, limits=LIMITS, max_tokens=8)
    assert info.value.param == "bad_words"
    monkeypatch.setenv("VLLM_MAX_NUM_BAD_WORDS", "2")
    with pytest.raises(ParamError, match="Too many bad words after tokenization: 3. The max number is 2."):
        bad_words_token_ids(["hello", "world"], TOK)
    assert bad_words_token_ids([], TOK) is None


def test_logit_bias_is_clamped_and_keyed_by_int() -> None:
    _, params = ours("completion", {"logit_bias": {"5": 1e9, "6": -1e9, "7": 0.25}})
    assert params.logit_bias == {5: 100.0, 6: -100.0, 7: 0.25}
    raw = msgspec.msgpack.decode(wire.encode(params), strict=False)
    assert raw["logit_bias"] == {5: 100.0, 6: -100.0, 7: 0.25}


def test_thinking_budget_minus_one_is_unset_and_interval_one_is_honoured() -> None:
    _, params = ours("chat", {"thinking_token_budget": -1, "stream_interval": 1})
    _, plain = ours("chat", {})
    assert params == plain


@pytest.mark.parametrize(
    ("ids", "n", "side", "max_tokens", "expected"),
    [
        ([1, 2, 3, 4, 5], None, None, 16, [1, 2, 3, 4, 5]),
        ([1, 2, 3, 4, 5], 3, None, 16, [3, 4, 5]),  # vLLM's default side for generation: left
        ([1, 2, 3, 4, 5], 3, "right", 16, [1, 2, 3]),
        ([1, 2, 3, 4, 5], 3, "left", 16, [3, 4, 5]),
        ([1, 2, 3, 4, 5], 5, "left", 16, [1, 2, 3, 4, 5]),
        ([1, 2, 3, 4, 5], 9, "left", 16, [1, 2, 3, 4, 5]),
        ([1, 2, 3, 4, 5], 0, "left", 16, []),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], -1, "left", 16, [3, 4, 5, 6, 7, 8, 9, 10]),  # max_model_len 9 - 1
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], -1, "right", 16, [1, 2, 3, 4, 5, 6, 7, 8]),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], -1, "left", None, [2, 3, 4, 5, 6, 7, 8, 9, 10]),  # no output asked
        ([1, 2, 3], -1, "left", 16, [1, 2, 3]),
    ],
)
def test_truncate_prompt(ids, n, side, max_tokens, expected) -> None:
    assert truncate_prompt(ids, n, side, 9, max_tokens=max_tokens) == expected


TRUNCATE_CASES = [
    {"ids": list(range(1, 11)), "n": n, "side": side, "max_model_len": 9, "max_tokens": mt}
    for n in (None, 0, 3, 8, 9, 10, -1)
    for side in (None, "left", "right")
    for mt in (5, 0, None)
]


def test_truncate_prompt_equals_vllms() -> None:
    """vLLM's TokenizeParams truncation (tiny-llama's tokenizer side when none is named) on the same ids."""
    answers = vllm([{"op": "truncate", **c} for c in TRUNCATE_CASES])
    for case, answer in zip(TRUNCATE_CASES, answers, strict=True):
        args = (case["ids"], case["n"], case["side"], case["max_model_len"])
        if "error" in answer:
            with pytest.raises(ParamError) as info:
                truncate_prompt(*args, default_side=LIMITS.truncation_side, max_tokens=case["max_tokens"])
            assert str(info.value) == answer["error"], case
        else:
            got = truncate_prompt(*args, default_side=LIMITS.truncation_side, max_tokens=case["max_tokens"])
            assert got == answer["ids"], case


TEXT = "import os\nimport sys\n\ndef main(argv):\n    return len(argv)\n"
TEXT_TRUNCATE_CASES = [
    {"text": TEXT, "add_special_tokens": add, "n": n, "side": side, "max_model_len": 30, "max_tokens": 5}
    for add in (True, False)
    for n in (0, 1, 2, 4, 19, 20, 21, -1)
    for side in (None, "left", "right")
]


def test_truncate_text_prompt_equals_vllms() -> None:
    """Text prompts: without a side vLLM lets the tokenizer truncate, which keeps BOS."""
    answers = vllm([{"op": "truncate", **c} for c in TEXT_TRUNCATE_CASES])
    assert added_special_tokens(TOK) == (1, 0) and added_special_tokens(TOK, False) == (0, 0)
    for case, answer in zip(TEXT_TRUNCATE_CASES, answers, strict=True):
        add = case["add_special_tokens"]
        ids = TOK.encode(case["text"], add_special_tokens=add)
        got = truncate_prompt(
            ids,
            case["n"],
            case["side"],
            case["max_model_len"],
            max_tokens=case["max_tokens"],
            special_tokens=added_special_tokens(TOK, add),
        )
        assert got == answer["ids"], case


def test_truncate_prompt_default_side_and_errors() -> None:
    assert truncate_prompt([1, 2, 3], 2, None, 9, default_side="right") == [1, 2]
    with pytest.raises(ParamError) as info:
        truncate_prompt([1, 2, 3], 10, None, 9)
    assert str(info.value) == (
        "truncate_prompt_tokens=10 cannot be greater than max_model_len = 9. "
        "Please request a smaller truncation size."
    )
    assert info.value.param == "truncate_prompt_tokens"
    with pytest.raises(ParamError) as info:
        truncate_prompt([1, 2, 3], -2, None, 9)
    assert info.value.param == "truncate_prompt_tokens"
    with pytest.raises(ParamError) as info:
        truncate_prompt([1, 2, 3], None, "middle", 9)
    assert str(info.value) == "`truncation_side` must be either 'left' or 'right'."
    assert LIMITS.truncation_side == "left"  # vLLM's get_tokenizer forces it for generative models


UNSUPPORTED: list[tuple[str, str, Any]] = [
    ("completion", "watermarking", True),
    ("chat", "logprob_token_ids", [5]),
    ("completion", "session_id", "s-1"),
    ("chat", "routed_experts_prompt_start", 3),
    ("completion", "return_token_offsets", True),
    ("chat", "mm_payload", "none"),
    ("completion", "return_mm_kwargs", False),
    ("completion", "kv_transfer_params", {"do_remote_prefill": True}),
    ("chat", "ec_transfer_params", {"x": 1}),
    ("chat", "media_io_kwargs", {"image": {"x": 1}}),
    ("chat", "mm_processor_kwargs", {"x": 1}),
    ("chat", "return_prompt_text", True),
    ("completion", "prompt_embeds", "AAAA"),
    ("completion", "suffix", "tail"),
    ("completion", "best_of", 2),
    ("completion", "length_penalty", 0.5),
]


@pytest.mark.parametrize(("api", "field", "value"), UNSUPPORTED)
def test_refuse_unsupported_names_the_field(api: str, field: str, value: Any) -> None:
    req = request(api, {field: value})
    with pytest.raises(ParamError) as info:
        refuse_unsupported(req)
    assert info.value.param == field
    assert str(info.value).startswith(field)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"watermarking": False},
        {"kv_transfer_params": {}},
        {"mm_payload": "tensors"},
        {"best_of": 1},
        {"length_penalty": 0.5, "use_beam_search": True},
    ],
)
def test_refuse_unsupported_lets_defaults_through(body: dict[str, Any]) -> None:
    refuse_unsupported(request("completion", body))


def test_chat_logprobs() -> None:
    assert chat_logprobs(False, None) is None
    assert chat_logprobs(False, 0) is None
    assert chat_logprobs(True, None) == 0
    assert chat_logprobs(True, 7) == 7
    with pytest.raises(ParamError, match="must be set to true"):
        chat_logprobs(None, -1)


def test_requested_prompt_logprobs_follows_vllms_echo_mapping() -> None:
    assert requested_prompt_logprobs(request("completion", {"echo": True, "logprobs": 3})) == 3
    assert requested_prompt_logprobs(request("completion", {"echo": True})) is None
    assert requested_prompt_logprobs(request("completion", {"logprobs": 3})) is None
    assert requested_prompt_logprobs(request("completion", {"echo": True, "prompt_logprobs": 1})) == 1
    # chat uses top_logprobs (0 when unset) even without logprobs, as vLLM's to_sampling_params does
    assert requested_prompt_logprobs(request("chat", {"echo": True})) == 0
    assert (
        requested_prompt_logprobs(request("chat", {"echo": True, "top_logprobs": 2, "logprobs": True})) == 2
    )
    assert requested_prompt_logprobs(request("chat", {})) is None


def test_type_errors_are_400s_not_crashes() -> None:
    with pytest.raises(APIError):
        request("completion", {"bad_words": "hello"})
    with pytest.raises(APIError):
        request("completion", {"truncate_prompt_tokens": "5"})


def all_cases() -> list[dict[str, Any]]:
    cases = [{"api": api, "body": body} for api, body in ERROR_CASES + OK_CASES]
    cases += [
        {"api": api, "body": body, "max_logprobs": m} for m in MAX_LOGPROBS_VALUES for api, body in CAP_CASES
    ]
    truncations = [{"op": "truncate", **c} for c in TRUNCATE_CASES + TEXT_TRUNCATE_CASES]
    return cases + decode_cases() + truncations
