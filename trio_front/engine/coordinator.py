"""The frontend's link to vLLM's DP coordinator (``vllm/v1/engine/coordinator.py``), when one runs.

vLLM's supervisor starts a coordinator for DP > 1 and names its front-end XPUB to the frontend
(``--coordinator-address``, also the registration's ``dp_stats_address``). We connect an XSUB, send
``b"\\x01"`` (subscribe to everything) and receive msgpack ``[counts | nil, current_wave, engines_running]``:
``counts`` (``[[waiting, running, kv_cache_usage], ...]`` for all ranks, ~every 100 ms when they change)
feed the :class:`~trio_front.engine.dp.Balancer`; the wave state drives MoE's lock-step protocol:

* every request carries ``current_wave`` (the client sets it from :attr:`CoordinatorLink.current_wave`);
* a request sent while the engines are paused (not ``engines_running``) is announced upstream as msgpack
  ``[chosen engine identity, current_wave]`` so that the coordinator broadcasts START_DP_WAVE to the other
  ranks (vLLM 0.32's ``FIRST_REQ`` path; it sends the identity bytes, as we do);
* an output's ``wave_complete`` marks the engines paused again.

Cancellation of :meth:`CoordinatorLink.run` closes the socket; nothing else needs undoing.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import trio
import zmq

from .dp import Balancer
from .zmq_trio import TrioSocket, make_socket

log = logging.getLogger("trio_front.engine")

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class CoordinatorLink:
    """Subscription to the coordinator's published load counts and wave state (see the module doc)."""

    def __init__(self, address: str, balancer: Balancer) -> None:
        self.address = address
        self.balancer = balancer
        self.current_wave = 0
        #: MoE waves: whether the ranks are stepping (a request while paused must wake them)
        self.engines_running = False
        #: whether counts arrived (until then the ranks' own SchedulerStats feed the balancer)
        self.has_counts = False
        self.messages = 0
        self._sock: TrioSocket | None = None

    async def run(
        self, ctx: zmq.Context, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, subscribe, and apply every published message until cancelled. ``started()`` once the
        subscription is queued. An undecodable message is logged and skipped (stats are advisory)."""
        sock = make_socket(ctx, zmq.XSUB, connect=self.address)
        self._sock = sock
        try:
            sock.send_nowait([b"\x01"])
            log.info("subscribed to the DP coordinator at %s", self.address)
            task_status.started()
            while True:
                for frames in await sock.receive_batch():
                    try:
                        self.apply(_decoder.decode(frames[0]))
                    except (msgspec.DecodeError, ValueError, TypeError) as exc:
                        log.warning("unreadable DP coordinator message: %s", exc)
        finally:
            self._sock = None
            sock.close()

    def apply(self, message: Any) -> None:
        """One published ``[counts | None, current_wave, engines_running]``."""
        counts, wave, running = message
        self.messages += 1
        self.current_wave = int(wave)
        self.engines_running = bool(running)
        if counts is not None:
            self.balancer.coordinator_counts(counts)
            self.has_counts = True

    def first_request(self, identity: bytes) -> None:
        """A request was just sent to *identity*: if the ranks are paused, ask for a new wave."""
        if self.engines_running or self._sock is None:
            return
        self.engines_running = True
        try:
            self._sock.send_nowait([_encoder.encode((identity, self.current_wave))])
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass  # the rank that got the request starts the wave itself too

    def wave_complete(self, wave: int) -> None:
        """An output said wave *wave* finished: the ranks are paused until the next request."""
        self.engines_running = False  # as vLLM: the wave number itself comes from the coordinator
