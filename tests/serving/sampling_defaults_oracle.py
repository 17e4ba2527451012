"""vLLM 0.32's own server sampling defaults and their use, for parity tests (run in the engine venv only).

stdin: ``{"cases": [case, ...]}``; stdout (last line): a JSON list, one answer per case.

* ``{"op": "defaults", "model": dir, "src": "auto"|"vllm"|dir, "override": {...}}``: what the serving
  classes compute at start-up, ``ModelConfig.get_diff_sampling_param`` run on a stand-in holding just the
  fields it reads, and ``override_max_tokens`` as ``OpenAIServingChat.__init__`` derives it. Answers
  ``{"values": {...}, "override_max_tokens": int|null}`` or ``{"error": "Type: message"}``.
* ``{"op": "request", "api": "completion"|"chat"|"responses", "body": {...}, "defaults": {...},
  "override_max_tokens": int|null, "prompt_len": int, "max_model_len": int, "ours": HEX}``: vLLM's
  ``get_max_tokens`` then ``to_sampling_params`` for the request (``SamplingParams.__post_init__`` runs),
  and our ADD payload decoded by the engine's ``MsgpackDecoder``; answers ``{"vllm": fields, "ours":
  fields}`` or ``{"vllm_error": message, "ours": ...}``.
"""

from __future__ import annotations

import json
import sys

FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "max_tokens",
)


def _fields(sp) -> dict:
    return {name: getattr(sp, name) for name in FIELDS}


def _defaults(case: dict) -> dict:
    from vllm.config.model import ModelConfig

    class Stand:
        """The attributes ``try_get_generation_config`` / ``get_diff_sampling_param`` read."""

        try_get_generation_config = ModelConfig.try_get_generation_config
        get_diff_sampling_param = ModelConfig.get_diff_sampling_param

        def __init__(self) -> None:
            self.model = case["model"]
            self.hf_config_path = None
            self.trust_remote_code = False
            self._hf_config_revision = None
            self.revision = None
            self.code_revision = None
            self.config_format = "auto"
            self.hf_token = None
            self.generation_config = case["src"]
            self.override_generation_config = dict(case["override"])

    try:
        mc = Stand()
        values = mc.get_diff_sampling_param()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    override = (
        values.get("max_tokens")
        if mc.generation_config not in ("auto", "vllm")
        else getattr(mc, "override_generation_config", {}).get("max_new_tokens")
    )
    return {"values": values, "override_max_tokens": override}


def _request(case: dict) -> dict:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest
    from vllm.entrypoints.serve.utils.api_utils import get_max_tokens
    from vllm.v1.engine import EngineCoreRequest
    from vllm.v1.serial_utils import MsgpackDecoder

    answer: dict = {}
    defaults, override = case["defaults"], case["override_max_tokens"]
    body, api = case["body"], case["api"]
    try:
        if api == "responses":
            req = ResponsesRequest(**{"input": "hi", **body})
            default_max = get_max_tokens(
                case["max_model_len"],
                req.max_output_tokens,
                case["prompt_len"],
                defaults,
                override,
                truncate_prompt_tokens=-1 if req.truncation != "disabled" else None,
            )
            sp = req.to_sampling_params(default_max, defaults)
        else:
            if api == "completion":
                req = CompletionRequest(**{"prompt": "x", **body})
                requested = req.max_tokens
            else:
                req = ChatCompletionRequest(**{"messages": [{"role": "user", "content": "hi"}], **body})
                requested = (
                    req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
                )
            max_tokens = get_max_tokens(
                case["max_model_len"], requested, case["prompt_len"], defaults, override
            )
            sp = req.to_sampling_params(max_tokens, defaults)
        answer["vllm"] = _fields(sp)
    except Exception as exc:
        answer["vllm_error"] = f"{type(exc).__name__}: {exc}"
    if case.get("ours"):
        try:
            decoded = MsgpackDecoder(EngineCoreRequest).decode(bytes.fromhex(case["ours"]))
            answer["ours"] = _fields(decoded.sampling_params)
        except Exception as exc:
            answer["ours"] = {"error": f"{type(exc).__name__}: {exc}"}
    return answer


def main() -> None:
    job = json.loads(sys.stdin.read())
    out = []
    for case in job["cases"]:
        out.append(_defaults(case) if case["op"] == "defaults" else _request(case))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
