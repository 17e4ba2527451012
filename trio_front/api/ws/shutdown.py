"""The WebSockets' part of a server shutdown (``server.py::serve_frontend`` drives it).

1. :func:`begin_drain`: new upgrades get 503 and the protocols refuse new responses on open sockets
   (:attr:`~.socket.Socket.draining`), while the responses already running go on: the server's drain waits
   for them (``WSStats.running_responses``) up to ``--shutdown-timeout``.
2. The server aborts what is left (one ABORT for all engine requests); the responses it cuts end with
   their final events.
3. :func:`close_all`: every open socket sends what its responses queued, then a close frame with 1001
   (going away), so clients see a clean close rather than a cut connection (1006); it returns when every
   socket has ended or after *timeout* (a client that stopped reading; hypercorn's last deadline then
   resets its connection, see :mod:`.socket`).
"""

from __future__ import annotations

import trio

from .options import WSStats

#: RFC 6455: "an endpoint is going away, such as a server going down"
GOING_AWAY = 1001


def begin_drain(stats: WSStats) -> None:
    """Refuse new sockets and new responses from now on; running responses are not touched."""
    stats.draining = True


async def close_all(stats: WSStats, timeout: float, *, code: int = GOING_AWAY) -> int:
    """Close every open socket with *code* once its responses have ended; wait up to *timeout* seconds for
    them to end. Returns how many were still open at the deadline (0 when all closed). Cancelling the wait
    leaves the sockets closing on their own."""
    begin_drain(stats)
    for sock in list(stats.sockets):
        sock.go_away(code)
    with trio.move_on_after(timeout):
        while stats.sockets:  # noqa: ASYNC110 (shutdown only, a handful of polls)
            await trio.sleep(0.01)
    return len(stats.sockets)
