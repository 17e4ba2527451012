"""Run by the engine venv's python with vLLM **0.33**'s source first on PYTHONPATH (``tests/vllm033.py``).

One JSON command on stdin, one JSON answer on stdout (one process: importing vLLM takes ~20 s). Input:
``{"request": HEX, "outputs": [HEX, ...], "registration": HEX}``, our encodings. The answer holds

* ``version`` — ``vllm.__version__`` as imported (proves 0.33's source was used, not the venv's 0.32);
* ``fields`` — field names, in order, of 0.33's EngineCoreRequest, EngineCoreOutput(s), UtilityOutput,
  RequestError, EngineCoreReadyResponse and SamplingParams;
* ``profile_arity`` — positional parameters of ``EngineCore.profile`` (read with ``ast``: importing
  ``vllm.v1.engine.core`` needs 0.33's compiled extensions);
* ``request`` — our ADD payload decoded by 0.33's ``MsgpackDecoder(EngineCoreRequest)``, field by field;
* ``outputs`` — each of our output messages decoded by 0.33's ``MsgpackDecoder(EngineCoreOutputs)``;
* ``registration`` — our registration map turned into 0.33's ``EngineCoreReadyResponse`` (every key);
* ``encoded`` — HEX frames 0.33's ``MsgpackEncoder`` writes for reference outputs (tokens, logprobs in an
  aux frame, ``engine_paused`` and ``validation_error`` errors, a utility reply) and a ready response.
"""

import ast
import dataclasses
import json
import sys
from pathlib import Path

import msgspec
import numpy as np
import vllm
from vllm.outputs import RequestError
from vllm.sampling_params import SamplingParams
from vllm.v1.engine import (
    EngineCoreOutput,
    EngineCoreOutputs,
    EngineCoreReadyResponse,
    EngineCoreRequest,
    FinishReason,
    UtilityOutput,
)
from vllm.v1.outputs import LogprobsLists
from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder, UtilityResult

sys.path.insert(0, str(Path(__file__).parent))
from vllm_codec import jsonable, sampling_fields


def profile_arity() -> int:
    tree = ast.parse((Path(vllm.__file__).parent / "v1" / "engine" / "core.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "EngineCore":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "profile":
                    return len(item.args.args) - 1  # minus self
    raise SystemExit("EngineCore.profile not found")


def output_fields(out):
    names = ("request_id", "new_token_ids", "finish_reason", "stop_reason", "events", "num_nans_in_logits")
    fields = {f: jsonable(getattr(out, f)) for f in names}
    stats = out.prefill_stats  # a dataclass or a Struct, depending on the class
    if stats is not None:
        stats = (
            dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else msgspec.structs.asdict(stats)
        )
    fields["prefill_stats"] = stats
    fields["error"] = None if out.error is None else dataclasses.asdict(out.error)
    lp = out.new_logprobs
    if lp is not None:
        lp = [lp.logprob_token_ids.tolist(), lp.logprobs.tolist(), lp.sampled_token_ranks.tolist()]
    fields["new_logprobs"] = lp
    return fields


def reference_outputs():
    lp = LogprobsLists(  # 40 rows: large enough to travel as an aux frame (>= 256 bytes)
        np.arange(40 * 4, dtype=np.int32).reshape(40, 4),
        np.linspace(-5, 0, 40 * 4, dtype=np.float32).reshape(40, 4),
        np.arange(40, dtype=np.int64),
        None,
    )
    paused = RequestError(
        code="engine_paused", message="Generation is paused. Please retry after it resumes.", retryable=True
    )
    invalid = RequestError(code="validation_error", message="Invalid structured outputs: bad grammar")
    steps = EngineCoreOutputs(
        engine_index=1,
        outputs=[
            EngineCoreOutput(request_id="a-1", new_token_ids=list(range(40)), new_logprobs=lp),
            EngineCoreOutput(
                request_id="b-2", new_token_ids=[5], finish_reason=FinishReason.STOP, stop_reason=7
            ),
        ],
        timestamp=12.5,
        weight_version="default",
    )
    errors = EngineCoreOutputs(
        outputs=[
            EngineCoreOutput("p-3", [], finish_reason=FinishReason.ERROR, error=paused),
            EngineCoreOutput("v-4", [], finish_reason=FinishReason.ERROR, error=invalid),
            EngineCoreOutput("e-5", [], finish_reason=FinishReason.ERROR),
        ],
        finished_requests=["p-3", "v-4", "e-5"],
    )
    utility = EngineCoreOutputs(utility_output=UtilityOutput(call_id=7, result=UtilityResult([1, 2])))
    encoder = MsgpackEncoder()
    return {
        name: [bytes(b).hex() for b in encoder.encode(message)]
        for name, message in (("steps", steps), ("errors", errors), ("utility", utility))
    }


def main():
    cmd = json.loads(sys.stdin.read())
    req = MsgpackDecoder(EngineCoreRequest).decode(bytes.fromhex(cmd["request"]))
    request = {f: jsonable(getattr(req, f)) for f in req.__struct_fields__ if f != "sampling_params"}
    request["sampling_params"] = sampling_fields(req.sampling_params)
    decoder = MsgpackDecoder(EngineCoreOutputs)
    messages = [decoder.decode(bytes.fromhex(h)) for h in cmd["outputs"]]
    registration = EngineCoreReadyResponse(**msgspec.msgpack.decode(bytes.fromhex(cmd["registration"])))
    ready = EngineCoreReadyResponse(**{**dataclasses.asdict(registration), "coord_store_port": 4242})
    answer = {
        "version": vllm.__version__,
        "fields": {
            "EngineCoreRequest": list(EngineCoreRequest.__struct_fields__),
            "EngineCoreOutput": list(EngineCoreOutput.__struct_fields__),
            "EngineCoreOutputs": list(EngineCoreOutputs.__struct_fields__),
            "UtilityOutput": list(UtilityOutput.__struct_fields__),
            "RequestError": [f.name for f in dataclasses.fields(RequestError)],
            "EngineCoreReadyResponse": [f.name for f in dataclasses.fields(EngineCoreReadyResponse)],
            "SamplingParams": list(SamplingParams.__struct_encode_fields__),
        },
        "profile_arity": profile_arity(),
        "request": request,
        "outputs": [
            {
                **{f: jsonable(getattr(outs, f)) for f in outs.__struct_fields__ if f != "outputs"},
                "outputs": [output_fields(o) for o in outs.outputs],
            }
            for outs in messages
        ],
        "registration": dataclasses.asdict(registration),
        "encoded": {**reference_outputs(), "ready": msgspec.msgpack.encode(ready).hex()},
    }
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
