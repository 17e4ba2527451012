"""vLLM's own parser, asked once per session (one engine-venv start: importing vllm takes ~15 s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.vllm_oracle import run_in_engine_venv

ORACLE = Path(__file__).with_name("vllm_flags_oracle.py")

#: Realistic ``vllm serve`` command lines (without ``serve``). ``SHARED`` ones use only flags that
#: ``trio-front run`` declares too (after the model), so both parsers can read them.
ARGVS: dict[str, list[str]] = {
    # ../shared/docs/vllm_features.md §8.4's example
    "doc_example": [
        "Qwen/Qwen2.5-0.5B-Instruct", "--port", "8001", "--max-model-len", "4096",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--api-key", "sk-x",
        "--enable-lora", "--lora-modules", "a=/loras/a",
    ],
    "security": [
        "models/tiny-llama", "--served-model-name", "tiny", "tiny-alias",
        "--api-key", "k1", "k2", "--allowed-origins", '["https://a.example", "https://b.example"]',
        "--allowed-methods", '["GET", "POST"]', "--allowed-headers", '["Authorization"]',
        "--allow-credentials", "--ssl-keyfile", "/certs/key.pem", "--ssl-certfile", "/certs/cert.pem",
        "--ssl-ca-certs", "/certs/ca.pem", "--ssl-cert-reqs", "2",
        "--ssl-ciphers", "ECDHE-RSA-AES256-GCM-SHA384",
        "--root-path", "/api", "--enable-request-id-headers", "--disable-uvicorn-access-log",
        "--uds", "/tmp/trio-front-test.sock", "--shutdown-timeout", "7", "--h11-max-header-count", "100",
        "--h11-max-incomplete-event-size", "65536", "--host", "0.0.0.0", "--port", "9000",
    ],
    "assistant": [
        "models/tiny-llama", "--reasoning-parser", "qwen3",
        "--structured-outputs-config", '{"backend": "guidance", "disable_any_whitespace": true}',
        "--generation-config", "vllm", "--override-generation-config", '{"temperature": 0.5, "top_k": 5}',
        "--response-role", "bot", "--max-logprobs", "5", "--chat-template", "/templates/chat.jinja",
        "--trust-request-chat-template", "--stream-interval", "4", "--sse-keep-alive-interval", "3",
        "--enable-scale-out", "--enable-server-load-tracking", "--tokenizer", "/tokenizers/tiny",
        "--exclude-tools-when-tool-choice-none", "--enable-auto-tool-choice",
        "--tool-call-parser", "qwen3_coder", "--lora-modules", "sql=/loras/sql",
        '{"name": "chat", "path": "/loras/chat", "base_model_name": "tiny"}',
    ],
    "engine_only": [
        "models/tiny-llama", "-tp", "2", "--dtype", "float32", "--max-num-seqs", "64", "--enforce-eager",
        "--seed", "3", "--gpu-memory-utilization", "0.5", "--kv-cache-dtype", "fp8",
        "--max-model-len", "1024",
        "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}',
        "--compilation-config", '{"mode": 0}', "--enable-prefix-caching", "--load-format", "dummy",
        "--data-parallel-size", "1", "--trust-remote-code", "--enable-lora", "--max-loras", "2",
    ],
    "refused": [
        "models/tiny-llama", "--tool-parser-plugin", "/plugins/p.py", "--middleware", "my.Middleware",
        "--data-parallel-size", "2", "--enable-log-requests", "--max-log-len", "10",
        "--return-tokens-as-token-ids", "--tokenizer-mode", "mistral", "--enable-ssl-refresh",
        "--disable-fastapi-docs", "--chat-template-content-format", "openai",
        "--structured-outputs-config", '{"enable_in_reasoning": true}',
        "--hf-overrides", '{"vocab_size": 10}',
    ],
    "harmless_values": [
        "models/tiny-llama", "--tokenizer-mode", "hf", "--runner", "generate", "--fingerprint-mode", "none",
        "--uvicorn-log-level", "warning", "--hf-overrides", '{"rope_theta": 100000}',
    ],
    # JSON-object flags given key by key (FlexibleArgumentParser's dotted arguments)
    "dotted": [
        "models/tiny-llama", "--structured-outputs-config.backend", "guidance",
        "--override-generation-config.temperature", "0.5", "--override_generation_config.top_k=5",
        "--structured_outputs_config.disable_any_whitespace", "true",
    ],
    # parser corner cases: a repeated --api-key (the last one wins), underscores, =, None, --no-
    "spellings": [
        "models/tiny-llama", "--api-key", "first", "--api_key", "second", "third",
        "--served-model-name=only", "--tokenizer", "None", "--no-enable-auto-tool-choice",
        "--reasoning_parser=deepseek_r1", "--allowed_origins", '["*"]',
    ],
}  # fmt: skip

SHARED = ("security", "assistant", "spellings", "dotted")


@pytest.fixture(scope="session")
def vllm() -> dict[str, Any]:
    """``{"dests", "args_json", "parsed"}`` from tests/flags/vllm_flags_oracle.py."""
    return run_in_engine_venv([str(ORACLE)], {"argvs": ARGVS}, env={"VLLM_API_KEY": ""})
