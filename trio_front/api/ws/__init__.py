"""WebSocket plumbing shared by the Realtime API and the Responses API's WebSocket mode.

* :mod:`.options` — per-server limits (:class:`WSOptions`) and counters (:class:`WSStats`);
* :mod:`.outbox` — the bounded, coalescing queue of outgoing events of one socket;
* :mod:`.socket` — one accepted socket: reader, writer, stuck-send watchdog, all in one nursery;
* :mod:`.transport` — closing the TCP connection under a send that hypercorn will not let us cancel.
"""

from .options import WSOptions, WSStats, configure_websockets, ws_options, ws_stats
from .outbox import Outbox
from .socket import Rejected, Socket, SocketHandler, serve_socket

__all__ = [
    "Outbox",
    "Rejected",
    "Socket",
    "SocketHandler",
    "WSOptions",
    "WSStats",
    "configure_websockets",
    "serve_socket",
    "ws_options",
    "ws_stats",
]
