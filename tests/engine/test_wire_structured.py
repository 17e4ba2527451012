"""``wire.StructuredOutputsParams`` against vLLM 0.32 itself (engine venv, via a subprocess).

vLLM's ``StructuredOutputsParams`` is a dataclass, which msgspec encodes as a map of *all* its fields, in
declaration order, ``None`` included (``omit_defaults`` does not apply to dataclasses). So our bytes must
equal vLLM's encoder's, and vLLM's typed decoder (which runs ``__post_init__``: zero or two constraints
kill the engine's input thread) must accept every form we send.
"""

from __future__ import annotations

import json
import subprocess

import msgspec
import pytest

from tests.engine.test_wire import engine_python, sample_request
from trio_front.engine import wire

pytestmark = pytest.mark.real_engine

FIELDS = [
    "json",
    "regex",
    "choice",
    "grammar",
    "json_object",
    "disable_any_whitespace",
    "disable_additional_properties",
    "whitespace_pattern",
    "structural_tag",
    "_backend",
    "_backend_was_auto",
]

#: Run by the engine venv's python: for each case, vLLM's own encoding of an equivalent dataclass, and
#: what its EngineCoreRequest decoder makes of our full request (or the error it raises).
VLLM_SIDE = r"""
import json, sys, dataclasses
from vllm.sampling_params import StructuredOutputsParams
from vllm.v1.engine import EngineCoreRequest
from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

cmd = json.loads(sys.stdin.read())
out = {"field_names": [f.name for f in dataclasses.fields(StructuredOutputsParams)], "cases": []}
decoder = MsgpackDecoder(EngineCoreRequest)
for case in cmd["cases"]:
    kwargs = dict(case["fields"])
    backend, was_auto = kwargs.pop("_backend"), kwargs.pop("_backend_was_auto")
    result = {}
    try:  # vLLM's own constructor refuses what its decoder refuses
        theirs = StructuredOutputsParams(**kwargs)
        theirs._backend, theirs._backend_was_auto = backend, was_auto
        result["encoded"] = MsgpackEncoder().encode(theirs)[0].hex()
    except Exception as exc:
        result["encoded"] = None
    try:
        req = decoder.decode(bytes.fromhex(case["request"]))
        so = req.sampling_params.structured_outputs
        result["decoded"] = {f.name: getattr(so, f.name) for f in dataclasses.fields(so)}
        result["type"] = type(so).__name__
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    out["cases"].append(result)
print(json.dumps(out))
"""

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
CASES = [
    wire.StructuredOutputsParams(json=SCHEMA, backend="guidance", backend_was_auto=True),
    wire.StructuredOutputsParams(json=json.dumps(SCHEMA), backend="guidance"),
    wire.StructuredOutputsParams(regex=r"\d+", backend="guidance", disable_any_whitespace=True),
    wire.StructuredOutputsParams(choice=["a", "b\n"], backend="guidance"),
    wire.StructuredOutputsParams(grammar='root ::= "a" | "b"', backend="xgrammar"),
    wire.StructuredOutputsParams(json_object=True, backend="xgrammar", disable_any_whitespace=True),
    wire.StructuredOutputsParams(
        structural_tag='{"structures": [], "triggers": []}', backend="guidance", backend_was_auto=True
    ),
    # Two constraints / none: what the engine's decoder must refuse (and serving/structured.py never sends).
    wire.StructuredOutputsParams(regex="a", choice=["a"], backend="guidance"),
    wire.StructuredOutputsParams(backend="guidance"),
]


def as_fields(so: wire.StructuredOutputsParams) -> dict:
    return dict(msgspec.msgpack.decode(msgspec.msgpack.encode(so)))


def run_vllm(cases: list[wire.StructuredOutputsParams]) -> dict:
    requests = []
    for so in cases:
        request = sample_request()
        request.sampling_params.structured_outputs = so
        requests.append({"fields": as_fields(so), "request": wire.encode(request).hex()})
    proc = subprocess.run(
        [str(engine_python()), "-c", VLLM_SIDE],
        input=json.dumps({"cases": requests}).encode(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def vllm_side() -> dict:
    return run_vllm(CASES)


def test_every_field_is_on_the_wire_none_included() -> None:
    request = sample_request()
    request.sampling_params.structured_outputs = wire.StructuredOutputsParams(regex="x", backend="guidance")
    raw = msgspec.msgpack.decode(wire.encode(request))
    so = raw[3]["structured_outputs"]  # position 3: sampling_params, a map
    assert list(so) == FIELDS
    assert so == {**dict.fromkeys(FIELDS), "regex": "x", "_backend": "guidance"} | {
        "disable_any_whitespace": False,
        "disable_additional_properties": False,
        "_backend_was_auto": False,
    }
    # And a request without structured outputs does not carry the key at all (vLLM's omit_defaults).
    assert "structured_outputs" not in msgspec.msgpack.decode(wire.encode(sample_request()))[3]


def test_field_names_and_order_are_vllms(vllm_side: dict) -> None:
    assert vllm_side["field_names"] == FIELDS


@pytest.mark.parametrize("index", range(len(CASES) - 2))
def test_bytes_equal_vllms_encoder(vllm_side: dict, index: int) -> None:
    assert msgspec.msgpack.encode(CASES[index]).hex() == vllm_side["cases"][index]["encoded"]


@pytest.mark.parametrize("index", range(len(CASES) - 2))
def test_vllms_decoder_accepts_one_constraint(vllm_side: dict, index: int) -> None:
    seen = vllm_side["cases"][index]
    assert "error" not in seen, seen
    assert seen["type"] == "StructuredOutputsParams"
    assert seen["decoded"] == as_fields(CASES[index])


@pytest.mark.parametrize(("index", "message"), [(-2, "only use one kind"), (-1, "none are specified")])
def test_vllms_decoder_refuses_zero_or_two_constraints(vllm_side: dict, index: int, message: str) -> None:
    """The failure class that kills the engine's input thread (§0.3): pinned so we know why we validate."""
    assert message in vllm_side["cases"][index]["error"]
