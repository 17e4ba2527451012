"""Limits and counters for the WebSocket APIs; one of each lives on the :class:`~..state.ServerState`.

``trio-front run --send-timeout`` sets :attr:`WSOptions.send_timeout`; ``/metrics`` exports
:class:`WSStats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # the socket module imports this one
    from .socket import Socket


@attrs.frozen
class WSOptions:
    """What one WebSocket may cost the server.

    * ``send_timeout``: a single outgoing message that stays unsent this long (the client stopped
      reading and the TCP buffers are full) marks the socket as stuck: its responses are cancelled (engine
      requests aborted) and its TCP connection is reset.
    * ``max_outbox``: queued outgoing events past which the server stops *reading* the socket (the
      client's own sends then back up). Deltas of a running response never count against it: they
      coalesce into the last queued delta instead.
    * ``max_conversation_items`` / ``max_conversation_chars``: the Realtime conversation held per socket.
    * ``max_stored_responses``: Responses WebSocket mode keeps this many finished responses per socket
      as ``previous_response_id`` targets (oldest dropped first).
    * ``max_streams``: Responses WebSocket mode runs at most this many responses at once per socket (one
      per ``stream_id``).
    """

    send_timeout: float = 30.0
    max_outbox: int = 256
    max_conversation_items: int = 4096
    max_conversation_chars: int = 8 * 1024 * 1024
    max_stored_responses: int = 64
    max_streams: int = 8


class _Mirrored:
    """A WSStats counter that also moves its ``/metrics`` series (bound with :meth:`WSStats.bind`) by
    the same amount, so ``stats.x += 1`` at the call sites stays the whole story."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: WSStats | None, owner: type) -> int:
        if obj is None:
            return 0
        return obj._counts.get(self.name, 0)

    def __set__(self, obj: WSStats, value: int) -> None:
        delta = value - obj._counts.get(self.name, 0)
        obj._counts[self.name] = value
        metric = obj._sinks.get(self.name)
        if metric is not None and delta:
            metric.inc(delta)


@attrs.define
class WSStats:
    """Counters for tests and metrics (all sockets of one server), and what the server's shutdown needs
    to reach them: the open sockets and whether the server drains (:mod:`.shutdown`)."""

    open_sockets = _Mirrored()
    running_responses = _Mirrored()
    sockets_total = _Mirrored()
    responses_total = _Mirrored()
    cancelled_total = _Mirrored()
    stuck_closed_total = _Mirrored()
    coalesced_deltas_total = _Mirrored()
    _counts: dict[str, int] = attrs.field(factory=dict, repr=False, eq=False, alias="_counts")
    _sinks: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False, alias="_sinks")
    #: the most events any closed socket ever had queued at once
    outbox_high_water: int = 0
    #: the sockets open now (a socket adds itself once accepted and removes itself when it ends)
    sockets: set[Socket] = attrs.field(factory=set, repr=False, eq=False)
    #: the server is shutting down: no new upgrades, no new responses on open sockets
    draining: bool = False

    def bind(self, sinks: dict[str, Any]) -> None:
        """Mirror the counters into *sinks* (field name → prometheus_client metric with ``inc``), from
        their current values on."""
        for name, metric in sinks.items():
            value = self._counts.get(name, 0)
            if value:
                metric.inc(value)
        self._sinks = dict(sinks)
