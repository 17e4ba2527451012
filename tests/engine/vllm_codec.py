"""Run by the *engine* venv's python (it imports vllm): encode/decode with vLLM's own classes.

Reads one JSON command from stdin and prints one JSON answer, so the frontend's tests can check byte-level
conformance without importing vllm into the frontend's environment.

Commands:
  {"op": "decode_request", "payload": HEX}  -> the EngineCoreRequest vLLM decodes, field by field
  {"op": "encode_request", "request": {...}} -> HEX of vLLM's encoding of an equivalent request
  {"op": "encode_outputs", "case": NAME}     -> HEX frames of vLLM-encoded EngineCoreOutputs
"""

import json
import sys

import numpy as np
from vllm.sampling_params import SamplingParams
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs, EngineCoreRequest, FinishReason
from vllm.v1.outputs import LogprobsLists
from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder


def jsonable(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):
        return value.value
    return value


def sampling_fields(sp):
    names = [
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "max_tokens",
        "min_tokens",
        "stop_token_ids",
        "ignore_eos",
        "logprobs",
        "prompt_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "output_kind",
        "_eos_token_id",
        "_all_stop_token_ids",
        "logit_bias",
        "allowed_token_ids",
        "_bad_words_token_ids",
        "skip_special_tokens",
        "include_stop_str_in_output",
        "skip_reading_prefix_cache",
        "n",
    ]
    return {name: jsonable(getattr(sp, name)) for name in names}


def main():
    cmd = json.loads(sys.stdin.read())
    op = cmd["op"]
    if op == "decode_request":
        req = MsgpackDecoder(EngineCoreRequest).decode(bytes.fromhex(cmd["payload"]))
        fields = {f: jsonable(getattr(req, f)) for f in req.__struct_fields__ if f != "sampling_params"}
        fields["sampling_params"] = sampling_fields(req.sampling_params)
        so = req.sampling_params.structured_outputs
        if so is not None:  # a dataclass: every field, private ones included
            fields["sampling_params"]["structured_outputs"] = {k: jsonable(v) for k, v in vars(so).items()}
        fields["reasoning_ended"] = req.reasoning_ended
        fields["reasoning_parser_kwargs"] = req.reasoning_parser_kwargs
        print(json.dumps(fields))
    elif op == "structured":  # vLLM's own frontend mapping helpers, for parity tests
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.v1.structured_output.utils import choice_as_grammar

        out = {"grammars": [choice_as_grammar(c) for c in cmd.get("choices", [])], "mapped": []}
        for body in cmd.get("requests", []):
            try:
                req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}], **body)
                so = req.to_sampling_params(16, {}).structured_outputs
                out["mapped"].append(None if so is None else {k: jsonable(v) for k, v in vars(so).items()})
            except Exception as exc:
                out["mapped"].append({"error": f"{type(exc).__name__}: {exc}"})
        print(json.dumps(out))
    elif op == "encode_request":
        r = cmd["request"]
        sp_args = r.pop("sampling_params")
        if sp_args.get("logit_bias"):  # JSON made the keys strings; vLLM's frontend sends ints
            sp_args["logit_bias"] = {int(k): v for k, v in sp_args["logit_bias"].items()}
        sp = SamplingParams(**sp_args)
        r.setdefault("cache_salt", None)
        req = EngineCoreRequest(
            sampling_params=sp,
            mm_features=None,
            pooling_params=None,
            lora_request=None,
            data_parallel_rank=None,
            **r,
        )
        print(json.dumps([b.hex() for b in MsgpackEncoder().encode(req)]))
    elif op == "encode_outputs":
        k = 3
        lp = LogprobsLists(
            np.array([[11, 12, 13, 14], [21, 22, 23, 24]], dtype=np.int32),
            np.array([[-0.5, -1.0, -1.5, -2.0], [-0.25, -0.75, -1.25, -1.75]], dtype=np.float32),
            np.array([1, 3], dtype=np.int64),
            None,
        )
        big = LogprobsLists(  # large enough to travel as an aux frame (>= 256 bytes)
            np.arange(40 * (k + 1), dtype=np.int32).reshape(40, k + 1),
            np.linspace(-5, 0, 40 * (k + 1), dtype=np.float32).reshape(40, k + 1),
            np.arange(40, dtype=np.int64),
            None,
        )
        outs = EngineCoreOutputs(
            engine_index=0,
            outputs=[
                EngineCoreOutput(request_id="a-1", new_token_ids=[11, 21], new_logprobs=lp),
                EngineCoreOutput(
                    request_id="b-2", new_token_ids=[5], finish_reason=FinishReason.STOP, stop_reason=7
                ),
                EngineCoreOutput(
                    request_id="c-3",
                    new_token_ids=list(range(40)),
                    new_logprobs=big,
                    finish_reason=FinishReason.LENGTH,
                ),
                EngineCoreOutput(
                    request_id="d-4",
                    new_token_ids=[],
                    finish_reason=FinishReason.ABORT,
                    stop_reason="repetition_detected",
                ),
            ],
            timestamp=123.5,
            finished_requests={"d-4"},
            utility_output=None,
        )
        frames = MsgpackEncoder().encode(outs)
        print(json.dumps([bytes(b).hex() for b in frames]))
    else:
        raise SystemExit(f"unknown op {op}")


if __name__ == "__main__":
    main()
