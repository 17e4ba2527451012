"""vLLM 0.32's own request → SamplingParams path, for parity tests (run in the engine venv only).

stdin: ``{"model": <dir>, "max_logprobs": int, "cases": [case, ...]}``; stdout (last line): a JSON list,
one answer per case. A case ``{"op": "decode", "payload": HEX}`` decodes an ADD payload with vLLM's
``MsgpackDecoder(EngineCoreRequest)`` (``SamplingParams.__post_init__`` runs) and answers
``{"params": {...}}`` as below, or ``{"error": ...}`` if the engine's input thread would die. A case
``{"op": "truncate", "ids", "n", "side", "max_model_len", "max_tokens"}`` runs vLLM's ``TokenizeParams``
truncation and answers ``{"ids": [...]}`` or ``{"error": ...}``; with ``"text"`` and
``"add_special_tokens"`` instead of ``"ids"`` it tokenizes the text as vLLM's renderer does first. Otherwise a
case is ``{"api": "completion"|"chat", "body": {...}, "max_tokens": int}``; the
answer is ``{"error": message}`` for the first error vLLM raises (protocol validators, ``to_sampling_params``,
``SamplingParams.verify`` against a model config stand-in with the model's vocab size, then
``update_from_tokenizer``), or ``{"params": {...}}`` with the engine-relevant fields of the result.
"""

from __future__ import annotations

import json
import sys


class _ModelConfig:
    """What ``SamplingParams.verify`` reads from vLLM's ``ModelConfig``."""

    is_diffusion = False

    def __init__(self, vocab_size: int, max_logprobs: int, max_model_len: int) -> None:
        self._vocab = vocab_size
        self.max_logprobs = max_logprobs
        self.max_model_len = max_model_len

    def get_vocab_size(self) -> int:
        return self._vocab


def _fields(sp) -> dict:
    rd = sp.repetition_detection
    return {
        "n": sp.n,
        "seed": sp.seed,
        "logprobs": sp.logprobs,
        "prompt_logprobs": sp.prompt_logprobs,
        "skip_reading_prefix_cache": sp.skip_reading_prefix_cache,
        "logit_bias": {str(k): v for k, v in (sp.logit_bias or {}).items()} or None,
        "allowed_token_ids": sp.allowed_token_ids,
        "stop_token_ids": sp.stop_token_ids or None,
        "bad_words_token_ids": sp.bad_words_token_ids,
        "extra_args": sp.extra_args,
        "repetition_detection": None
        if rd is None
        else [rd.max_pattern_size, rd.min_pattern_size, rd.min_count],
    }


def main() -> None:
    import pydantic
    from transformers import AutoConfig
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.tokenizers import get_tokenizer

    job = json.loads(sys.stdin.read())
    tokenizer = get_tokenizer(job["model"])
    vocab = AutoConfig.from_pretrained(job["model"]).vocab_size
    config = _ModelConfig(vocab, job["max_logprobs"], 2048)
    out = []
    for case in job["cases"]:
        if case.get("op") == "truncate":
            from vllm.renderers import TokenizeParams

            try:
                tp = TokenizeParams(
                    max_total_tokens=case["max_model_len"],
                    max_output_tokens=case["max_tokens"] or 0,
                    truncate_prompt_tokens=case["n"],
                    truncation_side=case["side"],
                    max_total_tokens_param="max_model_len",
                )
                if "text" in case:  # vLLM's text path: the tokenizer's own truncation, then the slice
                    tp = TokenizeParams(
                        max_total_tokens=case["max_model_len"],
                        max_output_tokens=case["max_tokens"] or 0,
                        truncate_prompt_tokens=case["n"],
                        truncation_side=case["side"],
                        add_special_tokens=case["add_special_tokens"],
                        max_total_tokens_param="max_model_len",
                    )
                    ids = tokenizer.encode(case["text"], **tp.get_encode_kwargs())
                else:
                    ids = list(case["ids"])
                out.append({"ids": list(tp._token_truncation(tokenizer, ids))})
            except Exception as exc:
                out.append({"error": str(exc).split(" (parameter=")[0]})
            continue
        if case.get("op") == "decode":
            from vllm.v1.engine import EngineCoreRequest
            from vllm.v1.serial_utils import MsgpackDecoder

            try:
                sp = MsgpackDecoder(EngineCoreRequest).decode(bytes.fromhex(case["payload"])).sampling_params
            except Exception as exc:
                out.append({"error": f"{type(exc).__name__}: {exc}"})
                continue
            out.append({"params": _fields(sp)})
            continue
        cls = CompletionRequest if case["api"] == "completion" else ChatCompletionRequest
        base = (
            {"prompt": "x"}
            if case["api"] == "completion"
            else {"messages": [{"role": "user", "content": "hi"}]}
        )
        config.max_logprobs = case.get("max_logprobs", job["max_logprobs"])
        try:
            req = cls(**{**base, **case["body"]})
            sp = req.to_sampling_params(case.get("max_tokens", 16), {})
            sp.verify(config, None, None, tokenizer)
            sp.update_from_tokenizer(tokenizer)
        except pydantic.ValidationError as exc:
            out.append({"error": str(exc), "pydantic": True})
            continue
        except Exception as exc:  # VLLMValidationError / ValueError: the message is what the client sees
            out.append({"error": str(exc).split(" (parameter=")[0]})
            continue
        out.append({"params": _fields(sp)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
