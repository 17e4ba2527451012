"""The same vLLM-style command line read by ``trio-front run`` and by vLLM 0.32's parser gives the same
values for the flags they share, and the same FrontendConfig fields."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.flags.conftest import ARGVS, SHARED
from trio_front.cli import _frontend_config, build_parser
from trio_front.flags.options import cli_dests, frontend_fields, vllm_spellings
from trio_front.flags.vllm_serve import TABLE, map_values
from trio_front.server import FrontendConfig
from trio_front.serving.lora import parse_lora_modules
from trio_front.serving.structured import StructuredConfig

#: values whose argparse form differs from vLLM's object on purpose (the table converts both)
_CONVERTED_ONLY = {"lora_modules", "structured_outputs_config"}


def _ours(name: str):  # type: ignore[no-untyped-def]
    model, *rest = ARGVS[name]
    argv = ["run", "--engine-addr", "tcp://127.0.0.1:1", "--model", model, *rest]
    return build_parser().parse_args(vllm_spellings(argv))


@pytest.mark.parametrize("name", SHARED)
def test_shared_flags_parse_alike(vllm: dict[str, Any], name: str) -> None:
    ours, theirs = _ours(name), vllm["parsed"][name]
    assert ours.model == theirs["model_tag"]
    for dest in cli_dests():
        if dest not in _CONVERTED_ONLY:
            assert getattr(ours, dest) == theirs[dest], dest
        convert = TABLE[dest].convert
        assert convert is not None
        assert _normal(convert(getattr(ours, dest))) == _normal(convert(theirs[dest])), dest


def _normal(fields: dict[str, Any]) -> dict[str, Any]:
    """LoRA modules and the structured-outputs config as what they parse to (the strings' form may
    differ: ``name=path`` on our command line, the JSON object vLLM made of it in the JSON)."""
    out = dict(fields)
    if "lora_modules" in out:
        out["lora_modules"] = parse_lora_modules(out["lora_modules"])
    if out.get("structured_outputs_config"):
        out["structured_outputs_config"] = StructuredConfig.from_json(out["structured_outputs_config"])
    return out


@pytest.mark.parametrize("name", SHARED)
def test_same_frontend_config_as_the_drop_in(vllm: dict[str, Any], name: str) -> None:
    """``run``'s FrontendConfig == the drop-in's for the same vLLM flags (model and the env-driven keys
    aside)."""
    args = _ours(name)
    ours = frontend_fields(args, environ={})
    theirs = map_values(vllm["args_json"][name], environ={}).fields
    for key in ("model", "engine_ready_timeout", "http_timeout_keep_alive"):
        theirs.pop(key, None)
    assert set(theirs) <= set(ours)  # ours holds every declared flag, the JSON only non-default ones
    configs = [attrs.asdict(FrontendConfig(engine_addr="", model=Path("m"), **f)) for f in (ours, theirs)]
    assert _normal(configs[0]) == _normal(configs[1])


def test_repeated_api_key_keeps_the_last_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    args = _ours("spellings")
    with caplog.at_level(logging.WARNING, logger="trio_front.flags"):
        fields = frontend_fields(args, environ={"VLLM_API_KEY": "unused"})
    assert fields["api_keys"] == ("second", "third")
    assert "--api-key was given more than once" in caplog.text


def test_vllm_env_settings_on_run() -> None:
    args = _ours("security")
    env = {"VLLM_ENGINE_READY_TIMEOUT_S": "30", "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "9"}
    fields = frontend_fields(args, environ=env)
    assert (fields["engine_ready_timeout"], fields["http_timeout_keep_alive"]) == (30, 9)
    with pytest.raises(SystemExit, match="VLLM_HTTP_TIMEOUT_KEEP_ALIVE must be an integer"):
        frontend_fields(args, environ={"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "soon"})


def test_api_key_env_on_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "env-key")
    args = build_parser().parse_args(
        ["run", "--engine-addr", "tcp://127.0.0.1:1", "--model", "models/tiny-llama"]
    )
    assert _frontend_config(args, args.engine_addr, args.model).api_keys == ("env-key",)  # type: ignore[attr-defined]


def test_keep_alive_interval_alias_and_refusals() -> None:
    base = ["run", "--engine-addr", "tcp://127.0.0.1:1", "--model", "m"]
    args = build_parser().parse_args([*base, "--keep-alive-interval", "2.5"])
    assert frontend_fields(args, environ={})["keep_alive_interval"] == 2.5
    args = build_parser().parse_args([*base, "--sse-keep-alive-interval", "-1"])
    with pytest.raises(SystemExit, match="--sse-keep-alive-interval"):
        frontend_fields(args, environ={})
    args = build_parser().parse_args([*base, "--structured-outputs-config", '{"enable_in_reasoning": true}'])
    with pytest.raises(SystemExit, match="--structured-outputs-config.*enable_in_reasoning"):
        frontend_fields(args, environ={})


def test_graceful_timeout_is_gone_and_worker_is_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--engine-addr", "a", "--model", "m", "--graceful-timeout", "1"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "worker" not in out and "SUPPRESS" not in out and "run" in out


def test_serve_passes_engine_side_flags() -> None:
    from trio_front.cli import _engine_args

    args = build_parser().parse_args(
        ["serve", "--reasoning-parser", "qwen3", "--structured-outputs-config", '{"backend": "guidance"}',
         "--max-logprobs", "7", "--tokenizer", "/tok", "--lora-modules", "a=/a", "--engine-arg=--seed=1"]
    )  # fmt: skip
    assert _engine_args(args) == [
        "--engine-arg=--seed=1"[len("--engine-arg=") :],
        "--reasoning-parser=qwen3",
        '--structured-outputs-config={"backend": "guidance"}',
        "--max-logprobs=7",
        "--tokenizer=/tok",
        "--enable-lora",
    ]
    args = build_parser().parse_args(["serve", "--lora-modules", "a=/a", "--engine-arg=--enable_lora"])
    assert _engine_args(args) == ["--enable_lora"]
