"""The drop-in's args JSON, as vLLM 0.32 itself computes it for realistic ``vllm serve`` command lines
(``jsonify_non_default_args`` + what RustFrontendProcessManager adds), mapped by ``from_args_json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trio_front.flags.args_json import from_args_json
from trio_front.server import FrontendConfig
from trio_front.serving.lora import parse_lora_modules
from trio_front.serving.structured import StructuredConfig


def _config(fields: dict[str, Any]) -> FrontendConfig:
    return FrontendConfig(engine_addr="", **{**fields, "model": Path(fields["model"])})


def test_doc_example(vllm: dict[str, Any]) -> None:
    result = from_args_json(vllm["args_json"]["doc_example"], environ={})
    assert (result.refused, result.unknown, result.ignored) == ([], [], [])
    config = _config(result.fields)
    assert config.model == Path("Qwen/Qwen2.5-0.5B-Instruct")
    assert (config.port, config.api_keys, config.tool_call_parser) == (8001, ("sk-x",), "hermes")
    assert config.enable_auto_tool_choice
    [lora] = parse_lora_modules(config.lora_modules)
    assert (lora.name, lora.path, lora.base_model_name) == ("a", "/loras/a", None)
    assert (config.engine_ready_timeout, config.http_timeout_keep_alive) == (600, 5)


def test_security_flags(vllm: dict[str, Any]) -> None:
    result = from_args_json(vllm["args_json"]["security"], environ={"VLLM_API_KEY": "from-env"})
    assert (result.refused, result.unknown, result.ignored) == ([], [], [])
    c = _config(result.fields)
    assert (c.served_model_name, c.served_model_aliases) == ("tiny", ("tiny-alias",))
    assert c.api_keys == ("k1", "k2")  # --api-key wins over VLLM_API_KEY, as in vLLM
    assert c.allowed_origins == ("https://a.example", "https://b.example")
    assert (c.allowed_methods, c.allowed_headers, c.allow_credentials) == (
        ("GET", "POST"),
        ("Authorization",),
        True,
    )
    assert (c.ssl_keyfile, c.ssl_certfile, c.ssl_ca_certs) == (
        "/certs/key.pem",
        "/certs/cert.pem",
        "/certs/ca.pem",
    )
    assert (c.ssl_cert_reqs, c.ssl_ciphers) == (2, "ECDHE-RSA-AES256-GCM-SHA384")
    assert (c.root_path, c.enable_request_id_headers, c.access_log) == ("/api", True, False)
    assert (c.uds, c.shutdown_timeout) == ("/tmp/trio-front-test.sock", 7)
    assert (c.h11_max_header_count, c.h11_max_incomplete_event_size) == (100, 65536)
    assert (c.host, c.port) == ("0.0.0.0", 9000)


def test_assistant_and_sampling_flags(vllm: dict[str, Any]) -> None:
    result = from_args_json(vllm["args_json"]["assistant"], environ={})
    assert (result.refused, result.unknown, result.ignored) == ([], [], [])
    c = _config(result.fields)
    assert (c.reasoning_parser, c.tool_call_parser, c.enable_auto_tool_choice) == (
        "qwen3",
        "qwen3_coder",
        True,
    )
    assert c.exclude_tools_when_tool_choice_none
    structured = StructuredConfig.from_json(c.structured_outputs_config or "")
    assert (structured.backend, structured.disable_any_whitespace) == ("guidance", True)
    assert (c.generation_config, json.loads(c.override_generation_config or "")) == (
        "vllm",
        {"temperature": 0.5, "top_k": 5},
    )
    assert (c.response_role, c.max_logprobs, c.chat_template) == ("bot", 5, "/templates/chat.jinja")
    assert (c.trust_request_chat_template, c.stream_interval, c.keep_alive_interval) == (True, 4, 3.0)
    assert (c.enable_scale_out, c.enable_server_load_tracking) == (True, True)
    assert c.tokenizer == Path("/tokenizers/tiny") and result.fields["tokenizer"] == "/tokenizers/tiny"
    loras = parse_lora_modules(c.lora_modules)
    assert [(m.name, m.path, m.base_model_name) for m in loras] == [
        ("sql", "/loras/sql", None),
        ("chat", "/loras/chat", "tiny"),
    ]


def test_engine_flags_need_nothing(vllm: dict[str, Any]) -> None:
    data = vllm["args_json"]["engine_only"]
    assert {"tensor_parallel_size", "speculative_config", "compilation_config", "max_num_seqs"} <= set(data)
    result = from_args_json(data, environ={})
    assert (result.refused, result.unknown, result.ignored) == ([], [], [])
    # speculative decoding is the engine's, but the frontend refuses min_p / logit_bias with it, as vLLM's
    assert set(result.fields) == {
        "model",
        "engine_ready_timeout",
        "http_timeout_keep_alive",
        "speculative_decoding",
    }
    assert result.fields["speculative_decoding"] is True


def test_refused_and_ignored_are_reported(vllm: dict[str, Any]) -> None:
    result = from_args_json(vllm["args_json"]["refused"], environ={})
    assert [line.split(" ")[0] for line in result.refused] == [
        "--chat-template-content-format",
        "--enable-ssl-refresh",
        "--hf-overrides",
        "--middleware",
        "--structured-outputs-config",
        "--tokenizer-mode",
        "--tool-parser-plugin",
    ]
    assert result.fields["data_parallel_size"] == 2  # honoured since data-parallel engines landed
    assert "enable_in_reasoning" in next(r for r in result.refused if r.startswith("--structured"))
    assert result.ignored == ["disable_fastapi_docs", "enable_log_requests", "max_log_len"]
    assert result.unknown == []


def test_harmless_values_of_refused_flags(vllm: dict[str, Any]) -> None:
    result = from_args_json(vllm["args_json"]["harmless_values"], environ={})
    assert (result.refused, result.unknown, result.ignored) == ([], [], ["uvicorn_log_level"])


def test_unknown_key_only_reported(vllm: dict[str, Any]) -> None:
    data = {**vllm["args_json"]["doc_example"], "no_such_flag_in_032": True, "another_one": [1]}
    result = from_args_json(data, environ={})
    assert (result.refused, result.unknown) == ([], ["another_one", "no_such_flag_in_032"])
    assert result.fields == from_args_json(vllm["args_json"]["doc_example"], environ={}).fields


@pytest.mark.parametrize(
    ("env", "keys"), [({"VLLM_API_KEY": "env-key"}, ("env-key",)), ({"VLLM_API_KEY": ""}, ()), ({}, ())]
)
def test_vllm_api_key_env_without_api_key(vllm: dict[str, Any], env: dict[str, str], keys: tuple) -> None:
    data = vllm["args_json"]["assistant"]
    assert "api_key" not in data  # vLLM does not put the env into the JSON
    assert _config(from_args_json(data, environ=env).fields).api_keys == keys


def test_bad_values_are_refused_naming_the_flag_without_secrets() -> None:
    result = from_args_json(
        {"model_tag": "m", "api_key": "sk-secret", "port": "80", "stream_interval": 0}, environ={}
    )
    assert [r.split(" ")[0] for r in result.refused] == ["--api-key", "--port", "--stream-interval"]
    assert "sk-secret" not in " ".join(result.refused)


def test_model_falls_back_to_model_and_download_keys() -> None:
    result = from_args_json(
        {"model": "org/m", "revision": "abc", "hf_token": "hf_x", "tokenizer_revision": None}, environ={}
    )
    assert result.fields["model"] == "org/m"
    assert result.download == {"revision": "abc", "hf_token": "hf_x"}
    assert (result.refused, result.unknown, result.ignored) == ([], [], [])
