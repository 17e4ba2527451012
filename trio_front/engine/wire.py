"""Wire types of vLLM's engine-core protocol (0.32 and 0.33), sans-IO.

Everything that crosses the ZeroMQ sockets between us and the engine is defined here and encoded with
msgspec, the engine's own codec, so that the bytes are the ones vLLM's ``MsgpackEncoder`` would write:

* ``array_like`` structs are positional msgpack arrays (``EngineCoreRequest``, ``EngineCoreOutputs``,
  ``EngineCoreOutput``). On decode a longer array's extra trailing elements are ignored.
* The layout differences between the versions we speak live in :class:`WireVersion`, chosen once per
  engine from its registration (``EngineCoreReadyResponse.vllm_version``): 0.33 appends
  ``EngineCoreOutput.error`` (#18), adds three registration keys, gives the ``profile`` utility a fifth
  argument and no longer takes FIRST_REQ notifications; ``EngineCoreRequest`` and ``SamplingParams`` are
  the same. The 0.32 decoder is the one it always was, so the 0.32 hot path pays nothing for 0.33.
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
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

#: Minor versions of vLLM whose protocol this module speaks.
SUPPORTED_VLLM_MINOR = ("0.32", "0.33")

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


class RequestError(msgspec.Struct, gc=False):
    """vLLM 0.33's ``RequestError`` (``vllm/outputs.py``, a dataclass: a map with every field), sent in
    ``EngineCoreOutput.error`` with finish reason ERROR. A request-level failure, not an engine failure.

    Codes the 0.33 engine sends: ``engine_paused`` (retryable: the engine was paused with
    ``pause_generation`` and rejects new requests until resumed) and ``validation_error`` (the engine
    refused the request's parameters, e.g. a structured-output grammar that does not compile).
    """

    code: str
    message: str
    retryable: bool = False

    ENGINE_PAUSED: ClassVar[str] = "engine_paused"
    VALIDATION_ERROR: ClassVar[str] = "validation_error"

    @property
    def http_status(self) -> int:
        """The status vLLM 0.33's server answers with (``RequestError.to_exception``): 400 for a validation
        error, 503 for a retryable one (``RetryableRequestError``), else 500 (``GenerationError``)."""
        if self.code == self.VALIDATION_ERROR:
            return 400
        return 503 if self.retryable else 500


class EngineCoreOutput(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """One request's progress in one engine step (0.32 positions; later fields are ignored).

    ``new_logprobs`` stays in its raw ``[token_ids, logprobs, ranks, cu]`` wire form until
    :func:`decode_logprobs` is asked for it, so requests without logprobs pay nothing. ``error`` is
    always ``None`` here (0.32 has no such field); :class:`EngineCoreOutput033` carries 0.33's.
    """

    error: ClassVar[RequestError | None] = None

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


class EngineCoreOutput033(EngineCoreOutput, array_like=True, omit_defaults=True, gc=False):
    """vLLM 0.33's ``EngineCoreOutput``: 0.32's 18 positions (the four after ``num_nans_in_logits`` kept
    raw) plus #18 ``error``. A subclass, so everything that reads an output reads this one too."""

    mm_cache_miss_hashes: Any = None
    new_sampling_mask: Any = None
    spec_decode_metrics: Any = None
    prompt_token_id_logprobs: Any = None
    error: RequestError | None = None  # type: ignore[misc]  # a field here, the ClassVar's None above


class EngineCoreOutputs033(EngineCoreOutputs, array_like=True, omit_defaults=True, gc=False):
    """vLLM 0.33's ``EngineCoreOutputs``: the same 9 positions, holding :class:`EngineCoreOutput033`."""

    outputs: list[EngineCoreOutput033] = msgspec.field(default_factory=list)  # type: ignore[assignment]


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
    #: 0.33 only (0.32 engines leave the defaults): the DP coordinator's addresses and TCPStore port.
    coord_store_port: int = 0
    coordinator_input_address: str | None = None
    coordinator_output_address: str | None = None


class UnsupportedEngineVersion(Exception):
    """The engine's ``vllm_version`` is a minor release whose protocol we do not speak."""


def check_engine_version(version: str) -> WireVersion:
    """The layout for an engine reporting *version*; :class:`UnsupportedEngineVersion` naming it unless it
    is a supported minor release (same as :meth:`WireVersion.from_version`)."""
    return WireVersion.from_version(version)


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


# --------------------------------------------------------------------------------------------------
# Per-version layout


_outputs_033_decoder = msgspec.msgpack.Decoder(EngineCoreOutputs033)


class WireVersion:
    """The wire layout of one vLLM minor release: pick it once per engine, from its registration, with
    :meth:`from_version` (``WireVersion.V0_32`` / ``WireVersion.V0_33``), then use its codec functions.

    Only what differs between the releases is here; everything else (ABORT/UTILITY framing, handshake
    maps, ``EngineCoreRequest``, ``SamplingParams``) is the module-level code, identical for both.
    """

    __slots__ = (
        "add_frames",
        "decode_outputs",
        "minor",
        "notifies_first_request",
        "output_type",
        "outputs_type",
        "profile_arity",
        "registration_keys",
    )

    V0_32: ClassVar[WireVersion]
    V0_33: ClassVar[WireVersion]
    #: The layout assumed for an engine whose version check was disabled
    #: (``--allow-engine-version-mismatch``).
    DEFAULT: ClassVar[WireVersion]

    def __init__(
        self,
        minor: str,
        *,
        decode_outputs: Callable[[bytes | memoryview], EngineCoreOutputs],
        output_type: type[EngineCoreOutput],
        outputs_type: type[EngineCoreOutputs],
        notifies_first_request: bool,
        profile_arity: int,
        registration_keys: tuple[str, ...],
    ) -> None:
        self.minor = minor
        #: Decode frame 0 of an output message into this release's ``EngineCoreOutputs`` (a bound msgspec
        #: decoder: keep a reference to it on the hot path rather than going through the object).
        self.decode_outputs = decode_outputs
        #: The ADD message; ``EngineCoreRequest`` has the same 22 positions in 0.32 and 0.33.
        self.add_frames: Callable[[bytes, EngineCoreRequest], list[bytes]] = add_frames
        #: Output struct types, for an engine (the mock) that writes this release's messages.
        self.output_type = output_type
        self.outputs_type = outputs_type
        #: Whether a DP frontend tells the coordinator about the first request of a paused wave
        #: (``FIRST_REQ``): 0.32 does; 0.33 removed it (only engines start waves, and 0.33's coordinator
        #: logs an error for any other message from a frontend).
        self.notifies_first_request = notifies_first_request
        #: Positional arguments of the engine's ``profile`` utility.
        self.profile_arity = profile_arity
        #: Every key of this release's ``EngineCoreReadyResponse`` (the registration map).
        self.registration_keys = registration_keys

    def __repr__(self) -> str:
        return f"WireVersion({self.minor})"

    @classmethod
    def from_version(cls, version: str) -> WireVersion:
        """The layout for ``vllm_version`` *version* (``"0.33.0"``, ``"0.32.1+cpu"``...); raises
        :class:`UnsupportedEngineVersion` naming *version* for any other release."""
        minor = ".".join(version.split("+")[0].split(".")[:2])
        found = _VERSIONS.get(minor)
        if found is None:
            raise UnsupportedEngineVersion(
                f"engine reports vLLM {version}, trio-front speaks the protocol of vLLM "
                f"{', '.join(v + '.x' for v in SUPPORTED_VLLM_MINOR)}; start a matching engine "
                f"(or pass --allow-engine-version-mismatch to try anyway)"
            )
        return found

    def profile_args(
        self,
        is_start: bool = True,
        profile_prefix: str | None = None,
        delay_iterations: int | None = None,
        max_iterations: int | None = None,
        profiler_kwargs: dict[str, Any] | None = None,
    ) -> tuple[Any, ...]:
        """The ``profile`` utility's arguments in this release's arity (utility args are positional and
        the engine calls ``profile(*args)``: a wrong count fails the call). ``profiler_kwargs`` exists from
        0.33 on; for 0.32 it is refused (ValueError naming it) rather than dropped."""
        args: tuple[Any, ...] = (is_start, profile_prefix, delay_iterations, max_iterations)
        if self.profile_arity >= 5:
            return (*args, profiler_kwargs)
        if profiler_kwargs is not None:
            raise ValueError(f"profiler_kwargs needs a vLLM 0.33 engine, this one speaks {self.minor}")
        return args


_REGISTRATION_KEYS_032 = (
    "max_model_len", "num_gpu_blocks", "block_size", "dp_stats_address", "dtype", "vllm_version",
    "world_size", "data_parallel_size", "tensor_parallel_size", "pipeline_parallel_size",
    "decode_context_parallel_size", "data_parallel_rank", "max_num_seqs", "max_num_batched_tokens",
    "instance_id", "supports_lora", "max_loras", "mamba_block_size", "kv_cache_size_tokens",
    "kv_cache_max_concurrency", "kv_events_config", "weight_transfer_backend", "enable_sleep_mode",
    "supports_draft_weight_updates", "effective_attention_block_size",
)  # fmt: skip

WireVersion.V0_32 = WireVersion(
    "0.32",
    decode_outputs=_outputs_decoder.decode,
    output_type=EngineCoreOutput,
    outputs_type=EngineCoreOutputs,
    notifies_first_request=True,
    profile_arity=4,
    registration_keys=_REGISTRATION_KEYS_032,
)
WireVersion.V0_33 = WireVersion(
    "0.33",
    decode_outputs=_outputs_033_decoder.decode,
    output_type=EngineCoreOutput033,
    outputs_type=EngineCoreOutputs033,
    notifies_first_request=False,
    profile_arity=5,
    registration_keys=(
        *_REGISTRATION_KEYS_032,
        "coord_store_port",
        "coordinator_input_address",
        "coordinator_output_address",
    ),
)
WireVersion.DEFAULT = WireVersion.V0_32
_VERSIONS = {v.minor: v for v in (WireVersion.V0_32, WireVersion.V0_33)}
