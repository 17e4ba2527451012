"""The mock engine's trio layer: handshake, sockets, the step clock, and controls for tests.

It connects like ``vllm serve --headless``: a DEALER (identity = rank as 2 bytes little-endian) to the
frontend's handshake ROUTER, HELLO, INIT, then a DEALER to *every* advertised input and a PUSH to every
output, the registration map on each input, and READY. Either side may start first (libzmq queues the
HELLO until the frontend binds).

Then the step loop: while there is no work it sleeps until input arrives; otherwise each step it
handles every queued input message (ADD / ABORT / UTILITY, stamped with their receive time), sends
utility replies and request-scoped errors at once, computes one token per running request, waits out
the rest of ``step_ms`` (the "GPU time") and sends one message per client. Aborts that arrive during
that wait do not stop the step's outputs — late outputs, as with the real engine.

Cancellation of :meth:`MockEngine.run` is a clean shutdown like SIGTERM: sockets close, no sentinel.
:meth:`MockEngine.die` is a crash (ENGINE_CORE_DEAD on every output, then the same), ``die(sentinel=False)``
a ``kill -9``; :meth:`MockEngine.wedge` makes it go silent while staying connected.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import msgspec
import trio
import zmq

from .. import wire
from ..zmq_trio import TrioSocket, make_socket
from .core import MockCore, MockEngineConfig
from .events import EventLog
from .script import load_script

log = logging.getLogger("trio_front.mock_engine")

#: Linger of the handshake and output sockets, as in vLLM (so READY / ENGINE_CORE_DEAD get out).
HANDSHAKE_LINGER_MS = 5000
OUTPUT_LINGER_MS = 4000
#: How long a dying engine stays connected after sending ENGINE_CORE_DEAD (seconds).
DEAD_EXIT_DELAY = 0.1


class MockEngine:
    """One mock engine (DP rank ``config.rank``). Start with ``await nursery.start(engine.run)``.

    For tests in the same trio run: :attr:`log` (``log.events``, ``await log.wait_for(...)``),
    :attr:`core` (``running``, ``waiting``, ``stats``, ``input_dead``...), :attr:`live_request_ids`,
    :attr:`ready` (set once READY was sent), :attr:`state`.
    """

    def __init__(self, config: MockEngineConfig, *, zmq_context: zmq.Context | None = None) -> None:
        self.config = config
        self.log = EventLog(config.event_log, keep=config.keep_events)
        self.core = MockCore(config, self.log)
        if config.script is not None:
            self.core.script = load_script(config.script, vocab=config.vocab)
        self.state = "connecting"  # → "ready" → "dead" | "stopped"
        self.ready = trio.Event()
        self.death_reason: str | None = None
        self._ctx = zmq_context or zmq.Context.instance()
        self._identity = wire.engine_identity(config.rank)
        self._inputs: list[TrioSocket] = []
        self._outputs: list[TrioSocket] = []
        self._inbox: collections.deque[tuple[float, list[bytes]]] = collections.deque()
        self._wake = trio.Event()
        self._unwedged = trio.Event()
        self._unwedged.set()
        self._cancel: trio.CancelScope | None = None
        self._output_linger = 0

    # ------------------------------------------------------------------ inspection

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.log.events

    @property
    def live_request_ids(self) -> set[str]:
        return self.core.live_request_ids

    @property
    def queued_inputs(self) -> int:
        """Input messages received but not yet handled (they pile up while wedged)."""
        return len(self._inbox)

    @property
    def wedged(self) -> bool:
        return not self._unwedged.is_set()

    # ------------------------------------------------------------------ controls

    def die(self, reason: str = "killed", *, sentinel: bool = True) -> None:
        """Crash now: send ENGINE_CORE_DEAD on every output (unless *sentinel* is false, or the output
        side is already dead), then close everything; :meth:`run` returns. Synchronous, idempotent."""
        if self.state in ("dead", "stopped"):
            return
        sent = False
        if sentinel and not self.core.output_dead:
            for sock in self._outputs:
                try:
                    sock.send_nowait([wire.ENGINE_CORE_DEAD])
                    sent = True
                except (trio.WouldBlock, trio.ClosedResourceError):
                    pass
        self._output_linger = OUTPUT_LINGER_MS if sent else 0
        self.state = "dead"
        self.death_reason = reason
        self.log.record("dead", reason=reason, sentinel=sent)
        log.error("mock engine died: %s", reason)
        if self._cancel is not None:
            self._cancel.cancel()

    def wedge(self) -> None:
        """Stop answering (no outputs, no utility replies) while staying connected; input still queues."""
        self._unwedged = trio.Event()

    def unwedge(self) -> None:
        self._unwedged.set()

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[MockEngine] = trio.TASK_STATUS_IGNORED) -> None:
        """Handshake, then serve until cancelled or dead. ``started(self)`` fires once the handshake
        socket is connecting (the HELLO is queued), i.e. before the frontend has to exist."""
        handshake = make_socket(
            self._ctx, zmq.DEALER, connect=self.config.engine_addr, identity=self._identity
        )
        try:
            with trio.CancelScope() as cancel:
                self._cancel = cancel
                handshake.send_nowait([wire.encode({"status": "HELLO", "local": False, "headless": True})])
                task_status.started(self)
                init = await self._receive_init(handshake)
                self._connect(init)
                registration = wire.encode(self.config.registration())
                for sock in self._inputs:
                    sock.send_nowait([registration])
                handshake.send_nowait([wire.encode({"status": "READY", "local": False, "headless": True})])
                handshake.close(linger=HANDSHAKE_LINGER_MS)
                self.state = "ready"
                self.log.record("ready", inputs=init.addresses.inputs, outputs=init.addresses.outputs)
                self.ready.set()
                async with trio.open_nursery() as nursery:
                    for sock in self._inputs:
                        nursery.start_soon(self._read_input, sock)
                    nursery.start_soon(self._step_loop)
            if self.state == "dead" and self._output_linger:
                # A crashing engine process takes a moment to exit after queueing ENGINE_CORE_DEAD; keep
                # the inputs connected meanwhile so the frontend sees the sentinel before the disconnect.
                await trio.sleep(DEAD_EXIT_DELAY)
        finally:
            if self.state not in ("dead",):
                self.state = "stopped"
            handshake.close()
            for sock in self._inputs:
                sock.close()
            for sock in self._outputs:
                sock.close(linger=self._output_linger)
            self.log.close()

    async def _receive_init(self, handshake: TrioSocket) -> wire.HandshakeInit:
        while True:
            with trio.move_on_after(15) as idle:
                frames = await handshake.receive()
            if idle.cancelled_caught:
                log.info("mock engine: still waiting for INIT from %s", self.config.engine_addr)
                continue
            return msgspec.convert(wire.decode_any(frames[-1]), wire.HandshakeInit)

    def _connect(self, init: wire.HandshakeInit) -> None:
        addresses = init.addresses
        if len(addresses.inputs) != len(addresses.outputs) or not addresses.inputs:
            raise ValueError(f"INIT must name matching input/output lists, got {addresses}")
        for address in addresses.inputs:
            self._inputs.append(make_socket(self._ctx, zmq.DEALER, connect=address, identity=self._identity))
        for address in addresses.outputs:
            self._outputs.append(make_socket(self._ctx, zmq.PUSH, connect=address))
        self.core.num_clients = len(self._outputs)

    async def _read_input(self, sock: TrioSocket) -> None:
        while True:
            batch = await sock.receive_batch()
            received_at = time.monotonic()
            self._inbox.extend((received_at, frames) for frames in batch)
            self._wake.set()

    async def _step_loop(self) -> None:
        core, step_s = self.core, self.config.step_ms / 1000.0
        while True:
            await self._unwedged.wait()
            if not self._inbox and not core.has_work():
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            started = trio.current_time()
            inbox, self._inbox = self._inbox, collections.deque()
            for received_at, frames in inbox:
                core.handle(frames, received_at)
            self._flush()
            if core.death is not None:
                self.die(core.death)
                return
            if core.has_work():
                core.step()
                await trio.sleep_until(started + step_s)
                await self._unwedged.wait()  # a wedge during the step holds its outputs back
                self._flush()
                if core.death is not None:
                    self.die(core.death)
                    return
            else:
                await trio.lowlevel.checkpoint()

    def _flush(self) -> None:
        outbox, self.core.outbox = self.core.outbox, []
        for client, payload in outbox:
            self._outputs[client].send_nowait([payload])


async def run_mock_engine(
    config: MockEngineConfig, *, task_status: trio.TaskStatus[MockEngine] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a :class:`MockEngine` until cancelled or dead; ``await nursery.start(run_mock_engine, cfg)``
    returns the engine once its handshake socket is connecting."""
    await MockEngine(config).run(task_status=task_status)
