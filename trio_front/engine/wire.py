"""Wire types of vLLM 0.32's engine-core protocol, sans-IO.

Everything that crosses the ZeroMQ sockets between us and the engine is defined here and encoded with
msgspec, the engine's own codec, so that the bytes are the ones vLLM's ``MsgpackEncoder`` would write:

* ``array_like`` structs are positional msgpack arrays (``EngineCoreRequest``, ``EngineCoreOutputs``,
  ``EngineCoreOutput``). On decode a longer array's extra trailing elements are ignored, which is how we
  tolerate 0.33's appended fields.
* ``SamplingParams`` is a msgpack *map* of its non-default fields; private engine fields such as
  ``_eos_token_id`` are renamed attributes here.
* Arrays (logprobs) travel as ``[dtype, shape, data]`` where ``data`` is msgpack ext type 3 (raw bytes)
  or an index into the message's auxiliary frames; :class:`WireArray` reads both without numpy.

Nothing in this module touches a socket or an event loop; see ``zmq_trio.py`` and ``client.py``.
"""

from __future__ import annotations

import enum
import sys
from array import array
from typing import Any

import msgspec

#: Minor versions of vLLM whose protocol this module speaks.
SUPPORTED_VLLM_MINOR = ("0.32",)

#: The single frame an engine sends on every output socket when it dies from an exception.
ENGINE_CORE_DEAD = b"ENGINE_CORE_DEAD"

#: msgpack ext code vLLM uses for raw array bytes (``CUSTOM_TYPE_RAW_VIEW``).
EXT_RAW_VIEW = 3


class RequestType(bytes, enum.Enum):
    """The type byte in front of every frame we send on the input socket.

    ``EXECUTOR_FAILED`` (``\\x04``) and ``WAKEUP`` (``\\x05``) are engine-internal and kill the engine's
    input thread if they arrive over the wire, so they are deliberately absent.
    """

    ADD = b"\x00"
    ABORT = b"\x01"
    START_DP_WAVE = b"\x02"
    UTILITY = b"\x03"


class FinishReason(enum.IntEnum):
    """``EngineCoreOutput.finish_reason`` values; ``str()`` gives the OpenAI spelling."""

    STOP = 0
    LENGTH = 1
    ABORT = 2
    ERROR = 3
    REPETITION = 4

    def __str__(self) -> str:
        return _FINISH_REASON_STRINGS[self]


_FINISH_REASON_STRINGS = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.ABORT: "abort",
    FinishReason.ERROR: "error",
    FinishReason.REPETITION: "repetition",
}


class OutputKind(enum.IntEnum):
    """``SamplingParams.output_kind``; a frontend-only field, the engine always streams per step."""

    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


# --------------------------------------------------------------------------------------------------
# Requests


class StructuredOutputsParams(msgspec.Struct, kw_only=True):
    """vLLM's ``StructuredOutputsParams`` dataclass: a msgpack map with **every** field, ``None`` included
    (dataclasses encode that way). Exactly one constraint must be set, or the engine's decoder raises in
    ``__post_init__`` and its input thread dies; ``serving/structured.py`` guarantees it. ``_backend``
    must be the same for the engine's lifetime (it adopts the first request's)."""

    json: str | dict[str, Any] | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None
    backend: str | None = msgspec.field(default=None, name="_backend")
    backend_was_auto: bool = msgspec.field(default=False, name="_backend_was_auto")


class RepetitionDetectionParams(msgspec.Struct, kw_only=True):
    """vLLM's ``RepetitionDetectionParams`` dataclass (a map with every field). The engine's decoder runs
    its ``__post_init__`` (its input thread dies if that raises; ``serving/params.py`` checks first) and
    its scheduler ends a request that repeats an n-gram ``min_count`` times (finish ``repetition``)."""

    max_pattern_size: int = 0
    min_pattern_size: int = 0
    min_count: int = 0


class SamplingParams(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The engine-relevant subset of vLLM's ``SamplingParams``, encoded as the same msgpack map.

    Defaults equal vLLM's, so ``omit_defaults`` leaves out exactly what vLLM would. Fields the engine
    never reads (``stop`` strings, ``n``, ``detokenize``...) are frontend business and are not sent.
    The engine re-runs ``__post_init__``/``_verify_args`` on decode and *its input thread dies* if that
    raises, so every value here must have been validated first (``serving/params.py``).
    """

    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    output_kind: int = OutputKind.CUMULATIVE
    eos_token_id: int | None = msgspec.field(default=None, name="_eos_token_id")
    all_stop_token_ids: list[int] = msgspec.field(default_factory=list, name="_all_stop_token_ids")
    logit_bias: dict[int, float] | None = None
    allowed_token_ids: list[int] | None = None
    bad_words_token_ids: list[list[int]] | None = msgspec.field(default=None, name="_bad_words_token_ids")
    skip_reading_prefix_cache: bool | None = None
    structured_outputs: StructuredOutputsParams | None = None
    #: vLLM's ``vllm_xargs`` land here (string keys, JSON-like values; ``kv_transfer_params`` would too, but
    #: trio-front refuses it: no KV connector).
    extra_args: dict[str, Any] | None = None
    repetition_detection: RepetitionDetectionParams | None = None


class LoRARequest(msgspec.Struct, array_like=True, omit_defaults=True, kw_only=True):
    """vLLM's ``LoRARequest`` (array_like): ``[lora_name, lora_int_id, lora_path, base_model_name, ...]``.

    The engine's decoder checks ``lora_int_id >= 1`` and a non-empty path (its input thread dies
    otherwise), and loads the adapter lazily inside a model step: a path it cannot load **kills the
    engine**. So only adapters the engine accepted through the ``add_lora`` utility go on requests
    (``serving/lora.py``), and ``load_inplace`` stays false on them (true forces a reload per request).
    """

    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    base_model_name: str | None = None
    load_inplace: bool = False
    is_3d_lora_weight: bool = False


class EngineCoreRequest(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, kw_only=True):
    """The ADD payload: vLLM's 22-field positional ``EngineCoreRequest`` (identical in 0.31–0.33).

    ``request_id`` must be unique among live requests (a duplicate kills the engine) and
    ``prompt_token_ids`` must be non-empty and shorter than the engine's ``max_model_len`` (a longer one
    crashes the worker). The client enforces the first; ``serving/params.py`` the second.
    """

    request_id: str
    prompt_token_ids: list[int] | None
    mm_features: None = None
    sampling_params: SamplingParams | None
    pooling_params: None = None
    arrival_time: float
    lora_request: LoRARequest | None = None
    cache_salt: str | None = None
    data_parallel_rank: int | None = None
    prompt_embeds: None = None
    prompt_is_token_ids: None = None
    client_index: int = 0
    current_wave: int = 0
    priority: int = 0
    trace_headers: dict[str, str] | None = None
    resumable: bool = False
    external_req_id: str | None = None
    reasoning_ended: bool | None = None
    reasoning_parser_kwargs: dict[str, Any] | None = None
    abort_immediately: bool = False
    session_id: str | None = None
    kv_hints: None = None


# --------------------------------------------------------------------------------------------------
# Outputs


class WireArray:
    """A numpy-style array as vLLM encodes it: ``[dtype_str, shape, data]``, read with the stdlib.

    ``data`` is either inline raw bytes (msgpack ext 3) or an index into the auxiliary frames that
    followed the payload. Only the little-endian numeric dtypes vLLM uses for logprobs are supported.
    """

    __slots__ = ("data", "dtype", "shape")

    _TYPECODES = {
        "<i4": "i", "int32": "i", "<i8": "q", "int64": "q", "<f4": "f", "float32": "f",
        "<f8": "d", "float64": "d", "|b1": "b", "bool": "b", "<i2": "h", "int16": "h",
    }  # fmt: skip

    def __init__(self, dtype: str, shape: list[int], data: bytes | memoryview) -> None:
        self.dtype = dtype
        self.shape = shape
        self.data = data

    @classmethod
    def from_wire(cls, value: Any, aux: list[bytes] | None = None) -> WireArray:
        """Build from the decoded ``[dtype, shape, data]`` triple, resolving aux-frame references."""
        dtype, shape, data = value
        if isinstance(data, msgspec.msgpack.Ext):
            data = data.data
        elif isinstance(data, int):
            if aux is None or not 1 <= data <= len(aux):
                raise ValueError(f"array refers to aux frame {data}, message has {len(aux or ())}")
            data = aux[data - 1]
        return cls(dtype, list(shape), data)

    def flat(self) -> list[Any]:
        """All elements in C order as Python numbers."""
        code = self._TYPECODES.get(self.dtype)
        if code is None:
            raise ValueError(f"unsupported array dtype {self.dtype!r}")
        values = array(code)
        values.frombytes(bytes(self.data))
        if sys.byteorder != "little":  # the wire is little-endian
            values.byteswap()
        return values.tolist()

    def tolist(self) -> list[Any]:
        """Nested lists with this array's shape (1-D or 2-D, the shapes logprobs use)."""
        flat = self.flat()
        if len(self.shape) <= 1:
            return flat
        rows, cols = self.shape[0], 1
        for dim in self.shape[1:]:
            cols *= dim
        return [flat[r * cols : (r + 1) * cols] for r in range(rows)]

    def to_wire(self, *, inline: bool = True) -> list[Any]:
        """Encode back to ``[dtype, shape, ext3(data)]`` (used by the mock engine)."""
        return [self.dtype, self.shape, msgspec.msgpack.Ext(EXT_RAW_VIEW, bytes(self.data))]


class EngineCoreOutput(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """One request's progress in one engine step (0.32 positions; later fields are ignored).

    ``new_logprobs`` stays in its raw ``[token_ids, logprobs, ranks, cu]`` wire form until
    :func:`decode_logprobs` is asked for it, so requests without logprobs pay nothing.
    """

    request_id: str
    new_token_ids: list[int]
    new_logprobs: Any = None
    new_prompt_logprobs_tensors: Any = None
    pooling_output: Any = None
    finish_reason: int | None = None
    stop_reason: int | str | None = None
    events: Any = None
    kv_transfer_params: Any = None
    ec_transfer_params: Any = None
    trace_headers: Any = None
    prefill_stats: dict[str, Any] | None = None
    routed_experts: Any = None
    num_nans_in_logits: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class EngineCoreOutputs(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """One message on an output socket: a step's outputs for one client, or a utility reply."""

    engine_index: int = 0
    outputs: list[EngineCoreOutput] = msgspec.field(default_factory=list)
    scheduler_stats: dict[str, Any] | None = None
    timestamp: float = 0.0
    utility_output: list[Any] | None = None
    finished_requests: list[str] | None = None
    wave_complete: int | None = None
    start_wave: int | None = None
    weight_version: str | None = None


class Logprobs(msgspec.Struct, gc=False):
    """Decoded ``LogprobsLists`` for one output: row *i* is generated token *i*.

    ``token_ids[i][0]`` is the sampled token and ``token_ids[i][1:]`` the top-k alternatives;
    ``ranks[i]`` is the sampled token's rank in the full distribution.
    """

    token_ids: list[list[int]]
    logprobs: list[list[float]]
    ranks: list[int]


class PromptLogprobs(msgspec.Struct, gc=False):
    """Decoded ``new_prompt_logprobs_tensors`` (``LogprobsTensors``): row *r* is the distribution that
    predicted prompt token *r + 1* (the first prompt token has none). ``token_ids[r][0]`` is that actual
    prompt token, ``token_ids[r][1:]`` the top-k; ``ranks[r]`` the actual token's rank. The engine sends the
    whole thing once, with the request's first sampled token."""

    token_ids: list[list[int]]
    logprobs: list[list[float]]
    ranks: list[int]


def decode_prompt_logprobs(raw: Any, aux: list[bytes] | None = None) -> PromptLogprobs | None:
    """Decode ``EngineCoreOutput.new_prompt_logprobs_tensors`` (a 5-array of torch-encoded tensors)."""
    if raw is None:
        return None
    return PromptLogprobs(
        token_ids=WireArray.from_wire(raw[0], aux).tolist(),
        logprobs=WireArray.from_wire(raw[1], aux).tolist(),
        ranks=WireArray.from_wire(raw[2], aux).flat(),
    )


def decode_logprobs(raw: Any, aux: list[bytes] | None = None) -> Logprobs | None:
    """Decode ``EngineCoreOutput.new_logprobs`` (``None`` when the request asked for none)."""
    if raw is None:
        return None
    token_ids, logprobs, ranks = raw[0], raw[1], raw[2]
    return Logprobs(
        token_ids=WireArray.from_wire(token_ids, aux).tolist(),
        logprobs=WireArray.from_wire(logprobs, aux).tolist(),
        ranks=WireArray.from_wire(ranks, aux).flat(),
    )


# --------------------------------------------------------------------------------------------------
# Handshake


class HandshakeStatus(msgspec.Struct, gc=False):
    """HELLO and READY on the handshake socket: ``{"status", "local", "headless", ...}``."""

    status: str
    local: bool = False
    headless: bool = True
    parallel_config_hash: str | None = None


class EngineAddresses(msgspec.Struct, omit_defaults=True):
    """``EngineZmqAddresses``: ``inputs[i]``/``outputs[i]`` are frontend client *i*'s socket pair."""

    inputs: list[str]
    outputs: list[str]
    coordinator_input: str | None = None
    coordinator_output: str | None = None
    frontend_stats_publish_address: str | None = None


class HandshakeInit(msgspec.Struct):
    """INIT, our answer to HELLO (``EngineHandshakeMetadata``)."""

    addresses: EngineAddresses
    parallel_config: dict[str, Any] = msgspec.field(default_factory=dict)


class EngineRegistration(msgspec.Struct, gc=False):
    """The engine's first frame on each input socket (``EngineCoreReadyResponse``, an open map).

    It says the engine's DEALER is connected (never send before it: ROUTER drops messages to unknown
    peers) and carries the authoritative ``max_model_len``.
    """

    max_model_len: int
    vllm_version: str = "unknown"
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    dtype: str | None = None
    data_parallel_rank: int = 0
    data_parallel_size: int = 1
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    kv_cache_size_tokens: int | None = None
    supports_lora: bool = False
    max_loras: int = 0


class UnsupportedEngineVersion(Exception):
    """The engine's ``vllm_version`` is a minor release whose protocol we do not speak."""


def check_engine_version(version: str) -> None:
    """Raise :class:`UnsupportedEngineVersion` unless *version* is a supported minor release."""
    minor = ".".join(version.split("+")[0].split(".")[:2])
    if minor not in SUPPORTED_VLLM_MINOR:
        raise UnsupportedEngineVersion(
            f"engine reports vLLM {version}, trio-front speaks the protocol of vLLM "
            f"{', '.join(v + '.x' for v in SUPPORTED_VLLM_MINOR)}; start a matching engine "
            f"(or pass --allow-engine-version-mismatch to try anyway)"
        )


# --------------------------------------------------------------------------------------------------
# Utility calls


class UtilityResult(msgspec.Struct, array_like=True, gc=False):
    """``EngineCoreOutputs.utility_output``: ``[call_id, failure_message, [type_info, value] | None]``."""

    call_id: int
    failure_message: str | None = None
    result: list[Any] | None = None

    @property
    def value(self) -> Any:
        return None if self.result is None else self.result[1]


# --------------------------------------------------------------------------------------------------
# Codec


_encoder = msgspec.msgpack.Encoder()
_outputs_decoder = msgspec.msgpack.Decoder(EngineCoreOutputs)
_request_decoder = msgspec.msgpack.Decoder(EngineCoreRequest)
_status_decoder = msgspec.msgpack.Decoder(HandshakeStatus)
_registration_decoder = msgspec.msgpack.Decoder(EngineRegistration)
_utility_decoder = msgspec.msgpack.Decoder(UtilityResult)
_any_decoder = msgspec.msgpack.Decoder()

encode = _encoder.encode


def add_frames(identity: bytes, request: EngineCoreRequest) -> list[bytes]:
    """The multipart message that submits *request* to the engine behind *identity*."""
    return [identity, RequestType.ADD.value, _encoder.encode(request)]


def abort_frames(identity: bytes, request_ids: list[str]) -> list[bytes]:
    """ABORT: unknown ids are ignored by the engine, and an aborted request gets no further output."""
    return [identity, RequestType.ABORT.value, _encoder.encode(request_ids)]


def utility_frames(identity: bytes, client_index: int, call_id: int, method: str, args: tuple) -> list[bytes]:
    """UTILITY: the reply comes back on output socket *client_index* keyed by *call_id*."""
    return [identity, RequestType.UTILITY.value, _encoder.encode([client_index, call_id, method, list(args)])]


def decode_outputs(payload: bytes | memoryview) -> EngineCoreOutputs:
    """Decode frame 0 of an output message (the caller checks for :data:`ENGINE_CORE_DEAD` first)."""
    return _outputs_decoder.decode(payload)


def decode_utility_result(raw: list[Any]) -> UtilityResult:
    return msgspec.convert(raw, UtilityResult)


def decode_status(payload: bytes) -> HandshakeStatus:
    return _status_decoder.decode(payload)


def decode_registration(payload: bytes) -> EngineRegistration:
    return _registration_decoder.decode(payload)


def decode_request(payload: bytes | memoryview) -> EngineCoreRequest:
    """Decode an ADD payload (the mock engine's side)."""
    return _request_decoder.decode(payload)


def decode_any(payload: bytes | memoryview) -> Any:
    return _any_decoder.decode(payload)


def engine_identity(rank: int) -> bytes:
    """The ZMQ routing id of engine *rank*: two bytes, little-endian."""
    return rank.to_bytes(2, "little")
