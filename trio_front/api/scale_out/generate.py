"""``POST /inference/v1/generate`` and ``POST /inference/v1/abort_requests``: vLLM's token-in/token-out API
(``vllm/entrypoints/scale_out/token_in_token_out/``: ``protocol.py`` shapes, ``serving.py`` behaviour).

Contract:

* A ``GenerateRequest`` (``token_ids`` + a vLLM ``SamplingParams`` dict) is validated completely before
  anything reaches the engine: each sampling key is honoured (mapped onto ``serving/params.py``'s
  :func:`build_params`, which checks it as vLLM does), accepted because vLLM itself overrides it
  (``output_kind``, ``skip_clone``), or refused with a 400 naming it; unknown keys are refused too.
  As in vLLM, sampling fields the client leaves out take SamplingParams' own defaults (not the model's
  generation config), except ``max_tokens``, which defaults to what fits in the context.
* The answer is vLLM's ``GenerateTokensResponse`` / ``GenerateTextResponse``, or (``stream``) SSE events of
  ``Generate{Tokens,Text}StreamResponse`` and ``[DONE]``; the streamed events, assembled, equal the
  non-streamed answer.
* ``sampling_params.n > 1`` runs one engine request per sample (ids ``{index}_{parent}``, vLLM's), driven
  together by :func:`~trio_front.api.streaming.drive`.

Abort: while its handler runs, a request is registered under its external id (``generate-tokens-<id>``,
where ``<id>`` is the ``X-Request-Id`` header, else the body's ``request_id``, else a random hex id: the
``request_id`` its response carries, which is what vLLM's ``AsyncLLM.abort`` matches). ``abort_requests``
aborts every engine request registered under the given ids in one ABORT each, and their responses end with
``finish_reason: "abort"``, as vLLM's do. Registrations are per server and removed when the handler exits,
however it exits. A client disconnect or server shutdown cancels the handler, and leaving the generations'
contexts aborts their engine requests (``drive``).
"""

from __future__ import annotations

import contextlib
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import attrs
import msgspec

from trio_front.api.errors import APIError
from trio_front.api.http import Headers, Send, SSEWriter, send_json
from trio_front.api.logprobs import prompt_logprobs_field, sample_positions
from trio_front.api.models import parse_json, structure
from trio_front.api.state import ServerState, base_request_id, engine_failure, param_error
from trio_front.api.streaming import abort_together, drive
from trio_front.engine import wire
from trio_front.engine.client import EngineError
from trio_front.serving import structured
from trio_front.serving.generation import Chunk, Generation, GenerationError
from trio_front.serving.params import ParamError, build_params, check_cache_salt, check_prompt, child_params

Handler = Callable[[ServerState, bytes, Send, Headers], Awaitable[None]]

_INT64 = (-(2**63), 2**63 - 1)
FLOOR = -9999.0


# ------------------------------------------------------------------------------------- request shapes


@attrs.define(kw_only=True)
class GenerateBody:
    """vLLM's ``GenerateRequest`` (top-level keys it does not know are ignored, as pydantic does there)."""

    token_ids: list[Any] | None = None
    sampling_params: Any = None
    request_id: str | None = None
    token_offsets: Any = None
    features: Any = None
    content_parts: Any = None
    model: str | None = None
    reasoning_ended: bool | None = None
    reasoning_parser_kwargs: Any = None
    return_token_ids: bool | None = None
    output_mode: str = "tokens"
    stream: bool | None = False
    stream_options: Any = None
    cache_salt: Any = None
    priority: int = 0
    kv_transfer_params: Any = None
    ec_transfer_params: Any = None


@attrs.define(kw_only=True)
class SamplingBody:
    """The ``sampling_params`` object, with vLLM's ``SamplingParams`` defaults; it is the
    :class:`~trio_front.serving.params.SamplingLike` that :func:`build_params` validates (every sampling
    field is set, so the model's generation-config defaults do not apply, as in vLLM's generate)."""

    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: Any = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = None
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    output_kind: int = 0
    stream_interval: Any = None
    skip_clone: bool = False
    structured_outputs: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    allowed_token_ids: list[int] | None = None
    extra_args: dict[str, Any] | None = None
    bad_words: list[str] | None = None
    skip_reading_prefix_cache: bool | None = None
    thinking_token_budget: Any = None
    repetition_detection: Any = None
    # Refused unless at their defaults (see _REFUSED):
    watermarking: Any = None
    prompt_logprob_token_ids: Any = None
    prompt_logprob_start: Any = None
    logprob_token_ids: Any = None
    flat_logprobs: Any = False
    output_text_buffer_length: Any = 0
    routed_experts_prompt_start: Any = 0
    trace_decode_token_ids: Any = None
    #: Not a sampling field: the request's ``cache_salt``, which build_params checks.
    cache_salt: Any = None

    @property
    def vllm_xargs(self) -> dict[str, Any] | None:
        """build_params reads the chat/completions name; on the generate route it is ``extra_args``."""
        return self.extra_args


#: vLLM SamplingParams fields that trio-front does not honour: ``(name, harmless default?, reason)``.
_REFUSED: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("watermarking", lambda v: v is None or v is False, "no watermark is configured"),
    ("prompt_logprob_token_ids", lambda v: v is None, ""),
    ("prompt_logprob_start", lambda v: v is None, ""),
    ("logprob_token_ids", lambda v: v is None or v == [], ""),
    ("flat_logprobs", lambda v: v is False, ""),
    ("output_text_buffer_length", lambda v: v == 0 and type(v) is int, "it is engine-internal"),
    ("routed_experts_prompt_start", lambda v: v == 0 and type(v) is int, "routed experts are not returned"),
    ("trace_decode_token_ids", lambda v: v is None, ""),
)

_SAMPLING_KEYS = frozenset(f.name for f in attrs.fields(SamplingBody)) - {"cache_salt"}


@attrs.frozen
class Prepared:
    """A validated generate request, ready to run (nothing has reached the engine yet)."""

    external_id: str
    prompt_ids: list[int]
    generations: list[Generation]
    #: the engine params shared by the samples (before the per-sample seed)
    params: wire.SamplingParams
    text_mode: bool
    stream: bool
    include_usage: bool
    continuous_usage: bool
    return_token_ids: bool
    model: str


def _sampling_error(exc: ParamError) -> APIError:
    """A ParamError from build_params, naming the field inside ``sampling_params``."""
    param = exc.param
    if param in _SAMPLING_KEYS or param in ("vllm_xargs", "extra_args"):
        param = "sampling_params." + ("extra_args" if param == "vllm_xargs" else param)
    return APIError(400, str(exc).replace("vllm_xargs", "extra_args"), param=param)


def _sampling_body(raw: Any) -> SamplingBody:
    if not isinstance(raw, dict):
        raise APIError(
            400, "sampling_params must be an object (vLLM's SamplingParams fields)", param="sampling_params"
        )
    unknown = sorted(set(raw) - _SAMPLING_KEYS)
    if unknown:
        raise APIError(
            400,
            f"sampling_params has unknown or unsupported fields: {', '.join(unknown)}",
            param=f"sampling_params.{unknown[0]}",
        )
    try:
        body = structure(raw, SamplingBody)
    except APIError as exc:
        exc.param = f"sampling_params.{exc.param}" if exc.param else "sampling_params"
        raise
    for name, harmless, why in _REFUSED:
        if not harmless(getattr(body, name)):
            reason = f" ({why})" if why else ""
            raise APIError(
                400,
                f"sampling_params.{name} is not supported by trio-front{reason}",
                param=f"sampling_params.{name}",
            )
    if body.output_kind not in (0, 1, 2):
        raise APIError(
            400, "sampling_params.output_kind must be 0, 1 or 2", param="sampling_params.output_kind"
        )
    if body.stop and not body.detokenize:
        raise APIError(
            400,
            "stop strings are only supported when detokenize is True. Set detokenize=True to use stop.",
            param="sampling_params.stop",
        )
    return body


def _token_ids(value: list[Any] | None, vocab_size: int) -> list[int]:
    if value is None:
        raise APIError(400, "token_ids: Field required", param="token_ids")
    if not value:
        raise APIError(
            400, "token_ids: List should have at least 1 item after validation, not 0", param="token_ids"
        )
    for tid in value:
        if type(tid) is not int:
            raise APIError(400, "token_ids must be a list of integers", param="token_ids")
    if any(t < 0 for t in value):
        raise APIError(400, "token_ids must not contain negative values", param="token_ids")
    top = max(value)
    if top >= vocab_size:
        raise APIError(400, f"Token id {top} is out of vocabulary", param="token_ids")
    return value


def _stream_options(value: Any) -> tuple[bool, bool]:
    """vLLM's ``should_include_usage``: (include_usage, continuous_usage_stats)."""
    if value is None:
        return False, False
    if not isinstance(value, dict):
        raise APIError(400, "stream_options must be an object", param="stream_options")
    unknown = sorted(set(value) - {"include_usage", "continuous_usage_stats"})
    if unknown:
        raise APIError(
            400, f"stream_options has unknown fields: {', '.join(unknown)}", param="stream_options"
        )
    flags = []
    for key in ("include_usage", "continuous_usage_stats"):
        flag = value.get(key)
        if flag is not None and not isinstance(flag, bool):
            raise APIError(400, f"stream_options.{key} must be a boolean", param="stream_options")
        flags.append(bool(flag))
    return flags[0], flags[0] and flags[1]


def _reasoning_kwargs(value: Any) -> dict[str, Any] | None:
    """vLLM's ``ReasoningParserKwargs`` (``extra="forbid"``): ``{"chat_template_kwargs": {...}}``."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"chat_template_kwargs"}:
        raise APIError(
            400, "reasoning_parser_kwargs may only hold chat_template_kwargs", param="reasoning_parser_kwargs"
        )
    kwargs = value.get("chat_template_kwargs", {})
    if not isinstance(kwargs, dict):
        raise APIError(
            400,
            "reasoning_parser_kwargs.chat_template_kwargs must be an object",
            param="reasoning_parser_kwargs",
        )
    return {"chat_template_kwargs": kwargs}


def _structured(raw: dict[str, Any] | None, state: ServerState) -> wire.StructuredOutputsParams | None:
    """A vLLM ``StructuredOutputsParams`` dict (as render emits it, ``_backend`` keys included)."""
    if raw is None:
        return None
    fields = dict(raw)
    # The engine decides these from its own config; render sends vLLM's unset values.
    if fields.get("_backend_was_auto") in (False, None):
        fields.pop("_backend_was_auto", None)
    if fields.get("_backend") is None:
        fields.pop("_backend", None)
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        return structured.from_request(None, fields, config=state.structured)
    except ParamError as exc:
        raise APIError(400, str(exc), param="sampling_params.structured_outputs") from None


async def prepare(state: ServerState, req: GenerateBody, headers: Headers) -> Prepared:
    """Validate *req* fully and build its (unstarted) generations; raises :class:`APIError` (400/404/503)."""
    lora = state.resolve_lora(req.model)  # 404 for a name that is neither the model nor an adapter
    sp = _sampling_body(req.sampling_params)
    for name, why in (
        ("features", "the model takes text only"),
        ("content_parts", "the model takes text only"),
        ("token_offsets", "it is render output, which generate does not read"),
        ("kv_transfer_params", "no KV connector is configured"),
        ("ec_transfer_params", "no encoder-cache connector is configured"),
    ):
        if getattr(req, name) not in (None, [], {}):
            raise APIError(400, f"{name} is not supported by trio-front ({why})", param=name)
    if req.output_mode not in ("tokens", "text"):
        raise APIError(400, "output_mode must be 'tokens' or 'text'", param="output_mode")
    if req.output_mode != "tokens" and not sp.detokenize:
        raise APIError(
            400,
            f"output_mode={req.output_mode!r} requires sampling_params.detokenize to be true",
            param="output_mode",
        )
    if not _INT64[0] <= req.priority <= _INT64[1]:
        raise APIError(400, "priority must be a 64-bit integer", param="priority")
    try:
        check_cache_salt(req.cache_salt)
    except ParamError as exc:
        raise param_error(exc) from None
    include_usage, continuous = _stream_options(req.stream_options)
    reasoning_kwargs = _reasoning_kwargs(req.reasoning_parser_kwargs)
    constraint = _structured(sp.structured_outputs, state)
    stream = bool(req.stream)
    state.check_engine()
    limits = state.limits
    ids = _token_ids(req.token_ids, limits.vocab_size)
    if sp.max_tokens is not None and sp.max_tokens < 1:
        raise APIError(
            400, f"max_tokens must be at least 1, got {sp.max_tokens}.", param="sampling_params.max_tokens"
        )
    try:
        # A given max_tokens is not capped by the generation config's defaults (vLLM's generate does not).
        room = check_prompt(len(ids), limits, None, apply_defaults=sp.max_tokens is None)
    except ParamError as exc:
        raise APIError(400, str(exc), param="token_ids") from None
    # More than fits ends with "length" at the context's end, as the engine ends it; capping is the same.
    max_tokens = room if sp.max_tokens is None else min(sp.max_tokens, room)
    sp.cache_salt = req.cache_salt
    try:
        params, text_params = build_params(
            sp,
            limits=limits,
            max_tokens=max_tokens,
            logprobs=sp.logprobs,
            prompt_logprobs=sp.prompt_logprobs,
            stream=stream,
            structured_outputs=constraint,
            tokenizer=state.tokenizer,
        )
    except ParamError as exc:
        raise _sampling_error(exc) from None
    registration = state.engine.registration
    max_num_seqs = getattr(registration, "max_num_seqs", None)
    if max_num_seqs is not None and sp.n > max_num_seqs:
        raise APIError(
            400,
            f"sampling_params.n must be at most the server's max_num_seqs ({max_num_seqs}), got {sp.n}.",
            param="sampling_params.n",
        )
    if sp.skip_reading_prefix_cache:
        params = msgspec.structs.replace(params, skip_reading_prefix_cache=True)
    if not sp.detokenize:
        text_params = attrs.evolve(text_params, detokenize=False)

    external_id = f"generate-tokens-{base_request_id(req.request_id, headers)}"

    def generation(sample_params: wire.SamplingParams, request_id: str | None) -> Generation:
        return Generation(
            state.engine,
            state.tokenizer,
            ids,
            sample_params,
            text_params,
            id_prefix=external_id,
            request_id=request_id,
            external_id=external_id,
            lora_request=lora,
            priority=req.priority,
            cache_salt=req.cache_salt,
            reasoning_ended=req.reasoning_ended,
            reasoning_parser_kwargs=reasoning_kwargs,
        )

    if sp.n == 1:
        generations = [generation(params, None)]
    else:
        parent = state.engine.new_request_id(external_id)
        generations = [generation(child_params(params, i), f"{i}_{parent}") for i in range(sp.n)]
    return Prepared(
        external_id=external_id,
        prompt_ids=ids,
        generations=generations,
        params=params,
        text_mode=req.output_mode == "text",
        stream=stream,
        include_usage=include_usage,
        continuous_usage=continuous,
        return_token_ids=bool(req.return_token_ids),
        model=state.served_model_name if lora is None else lora.lora_name,
    )


# ------------------------------------------------------------------------------------- abort registry


@attrs.define(eq=False)
class _Run:
    """One running generate request, as the abort registry sees it."""

    generations: list[Generation]
    aborted: bool = False
    #: why a vLLM 0.33 engine failed it (``"error"`` outcome), when it said
    error: wire.RequestError | None = None

    def abort(self) -> None:
        self.aborted = True
        live = [g for g in self.generations if g.stream is not None]
        if live:
            abort_together(live, "abort_requests")


class AbortRegistry:
    """External request id → the generate requests running under it (a client may reuse an id; vLLM
    aborts every request with that external id)."""

    def __init__(self) -> None:
        self._runs: dict[str, list[_Run]] = {}

    @contextlib.contextmanager
    def registered(self, external_id: str, run: _Run) -> Iterator[None]:
        self._runs.setdefault(external_id, []).append(run)
        try:
            yield
        finally:
            runs = self._runs[external_id]
            runs.remove(run)
            if not runs:
                del self._runs[external_id]

    def abort(self, request_ids: Sequence[str]) -> int:
        """Abort every run registered under *request_ids* (unknown ids are ignored); how many."""
        count = 0
        for rid in request_ids:
            for run in list(self._runs.get(rid, ())):
                run.abort()
                count += 1
        return count

    def __contains__(self, external_id: str) -> bool:
        return external_id in self._runs


_REGISTRIES: weakref.WeakKeyDictionary[ServerState, AbortRegistry] = weakref.WeakKeyDictionary()


def registry(state: ServerState) -> AbortRegistry:
    """The server's abort registry (one per :class:`ServerState`)."""
    reg = _REGISTRIES.get(state)
    if reg is None:
        reg = _REGISTRIES[state] = AbortRegistry()
    return reg


# ------------------------------------------------------------------------------------- response shapes


def _clamp(value: float) -> float:
    return FLOOR if math.isnan(value) else max(value, FLOOR)


def _keep(index: int, num: int) -> bool:
    """vLLM keeps the first ``max(logprobs, 1)`` entries of a position (all with ``-1``)."""
    return num == -1 or index < max(num, 1)


def tokens_logprobs(chunks: Sequence[Chunk], num: int) -> dict[str, Any]:
    """``GenerateLogProbs``: per generated token its id, logprob, rank (``None`` for 0) and the position's
    candidates in the engine's order (sampled first; a sampled id that is also in the top-k appears once,
    as in vLLM's dict)."""
    content = []
    for chunk in chunks:
        lp = chunk.logprobs
        if lp is None:
            continue
        for ids, values, rank in zip(lp.token_ids, lp.logprobs, lp.ranks, strict=False):
            position: dict[int, tuple[float, int]] = {}
            for j, (tid, value) in enumerate(zip(ids, values, strict=False)):
                position[tid] = (value, rank if j == 0 else j)
            sampled = ids[0]
            value, sampled_rank = position[sampled]
            content.append(
                {
                    "token_id": sampled,
                    "logprob": _clamp(value),
                    "rank": sampled_rank or None,
                    "top_logprobs": [
                        {"token_id": tid, "logprob": _clamp(v), "rank": r or None}
                        for k, (tid, (v, r)) in enumerate(position.items())
                        if _keep(k, num)
                    ],
                }
            )
    return {"content": content}


def text_logprobs(
    state: ServerState, chunks: Sequence[Chunk], num: int, context: list[int]
) -> dict[str, Any]:
    """``ChatCompletionLogProbs`` as ``output_mode="text"`` builds them (``_create_text_logprobs``):
    decoded token strings with their UTF-8 bytes. *context* carries the byte-fallback context across
    the chunks of one sample."""
    content = []
    for sampled, position in sample_positions(state.tokenizer, chunks, context=context):
        value, _rank, text = position[sampled]
        content.append(
            {
                "token": text,
                "logprob": _clamp(value),
                "bytes": list(text.encode("utf-8", errors="replace")),
                "top_logprobs": [
                    {"token": t, "logprob": _clamp(v), "bytes": list(t.encode("utf-8", errors="replace"))}
                    for k, (_tid, (v, _r, t)) in enumerate(position.items())
                    if _keep(k, num)
                ],
            }
        )
    return {"content": content}


def weight_versions(gen: Generation, num_tokens: int) -> list[dict[str, Any]] | None:
    """vLLM's ``_weight_version_spans``: contiguous ``{"version", "start", "end"}`` spans over the output
    token indexes, from the engine's per-step weight version; ``None`` if tokens came without one."""
    starts = gen.stream.weight_version_starts if gen.stream is not None else []
    if not starts and num_tokens:
        return None
    ends = [start for _, start in starts[1:]] + [num_tokens]
    return [{"version": v, "start": s, "end": e} for (v, s), e in zip(starts, ends, strict=True)]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


def _all_of(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_all_of(e, kind) for e in exc.exceptions)
    return isinstance(exc, kind)


def _first_reason(exc: BaseException) -> wire.RequestError | None:
    """The engine's reason carried by the first `GenerationError` in *exc* (a group or one error)."""
    if isinstance(exc, BaseExceptionGroup):
        return next((r for e in exc.exceptions if (r := _first_reason(e)) is not None), None)
    return exc.error if isinstance(exc, GenerationError) else None


async def _run(
    prep: Prepared, run: _Run, on_chunk: Callable[[int, Generation, Chunk], Awaitable[None]], **kw: Any
) -> str | None:
    """Drive the generations; ``None`` when they finished, else why they stopped (``"abort"`` for
    ``abort_requests``, ``"error"`` for an engine-side request failure, ``"engine"`` when the engine
    link failed). Cancellation passes through."""
    if run.aborted:
        return "abort"
    try:
        await drive(prep.generations, on_chunk, **kw)
    except BaseException as exc:
        if _all_of(exc, GenerationError):
            run.error = _first_reason(exc)
            return "error"
        if _all_of(exc, EngineError):
            return "abort" if run.aborted else "engine"
        raise
    return None


def _engine_error(state: ServerState) -> APIError:
    return APIError(503, f"the engine is unavailable: {state.engine.error}")


async def _complete(state: ServerState, prep: Prepared, run: _Run, send: Send) -> None:
    chunks: list[list[Chunk]] = [[] for _ in prep.generations]

    async def on_chunk(index: int, _gen: Generation, chunk: Chunk) -> None:
        chunks[index].append(chunk)

    created = int(time.time())
    outcome = await _run(prep, run, on_chunk)
    if outcome == "error":
        raise engine_failure(
            prep.params.structured_outputs, param="sampling_params.structured_outputs", error=run.error
        )
    if outcome == "engine":
        raise _engine_error(state)
    num = prep.params.logprobs
    choices = []
    for index, gen in enumerate(prep.generations):
        token_ids = [t for c in chunks[index] for t in c.token_ids]
        choice: dict[str, Any] = {
            "index": index,
            "finish_reason": gen.finish_reason or ("abort" if outcome == "abort" else "stop"),
            "stop_reason": gen.stop_reason,
            "token_ids": token_ids,
            "routed_experts": None,
            "sampling_mask": None,
            "weight_versions": weight_versions(gen, len(token_ids)),
        }
        logprobs = None
        if num is not None:
            logprobs = (
                text_logprobs(state, chunks[index], num, [])
                if prep.text_mode
                else tokens_logprobs(chunks[index], num)
            )
        if prep.text_mode:
            choice["text"] = gen.output_text
        choice["logprobs"] = logprobs
        choices.append(choice)
    completion = sum(len(c["token_ids"]) for c in choices)
    prompt_logprobs = None
    if prep.params.prompt_logprobs is not None:
        gen0 = prep.generations[0]
        prompt_logprobs = prompt_logprobs_field(state.tokenizer, prep.prompt_ids, gen0.prompt_logprobs)
    await send_json(
        send,
        200,
        {
            "request_id": prep.external_id,
            "model": prep.model,
            "created": created,
            "usage": _usage(len(prep.prompt_ids), completion),
            "prompt_logprobs": prompt_logprobs,
            "prompt_token_id_logprobs": None,
            "prompt_token_ids": prep.prompt_ids if prep.return_token_ids else None,
            "mm_placeholders": None,
            "metrics": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "output_mode": "text" if prep.text_mode else "tokens",
            "choices": choices,
        },
    )


async def _stream(state: ServerState, prep: Prepared, run: _Run, send: Send) -> None:
    sse = SSEWriter(send, send_timeout=state.send_timeout)
    mode = "text" if prep.text_mode else "tokens"
    num = prep.params.logprobs
    generated = [0 for _ in prep.generations]
    finished = [False for _ in prep.generations]
    contexts: list[list[int]] = [[] for _ in prep.generations]
    prompt_ids_pending = [prep.return_token_ids]
    prompt_len = len(prep.prompt_ids)

    async def emit(index: int, chunk: Chunk) -> None:
        gen = prep.generations[index]
        generated[index] += len(chunk.token_ids)
        if chunk.finish_reason is not None:
            finished[index] = True
        # vLLM skips outputs with nothing new, but always sends a finish (e.g. an abort with no tokens).
        if not (chunk.token_ids or chunk.finish_reason is not None or (prep.text_mode and chunk.text)):
            return
        logprobs = None
        if num is not None:
            logprobs = (
                text_logprobs(state, [chunk], num, contexts[index])
                if prep.text_mode
                else tokens_logprobs([chunk], num)
            )
        choice: dict[str, Any] = {
            "index": index,
            "finish_reason": chunk.finish_reason,
            "stop_reason": chunk.stop_reason,
            "token_ids": chunk.token_ids,
            "routed_experts": None,
            "sampling_mask": None,
            # On the last chunk only, covering the whole output (vLLM's).
            "weight_versions": weight_versions(gen, generated[index]) if chunk.finish_reason else None,
        }
        if prep.text_mode:
            choice["text"] = chunk.text
        choice["logprobs"] = logprobs
        event: dict[str, Any] = {"request_id": prep.external_id, "usage": None}
        if prompt_ids_pending[0]:
            event["prompt_token_ids"] = prep.prompt_ids
            prompt_ids_pending[0] = False
        if prep.continuous_usage:
            event["usage"] = _usage(prompt_len, generated[index])
        event["output_mode"] = mode
        event["choices"] = [choice]
        await sse.event(event)

    async def on_chunk(index: int, _gen: Generation, chunk: Chunk) -> None:
        await emit(index, chunk)

    await sse.start()
    outcome = await _run(prep, run, on_chunk, keep_alive=state.keep_alive_interval, on_idle=sse.keep_alive)
    if outcome == "abort":
        for index in range(len(prep.generations)):
            if not finished[index]:
                await emit(index, Chunk("", [], finish_reason="abort"))
    elif outcome == "error":
        failure = engine_failure(
            prep.params.structured_outputs, param="sampling_params.structured_outputs", error=run.error
        )
        await sse.event(failure.body())
    elif outcome == "engine":
        await sse.event(_engine_error(state).body())
    if prep.include_usage and outcome not in ("error", "engine"):
        completion = sum(generated)
        usage = {
            "prompt_tokens": prompt_len,
            "total_tokens": prompt_len + completion,
            "completion_tokens": completion,
        }
        await sse.event(
            {"request_id": prep.external_id, "usage": usage, "output_mode": mode, "choices": []}, hold=True
        )
    await sse.done()


# ------------------------------------------------------------------------------------- handlers


async def handle_generate(state: ServerState, body: bytes, send: Send, headers: Headers) -> None:
    """``POST /inference/v1/generate``."""
    req = structure(parse_json(body), GenerateBody)
    prep = await prepare(state, req, headers)
    run = _Run(prep.generations)
    with registry(state).registered(prep.external_id, run):
        if prep.stream:
            await _stream(state, prep, run, send)
        else:
            await _complete(state, prep, run, send)


async def handle_abort_requests(state: ServerState, body: bytes, send: Send, _headers: Headers) -> None:
    """``POST /inference/v1/abort_requests`` ``{"request_ids": [...]}`` → 200 with an empty body, whether or
    not the ids are running (vLLM's answer does not say either)."""
    data = parse_json(body)
    request_ids = data.get("request_ids") if isinstance(data, dict) else None
    if request_ids is None:
        raise APIError(400, "Missing 'request_ids' in request body", param="request_ids")
    if isinstance(request_ids, str):
        request_ids = [request_ids]
    if not isinstance(request_ids, list) or not all(isinstance(r, str) for r in request_ids):
        raise APIError(400, "request_ids must be a list of strings", param="request_ids")
    registry(state).abort(request_ids)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
