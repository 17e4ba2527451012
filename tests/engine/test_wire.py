"""Wire encoding: local round trips, and byte-level conformance with vLLM's own msgspec classes (the latter
through the engine venv's python, since the frontend never imports vllm)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import msgspec
import pytest

from trio_front.engine import wire
from trio_front.engine.launch import EngineNotInstalledError, find_engine_python

CODEC = Path(__file__).with_name("vllm_codec.py")


def engine_python() -> Path:
    try:
        return find_engine_python()
    except EngineNotInstalledError as exc:
        pytest.skip(f"vLLM engine venv not installed: {exc}")


def vllm(command: dict) -> object:
    proc = subprocess.run(
        [str(engine_python()), str(CODEC)],
        input=json.dumps(command).encode(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(proc.stdout)


def sample_request() -> wire.EngineCoreRequest:
    params = wire.SamplingParams(
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        seed=1234,
        max_tokens=33,
        min_tokens=2,
        stop_token_ids=[7, 9],
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        logprobs=3,
        output_kind=wire.OutputKind.DELTA,
        eos_token_id=2,
        all_stop_token_ids=[2, 7, 9],
        logit_bias={5: -100.0, 6: 2.5},
        bad_words_token_ids=[[100, 101]],
    )
    return wire.EngineCoreRequest(
        request_id="cmpl-abc-1f.1",
        prompt_token_ids=[1, 450, 1234, 99],
        sampling_params=params,
        arrival_time=1700000000.25,
        client_index=0,
        priority=3,
        cache_salt="salt",
        external_req_id="cmpl-abc",
    )


def test_request_round_trip_and_positions() -> None:
    request = sample_request()
    payload = wire.encode(request)
    assert wire.decode_request(payload) == request
    raw = msgspec.msgpack.decode(payload)
    assert raw[0] == "cmpl-abc-1f.1" and raw[1] == [1, 450, 1234, 99] and raw[5] == 1700000000.25
    assert raw[3]["_eos_token_id"] == 2 and raw[3]["_all_stop_token_ids"] == [2, 7, 9]
    assert "stop" not in raw[3] and "n" not in raw[3]  # frontend-only / default fields stay home


def test_outputs_tolerate_extra_trailing_fields_and_short_arrays() -> None:
    # 0.33 appends EngineCoreOutput.error; a decoder by position must ignore it.
    output = [
        "r-1",
        [5, 6],
        None,
        None,
        None,
        1,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        0,
        None,
        None,
        None,
        None,
        {"code": "x", "message": "y", "retryable": False},
    ]
    message = [0, [output], None, 1.5, None, None, None, None, "default", "an-extra-0.34-field"]
    decoded = wire.decode_outputs(msgspec.msgpack.encode(message))
    assert decoded.outputs[0].request_id == "r-1" and decoded.outputs[0].finish_reason == 1
    short = wire.decode_outputs(msgspec.msgpack.encode([0, [["r-2", [9]]]]))
    assert short.outputs[0].new_token_ids == [9] and short.outputs[0].finish_reason is None


def test_wire_array_inline_and_aux() -> None:
    data = (1).to_bytes(4, "little") + (2).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"\0" * 4
    inline = wire.WireArray.from_wire(["<i4", [2, 2], msgspec.msgpack.Ext(3, data)])
    assert inline.tolist() == [[1, 2], [3, 0]]
    aux = wire.WireArray.from_wire(["<i4", [4], 1], [data])
    assert aux.flat() == [1, 2, 3, 0]
    with pytest.raises(ValueError):
        wire.WireArray.from_wire(["<i4", [4], 2], [data])


def test_engine_version_check() -> None:
    wire.check_engine_version("0.32.0")
    wire.check_engine_version("0.32.1+cpu")
    assert wire.check_engine_version("0.33.0") is wire.WireVersion.V0_33
    with pytest.raises(wire.UnsupportedEngineVersion, match="0.34.0"):
        wire.check_engine_version("0.34.0")


def test_frames() -> None:
    ident = wire.engine_identity(0)
    assert ident == b"\x00\x00" and wire.engine_identity(1) == b"\x01\x00"
    assert wire.abort_frames(ident, ["a", "b"]) == [ident, b"\x01", msgspec.msgpack.encode(["a", "b"])]
    frames = wire.utility_frames(ident, 0, 7, "is_sleeping", ())
    assert frames[1] == b"\x03" and msgspec.msgpack.decode(frames[2]) == [0, 7, "is_sleeping", []]


# ---------------------------------------------------------------------------- conformance with vLLM


@pytest.mark.real_engine
def test_vllm_decodes_our_request_to_the_same_values() -> None:
    request = sample_request()
    seen = vllm({"op": "decode_request", "payload": wire.encode(request).hex()})
    assert seen["request_id"] == request.request_id
    assert seen["prompt_token_ids"] == request.prompt_token_ids
    assert seen["arrival_time"] == request.arrival_time
    assert seen["priority"] == 3 and seen["cache_salt"] == "salt" and seen["external_req_id"] == "cmpl-abc"
    assert seen["client_index"] == 0 and seen["current_wave"] == 0 and seen["prompt_embeds"] is None
    sp = seen["sampling_params"]
    assert sp["temperature"] == pytest.approx(0.7) and sp["top_p"] == pytest.approx(0.9)
    assert (sp["top_k"], sp["seed"], sp["max_tokens"], sp["min_tokens"]) == (40, 1234, 33, 2)
    assert sp["stop_token_ids"] == [7, 9] and sp["_eos_token_id"] == 2
    assert sp["_all_stop_token_ids"] == [2, 7, 9]
    assert sp["logprobs"] == 3 and sp["output_kind"] == 1
    assert sp["logit_bias"] == {"5": -100.0, "6": 2.5}
    assert sp["_bad_words_token_ids"] == [[100, 101]]
    assert sp["repetition_penalty"] == pytest.approx(1.1) and sp["presence_penalty"] == 0.5


@pytest.mark.real_engine
def test_our_request_encodes_like_vllms() -> None:
    """Same logical request, encoded by vLLM and by us: identical bytes."""
    request = sample_request()
    sp = request.sampling_params
    vllm_frames = vllm(
        {
            "op": "encode_request",
            "request": {
                "request_id": request.request_id,
                "prompt_token_ids": request.prompt_token_ids,
                "arrival_time": request.arrival_time,
                "priority": 3,
                "cache_salt": "salt",
                "external_req_id": "cmpl-abc",
                "sampling_params": {
                    "temperature": sp.temperature,
                    "top_p": sp.top_p,
                    "top_k": sp.top_k,
                    "min_p": sp.min_p,
                    "seed": sp.seed,
                    "max_tokens": sp.max_tokens,
                    "min_tokens": sp.min_tokens,
                    "stop_token_ids": sp.stop_token_ids,
                    "presence_penalty": sp.presence_penalty,
                    "frequency_penalty": sp.frequency_penalty,
                    "repetition_penalty": sp.repetition_penalty,
                    "logprobs": sp.logprobs,
                    "output_kind": 1,
                    "logit_bias": sp.logit_bias,
                },
            },
        }
    )
    theirs = msgspec.msgpack.decode(bytes.fromhex(vllm_frames[0]))
    ours = msgspec.msgpack.decode(wire.encode(request))
    # vLLM's SamplingParams map carries its own __post_init__ products (stop=[], bad_words=[]...);
    # compare the request array, then the engine-relevant sampling keys.
    assert ours[:3] == theirs[:3] and ours[4:] == theirs[4 : len(ours)]
    for key, value in ours[3].items():
        if key in ("_eos_token_id", "_all_stop_token_ids", "_bad_words_token_ids"):
            continue  # set by vLLM's InputProcessor, not by the constructor
        assert theirs[3].get(key) == value, key


@pytest.mark.real_engine
def test_we_decode_vllms_outputs() -> None:
    frames = [bytes.fromhex(h) for h in vllm({"op": "encode_outputs"})]
    assert len(frames) >= 2, "the big logprobs array should travel as an aux frame"
    outs = wire.decode_outputs(frames[0])
    aux = frames[1:]
    assert [o.request_id for o in outs.outputs] == ["a-1", "b-2", "c-3", "d-4"]
    a, b, c, d = outs.outputs
    lp = wire.decode_logprobs(a.new_logprobs, aux)
    assert lp.token_ids == [[11, 12, 13, 14], [21, 22, 23, 24]]
    assert lp.logprobs == [[-0.5, -1.0, -1.5, -2.0], [-0.25, -0.75, -1.25, -1.75]]
    assert lp.ranks == [1, 3]
    assert (b.finish_reason, b.stop_reason) == (wire.FinishReason.STOP, 7)
    big = wire.decode_logprobs(c.new_logprobs, aux)
    assert len(big.token_ids) == 40 and big.token_ids[1] == [4, 5, 6, 7] and big.ranks[-1] == 39
    assert c.finish_reason == wire.FinishReason.LENGTH
    assert d.stop_reason == "repetition_detected" and outs.finished_requests == ["d-4"]
    assert outs.timestamp == 123.5
