"""The server's sampling defaults (``--generation-config``, ``--override-generation-config``) against
vLLM 0.32's own code in the engine venv (``sampling_defaults_oracle.py``): the defaults computed from a
model folder, and the SamplingParams a request gets with them (our ADD bytes decoded by the engine's own
decoder against vLLM's ``get_max_tokens`` + ``to_sampling_params``)."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.vllm_oracle import run_in_engine_venv
from trio_front.api.completions import normalize_null_max_tokens
from trio_front.api.models import ChatCompletionRequest, CompletionRequest, structure
from trio_front.api.responses.request import ResponsesRequest
from trio_front.engine import wire
from trio_front.serving.params import ModelLimits, ParamError, build_params, check_prompt
from trio_front.serving.sampling_defaults import SamplingDefaults, load_sampling_defaults
from trio_front.text.tokenizer import Tokenizer

MODEL = Path(__file__).resolve().parents[2] / "models" / "tiny-llama"
ORACLE = Path(__file__).with_name("sampling_defaults_oracle.py")
TOK = Tokenizer.from_pretrained(MODEL)
MAX_MODEL_LEN = 2048

QWEN = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05, "max_new_tokens": 100}


@functools.lru_cache(maxsize=1)
def folders() -> dict[str, str]:
    """Model folders (copies of the bundled model with generation_config.json variants) and bare
    generation-config folders, made once per session under a fixed temporary root."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="trio-front-gencfg-"))

    def model(name: str, extra: dict[str, Any] | None) -> str:
        target = root / name
        shutil.copytree(MODEL, target)
        if extra is None:
            (target / "generation_config.json").unlink()
        else:
            base = json.loads((MODEL / "generation_config.json").read_text())
            (target / "generation_config.json").write_text(json.dumps({**base, **extra}))
        return str(target)

    out = {
        "tiny": str(MODEL),
        "qwen": model("qwen", {**QWEN, "do_sample": True}),
        "penalties": model("penalties", {"presence_penalty": 1.5, "frequency_penalty": 0.25, "min_p": 0.05}),
        "nulls": model("nulls", {"temperature": None, "top_k": 50, "top_p": 1.0}),
        "no_file": model("no_file", None),
    }
    other = root / "other"
    other.mkdir()
    (other / "generation_config.json").write_text(json.dumps({"temperature": 0.3, "max_new_tokens": 50}))
    out["other"] = str(other)
    config_only = root / "config_only"
    config_only.mkdir()
    shutil.copy(MODEL / "config.json", config_only / "config.json")
    out["config_only"] = str(config_only)
    out["missing"] = str(root / "missing")
    return out


#: (model folder, --generation-config, --override-generation-config)
DEFAULT_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("qwen", "auto", {}),
    ("qwen", "vllm", {}),
    ("qwen", "auto", {"temperature": 0.5, "max_new_tokens": 30}),
    ("qwen", "vllm", {"top_k": 5}),
    ("tiny", "auto", {}),
    ("tiny", "other", {}),
    ("tiny", "other", {"max_new_tokens": 20}),
    ("tiny", "auto", {"max_new_tokens": 64}),
    ("nulls", "auto", {}),
    ("penalties", "auto", {}),
    ("no_file", "auto", {}),
    ("tiny", "config_only", {}),
    ("tiny", "missing", {}),
    ("tiny", "auto", {"eos_token_id": 5}),
    ("qwen", "auto", {"temperature": None}),
]


def _src(src: str) -> str:
    return src if src in ("auto", "vllm") else folders()[src]


def ours_defaults(name: str, src: str, override: dict[str, Any]) -> SamplingDefaults:
    return load_sampling_defaults(
        Path(folders()[name]), _src(src), json.dumps(override) if override else None
    )


@functools.lru_cache(maxsize=1)
def vllm_defaults() -> list[dict[str, Any]]:
    cases = [
        {"op": "defaults", "model": folders()[name], "src": _src(src), "override": override}
        for name, src, override in DEFAULT_CASES
    ]
    return run_in_engine_venv([str(ORACLE)], {"cases": cases}, timeout=600)


@pytest.mark.parametrize("index", range(len(DEFAULT_CASES)), ids=[f"{n}-{s}" for n, s, _ in DEFAULT_CASES])
def test_defaults_match_vllm(index: int) -> None:
    name, src, override = DEFAULT_CASES[index]
    want = vllm_defaults()[index]
    if "error" in want:
        with pytest.raises(ValueError, match="--generation-config"):
            ours_defaults(name, src, override)
        return
    got = ours_defaults(name, src, override)
    assert got.values == want["values"], (name, src, override)
    assert got.override_max_tokens == want["override_max_tokens"], (name, src, override)


def test_the_expected_values_not_only_equal_ones() -> None:
    """The parity above could pass with both sides empty; pin what the Qwen-like folder gives."""
    got = ours_defaults("qwen", "auto", {})
    assert got.values == {
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
        "max_tokens": 100,
    }
    assert got.override_max_tokens is None  # with `auto` max_new_tokens only fills in a missing max_tokens
    assert ours_defaults("tiny", "other", {}).override_max_tokens == 50  # a folder's max_new_tokens caps


def test_unusable_values_are_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--override-generation-config: not valid JSON"):
        load_sampling_defaults(MODEL, "auto", "{temperature: 1")
    with pytest.raises(ValueError, match="--override-generation-config: expected a JSON object"):
        load_sampling_defaults(MODEL, "auto", "[1]")
    with pytest.raises(ValueError, match="temperature must be a number"):
        load_sampling_defaults(MODEL, "auto", '{"temperature": "hot"}')
    with pytest.raises(ValueError, match="max_new_tokens"):
        load_sampling_defaults(MODEL, "vllm", {"max_new_tokens": 0})
    (tmp_path / "generation_config.json").write_text('{"top_k": 2.5}')
    with pytest.raises(ValueError, match="top_k must be an integer"):
        load_sampling_defaults(MODEL, str(tmp_path))


# --------------------------------------------------------------------------------------------------
# Requests with the defaults: our engine params against vLLM's


REQUESTS: list[tuple[str, dict[str, Any], int]] = [
    ("completion", {}, 10),
    ("completion", {"max_tokens": None}, 10),
    ("completion", {"max_tokens": None}, 2000),
    ("completion", {"max_tokens": 40}, 10),
    ("completion", {"temperature": 0}, 10),
    ("completion", {"temperature": 0.2, "top_k": 3, "presence_penalty": 0.1, "min_p": 0.5}, 10),
    ("chat", {}, 10),
    ("chat", {}, 2000),
    ("chat", {"max_tokens": 5}, 10),
    ("chat", {"max_completion_tokens": 500}, 10),
    ("chat", {"temperature": 0, "top_p": 0.5}, 10),
    ("chat", {"frequency_penalty": 0.5, "repetition_penalty": 1.2, "top_k": -1}, 10),
    ("responses", {}, 10),
    ("responses", {"max_output_tokens": 7}, 10),
    ("responses", {"max_output_tokens": 700}, 10),
    ("responses", {"temperature": 1.0, "top_p": 0.9}, 10),
]
#: indexes into DEFAULT_CASES whose defaults the requests run with
REQUEST_DEFAULTS = [0, 2, 4, 6, 7, 9, 1]

_CLASSES = {"completion": CompletionRequest, "chat": ChatCompletionRequest, "responses": ResponsesRequest}


def ours_params(
    api: str, body: dict[str, Any], prompt_len: int, defaults: SamplingDefaults
) -> wire.SamplingParams:
    """What the handlers do with the defaults: the effective max_tokens, then build_params."""
    limits = ModelLimits.from_tokenizer(TOK, MAX_MODEL_LEN, sampling=defaults)
    req = structure(dict(body), _CLASSES[api])
    if api == "responses":
        requested = req.max_output_tokens
    elif api == "chat":
        requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    else:
        normalize_null_max_tokens(req)
        requested = req.max_tokens
    max_tokens = check_prompt(prompt_len, limits, requested)
    params, _ = build_params(req, limits=limits, max_tokens=max_tokens, tokenizer=TOK)
    return params


def _payload(params: wire.SamplingParams) -> str:
    request = wire.EngineCoreRequest(
        request_id="cmpl-x-0", prompt_token_ids=[1, 5, 6], sampling_params=params, arrival_time=1.0
    )
    return wire.encode(request).hex()


def _request_cases() -> list[tuple[int, str, dict[str, Any], int]]:
    return [(d, api, body, plen) for d in REQUEST_DEFAULTS for api, body, plen in REQUESTS]


@functools.lru_cache(maxsize=1)
def vllm_requests() -> list[dict[str, Any]]:
    cases = []
    for d, api, body, plen in _request_cases():
        defaults = ours_defaults(*DEFAULT_CASES[d])
        cases.append(
            {
                "op": "request",
                "api": api,
                "body": body,
                "defaults": defaults.values,
                "override_max_tokens": defaults.override_max_tokens,
                "prompt_len": plen,
                "max_model_len": MAX_MODEL_LEN,
                "ours": _payload(ours_params(api, body, plen, defaults)),
            }
        )
    return run_in_engine_venv([str(ORACLE)], {"cases": cases}, timeout=600)


@pytest.mark.parametrize(
    "index",
    range(len(_request_cases())),
    ids=[
        f"{DEFAULT_CASES[d][0]}-{DEFAULT_CASES[d][1]}-{api}-{i % len(REQUESTS)}"
        for i, (d, api, _b, _p) in enumerate(_request_cases())
    ],
)
def test_requests_get_vllms_params(index: int) -> None:
    answer = vllm_requests()[index]
    assert "vllm_error" not in answer, answer
    assert answer["ours"] == pytest.approx(answer["vllm"]), _request_cases()[index]


def test_qwen_defaults_fill_in_only_what_the_request_leaves_unset() -> None:
    """Pinned values, so the parity cannot pass with both sides ignoring the defaults."""
    qwen = ours_defaults("qwen", "auto", {})
    p = ours_params("chat", {}, 10, qwen)
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.max_tokens) == (0.7, 0.8, 20, 1.05, 100)
    p = ours_params("chat", {"temperature": 0.1, "top_k": 4, "max_tokens": 300}, 10, qwen)
    assert (p.temperature, p.top_p, p.top_k, p.max_tokens) == (0.1, 0.8, 4, 300)
    assert ours_params("chat", {}, 2000, qwen).max_tokens == MAX_MODEL_LEN - 2000  # what fits wins
    assert ours_params("completion", {}, 10, qwen).max_tokens == 16  # completions' own default is 16
    penalties = ours_defaults("penalties", "auto", {})
    p = ours_params("completion", {}, 10, penalties)
    assert (p.presence_penalty, p.frequency_penalty, p.min_p) == (1.5, 0.25, 0.05)
    capped = ours_defaults("qwen", "auto", {"max_new_tokens": 30})
    assert ours_params("chat", {"max_tokens": 200}, 10, capped).max_tokens == 30  # the override caps


def test_a_greedy_default_refuses_n_above_one() -> None:
    """vLLM's greedy check runs on the effective temperature: a default of 0 makes ``n: 2`` an error."""
    greedy = load_sampling_defaults(MODEL, "vllm", '{"temperature": 0}')
    with pytest.raises(ParamError, match="n must be 1 when using greedy sampling"):
        ours_params("completion", {"n": 2}, 10, greedy)
    assert ours_params("completion", {"n": 2, "temperature": 0.5}, 10, greedy).temperature == 0.5


def test_check_prompt_without_defaults_keeps_the_request_value() -> None:
    limits = ModelLimits.from_tokenizer(TOK, MAX_MODEL_LEN, sampling=ours_defaults("tiny", "other", {}))
    assert check_prompt(10, limits, None) == 50
    assert check_prompt(10, limits, 80) == 50  # a --generation-config folder's max_new_tokens caps
    assert check_prompt(10, limits, 80, apply_defaults=False) == 80
    assert check_prompt(10, limits, None, apply_defaults=False) == MAX_MODEL_LEN - 10
