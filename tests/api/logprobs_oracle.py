"""vLLM 0.32's own logprobs code over synthetic engine output (engine venv only; run by
test_logprobs_shapes.py).

stdin: ``{"model": <dir>, "cases": [case, ...]}``; stdout (last line): a JSON list, one answer per case.
A case may name its own ``"model"`` directory (the tokenizer its ids belong to).

* ``{"op": "tokens"}`` → ``{"listed": convert_ids_list_to_tokens(all ids), "alone": [decode(id)...]}``.
* ``{"op": "completion", "prompt_ids", "prompt_rows": ROWS|None, "chunks": [ROWS...], "logprobs": N,
  "echo": bool, "max_tokens": M, "return_as_ids": bool, "prompt_logprobs": NP|None}`` where ROWS is
  ``{"token_ids": [[...]], "logprobs": [[...]], "ranks": [...]}`` →
  ``{"full": {"logprobs", "prompt_logprobs"}, "stream": [logprobs of each streamed chunk]}``: the choice of
  ``request_output_to_completion_response`` and what ``completion_stream_generator`` computes per chunk.
* ``{"op": "chat", "chunks": [ROWS...], "top_logprobs": K, "return_as_ids": bool}`` →
  ``{"full": ..., "stream": [...]}`` from ``_create_chat_logprobs``.

The engine's arrays go through vLLM's ``LogprobsProcessor`` (``_update_prompt_logprobs`` /
``_update_sample_logprobs``), exactly as its output processor feeds it, one call per chunk.
"""

from __future__ import annotations

import json
import sys
import traceback
from types import SimpleNamespace


def main() -> None:
    from vllm.tokenizers import get_tokenizer

    job = json.loads(sys.stdin.read())
    tokenizers = {}
    out = []
    for case in job["cases"]:
        model = case.get("model", job["model"])
        if model not in tokenizers:
            tokenizers[model] = get_tokenizer(model)
        try:
            out.append(run(case, tokenizers[model]))
        except Exception as exc:  # reported per case so one odd input does not hide the others
            out.append({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]})
    print(json.dumps(out))


def _arrays(rows):
    import numpy as np

    return (
        np.array(rows["token_ids"], dtype=np.int32).reshape(len(rows["ranks"]), -1),
        np.array(rows["logprobs"], dtype=np.float32).reshape(len(rows["ranks"]), -1),
        np.array(rows["ranks"], dtype=np.int64),
    )


def _processor(tokenizer, num_logprobs, num_prompt_logprobs):
    from vllm.logprobs import create_prompt_logprobs, create_sample_logprobs
    from vllm.v1.engine.logprobs import LogprobsProcessor

    return LogprobsProcessor(
        tokenizer=tokenizer,
        logprobs=None if num_logprobs is None else create_sample_logprobs(False),
        prompt_logprobs=None if num_prompt_logprobs is None else create_prompt_logprobs(False),
        cumulative_logprob=None if num_logprobs is None else 0.0,
        num_logprobs=num_logprobs,
        num_prompt_logprobs=num_prompt_logprobs,
    )


def _feed(proc, case):
    """Feed the chunks; return (prompt logprobs, per-chunk (token ids, sample logprobs delta))."""
    from vllm.v1.outputs import LogprobsLists, LogprobsTensors

    prompt_lps = None
    if proc.prompt_logprobs is not None:
        if case.get("prompt_rows") is not None:
            ids, lps, ranks = _arrays(case["prompt_rows"])
            proc._update_prompt_logprobs(LogprobsTensors(ids, lps, ranks))
        prompt_lps = proc.prompt_logprobs
    deltas = []
    for rows in case["chunks"]:
        before = len(proc.logprobs)
        ids, lps, ranks = _arrays(rows)
        proc._update_sample_logprobs(LogprobsLists(ids, lps, ranks, None))
        deltas.append(([r[0] for r in rows["token_ids"]], proc.logprobs[before:]))
    return prompt_lps, deltas


def run(case, tokenizer):
    op = case["op"]
    if op == "tokens":
        from vllm.tokenizers.detokenizer_utils import convert_ids_list_to_tokens

        ids = list(range(len(tokenizer)))
        return {
            "listed": convert_ids_list_to_tokens(tokenizer, ids),
            "alone": [tokenizer.decode(i) for i in ids],
        }
    if op == "completion":
        return completion(case, tokenizer)
    if op == "chat":
        return chat(case, tokenizer)
    raise ValueError(op)


def completion(case, tokenizer):
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion

    n_prompt = case.get("prompt_logprobs")
    if n_prompt is None and case["echo"]:
        n_prompt = case["logprobs"]
    proc = _processor(tokenizer, case["logprobs"], n_prompt)
    prompt_lps, deltas = _feed(proc, case)
    serving = OpenAIServingCompletion.__new__(OpenAIServingCompletion)
    serving.return_tokens_as_token_ids = False
    serving.enable_prompt_tokens_details = False
    serving.enable_per_request_metrics = False
    serving.system_fingerprint = None
    body = {
        "model": "m",
        "prompt": case["prompt_ids"],
        "echo": case["echo"],
        "logprobs": case["logprobs"],
        "max_tokens": case["max_tokens"],
        "return_tokens_as_token_ids": case["return_as_ids"],
    }
    if case.get("prompt_logprobs") is not None:
        body["prompt_logprobs"] = case["prompt_logprobs"]
    request = CompletionRequest(**body)
    prompt_ids = case["prompt_ids"]
    prompt_text = tokenizer.decode(prompt_ids)
    all_ids = [t for ids, _ in deltas for t in ids]
    output = SimpleNamespace(
        index=0,
        token_ids=all_ids,
        logprobs=proc.logprobs,
        text="x" * len(all_ids),
        finish_reason="length",
        stop_reason=None,
        routed_experts=None,
        spec_decode_metrics=None,
    )
    final = SimpleNamespace(
        prompt_token_ids=prompt_ids,
        prompt_logprobs=prompt_lps,
        prompt=prompt_text,
        outputs=[output],
        num_cached_tokens=None,
        kv_transfer_params=None,
        ec_transfer_params=None,
        metrics=None,
    )

    # Streaming first, on copies: the non-streamed path clamps the prompt logprobs in place.
    import copy

    stream = []
    offset = 0
    for k, (ids, delta) in enumerate(deltas):
        if case["echo"] and k == 0:
            if case["max_tokens"] == 0:
                token_ids, out_lps = prompt_ids, copy.deepcopy(prompt_lps)
            else:
                token_ids = [*prompt_ids, *ids]
                out_lps = [*copy.deepcopy(prompt_lps or []), *delta]
        else:
            token_ids, out_lps = ids, delta
        lp = serving._create_completion_logprobs(
            token_ids=token_ids,
            top_logprobs=out_lps,
            num_output_top_logprobs=case["logprobs"],
            tokenizer=tokenizer,
            initial_text_offset=offset,
            return_as_token_id=case["return_as_ids"],
        )
        if lp.tokens:
            offset = lp.text_offset[-1] + len(lp.tokens[-1])
        stream.append(json.loads(lp.model_dump_json()))
        if case["echo"] and case["max_tokens"] == 0:
            break

    response = serving.request_output_to_completion_response(
        [final], request, "cmpl-x", 0, "m", tokenizer, SimpleNamespace(final_usage_info=None)
    )
    choice = json.loads(response.model_dump_json())["choices"][0]
    return {
        "full": {"logprobs": choice["logprobs"], "prompt_logprobs": choice["prompt_logprobs"]},
        "stream": stream,
    }


def chat(case, tokenizer):
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat

    proc = _processor(tokenizer, case["top_logprobs"], None)
    _, deltas = _feed(proc, case)
    serving = OpenAIServingChat.__new__(OpenAIServingChat)
    serving.return_tokens_as_token_ids = False

    def shape(ids, lps):
        lp = serving._create_chat_logprobs(
            token_ids=ids,
            top_logprobs=lps,
            tokenizer=tokenizer,
            num_output_top_logprobs=case["top_logprobs"],
            return_as_token_id=case["return_as_ids"],
        )
        return json.loads(lp.model_dump_json())

    all_ids = [t for ids, _ in deltas for t in ids]
    return {"full": shape(all_ids, proc.logprobs), "stream": [shape(ids, lps) for ids, lps in deltas]}


if __name__ == "__main__":
    main()
