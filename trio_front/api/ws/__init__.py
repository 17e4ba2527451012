"""WebSocket plumbing shared by the Realtime API and the Responses API's WebSocket mode.

* :mod:`.options` — per-server limits (:class:`WSOptions`) and counters (:class:`WSStats`);
* :mod:`.outbox` — the bounded, coalescing queue of outgoing events of one socket;
* :mod:`.socket` — one accepted socket: reader, writer, stuck-send watchdog, all in one nursery;

Flow control in one paragraph: response tasks never wait for the network — they push into the socket's
:class:`Outbox`, where their text deltas merge while the client lags (so a response holds a handful of
events and at most its own text); the reader stops reading client events while the outbox holds
``WSOptions.max_outbox`` events; one writer task sends; a send blocked for ``WSOptions.send_timeout``
(default 30 s) closes the socket: responses cancelled, engine requests aborted, TCP connection reset.

Keep-alives: none at the application level. WebSocket pings are hypercorn's job
(``Config.websocket_ping_interval``, off by default): set it (e.g. to ``--keep-alive-interval``) so
proxies do not cut sockets that are idle during a long prefill; clients answer pings on their own.
"""

from .options import WSOptions, WSStats
from .outbox import Outbox
from .socket import Rejected, Socket, SocketHandler, serve_socket

__all__ = [
    "Outbox",
    "Rejected",
    "Socket",
    "SocketHandler",
    "WSOptions",
    "WSStats",
    "serve_socket",
]
