"""The engine client: token ids in, token ids out, for one frontend process.

:class:`EngineClient` owns one input ROUTER / output PULL pair (and, in the process that owns the
handshake, the handshake ROUTER). Its tasks live in the nursery of whoever calls :meth:`EngineClient.run`
(the ASGI lifespan, a test, a benchmark): nothing outlives that nursery.

Per request, :meth:`EngineClient.generate` returns a :class:`RequestStream`, an async context manager.
Leaving it before the engine finished the request, for any reason (exception, cancellation, an early
``break`` after a stop string), sends ABORT at once. The abort is a synchronous non-blocking send on a
socket with no high-water mark, so no outer cancellation can skip it and no shield is needed.

One reader task routes outputs to streams and never waits for a consumer: each stream holds a single
coalescing slot, and while its consumer lags, new token ids are appended to the pending delta (vLLM's
``RequestOutputCollector`` policy). A slow HTTP client thus gets bigger deltas, and memory grows only
with the tokens not yet sent, never with a queue of messages. Outputs for unknown ids (late outputs of
aborted requests) are dropped.

The reader first routes everything the engine sent (deltas merge), then wakes the consumers that wait,
``wake_slice`` per pass of trio's scheduler. An engine step carries one output per running request;
waking hundreds of consumers at once would make one pass of all their work, and sockets are polled only
between passes, so a client's disconnect (or a new request) would wait for all of it: with 256 streams,
8–15 ms on a 2-vCPU machine. Two measured traps shape this: waking while routing, slice by slice, cost
15–25% of throughput (more, smaller events); and during a burst of new requests every pass also runs
their work, so slices starved the streams (inter-token gaps of a second at 1024 clients). Hence, once a
pass takes longer than ``wake_pass_budget``, the rest are woken at once.

The engine's death (the ``ENGINE_CORE_DEAD`` sentinel, its sockets disconnecting, or no answer to a
periodic utility ping) marks the client dead: every open stream and utility call fails with one
:class:`EngineDeadError`, and :attr:`EngineClient.state` says so for health checks.
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import time
from bisect import bisect_left
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import attrs
import trio
import zmq
from zmq.utils.monitor import parse_monitor_message

from trio_front.metrics.vllm_series import INTER_TOKEN_LATENCY_BUCKETS as ITL_BUCKETS

from . import wire
from .coordinator import CoordinatorLink
from .dp import REQUESTED_RANK, Balancer
from .handshake import serve_handshake, wait_registration
from .zmq_trio import TrioSocket, adopt_listener, last_endpoint, make_socket

if TYPE_CHECKING:
    from trio_front.metrics import Metrics, RequestStats

log = logging.getLogger("trio_front.engine")
_MONITOR_IDS = itertools.count()


class EngineError(Exception):
    """Base class for engine-link failures."""


class EngineNotReadyError(EngineError):
    """The engine has not finished its start-up handshake yet."""


class EngineDeadError(EngineError):
    """The engine died or stopped answering; nothing more will come from it."""


class EngineClosedError(EngineError):
    """The client was shut down while the request was open."""


class UtilityCallError(EngineError):
    """A utility call failed inside the engine, or timed out."""


class ClientState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DEAD = "dead"
    CLOSED = "closed"


@attrs.frozen
class LinkConfig:
    """Where to bind and how to watch the engine.

    ``engine_addr`` is the handshake address to bind (``tcp://HOST:PORT`` or ``ipc://PATH``), the value
    the engine gets as ``--data-parallel-address``/``--data-parallel-rpc-port``; ``None`` means another
    process owns the handshake and this client only binds its own pair (multi-process scale-out).
    ``pairs`` lists every frontend process's ``(input, output)`` addresses for INIT; by default one pair
    on the engine address's host (kernel-chosen TCP ports, or ``PATH-input``/``PATH-output`` for IPC).
    """

    engine_addr: str | None
    client_index: int = 0
    input_addr: str | None = None
    output_addr: str | None = None
    pairs: tuple[tuple[str, str], ...] | None = None
    #: ``frontend`` drop-in: listening sockets vLLM bound for us (ZMQ ``USE_FD``), instead of addresses
    input_fd: int | None = None
    output_fd: int | None = None
    #: Data parallelism: this client manages engine ranks ``engine_start_index .. + engine_count - 1``
    #: (identities = ranks as 2 bytes LE), among ``client_count`` API processes (``--workers``).
    engine_count: int = 1
    engine_start_index: int = 0
    client_count: int = 1
    #: a vLLM DP coordinator's front-end XPUB (``--coordinator-address``): load counts and MoE waves
    coordinator_addr: str | None = None
    #: after a rank's death, how long the others get to answer the probe that names the dead one(s)
    rank_probe_timeout: float = 1.0
    ping_interval: float = 5.0
    ping_timeout: float = 30.0
    allow_version_mismatch: bool = False
    #: Default for :meth:`EngineClient.generate`'s ``stream_interval`` (vLLM's ``--stream-interval``).
    stream_interval: int = 1
    #: The reader wakes at most this many consumers per pass of trio's scheduler (see the module doc).
    wake_slice: int = 32
    #: ... unless one such pass took longer than this (seconds): then it wakes all the rest at once.
    wake_pass_budget: float = 0.003


def default_pair(engine_addr: str, index: int = 0) -> tuple[str, str]:
    """Bind addresses for client *index*'s input/output pair next to *engine_addr*."""
    if engine_addr.startswith("ipc://"):
        return f"{engine_addr}-input-{index}", f"{engine_addr}-output-{index}"
    if engine_addr.startswith("tcp://"):
        host = engine_addr[len("tcp://") :].rsplit(":", 1)[0]
        return f"tcp://{host}:0", f"tcp://{host}:0"
    raise ValueError(f"engine address must be tcp://HOST:PORT or ipc://PATH, got {engine_addr!r}")


@attrs.define(eq=False)
class RequestDelta:
    """What a request produced since the consumer last looked (several engine steps if it lagged)."""

    token_ids: list[int]
    finish_reason: wire.FinishReason | None = None
    stop_reason: int | str | None = None
    logprobs: wire.Logprobs | None = None
    num_cached_tokens: int | None = None
    #: The prompt's logprobs, on the first delta only (when the request asked for them).
    prompt_logprobs: wire.PromptLogprobs | None = None
    steps: int = 1
    #: Why the engine failed the request (finish_reason ERROR), when it said: vLLM 0.33's ``error``
    #: (``engine_paused``, ``validation_error``...); always None from a 0.32 engine.
    error: wire.RequestError | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def merge(self, later: RequestDelta) -> None:
        self.token_ids.extend(later.token_ids)
        if later.logprobs is not None:
            if self.logprobs is None:
                self.logprobs = later.logprobs
            else:
                self.logprobs.token_ids.extend(later.logprobs.token_ids)
                self.logprobs.logprobs.extend(later.logprobs.logprobs)
                self.logprobs.ranks.extend(later.logprobs.ranks)
        if later.num_cached_tokens is not None:
            self.num_cached_tokens = later.num_cached_tokens
        if later.prompt_logprobs is not None:
            self.prompt_logprobs = later.prompt_logprobs
        self.finish_reason = later.finish_reason
        self.stop_reason = later.stop_reason
        self.error = later.error
        self.steps += later.steps


class RequestStream:
    """One engine request's outputs, used as ``async with client.generate(...) as stream``.

    Iterating yields :class:`RequestDelta` objects and stops after the one with a ``finish_reason``.
    It raises :class:`EngineDeadError` if the engine dies meanwhile and :class:`EngineClosedError` if the
    client shuts down. Leaving the ``async with`` block before the engine finished the request sends
    ABORT exactly once; :meth:`abort` does so explicitly (e.g. when a stop string matched).

    With ``stream_interval`` N > 1 (vLLM's option of that name), a delta is handed out only once it
    holds N tokens, or it is the request's first output, or its last: the consumer task is not even
    woken for the steps in between, which is what saves the CPU.
    """

    def __init__(
        self, client: EngineClient, request: wire.EngineCoreRequest, stream_interval: int = 1
    ) -> None:
        self.client = client
        self.request = request
        self.request_id = request.request_id
        #: the managed index of the rank serving it (``client.balancer``; global rank = start + index)
        self.engine = 0
        self.submitted_at = time.monotonic()
        self.first_output_at: float | None = None
        self.abort_cause: str | None = None
        self._pending: RequestDelta | None = None
        self._error: BaseException | None = None
        self._done = False  # the consumer has seen the terminal delta (or an error)
        # The one task consuming this stream while it waits (a ParkingLot costs more per wake-up, and
        # there is never more than one consumer).
        self._waiter: trio.lowlevel.Task | None = None
        self._interval = stream_interval
        self._handed_out = False  # a delta went to the consumer (the first one is never held back)
        #: ``(weight version, index of the first output token made with it)``, one entry per change (vLLM's
        #: ``RequestState.weight_version_starts``; the generate API reports the spans).
        self.weight_version_starts: list[tuple[str, int]] = []
        self._output_tokens = 0
        #: vLLM's per-request stats (``client.metrics`` set), and whether a finish from the engine waits
        #: for the consumer's verdict (a stop string in the last tokens makes it "stop", as vLLM's output
        #: processor decides in the same step): see :meth:`settle_finish`.
        self.mstats: RequestStats | None = None
        self.defer_finish = False
        self._held_finish: tuple[int, float, int] | None = None

    # called by the client's reader --------------------------------------------------------------

    def _deliver(self, delta: RequestDelta) -> bool:
        """Merge *delta* into the slot; whether the consumer is waiting for it (the caller wakes it)."""
        if self.first_output_at is None:
            self.first_output_at = time.monotonic()
        pending = self._pending
        if pending is None:
            self._pending = pending = delta
        else:
            pending.merge(delta)
        return self._waiter is not None and self._ready(pending)

    def _track_weight_version(self, version: str | None, new_tokens: int) -> None:
        if new_tokens and version is not None:
            starts = self.weight_version_starts
            if not starts or starts[-1][0] != version:
                starts.append((version, self._output_tokens))
        self._output_tokens += new_tokens

    def _engine_finished(self, reason: int, now: float, engine_index: int) -> None:
        if self.defer_finish:
            self._held_finish = (reason, now, engine_index)
        elif self.mstats is not None and self.client.metrics is not None:
            self.client.metrics.finish(self.mstats, reason, now, engine_index)

    def settle_finish(self, stop_string: bool) -> None:
        """With :attr:`defer_finish`: the consumer has seen the terminal delta; *stop_string* says a stop
        string matched in it (the request then finished "stop", whatever the engine said). Idempotent;
        leaving the ``async with`` settles it with the engine's reason."""
        held, self._held_finish = self._held_finish, None
        metrics = self.client.metrics
        if held is not None and self.mstats is not None and metrics is not None:
            reason = wire.FinishReason.STOP if stop_string else held[0]
            metrics.finish(self.mstats, reason, held[1], held[2])

    def _abort_wait(self, _: Any) -> trio.lowlevel.Abort:
        self._waiter = None  # cancelled while waiting: nothing was taken
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    def _ready(self, pending: RequestDelta) -> bool:
        """Whether *pending* may go to the consumer now (always, unless ``stream_interval`` > 1)."""
        return (
            self._interval <= 1
            or not self._handed_out
            or pending.finish_reason is not None
            or len(pending.token_ids) >= self._interval
        )

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    # consumer side ------------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """True while the engine may still produce output for this request (an abort would matter)."""
        return self.client._streams.get(self.request_id) is self

    async def next_delta(self) -> RequestDelta:
        """Wait for the next (coalesced) delta; raises ``StopAsyncIteration`` after the last one.

        A cancelled call takes nothing (outputs stay pending). A delta that is already waiting is
        returned without yielding to the scheduler: only the reader task makes a delta pending, and it
        cannot run until the consumer yields, so the consumer's next call parks; a consumer never runs
        more than one step without a checkpoint. Skipping that yield saves a scheduler pass per event.
        One task consumes a stream; a second concurrent waiter is a bug (``RuntimeError``).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            pending = self._pending
            if pending is not None and self._ready(pending):
                self._pending = None
                self._handed_out = True
                if pending.finished:
                    self._done = True
                return pending
            if self._error is not None:
                self._done = True
                raise self._error
            if self._done:
                raise StopAsyncIteration
            if self._waiter is not None:
                raise RuntimeError(f"request {self.request_id} already has a consumer waiting")
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)

    def __aiter__(self) -> AsyncIterator[RequestDelta]:
        return self

    async def __anext__(self) -> RequestDelta:
        return await self.next_delta()

    def abort(self, cause: str = "aborted") -> None:
        """Abort the engine request now (synchronous, idempotent, no-op once the engine finished)."""
        self.client._abort(self, cause)

    async def __aenter__(self) -> RequestStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._held_finish is not None:
            self.settle_finish(False)
        if self.registered:
            cause = "cancelled" if isinstance(exc_info[1], trio.Cancelled) else "closed early"
            if exc_info[1] is not None and not isinstance(exc_info[1], trio.Cancelled):
                cause = f"error: {type(exc_info[1]).__name__}"
            self.client._abort(self, cause)


def _delta(out: wire.EngineCoreOutput, finish: int | None, aux: list[bytes] | None) -> RequestDelta:
    """One engine output as its request's delta (logprob tensors decoded from the message's aux frames)."""
    return RequestDelta(
        token_ids=out.new_token_ids,
        finish_reason=None if finish is None else wire.FinishReason(finish),
        stop_reason=out.stop_reason,
        logprobs=None if out.new_logprobs is None else wire.decode_logprobs(out.new_logprobs, aux),
        num_cached_tokens=None if out.prefill_stats is None else out.prefill_stats.get("num_cached_tokens"),
        prompt_logprobs=None
        if out.new_prompt_logprobs_tensors is None
        else wire.decode_prompt_logprobs(out.new_prompt_logprobs_tensors, aux),
        error=None if finish is None else out.error,
    )


class EngineClient:
    """The link to the vLLM engine cores (one, or ``engine_count`` data-parallel ranks) for one frontend
    process.

    With several ranks (``dp.py``): registration is awaited from every managed rank; each request goes to
    the rank :class:`~trio_front.engine.dp.Balancer` picks (or the ``X-data-parallel-rank`` one), its
    ABORTs to that rank; utility calls go to every rank (vLLM's ``call_utility_all_async``; the first
    rank's result is returned). One rank's death fails the whole link at once, as vLLM tears the group
    down; the ranks that still answer a short probe are told apart from the dead, which are logged and
    kept in :attr:`dead_ranks` (and the ``trio_front_engine_rank_up`` gauge).

    Usage::

        client = EngineClient(LinkConfig("tcp://127.0.0.1:62100"))
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)      # returns once the sockets are bound
            await client.wait_ready()            # handshake + registration done
            async with client.generate(ids, params, id_prefix="cmpl-1") as stream:
                async for delta in stream: ...

    :meth:`run` keeps running (reader, liveness ping, socket monitors) until cancelled; on the way out it
    aborts every open request in one message, fails their streams with :class:`EngineClosedError` and
    closes the sockets.
    """

    def __init__(self, config: LinkConfig, *, zmq_context: zmq.Context | None = None) -> None:
        self.config = config
        self.state = ClientState.STARTING
        self.registration: wire.EngineRegistration | None = None
        #: The engines' wire layout, from the first registration (every rank must report the same).
        self.wire_version: wire.WireVersion | None = None
        self._decode_outputs = wire.WireVersion.DEFAULT.decode_outputs
        self.error: BaseException | None = None
        self.bound_pair: tuple[str, str] | None = None
        self._ctx = zmq_context or zmq.Context.instance()
        self._ready = trio.Event()
        self._handshake_done = trio.Event()
        self._dead = trio.Event()
        self._input: TrioSocket | None = None
        self.balancer = Balancer(
            config.engine_start_index,
            config.engine_count,
            client_index=config.client_index,
            client_count=config.client_count,
        )
        #: every managed rank's registration, by global rank
        self.registrations: dict[int, wire.EngineRegistration] = {}
        #: global ranks found dead after the link failed (DP only; empty until the probe ran)
        self.dead_ranks: list[int] = []
        self.coordinator: CoordinatorLink | None = None
        self._streams: dict[str, RequestStream] = {}
        self._calls: dict[int, _PendingCall] = {}
        self._call_ids = itertools.count(1)
        self._seq = itertools.count(1)
        # Ids are f"{prefix}-{tag}{seq}": the tag makes them unique across processes and restarts, the
        # sequence within this client, so a duplicate live id (which kills the engine) cannot happen.
        self._id_tag = f"{os.getpid():x}{config.client_index}{os.urandom(2).hex()}."
        self.stats = {"submitted": 0, "aborted": 0, "finished": 0, "late_outputs": 0}
        #: The engine's latest ``SchedulerStats`` map (running/waiting counts, KV usage), if it sends them.
        self.scheduler_stats: dict[str, Any] | None = None
        #: vLLM's and our ``/metrics`` series (``None``: nothing recorded); set by whoever serves them,
        #: usually through :attr:`metrics_factory`, which is called once the engine registered.
        self.metrics: Metrics | None = None
        self.metrics_factory: Any = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def max_model_len(self) -> int:
        """The smallest registered ``max_model_len`` of the ranks (each may auto-fit its own)."""
        if self.registration is None:
            raise EngineNotReadyError("the engine has not registered yet")
        return min(r.max_model_len for r in self.registrations.values())

    @property
    def data_parallel(self) -> bool:
        return self.balancer.count > 1

    async def wait_ready(self) -> None:
        """Return once the engine can take requests; raise :class:`EngineDeadError` if it cannot."""
        await self._ready.wait()
        if self.state is not ClientState.READY:
            raise self.error or EngineDeadError("engine is not available")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, handshake, then route outputs until cancelled (or the engine dies).

        ``task_status.started()`` fires once every socket is bound, i.e. when an engine may connect. If
        the engine dies, :meth:`run` keeps the dead state and returns; requests then fail fast.

        With ``input_fd``/``output_fd`` (the ``frontend`` drop-in) the pair adopts vLLM's listening
        sockets instead of binding (and ``engine_addr`` is None: vLLM's supervisor runs the handshake);
        the engine's registration frame is awaited as usual. Raises ``ValueError`` if an fd is unusable.
        """
        cfg = self.config
        inp, out = self._bind_pair()
        handshake: TrioSocket | None = None
        monitors: list[TrioSocket] = []
        try:
            self._input = inp
            self.bound_pair = (last_endpoint(inp), last_endpoint(out))
            if cfg.engine_addr is not None:
                handshake = make_socket(self._ctx, zmq.ROUTER, bind=cfg.engine_addr)
            for sock in (inp, out):
                # pyzmq's default monitor endpoint is keyed by the socket's fd, which a later socket in
                # the same context may reuse before libzmq released the old endpoint: name ours uniquely.
                address = f"inproc://trio-front-monitor-{next(_MONITOR_IDS)}"
                monitors.append(TrioSocket(sock.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED, address)))
            async with trio.open_nursery() as nursery:
                task_status.started()
                if handshake is not None:
                    pairs = cfg.pairs or (self.bound_pair,)
                    init = wire.HandshakeInit(
                        addresses=wire.EngineAddresses(
                            inputs=[p[0] for p in pairs], outputs=[p[1] for p in pairs]
                        )
                    )
                    nursery.start_soon(self._handshake, handshake, init)
                await self._register(inp)
                if cfg.coordinator_addr and self.data_parallel:
                    self.coordinator = CoordinatorLink(cfg.coordinator_addr, self.balancer)
                    await nursery.start(self.coordinator.run, self._ctx)
                nursery.start_soon(self._read_outputs, out)
                for monitor in monitors:
                    nursery.start_soon(self._watch_disconnect, monitor)
                if handshake is not None:
                    await self._handshake_done.wait()
                if self.state is ClientState.STARTING:
                    self.state = ClientState.READY
                    log.info("engine link ready (client %d)", cfg.client_index)
                self._ready.set()
                nursery.start_soon(self._ping_loop)
                await self._dead.wait()
                if self.data_parallel and self.state is ClientState.DEAD:
                    await self._name_dead_ranks()
                nursery.cancel_scope.cancel(reason="engine is dead")
        finally:
            self._shutdown()
            for sock in (inp, out):
                if monitors:
                    sock.sock.disable_monitor()
            for monitor in monitors:
                monitor.close()
            # Linger on the input socket so the shutdown ABORT above still reaches the engine.
            inp.close(linger=1000)
            out.close()
            if handshake is not None:
                handshake.close()
            self._input = None

    def _bind_pair(self) -> tuple[TrioSocket, TrioSocket]:
        """The input ROUTER and output PULL: adopted from inherited fds, or bound to addresses."""
        cfg = self.config
        if cfg.input_fd is not None or cfg.output_fd is not None:
            if cfg.input_fd is None or cfg.output_fd is None:
                raise ValueError("input_fd and output_fd go together")
            inp = adopt_listener(self._ctx, zmq.ROUTER, cfg.input_fd)
            try:
                return inp, adopt_listener(self._ctx, zmq.PULL, cfg.output_fd)
            except BaseException:
                inp.close()
                raise
        in_addr, out_addr = cfg.input_addr, cfg.output_addr
        if in_addr is None or out_addr is None:
            if cfg.engine_addr is None:
                raise ValueError("input_addr and output_addr are required without an engine_addr")
            in_addr, out_addr = default_pair(cfg.engine_addr, cfg.client_index)
        inp = make_socket(self._ctx, zmq.ROUTER, bind=in_addr)
        try:
            return inp, make_socket(self._ctx, zmq.PULL, bind=out_addr)
        except BaseException:
            inp.close()
            raise

    async def _handshake(self, sock: TrioSocket, init: wire.HandshakeInit) -> None:
        await serve_handshake(
            sock, init, engine_count=self.config.engine_count, address=self.config.engine_addr or ""
        )
        self._handshake_done.set()
        sock.close()  # the engine closes its DEALER after READY; nothing more comes here

    async def _register(self, inp: TrioSocket) -> None:
        """Wait for every managed rank's registration frame (a rank outside the range is logged and
        ignored: the ROUTER knows it, but nothing is ever sent to it)."""
        expected = dict(zip(self.balancer.identities, range(self.balancer.count), strict=True))
        start = self.balancer.start
        while len(self.registrations) < self.balancer.count:
            identity, registration = await wait_registration(
                inp, address=self.bound_pair[0] if self.bound_pair else ""
            )
            rank = int.from_bytes(identity, "little")
            if identity not in expected:
                log.warning(
                    "engine rank %d registered, but this frontend manages ranks %d..%d: ignored",
                    rank,
                    start,
                    start + self.balancer.count - 1,
                )
                continue
            try:
                version = wire.WireVersion.from_version(registration.vllm_version)
            except wire.UnsupportedEngineVersion:
                if not self.config.allow_version_mismatch:
                    self._die(EngineDeadError(f"unsupported engine: vLLM {registration.vllm_version}"))
                    raise
                log.warning(
                    "engine reports vLLM %s; continuing with the %s layout because the version check is "
                    "disabled",
                    registration.vllm_version,
                    wire.WireVersion.DEFAULT.minor,
                )
                version = wire.WireVersion.DEFAULT
            if self.wire_version is not None and version is not self.wire_version:
                mixed = wire.UnsupportedEngineVersion(
                    f"engine rank {rank} reports vLLM {registration.vllm_version}, the ranks before it "
                    f"{self.wire_version.minor}.x: all ranks must run the same vLLM release"
                )
                self._die(EngineDeadError(str(mixed)))
                raise mixed
            self.wire_version, self._decode_outputs = version, version.decode_outputs
            self.registrations[rank] = registration
            if self.data_parallel:
                log.info(
                    "engine rank %d registered (%d of %d)", rank, len(self.registrations), self.balancer.count
                )
        self.registration = self.registrations[start]
        if self.metrics_factory is not None and self.metrics is None:
            self.metrics = self.metrics_factory(self.registration)
            for rank in self.registrations:
                self.metrics.ours.rank_up(rank, True)

    # ------------------------------------------------------------------ requests

    def new_request_id(self, prefix: str) -> str:
        return f"{prefix}-{self._id_tag}{next(self._seq)}"

    def generate(
        self,
        prompt_token_ids: list[int],
        params: wire.SamplingParams,
        *,
        id_prefix: str = "req",
        request_id: str | None = None,
        external_id: str | None = None,
        lora_request: wire.LoRARequest | None = None,
        priority: int = 0,
        cache_salt: str | None = None,
        arrival_time: float | None = None,
        stream_interval: int | None = None,
        reasoning_ended: bool | None = None,
        reasoning_parser_kwargs: dict[str, Any] | None = None,
        data_parallel_rank: int | None = None,
    ) -> RequestStream:
        """Submit a token-in request now and return its stream (use it as ``async with``).

        *stream_interval* (default: the link's ``stream_interval``, 1) batches deltas, see
        :class:`RequestStream`. The engine request id is ``{id_prefix}-{unique suffix}``, or exactly
        *request_id* (n>1 children: ``{index}_{parent id}``, the parent id from :meth:`new_request_id`);
        a duplicate live id would kill the engine, so an explicit one that is live raises ``ValueError``.

        The ADD is sent before this returns, so the request is live in the engine from here on; the
        caller must enter the returned stream's context (or call :meth:`RequestStream.abort`).
        Raises :class:`EngineNotReadyError` / :class:`EngineDeadError` when nothing can be submitted.
        The caller validated *params* and the prompt length (``serving/params.py``).

        *data_parallel_rank* (default: the HTTP request's ``X-data-parallel-rank``, :data:`REQUESTED_RANK`)
        pins a rank (an index into the managed ranks); out of range it raises
        :class:`~trio_front.engine.dp.RankRangeError` (a ``ValueError``: 400) before anything is sent.
        """
        self._check_usable()
        if data_parallel_rank is None:
            data_parallel_rank = REQUESTED_RANK.get()
        if request_id is None:
            request_id = self.new_request_id(id_prefix)
        elif request_id in self._streams:
            raise ValueError(f"request id {request_id} is already live")
        request = wire.EngineCoreRequest(
            request_id=request_id,
            prompt_token_ids=prompt_token_ids,
            sampling_params=params,
            arrival_time=time.time() if arrival_time is None else arrival_time,
            client_index=self.config.client_index,
            external_req_id=external_id or id_prefix,
            lora_request=lora_request,
            priority=priority,
            cache_salt=cache_salt,
            reasoning_ended=reasoning_ended,
            reasoning_parser_kwargs=reasoning_parser_kwargs,
        )
        balancer, coordinator = self.balancer, self.coordinator
        index = balancer.pick(data_parallel_rank)
        identity = balancer.identities[index]
        if coordinator is not None:
            request.current_wave = coordinator.current_wave
        interval = self.config.stream_interval if stream_interval is None else stream_interval
        stream = RequestStream(self, request, interval)
        stream.engine = index
        self._streams[request_id] = stream
        try:
            self._send(wire.add_frames(identity, request))
        except BaseException:
            del self._streams[request_id]
            balancer.done(index)
            raise
        if coordinator is not None and (self.wire_version or wire.WireVersion.DEFAULT).notifies_first_request:
            coordinator.first_request(identity)  # 0.33 dropped FIRST_REQ: only engines start waves
        self.stats["submitted"] += 1
        metrics = self.metrics
        if metrics is not None:
            stream.mstats = metrics.add_request(request, self._id_tag)
            metrics.ours.submitted.inc()
            metrics.ours.open.set(len(self._streams))
        return stream

    def abort(self, request_ids: list[str]) -> None:
        """Abort requests by id (the ones still registered); synchronous."""
        streams = [s for rid in request_ids if (s := self._streams.pop(rid, None)) is not None]
        for stream in streams:
            self.balancer.done(stream.engine)
        if streams and self.state is ClientState.READY:
            self._send_aborts(streams)
            self.stats["aborted"] += len(streams)
            self._count_aborts(streams, "abort_requests")

    def abort_streams(self, streams: list[RequestStream], cause: str = "aborted") -> None:
        """Abort every still-live stream of *streams* in **one** ABORT message (n>1 children, beam
        search steps), as vLLM aborts a parent request's children; synchronous and idempotent."""
        live = [s for s in streams if self._streams.get(s.request_id) is s]
        if not live:
            return
        for stream in live:
            del self._streams[stream.request_id]
            self.balancer.done(stream.engine)
            stream.abort_cause = cause
            if stream._pending is None or not stream._pending.finished:
                stream._fail(EngineClosedError(f"request {stream.request_id} aborted: {cause}"))
        if self.state is ClientState.READY:
            self._send_aborts(live)
            self.stats["aborted"] += len(live)
            self._count_aborts(live, cause)
            log.debug("aborted %s (%s)", ", ".join(s.request_id for s in live), cause)

    def _abort(self, stream: RequestStream, cause: str) -> None:
        if self._streams.get(stream.request_id) is not stream:
            return
        del self._streams[stream.request_id]
        self.balancer.done(stream.engine)
        stream.abort_cause = cause
        if stream._pending is None or not stream._pending.finished:
            stream._fail(EngineClosedError(f"request {stream.request_id} aborted: {cause}"))
        if self.state is ClientState.READY:
            self._send(wire.abort_frames(self.balancer.identities[stream.engine], [stream.request_id]))
            self.stats["aborted"] += 1
            self._count_aborts([stream], cause)
            log.debug("aborted %s (%s)", stream.request_id, cause)

    def _send_aborts(self, streams: list[RequestStream]) -> None:
        """One ABORT per rank holding some of *streams* (vLLM's ``abort_requests_async`` by engine)."""
        identities = self.balancer.identities
        if len(identities) == 1:
            self._send(wire.abort_frames(identities[0], [s.request_id for s in streams]))
            return
        by_rank: dict[int, list[str]] = {}
        for stream in streams:
            by_rank.setdefault(stream.engine, []).append(stream.request_id)
        for index, ids in by_rank.items():
            self._send(wire.abort_frames(identities[index], ids))

    def _count_aborts(self, streams: list[RequestStream], cause: str) -> None:
        """Metrics for an ABORT just sent: a stop string's is a finished request ("stop", as vLLM's output
        processor counts it); any other is dropped from vLLM's series and counted in ours by cause."""
        metrics = self.metrics
        if metrics is None:
            return
        metrics.ours.count_abort(cause, len(streams))
        metrics.ours.open.set(len(self._streams))
        now = time.time() if cause == "stop string" else 0.0
        for stream in streams:
            st = stream.mstats
            if st is None:
                continue
            stream.mstats = None  # recorded once
            if cause == "stop string" and not st.prefilling:
                metrics.finish(st, wire.FinishReason.STOP, now)
            else:
                metrics.drop(st)

    @property
    def open_requests(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------------ utilities

    async def call_utility(self, method: str, *args: Any, timeout: float = 10.0) -> Any:
        """Run ``method(*args)`` in the engine and return its result.

        With several ranks it runs in every rank and the first rank's result is returned, as vLLM's
        ``DPLBAsyncMPClient.call_utility_async`` does (LoRA loads, sleep / wake, cache resets reach all).
        Raises :class:`UtilityCallError` on failure (any rank's) or after *timeout* seconds, and
        :class:`EngineDeadError` if the engine dies meanwhile. Cancellation forgets the call (a late
        reply is dropped).
        """
        return (await self.call_utility_all(method, *args, timeout=timeout))[0]

    async def call_utility_all(self, method: str, *args: Any, timeout: float = 10.0) -> list[Any]:
        """Run ``method(*args)`` in every managed rank; their results in rank order (see
        :meth:`call_utility` for errors, timeout and cancellation)."""
        self._check_usable()
        identities = self.balancer.identities
        calls = [(next(self._call_ids), _PendingCall()) for _ in identities]
        for call_id, pending in calls:
            self._calls[call_id] = pending
        try:
            for identity, (call_id, _) in zip(identities, calls, strict=True):
                self._send(wire.utility_frames(identity, self.config.client_index, call_id, method, args))
            with trio.move_on_after(timeout) as scope:
                for _, pending in calls:
                    await pending.done.wait()
            if scope.cancelled_caught:
                if len(calls) == 1:
                    raise UtilityCallError(f"utility call {method} got no answer within {timeout:g} s")
                silent = [self.balancer.start + i for i, (_, p) in enumerate(calls) if not p.done.is_set()]
                raise UtilityCallError(
                    f"utility call {method} got no answer from engine rank(s) {silent} within {timeout:g} s"
                )
        finally:
            for call_id, _ in calls:
                self._calls.pop(call_id, None)
        values = []
        for i, (_, pending) in enumerate(calls):
            if pending.error is not None:
                raise pending.error
            assert pending.result is not None
            if pending.result.failure_message:
                where = f"engine rank {self.balancer.start + i}: " if len(calls) > 1 else ""
                raise UtilityCallError(where + pending.result.failure_message)
            values.append(pending.result.value)
        return values

    # ------------------------------------------------------------------ internals

    def _check_usable(self) -> None:
        if self.state is ClientState.READY:
            return
        if self.state is ClientState.STARTING:
            raise EngineNotReadyError("the engine is still starting")
        raise self.error or EngineDeadError("the engine link is closed")

    def _send(self, frames: list[bytes]) -> None:
        if self._input is None:
            raise EngineClosedError("the engine link is closed")
        self._input.send_nowait(frames)

    async def _read_outputs(self, sock: TrioSocket) -> None:
        while True:
            wake: list[RequestStream] = []
            for frames in await sock.receive_batch():
                if frames[0] == wire.ENGINE_CORE_DEAD:
                    self._die(
                        EngineDeadError("the engine reported ENGINE_CORE_DEAD (it crashed; see its log)")
                    )
                    if not self.data_parallel:
                        return
                    continue  # keep reading: the probe naming the dead rank needs the others' replies
                try:
                    outputs = self._decode_outputs(frames[0])
                except Exception as exc:  # a frame we cannot read means we no longer know the state
                    self._die(EngineDeadError(f"undecodable engine output: {exc}"))
                    return
                self._route(outputs, frames[1:] or None, wake)
            await self._wake_in_slices(wake)

    async def _wake_in_slices(self, wake: list[RequestStream]) -> None:
        """Wake *wake*'s consumers, ``wake_slice`` per scheduler pass (see the module doc). Cancelled
        midway (the client is closing), the rest are never woken here: closing fails every stream."""
        step, budget = self.config.wake_slice, self.config.wake_pass_budget
        start = 0
        while start < len(wake):
            for stream in wake[start : start + step]:
                stream._wake()
            start += step
            if start < len(wake):
                # Let the woken consumers run, and the sockets be polled, before waking more; but when a
                # pass is slow, other work (a burst of new requests) crowds it: wake the rest at once.
                began = time.perf_counter()
                await trio.lowlevel.checkpoint()
                if time.perf_counter() - began > budget:
                    step = len(wake)

    def _route(
        self, outputs: wire.EngineCoreOutputs, aux: list[bytes] | None, wake: list[RequestStream]
    ) -> None:
        metrics = self.metrics
        if outputs.wave_complete is not None and self.coordinator is not None:
            self.coordinator.wave_complete(outputs.wave_complete)
        if outputs.scheduler_stats is not None:
            self.scheduler_stats = outputs.scheduler_stats
            if self.data_parallel and (self.coordinator is None or not self.coordinator.has_counts):
                self.balancer.scheduler_stats(outputs.engine_index, outputs.scheduler_stats)
            if metrics is not None:
                metrics.vllm.scheduler_stats(
                    outputs.scheduler_stats, metrics.vllm.engine(outputs.engine_index)
                )
        if metrics is not None and outputs.outputs:
            self._route_measured(outputs, aux, wake, metrics)
            return
        streams = self._streams
        for out in outputs.outputs:
            stream = streams.get(out.request_id)
            if stream is None:
                self.stats["late_outputs"] += 1
                continue
            finish = out.finish_reason
            delta = _delta(out, finish, aux)
            stream._track_weight_version(outputs.weight_version, len(out.new_token_ids))
            if finish is not None:
                del streams[out.request_id]
                self.balancer.done(stream.engine)
                self.stats["finished"] += 1
            if stream._deliver(delta):
                wake.append(stream)
        self._route_tail(outputs, wake)

    def _route_tail(self, outputs: wire.EngineCoreOutputs, wake: list[RequestStream]) -> None:
        streams = self._streams
        if outputs.finished_requests:
            # Safety net: engine-side finishes (errors, engine aborts) are also listed here.
            for rid in outputs.finished_requests:
                stream = streams.pop(rid, None)
                if stream is not None:
                    self.balancer.done(stream.engine)
                    if stream.mstats is not None and self.metrics is not None:
                        stream._engine_finished(wire.FinishReason.ABORT, time.time(), outputs.engine_index)
                    if stream._deliver(RequestDelta(token_ids=[], finish_reason=wire.FinishReason.ABORT)):
                        wake.append(stream)
        if outputs.utility_output is not None:
            result = wire.decode_utility_result(outputs.utility_output)
            pending = self._calls.get(result.call_id)
            if pending is not None:
                pending.result = result
                pending.done.set()

    def _route_measured(
        self,
        outputs: wire.EngineCoreOutputs,
        aux: list[bytes] | None,
        wake: list[RequestStream],
        metrics: Metrics,
    ) -> None:
        """:meth:`_route` with metrics: the same routing, plus vLLM's per-output and per-message stats
        (kept a separate copy so the unmeasured path pays nothing)."""
        series = metrics.vllm
        it = series.begin(outputs.engine_index, outputs.timestamp)
        observe = series.output
        ours = metrics.ours
        streams = self._streams
        # A decode step of a request (not its first output, no events) is the common case: inlined
        # here (vllm_series.VllmSeries.output does the same, and everything else).
        ts, itl_counts, itl_sum, generated = it.timestamp, it.itl_counts, 0.0, 0
        for out in outputs.outputs:
            stream = streams.get(out.request_id)
            if stream is None:
                self.stats["late_outputs"] += 1
                continue
            st = stream.mstats
            if st is not None:
                if st.prefilling or out.events:
                    observe(it, st, out)
                else:
                    n = len(out.new_token_ids)
                    generated += n
                    st.num_generation_tokens += n
                    itl = ts - st.last_token_ts
                    itl_counts[bisect_left(ITL_BUCKETS, itl)] += 1
                    itl_sum += itl
                    st.last_token_ts = ts
            finish = out.finish_reason
            delta = _delta(out, finish, aux)
            stream._track_weight_version(outputs.weight_version, len(out.new_token_ids))
            if finish is not None:
                del streams[out.request_id]
                self.balancer.done(stream.engine)
                self.stats["finished"] += 1
                ours.finished.inc()
                if st is not None:
                    stream._engine_finished(finish, it.now, outputs.engine_index)
            if stream._deliver(delta):
                wake.append(stream)
        it.generation += generated
        it.itl_sum += itl_sum
        series.end_iteration(it)
        outputs.outputs = []  # routed: the shared tail below sees only what is left
        self._route_tail(outputs, wake)
        ours.open.set(len(streams))

    async def _watch_disconnect(self, monitor: TrioSocket) -> None:
        # Attachment is one-shot: once registered, an engine socket disconnecting means the engine is gone.
        while True:
            event = parse_monitor_message(await monitor.receive())
            if event["event"] == zmq.EVENT_DISCONNECTED and self.state is ClientState.READY:
                what = "an engine rank" if self.data_parallel else "the engine"
                self._die(EngineDeadError(f"{what} disconnected (process exited or was killed)"))
                return

    async def _ping_loop(self) -> None:
        interval, timeout = self.config.ping_interval, self.config.ping_timeout
        if interval <= 0:
            return
        while self.state is ClientState.READY:
            await trio.sleep(interval)
            try:
                await self.call_utility("is_sleeping", timeout=timeout)
            except UtilityCallError as exc:
                self._die(EngineDeadError(f"the engine stopped answering: {exc}"))
                return
            except EngineError:
                return

    def _die(self, error: EngineError) -> None:
        if self.state in (ClientState.DEAD, ClientState.CLOSED):
            return
        log.error("engine link failed: %s", error)
        self.state = ClientState.DEAD
        self.error = error
        self._fail_all(error)
        self._ready.set()
        self._dead.set()

    async def _name_dead_ranks(self) -> None:
        """After the link failed: ask every rank ``is_sleeping`` (``rank_probe_timeout``); those that do not
        answer are the dead ones, logged and marked down in the metrics. The streams already failed."""
        pending = {}
        for index, identity in enumerate(self.balancer.identities):
            call_id = next(self._call_ids)
            pending[index] = call = _PendingCall()
            self._calls[call_id] = call
            try:
                self._send(
                    wire.utility_frames(identity, self.config.client_index, call_id, "is_sleeping", ())
                )
            except (EngineClosedError, trio.WouldBlock, trio.ClosedResourceError):
                pass
        with trio.move_on_after(self.config.rank_probe_timeout):
            for call in pending.values():
                await call.done.wait()
        start = self.balancer.start
        self.dead_ranks = [start + i for i, call in pending.items() if call.result is None]
        alive = [start + i for i, call in pending.items() if call.result is not None]
        log.error(
            "engine rank(s) %s dead (ranks %s still answer); the data-parallel group is torn down, as vLLM "
            "does: every request failed",
            self.dead_ranks or "?",
            alive or "none",
        )
        if self.metrics is not None:
            for rank in range(start, start + self.balancer.count):
                self.metrics.ours.rank_up(rank, rank not in self.dead_ranks)

    def _fail_all(self, error: BaseException) -> None:
        streams, self._streams = self._streams, {}
        self.balancer.inflight = [0] * self.balancer.count
        for stream in streams.values():
            stream._fail(error)
        for pending in self._calls.values():
            pending.error = error
            pending.done.set()

    def _shutdown(self) -> None:
        """Abort whatever is still open (one message), fail its streams, and mark the link closed."""
        live = list(self._streams)
        if live and self.state is ClientState.READY and self._input is not None:
            try:
                self._send_aborts(list(self._streams.values()))
                self.stats["aborted"] += len(live)
                self._count_aborts(list(self._streams.values()), "shutdown")
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass
        if self.state is not ClientState.DEAD:
            self.state = ClientState.CLOSED
            self.error = self.error or EngineClosedError("the engine link was shut down")
        self._fail_all(self.error or EngineClosedError("closed"))
        self._ready.set()


@attrs.define(eq=False)
class _PendingCall:
    done: trio.Event = attrs.Factory(trio.Event)
    result: wire.UtilityResult | None = None
    error: BaseException | None = None
