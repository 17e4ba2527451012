"""Limits and counters for the WebSocket APIs; one of each lives on the :class:`~..state.ServerState`.

``trio-front run --send-timeout`` sets :attr:`WSOptions.send_timeout`; ``/metrics`` exports
:class:`WSStats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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


@attrs.define
class WSStats:
    """Counters for tests and metrics (all sockets of one server), and what the server's shutdown needs
    to reach them: the open sockets and whether the server drains (:mod:`.shutdown`)."""

    open_sockets: int = 0
    running_responses: int = 0
    sockets_total: int = 0
    responses_total: int = 0
    cancelled_total: int = 0
    stuck_closed_total: int = 0
    coalesced_deltas_total: int = 0
    #: the most events any closed socket ever had queued at once
    outbox_high_water: int = 0
    #: the sockets open now (a socket adds itself once accepted and removes itself when it ends)
    sockets: set[Socket] = attrs.field(factory=set, repr=False, eq=False)
    #: the server is shutting down: no new upgrades, no new responses on open sockets
    draining: bool = False
