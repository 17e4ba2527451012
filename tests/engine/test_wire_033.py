"""vLLM 0.33 on the wire: the version guard, the per-version layouts, the mock engine's 0.33 mode, and
conformance with vLLM 0.33's own msgspec classes (read from the PyPI wheel, ``tests/vllm033.py``).

The conformance half runs ``vllm033_codec.py`` once per module (one ~20 s vLLM import): vLLM 0.33 decodes
our request and the mock's 0.33 output messages into the values we meant, and we decode 0.33's own
encodings (logprobs in an aux frame, both error codes, a utility reply, a ready response).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.vllm033 import VERSION, run_with_vllm033
from trio_front.engine import wire
from trio_front.engine.mock import EventLog, MockCore, MockEngineConfig, mock_token

CODEC = Path(__file__).with_name("vllm033_codec.py")
V32, V33 = wire.WireVersion.V0_32, wire.WireVersion.V0_33


# ------------------------------------------------------------------------------------ local checks


@pytest.mark.parametrize(
    ("version", "layout"),
    [("0.32.0", V32), ("0.32.1+cpu", V32), ("0.33.0", V33), ("0.33.2", V33), ("0.33.0rc1", V33)],
)
def test_version_picks_the_layout(version: str, layout: wire.WireVersion) -> None:
    assert wire.WireVersion.from_version(version) is layout
    assert wire.check_engine_version(version) is layout


@pytest.mark.parametrize("version", ["0.31.0", "0.34.0", "1.0.0", "test-vllm-version", "unknown"])
def test_other_versions_are_refused_by_name(version: str) -> None:
    with pytest.raises(wire.UnsupportedEngineVersion) as info:
        wire.WireVersion.from_version(version)
    assert f"vLLM {version}," in str(info.value) and "0.32.x, 0.33.x" in str(info.value)


def _raw_output(error: Any, extra: int = 0) -> list[Any]:
    """An 0.33-shaped EngineCoreOutput array (19 positions, *extra* unknown ones after)."""
    return ["r-1", [], *([None] * 3), 3, *([None] * 7), 0, *([None] * 4), error, *(["new"] * extra)]


def test_033_layout_reads_error_and_032_layout_ignores_it() -> None:
    error = {"code": "validation_error", "message": "bad", "retryable": False}
    payload = msgspec.msgpack.encode([0, [_raw_output(error, extra=1)], None, 1.0, None, ["r-1"]])
    (out33,) = V33.decode_outputs(payload).outputs
    assert out33.error == wire.RequestError("validation_error", "bad") and out33.error.http_status == 400
    (out32,) = V32.decode_outputs(payload).outputs
    assert type(out32) is wire.EngineCoreOutput and out32.error is None and out32.finish_reason == 3
    plain = msgspec.msgpack.encode([0, [["r-2", [7], None, None, None, 3]]])
    assert V33.decode_outputs(plain).outputs[0].error is None  # ERROR without a RequestError


def test_error_statuses() -> None:
    assert wire.RequestError("engine_paused", "paused", retryable=True).http_status == 503
    assert wire.RequestError("validation_error", "bad").http_status == 400
    assert wire.RequestError("multimodal_cache_miss", "x", retryable=True).http_status == 503
    assert wire.RequestError("something_else", "x").http_status == 500


def test_profile_arity_and_first_request_notifications() -> None:
    assert V32.profile_args(True, "p") == (True, "p", None, None)
    assert V33.profile_args(False, None, 2, 5, {"record_shapes": True}) == (
        False,
        None,
        2,
        5,
        {"record_shapes": True},
    )
    with pytest.raises(ValueError, match="profiler_kwargs"):
        V32.profile_args(True, profiler_kwargs={"x": 1})
    assert V32.notifies_first_request and not V33.notifies_first_request


def _core(version: str) -> MockCore:
    core = MockCore(MockEngineConfig("tcp://127.0.0.1:1", vllm_version=version, log_stats=False), EventLog())
    core.num_clients = 1
    return core


def _add(core: MockCore, rid: str, prompt: list[int], **params: Any) -> None:
    request = wire.EngineCoreRequest(
        request_id=rid,
        prompt_token_ids=prompt,
        sampling_params=wire.SamplingParams(**{"max_tokens": 2, **params}),
        arrival_time=1.0,
    )
    core.handle(wire.add_frames(b"\x00\x00", request)[1:], 0.0)


def _utility(core: MockCore, call_id: int, method: str, *args: Any) -> wire.UtilityResult:
    core.handle(wire.utility_frames(b"\x00\x00", 0, call_id, method, args)[1:], 0.0)
    (_, payload) = core.outbox.pop()
    return wire.decode_utility_result(wire.decode_outputs(payload).utility_output)


def mock_033_messages() -> tuple[MockCore, list[bytes]]:
    """The mock (0.33 mode): a step with logprobs, a finish, then a pause_generation rejection."""
    core = _core("0.33.0")
    _add(core, "a-1", [5, 6, 7], logprobs=2)
    core.step()
    core.step()
    assert _utility(core, 1, "pause_generation", "wait").failure_message is None
    _add(core, "p-2", [8, 9])
    return core, [payload for _, payload in core.outbox]


def test_mock_033_mode() -> None:
    core, messages = mock_033_messages()
    assert set(MockEngineConfig("x", vllm_version="0.33.0").registration()) == set(V33.registration_keys)
    assert set(MockEngineConfig("x").registration()) == set(V32.registration_keys)
    assert [len(msgspec.msgpack.decode(m)[1][0]) for m in messages] == [19, 19, 19]
    rejected = V33.decode_outputs(messages[-1])
    assert (
        rejected.finished_requests == ["p-2"] and rejected.outputs[0].finish_reason == wire.FinishReason.ERROR
    )
    error = rejected.outputs[0].error
    assert error is not None and (error.code, error.retryable, error.http_status) == (
        "engine_paused",
        True,
        503,
    )
    assert [e["request_id"] for e in core.log.named("finish")] == ["a-1", "p-2"]
    _utility(core, 2, "resume_scheduler")
    _add(core, "p-3", [8, 9])
    core.step()
    (_, payload) = core.outbox.pop()
    assert V33.decode_outputs(payload).outputs[0].new_token_ids == [mock_token([8, 9], 0, core.config.vocab)]
    assert _utility(core, 3, "profile", True, None, None, None, None).failure_message is None


def test_mock_032_mode_has_no_033_utilities() -> None:
    core = _core("0.32.0")
    failed = _utility(core, 1, "pause_generation", "abort")
    assert "has no attribute 'pause_generation'" in (failed.failure_message or "")
    assert _utility(core, 2, "profile", True, None, None, None).failure_message is None
    assert "positional arguments" in (_utility(core, 3, "profile", *V33.profile_args()).failure_message or "")
    _add(core, "a-1", [5], max_tokens=1)
    core.step()
    (_, payload) = core.outbox.pop()
    assert len(msgspec.msgpack.decode(payload)[1][0]) == len(wire.EngineCoreOutput.__struct_fields__)


# ------------------------------------------------------------------------------ vLLM 0.33's classes


def sample_request() -> wire.EngineCoreRequest:
    params = wire.SamplingParams(
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        seed=1234,
        max_tokens=33,
        min_tokens=2,
        stop_token_ids=[7, 9],
        logprobs=3,
        output_kind=wire.OutputKind.DELTA,
        eos_token_id=2,
        all_stop_token_ids=[2, 7, 9],
        logit_bias={5: -100.0},
        bad_words_token_ids=[[100, 101]],
    )
    return wire.EngineCoreRequest(
        request_id="cmpl-abc-1f.1",
        prompt_token_ids=[1, 450, 1234, 99],
        sampling_params=params,
        arrival_time=1700000000.25,
        priority=3,
        cache_salt="salt",
        external_req_id="cmpl-abc",
        current_wave=2,
    )


@pytest.fixture(scope="module")
def vllm033() -> dict[str, Any]:
    _, messages = mock_033_messages()
    registration = MockEngineConfig("x", vllm_version=VERSION).registration()
    answer = run_with_vllm033(
        [str(CODEC)],
        {
            "request": wire.encode(sample_request()).hex(),
            "outputs": [m.hex() for m in messages],
            "registration": wire.encode(registration).hex(),
        },
    )
    assert answer["version"] == VERSION  # 0.33's source was imported, not the engine venv's 0.32
    return answer


pytestmark_conformance = pytest.mark.real_engine


@pytestmark_conformance
def test_field_layouts_are_033s(vllm033: dict[str, Any]) -> None:
    fields = vllm033["fields"]
    assert fields["EngineCoreRequest"] == list(wire.EngineCoreRequest.__struct_fields__)
    assert fields["EngineCoreOutput"] == list(wire.EngineCoreOutput033.__struct_fields__)
    assert fields["EngineCoreOutputs"] == list(wire.EngineCoreOutputs033.__struct_fields__)
    assert fields["UtilityOutput"] == list(wire.UtilityResult.__struct_fields__)
    assert fields["RequestError"] == list(wire.RequestError.__struct_fields__)
    assert fields["EngineCoreReadyResponse"] == list(V33.registration_keys)
    assert set(wire.SamplingParams.__struct_encode_fields__) <= set(fields["SamplingParams"])
    assert vllm033["profile_arity"] == V33.profile_arity


@pytestmark_conformance
def test_033_decodes_our_request(vllm033: dict[str, Any]) -> None:
    request, seen = sample_request(), vllm033["request"]
    for name in wire.EngineCoreRequest.__struct_fields__:
        if name != "sampling_params":
            assert seen[name] == getattr(request, name), name
    sp = seen["sampling_params"]
    assert (sp["top_k"], sp["seed"], sp["max_tokens"], sp["min_tokens"], sp["logprobs"]) == (
        40,
        1234,
        33,
        2,
        3,
    )
    assert sp["temperature"] == pytest.approx(0.7) and sp["top_p"] == pytest.approx(0.9)
    assert (
        sp["stop_token_ids"] == [7, 9] and sp["_eos_token_id"] == 2 and sp["_all_stop_token_ids"] == [2, 7, 9]
    )
    assert (
        sp["output_kind"] == 1
        and sp["logit_bias"] == {"5": -100.0}
        and sp["_bad_words_token_ids"] == [[100, 101]]
    )


@pytestmark_conformance
def test_033_decodes_the_mocks_033_outputs(vllm033: dict[str, Any]) -> None:
    _, messages = mock_033_messages()
    theirs = vllm033["outputs"]
    assert len(theirs) == len(messages)
    for seen, payload in zip(theirs, messages, strict=True):
        ours = V33.decode_outputs(payload)
        assert (
            seen["finished_requests"] == ours.finished_requests and seen["engine_index"] == ours.engine_index
        )
        for got, out in zip(seen["outputs"], ours.outputs, strict=True):
            assert got["request_id"] == out.request_id and got["new_token_ids"] == out.new_token_ids
            assert got["finish_reason"] == out.finish_reason and got["stop_reason"] == out.stop_reason
            assert got["error"] == (None if out.error is None else msgspec.structs.asdict(out.error))
            assert got["prefill_stats"] == out.prefill_stats and got["num_nans_in_logits"] == 0
            if out.new_logprobs is not None:
                lp = wire.decode_logprobs(out.new_logprobs)
                assert got["new_logprobs"] == [lp.token_ids, lp.logprobs, lp.ranks]
    assert theirs[-1]["outputs"][0]["error"]["code"] == "engine_paused"
    assert theirs[0]["outputs"][0]["new_logprobs"] is not None


@pytestmark_conformance
def test_we_decode_033s_outputs(vllm033: dict[str, Any]) -> None:
    encoded = {k: [bytes.fromhex(h) for h in v] for k, v in vllm033["encoded"].items() if k != "ready"}
    steps = encoded["steps"]
    assert len(steps) >= 2, "the logprobs should travel in an aux frame"
    outs = V33.decode_outputs(steps[0])
    a, b = outs.outputs
    lp = wire.decode_logprobs(a.new_logprobs, steps[1:])
    assert len(lp.token_ids) == 40 and lp.token_ids[1] == [4, 5, 6, 7] and lp.ranks[-1] == 39
    assert (b.finish_reason, b.stop_reason, b.error) == (wire.FinishReason.STOP, 7, None)
    assert (outs.engine_index, outs.timestamp, outs.weight_version) == (1, 12.5, "default")
    (errors,) = encoded["errors"]
    paused, invalid, plain = V33.decode_outputs(errors).outputs
    assert paused.error is not None and (paused.error.code, paused.error.http_status) == (
        "engine_paused",
        503,
    )
    assert invalid.error is not None and (invalid.error.code, invalid.error.http_status) == (
        "validation_error",
        400,
    )
    assert plain.error is None and plain.finish_reason == wire.FinishReason.ERROR
    assert [o.request_id for o in V32.decode_outputs(errors).outputs] == ["p-3", "v-4", "e-5"]
    (utility,) = encoded["utility"]
    reply = wire.decode_utility_result(V33.decode_outputs(utility).utility_output)
    assert (reply.call_id, reply.failure_message, reply.value) == (7, None, [1, 2])


@pytestmark_conformance
def test_033_registration(vllm033: dict[str, Any]) -> None:
    assert list(vllm033["registration"]) == list(V33.registration_keys)  # the mock sends every key
    registration = wire.decode_registration(bytes.fromhex(vllm033["encoded"]["ready"]))
    assert registration.vllm_version == VERSION and registration.coord_store_port == 4242
    assert wire.WireVersion.from_version(registration.vllm_version) is V33
