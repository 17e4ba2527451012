"""OpenAI's Responses API, stateless subset: ``POST /v1/responses`` (JSON or SSE) and WebSocket mode
(``GET /v1/responses`` upgraded), for text input and text output.

* :mod:`.request` — what is accepted and refused;
* :mod:`.run` — one response and its event sequence (shared by SSE and WebSocket);
* :mod:`.http` — the POST endpoint;
* :mod:`.websocket` — WebSocket mode, with ``previous_response_id`` held per socket.
"""

from .http import handle_post
from .websocket import handle_websocket

__all__ = ["handle_post", "handle_websocket"]
