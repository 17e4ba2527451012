"""The mock engine's scheduler, sans-IO: input messages in, encoded output messages out.

:class:`MockCore` plays vLLM 0.32's (or 0.33's, with ``vllm_version="0.33.x"``) ``EngineCoreProc`` busy
loop without sockets or time: the trio layer (``engine.py``) feeds it every received input message with
:meth:`MockCore.handle`, calls :meth:`MockCore.step` once per engine step, and sends whatever
:attr:`MockCore.outbox` holds as ``(client_index, payload)``. It never awaits, so nothing here can be
interrupted half-way.

Scheduling: FIFO; at most ``max_num_seqs`` requests run, the rest wait. Prefill is instant: a request
admitted in a step gets its first token in that step. Each step produces one token per running request
and *one* ``EngineCoreOutputs`` message per client holding all of that client's outputs.

Hazards (engine_protocol.md §12) are recorded as ``"hazard"`` events. With ``hazards="faithful"`` the
core then does what the real engine does: ``death`` is set (duplicate live id, prompt empty or not shorter
than ``max_model_len``, an EXECUTOR_FAILED byte, a request's LoRA adapter that ``add_lora`` never
accepted; the trio layer sends ENGINE_CORE_DEAD and stops), or
``input_dead`` (undecodable message, invalid sampling parameters, unknown type byte: every later input is
ignored, running requests still finish), or ``output_dead`` (``client_index`` out of range: nothing is
sent any more). With ``hazards="log"`` the offending message is dropped (or its request finished with
ERROR) and the engine carries on.

0.33 mode (the layout :meth:`MockEngineConfig.wire_version` picks from ``vllm_version``): the registration
has 0.33's three extra keys, outputs are 0.33's 19-position ``EngineCoreOutput`` (``error`` last), the
``pause_generation`` utility exists (after it, "abort"/"wait" pauses *reject* new requests with ERROR and
``error={code: "engine_paused", retryable: true}`` instead of queueing them, until ``resume_scheduler``),
and ``profile`` takes 0.33's five arguments. A version the frontend would refuse gets the 0.32 layout.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable
from typing import Any

import attrs
import msgspec

from .. import wire
from .events import EventLog
from .requests import InputDecodeError, MockRequest, decode_abort, decode_add, decode_utility
from .rules import FIRST_ORDINARY_ID, Generation, logprobs_lists, prompt_logprobs_tensors
from .script import Script

_EXECUTOR_FAILED = b"\x04"
_WAKEUP = b"\x05"


@attrs.frozen
class MockEngineConfig:
    """How the mock engine presents itself. ``engine_addr`` is the frontend's handshake address."""

    engine_addr: str
    step_ms: float = 10.0
    max_model_len: int = 2048
    vocab: int = 4096
    max_num_seqs: int = 256
    vllm_version: str = "0.32.0"
    hazards: str = attrs.field(default="faithful", validator=attrs.validators.in_(("faithful", "log")))
    event_log: str | None = None
    keep_events: bool = True
    log_steps: bool = False
    rank: int = 0
    block_size: int = 16
    #: vLLM's engine ``log_stats`` (on unless ``--disable-log-stats``): QUEUED/SCHEDULED events on a
    #: request's first output and a ``SchedulerStats`` map on every step, as the real engine sends them.
    log_stats: bool = True
    num_gpu_blocks: int = 8192
    max_num_batched_tokens: int = 8192
    dtype: str = "float32"
    #: A JSON script file (format in :mod:`.script`): matching prompts get scripted output.
    script: str | None = None
    #: vLLM's ``--enable-lora`` / ``--max-loras``: the ``*_lora`` utilities work and requests may carry
    #: adapters the engine was given with ``add_lora``.
    enable_lora: bool = False
    max_loras: int = 1

    def __attrs_post_init__(self) -> None:
        if self.vocab <= FIRST_ORDINARY_ID:
            raise ValueError(f"vocab must be larger than {FIRST_ORDINARY_ID}, got {self.vocab}")
        if self.max_model_len < 2 or self.max_num_seqs < 1 or self.step_ms < 0:
            raise ValueError("max_model_len must be >= 2, max_num_seqs >= 1 and step_ms >= 0")

    @property
    def wire_version(self) -> wire.WireVersion:
        """The layout this engine speaks: its ``vllm_version``'s, or 0.32's for a version trio-front refuses
        (so that a test of the version guard still gets a well-formed registration)."""
        try:
            return wire.WireVersion.from_version(self.vllm_version)
        except wire.UnsupportedEngineVersion:
            return wire.WireVersion.V0_32

    def registration(self) -> dict[str, Any]:
        """The ``EngineCoreReadyResponse`` map the engine's release sends on each input socket (every key)."""
        kv_tokens = self.num_gpu_blocks * self.block_size
        extra: dict[str, Any] = {}
        if self.wire_version is wire.WireVersion.V0_33:
            extra = {
                "coord_store_port": 0,
                "coordinator_input_address": None,
                "coordinator_output_address": None,
            }
        return {
            "max_model_len": self.max_model_len,
            "num_gpu_blocks": self.num_gpu_blocks,
            "block_size": self.block_size,
            "dp_stats_address": None,
            "dtype": self.dtype,
            "vllm_version": self.vllm_version,
            "world_size": 1,
            "data_parallel_size": 1,
            "tensor_parallel_size": 1,
            "pipeline_parallel_size": 1,
            "decode_context_parallel_size": 1,
            "data_parallel_rank": self.rank,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "instance_id": f"mock-{os.getpid()}-{self.rank}",
            "supports_lora": self.enable_lora,
            "max_loras": self.max_loras if self.enable_lora else 0,
            "mamba_block_size": None,
            "kv_cache_size_tokens": kv_tokens,
            "kv_cache_max_concurrency": kv_tokens / self.max_model_len,
            "kv_events_config": None,
            "weight_transfer_backend": None,
            "enable_sleep_mode": False,
            "supports_draft_weight_updates": False,
            "effective_attention_block_size": self.block_size,
            **extra,
        }


class PauseState(enum.Enum):
    UNPAUSED = "unpaused"
    PAUSED_NEW = "paused_new"  # adds queue up, running requests continue ("abort"/"wait" pauses)
    PAUSED_ALL = "paused_all"  # no steps at all ("keep" pause)


class _Deferred:
    """A utility whose reply comes later (``pause_scheduler("wait")``)."""


_DEFERRED = _Deferred()


@attrs.define(eq=False)
class MockCore:
    config: MockEngineConfig
    log: EventLog
    num_clients: int = 0
    waiting: dict[str, Generation] = attrs.Factory(dict)  # insertion order = FIFO
    running: dict[str, Generation] = attrs.Factory(dict)
    outbox: list[tuple[int, bytes]] = attrs.Factory(list)
    death: str | None = None
    input_dead: bool = False
    output_dead: bool = False
    pause: PauseState = PauseState.UNPAUSED
    #: 0.33's ``reject_new_requests``: set by ``pause_generation`` ("abort"/"wait"), cleared on resume
    reject_new: bool = False
    sleeping: bool = False
    weight_version: str = "default"
    stats: dict[str, int] = attrs.Factory(
        lambda: dict.fromkeys(
            ("steps", "adds", "tokens", "finished", "aborted", "utilities", "ignored_inputs", "dropped"), 0
        )
    )
    _pause_waiters: list[tuple[int, int]] = attrs.Factory(list)
    #: The loaded ``config.script`` (the trio layer reads the file; this class does no I/O).
    script: Script | None = None
    #: LoRA adapters ``add_lora`` accepted, by id (the engine's adapter cache; never evicted here)
    loras: dict[int, wire.LoRARequest] = attrs.Factory(dict)
    pinned_loras: set[int] = attrs.Factory(set)
    #: ``log_stats``: per live request, [QUEUED time, SCHEDULED time] (engine monotonic clock), until the
    #: first output carries them as events (vLLM's ``Request.events``)
    _event_times: dict[str, list[float]] = attrs.Factory(dict)
    #: prompt tokens of requests scheduled since the last SchedulerStats (prefix cache queries; no hits)
    _prefix_queries: int = 0
    _prefix_requests: int = 0
    #: the output struct types of the engine's release (0.32's, or 0.33's with ``error``)
    _output_type: type[wire.EngineCoreOutput] = attrs.field(init=False)
    _outputs_type: type[wire.EngineCoreOutputs] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        version = self.config.wire_version
        self._output_type, self._outputs_type = version.output_type, version.outputs_type

    # ------------------------------------------------------------------ state

    @property
    def live_request_ids(self) -> set[str]:
        return set(self.running) | set(self.waiting)

    def has_work(self) -> bool:
        """Whether a step would do anything (the trio layer sleeps on input otherwise)."""
        if self.pause is PauseState.PAUSED_ALL:
            return False
        return bool(self.running) or (bool(self.waiting) and self.pause is PauseState.UNPAUSED)

    # ------------------------------------------------------------------ input

    def handle(self, frames: list[bytes], received_at: float) -> None:
        """Process one input message (``[type, payload, *aux]`` as the engine's DEALER sees it)."""
        if self.input_dead or self.death is not None:
            self.stats["ignored_inputs"] += 1
            return
        kind = frames[0]
        payload = frames[1] if len(frames) > 1 else b""
        try:
            if kind == wire.RequestType.ADD.value:
                self._add(decode_add(payload), received_at)
            elif kind == wire.RequestType.ABORT.value:
                self._abort(decode_abort(payload), received_at)
            elif kind == wire.RequestType.UTILITY.value:
                self._utility(*decode_utility(payload))
            elif kind == wire.RequestType.START_DP_WAVE.value:
                # A DP=1 engine logs "Unrecognized input request type" and carries on.
                self.log.record("warning", kind="start_dp_wave", detail="ignored by a DP=1 engine")
            elif kind == _EXECUTOR_FAILED:
                self._hazard("executor_failed", "EXECUTOR_FAILED sent over the wire", "die")
            elif kind == _WAKEUP:
                pass  # the engine's own shutdown nudge; harmless
            else:
                self._hazard("unknown_request_type", f"type byte {bytes(kind)!r}", "input_dead")
        except InputDecodeError as exc:
            self._hazard("decode_failure", str(exc), "input_dead")

    def _add(self, req: MockRequest, received_at: float) -> None:
        rid, client = req.request_id, req.client_index
        if rid in self.running or rid in self.waiting:
            self._hazard("duplicate_request_id", f"{rid!r} is still live", "die", rid)
            return
        if not 0 <= client < self.num_clients:
            detail = f"client_index {client} but only {self.num_clients} output socket(s)"
            self._hazard("client_index_out_of_range", detail, "output_dead", rid)
            return
        prompt = req.prompt_token_ids or []
        if not prompt or len(prompt) >= self.config.max_model_len:
            detail = f"prompt of {len(prompt)} tokens, max_model_len {self.config.max_model_len}"
            if self._hazard("prompt_length", detail, "die", rid):
                self._finish_now([rid], client, wire.FinishReason.ERROR, detail)
            return
        if self.reject_new and not req.abort_immediately:
            # 0.33's ``_reject_add_while_paused``: a request-scoped, retryable ERROR.
            error = wire.RequestError(
                wire.RequestError.ENGINE_PAUSED,
                "Generation is paused. Please retry after it resumes.",
                retryable=True,
            )
            self._finish_now([rid], client, wire.FinishReason.ERROR, "rejected: generation paused", error)
            return
        lora = req.lora_request
        if lora is not None and self._lora_problem(lora) is not None:
            # The real engine loads the adapter inside a model step; one it cannot load is fatal.
            self._hazard("unknown_lora", self._lora_problem(lora) or "", "die", rid)
            return
        params = req.sampling_params
        if params is None or params.max_tokens is None:
            # The engine's request preprocessing fails: a request-scoped ERROR, not a crash.
            self._finish_now([rid], client, wire.FinishReason.ERROR, "max_tokens (or sampling_params) unset")
            return
        if params.ignore_eos and params.eos_token_id is not None:
            self.log.record(
                "warning",
                kind="ignore_eos_with_eos_token_id",
                request_id=rid,
                detail="the real engine ignores ignore_eos and would stop at _eos_token_id",
            )
        matched = self.script.match(prompt) if self.script is not None else None
        gen = Generation(
            rid,
            prompt,
            params,
            vocab=self.config.vocab,
            max_model_len=self.config.max_model_len,
            client_index=client,
            scripted=None if matched is None else matched[1],
        )
        self.waiting[rid] = gen
        self.stats["adds"] += 1
        if self.config.log_stats:
            self._event_times[rid] = [time.monotonic(), 0.0]
        # ``script_rule`` only with a script loaded, so unscripted event logs are unchanged.
        extra = {} if self.script is None else {"script_rule": None if matched is None else matched[0]}
        if lora is not None:  # only then, so event logs without LoRA are unchanged
            extra["lora"] = [lora.lora_name, lora.lora_int_id, lora.lora_path]
        self.log.record(
            "add",
            t=received_at,
            request_id=rid,
            client_index=client,
            prompt_tokens=len(prompt),
            max_tokens=params.max_tokens,
            **extra,
        )
        if req.abort_immediately:
            self._abort([rid], received_at)

    def _abort(self, request_ids: list[str], received_at: float) -> None:
        for rid in request_ids:
            gen, state = self.running.pop(rid, None), "running"
            if gen is None:
                gen, state = self.waiting.pop(rid, None), "waiting"
            if gen is None:
                self.log.record("abort_unknown", t=received_at, request_id=rid)
                continue
            self.stats["aborted"] += 1
            self._event_times.pop(rid, None)
            self.log.record("abort", t=received_at, request_id=rid, tokens=gen.position, state=state)

    # ------------------------------------------------------------------ stepping

    def step(self) -> None:
        """One engine step: admit waiting requests, one token per running request, one message per client."""
        if not self.has_work():
            return
        if self.pause is PauseState.UNPAUSED:
            scheduled_at = time.monotonic()
            while self.waiting and len(self.running) < self.config.max_num_seqs:
                rid = next(iter(self.waiting))
                gen = self.running[rid] = self.waiting.pop(rid)
                times = self._event_times.get(rid)
                if times is not None:
                    times[1] = scheduled_at
                    self._prefix_queries += len(gen.prompt_ids)
                    self._prefix_requests += 1
        vocab = self.config.vocab
        per_client: dict[int, list[wire.EngineCoreOutput]] = {}
        finished: list[Generation] = []
        for gen in self.running.values():
            first = gen.position == 0
            token = gen.next_token()
            out = self._output_type(gen.request_id, [token])
            if gen.logprobs is not None:
                out.new_logprobs = logprobs_lists([token], gen.logprobs, vocab)
            if first:
                times = self._event_times.pop(gen.request_id, None)
                if times is not None:
                    out.events = [{"type": 1, "timestamp": times[0]}, {"type": 2, "timestamp": times[1]}]
                n = len(gen.prompt_ids)
                out.prefill_stats = {
                    "num_prompt_tokens": n,
                    "num_computed_tokens": n,
                    "num_cached_tokens": 0,
                    "num_local_cached_tokens": 0,
                    "num_external_cached_tokens": 0,
                    "num_cache_creation_tokens": n,
                }
                if gen.prompt_logprobs is not None:
                    out.new_prompt_logprobs_tensors = prompt_logprobs_tensors(
                        gen.prompt_ids, gen.prompt_logprobs, vocab
                    )
            if gen.finish_reason is not None:
                out.finish_reason = int(gen.finish_reason)
                out.stop_reason = gen.stop_reason
                finished.append(gen)
            outputs = per_client.get(gen.client_index)
            if outputs is None:
                per_client[gen.client_index] = [out]
            else:
                outputs.append(out)
        self.stats["steps"] += 1
        self.stats["tokens"] += len(self.running)
        for gen in finished:
            del self.running[gen.request_id]
            self._record_finish(gen.request_id, gen.finish_reason, gen.position, gen.stop_reason)
        now = time.monotonic()
        stats = self._scheduler_stats() if self.config.log_stats else None
        if stats is not None and not per_client:
            per_client[0] = []  # vLLM's scheduler: stats go to one front-end, with or without outputs
        for client, outputs in per_client.items():
            self._emit(
                client,
                self._outputs_type(
                    engine_index=self.config.rank,
                    outputs=outputs,
                    scheduler_stats=stats,
                    timestamp=now,
                    weight_version=self.weight_version,
                ),
            )
            stats = None  # only the first client's message carries them
        if self.config.log_steps:
            self.log.record(
                "step",
                running=len(self.running),
                waiting=len(self.waiting),
                outputs=sum(map(len, per_client.values())),
            )
        if self._pause_waiters and not self.running:
            waiters, self._pause_waiters = self._pause_waiters, []
            for client, call_id in waiters:
                self._emit(client, wire.EngineCoreOutputs(utility_output=[call_id, None, [None, None]]))

    def _scheduler_stats(self) -> dict[str, Any]:
        """vLLM's ``Scheduler.make_stats`` after this step (finished requests already freed): KV usage is
        the blocks the running requests' tokens fill; prefix cache counts are deltas (never a hit here).
        ``SchedulerStats`` is a dataclass, so the engine sends every key (the same in 0.32 and 0.33), and
        vllm-rs refuses a map missing one."""
        block = self.config.block_size
        blocks = sum(-(-(len(g.prompt_ids) + g.position) // block) for g in self.running.values())
        queries, requests = self._prefix_queries, self._prefix_requests
        self._prefix_queries = self._prefix_requests = 0
        return {
            "num_running_reqs": len(self.running),
            "num_waiting_reqs": len(self.waiting),
            "num_skipped_waiting_reqs": 0,
            "num_kv_fetch_reqs_by_stage": {},
            "step_counter": self.stats["steps"],
            "current_wave": 0,
            "kv_cache_usage": min(1.0, blocks / self.config.num_gpu_blocks),
            "iteration_details": None,
            "prefix_cache_stats": {
                "reset": False,
                "requests": requests,
                "queries": queries,
                "hits": 0,
                "preempted_requests": 0,
                "preempted_queries": 0,
                "preempted_hits": 0,
                "hits_by_source": {},
            },
            "connector_prefix_cache_stats": None,
            "kv_cache_eviction_events": [],
            "spec_decoding_stats": None,
            "kv_connector_stats": None,
            "ec_connector_stats": None,
            "waiting_lora_adapters": {},
            "running_lora_adapters": {},
            "cudagraph_stats": None,
            "perf_stats": None,
        }

    def _record_finish(
        self, rid: str, reason: wire.FinishReason | None, tokens: int, stop_reason: Any
    ) -> None:
        self.stats["finished"] += 1
        self.log.record("finish", request_id=rid, reason=str(reason), tokens=tokens, stop_reason=stop_reason)

    def _finish_now(
        self,
        rids: list[str],
        client: int,
        reason: wire.FinishReason,
        detail: str = "",
        error: wire.RequestError | None = None,
    ) -> None:
        """An engine-side finish outside a step (errors, engine aborts): outputs + ``finished_requests``;
        *error* (0.33 only) goes into each output's ``error``."""
        for rid in rids:
            self.stats["finished"] += 1
            self._event_times.pop(rid, None)
            self.log.record(
                "finish", request_id=rid, reason=str(reason), tokens=0, stop_reason=None, detail=detail
            )
        if error is None:
            outputs = [self._output_type(rid, [], finish_reason=int(reason)) for rid in rids]
        else:  # only 0.33 rejects with an error
            outputs = [
                wire.EngineCoreOutput033(rid, [], finish_reason=int(reason), error=error) for rid in rids
            ]
        self._emit(
            client,
            self._outputs_type(engine_index=self.config.rank, outputs=outputs, finished_requests=rids),
        )

    def _engine_abort_all(self) -> None:
        by_client: dict[int, list[str]] = {}
        for gen in (*self.running.values(), *self.waiting.values()):
            by_client.setdefault(gen.client_index, []).append(gen.request_id)
        self.running.clear()
        self.waiting.clear()
        for client, rids in by_client.items():
            self._finish_now(rids, client, wire.FinishReason.ABORT, "aborted by the engine (pause)")

    def _emit(self, client: int, outputs: wire.EngineCoreOutputs) -> None:
        if self.output_dead or self.death is not None:
            self.stats["dropped"] += 1
            return
        if not 0 <= client < self.num_clients:
            # vLLM's output thread indexes its socket list and dies with IndexError.
            if self._hazard("client_index_out_of_range", f"output for client {client}", "output_dead"):
                self.stats["dropped"] += 1
            return
        self.outbox.append((client, wire.encode(outputs)))

    # ------------------------------------------------------------------ hazards

    def _hazard(self, kind: str, detail: str, fatal: str, request_id: str | None = None) -> bool:
        """Record a hazard; in faithful mode apply *fatal*. Returns True when the caller should recover."""
        action = fatal if self.config.hazards == "faithful" else "logged"
        fields: dict[str, Any] = {"kind": kind, "detail": detail, "action": action}
        if request_id is not None:
            fields["request_id"] = request_id
        self.log.record("hazard", **fields)
        if action == "die":
            self.death = f"{kind}: {detail}"
        elif action == "input_dead":
            self.input_dead = True
        elif action == "output_dead":
            self.output_dead = True
        return action == "logged"

    # ------------------------------------------------------------------ utilities

    def _utility(self, client: int, call_id: int, method: str, args: list[Any]) -> None:
        self.stats["utilities"] += 1
        if not 0 <= client < self.num_clients:
            self._hazard("client_index_out_of_range", f"utility {method} for client {client}", "output_dead")
            return
        handler: Callable[..., Any] | None = getattr(self, f"_u_{method}", None)
        if method in self._SINCE_033 and self.config.wire_version is not wire.WireVersion.V0_33:
            handler = None
        try:
            if handler is None:
                raise AttributeError(f"'EngineCoreProc' object has no attribute '{method}'")
            value = handler(client, call_id, *args)
        except Exception as exc:
            failure = f"Call to {method} method failed: {exc}"
            self.log.record("utility", method=method, call_id=call_id, ok=False, failure=failure)
            self._emit(client, wire.EngineCoreOutputs(utility_output=[call_id, failure, None]))
            return
        self.log.record("utility", method=method, call_id=call_id, ok=True)
        if value is not _DEFERRED:
            self._emit(client, wire.EngineCoreOutputs(utility_output=[call_id, None, [None, value]]))

    # Handlers get (client, call_id, *args) and mirror EngineCore's methods of the same name.

    def _lora_problem(self, lora: wire.LoRARequest) -> str | None:
        """Why a request's adapter would crash the real engine (``None``: it was accepted before)."""
        if not self.config.enable_lora:
            return f"lora_request {lora.lora_name!r} but the engine runs without --enable-lora"
        known = self.loras.get(lora.lora_int_id)
        if known is None:
            return f"lora_request {lora.lora_name!r} id {lora.lora_int_id} was never given to add_lora"
        if known.lora_path != lora.lora_path:
            return f"lora id {lora.lora_int_id} from {lora.lora_path!r}, added from {known.lora_path!r}"
        if lora.load_inplace:
            return f"lora_request {lora.lora_name!r} with load_inplace (a reload on every step)"
        return None

    def _check_lora_enabled(self) -> None:
        if not self.config.enable_lora:
            raise RuntimeError("LoRA is not enabled. Use --enable-lora to enable LoRA.")

    def _u_add_lora(self, client: int, call_id: int, lora_request: Any) -> bool:
        """The engine's ``add_lora``: loads from a directory holding ``adapter_config.json`` (the one file
        I/O of this class: the real engine's "not found" depends on it); returns whether it (re)loaded."""
        lora = msgspec.convert(lora_request, wire.LoRARequest)
        if lora.lora_int_id < 1:  # LoRARequest.__post_init__
            raise ValueError(f"id must be > 0, got {lora.lora_int_id}")
        if not lora.lora_path:
            raise AssertionError("lora_path cannot be empty")
        self._check_lora_enabled()
        if not os.path.isfile(os.path.join(lora.lora_path, "adapter_config.json")):
            raise LookupError(f"Loading lora {lora.lora_name} failed: No adapter found for {lora.lora_path}")
        if lora.lora_int_id in self.loras and not lora.load_inplace:
            return False
        self.loras[lora.lora_int_id] = lora
        self.log.record("lora_added", lora=[lora.lora_name, lora.lora_int_id, lora.lora_path])
        return True

    def _u_remove_lora(self, client: int, call_id: int, lora_id: int) -> bool:
        self._check_lora_enabled()
        self.pinned_loras.discard(lora_id)
        return self.loras.pop(lora_id, None) is not None

    def _u_list_loras(self, client: int, call_id: int) -> list[int]:
        self._check_lora_enabled()
        return sorted(self.loras)  # a set[int] in the engine; msgpack encodes it as an array

    def _u_pin_lora(self, client: int, call_id: int, lora_id: int) -> bool:
        self._check_lora_enabled()
        if lora_id not in self.loras:
            raise ValueError(f"Pinning failed. LoRA {lora_id} is not registered.")
        self.pinned_loras.add(lora_id)
        return True

    def _u_is_sleeping(self, client: int, call_id: int) -> bool:
        return self.sleeping or self.pause is not PauseState.UNPAUSED

    def _u_get_supported_tasks(self, client: int, call_id: int) -> list[str]:
        return ["generate"]

    def _u_reset_prefix_cache(
        self, client: int, call_id: int, reset_running_requests: bool = False, reset_connector: bool = False
    ) -> bool:
        return True

    def _u_reset_mm_cache(self, client: int, call_id: int) -> None:
        return None

    def _u_reset_encoder_cache(self, client: int, call_id: int) -> None:
        return None

    def _u_is_scheduler_paused(self, client: int, call_id: int) -> bool:
        return self.pause is not PauseState.UNPAUSED

    def _u_pause_scheduler(
        self, client: int, call_id: int, mode: str = "abort", clear_cache: bool = True
    ) -> Any:
        if mode not in ("abort", "wait", "keep"):
            raise ValueError(f"Invalid pause mode: {mode}")
        if mode == "abort":
            self._engine_abort_all()
        self.pause = PauseState.PAUSED_ALL if mode == "keep" else PauseState.PAUSED_NEW
        if mode == "wait" and self.running:
            self._pause_waiters.append((client, call_id))
            return _DEFERRED
        return None

    #: utilities a 0.32 engine does not have
    _SINCE_033 = frozenset({"pause_generation"})

    def _u_pause_generation(
        self, client: int, call_id: int, mode: str = "abort", clear_cache: bool = True
    ) -> Any:
        """0.33's user pause: ``pause_scheduler``, and "abort"/"wait" also reject new requests."""
        result = self._u_pause_scheduler(client, call_id, mode, clear_cache)
        self.reject_new = mode != "keep"
        return result

    def _u_resume_scheduler(self, client: int, call_id: int) -> None:
        self.pause = PauseState.UNPAUSED
        self.reject_new = False

    def _u_profile(self, client: int, call_id: int, *args: Any) -> None:
        """``profile(is_start, profile_prefix, delay_iterations, max_iterations[, profiler_kwargs])``:
        4 parameters in 0.32, 5 in 0.33; more arguments fail as Python's call would (no profiler here)."""
        arity = self.config.wire_version.profile_arity
        if len(args) > arity:
            raise TypeError(f"EngineCore.profile() takes from 1 to {arity + 1} positional arguments")
        return None

    def _u_sleep(self, client: int, call_id: int, level: int = 1, mode: str = "abort") -> Any:
        result = self._u_pause_scheduler(client, call_id, mode, True)
        self.sleeping = level > 0
        return result

    def _u_wake_up(self, client: int, call_id: int, tags: list[str] | None = None) -> bool:
        self.sleeping = False
        self.pause = PauseState.UNPAUSED
        return True

    def _u_get_weight_version(self, client: int, call_id: int) -> str:
        return self.weight_version

    def _u_set_weight_version(self, client: int, call_id: int, weight_version: str) -> None:
        self.weight_version = weight_version

    def _u_execute_dummy_batch(self, client: int, call_id: int) -> None:
        return None

    def _u_get_kv_cache_group_metadata(self, client: int, call_id: int) -> list[dict[str, Any]]:
        return [
            {
                "group_idx": 0,
                "kind": "full_attention",
                "block_size": self.config.block_size,
                "sliding_window": None,
            }
        ]
