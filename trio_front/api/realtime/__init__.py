"""OpenAI's Realtime API for text models, at ``/v1/realtime?model=…`` (WebSocket).

Unmodified clients work: ``client.realtime.connect(model=…)`` of the ``openai`` SDK (GA protocol) and
``client.beta.realtime.connect`` (beta names, chosen by the ``OpenAI-Beta: realtime=v1`` header).

Not vLLM's ``/v1/realtime``: vLLM serves speech-to-text there (``input_audio_buffer.*`` in,
``transcription.delta``/``done`` out, its own event names). This endpoint serves *text* models with
OpenAI's Realtime events and ``output_modalities: ["text"]``; audio events are answered with an error.

Supported client events: ``session.update`` (with function ``tools`` and ``tool_choice``),
``conversation.item.create`` (system/user/assistant text messages, ``function_call`` and
``function_call_output`` items, ``previous_item_id``), ``conversation.item.delete``,
``conversation.item.truncate`` (text items: only ``audio_end_ms: 0``, which clears the text),
``conversation.item.retrieve``, ``response.create`` (with per-response ``instructions``,
``max_output_tokens``, sampling fields, ``tools``, ``tool_choice``, ``conversation: "none"``, ``input``
items or ``item_reference``s, ``metadata``) and ``response.cancel``.
Server events: ``session.created``/``updated``, ``conversation.item.added``/``done`` (beta
``conversation.item.created``), ``conversation.item.deleted``/``truncated``/``retrieved``, the
``response.*`` sequence of :mod:`.response` (message and ``function_call`` items), and ``error``.

Tool calls and reasoning come from the shared assistant layer (``trio_front.assistant``), exactly as
for chat completions: ``tool_choice`` ``auto`` needs ``--enable-auto-tool-choice`` and a
``--tool-call-parser``; ``required`` and a named function constrain the output with a grammar.

The conversation lives as long as the socket and is rendered through the model's chat template for
each response (session ``instructions`` first, as a system message). One response runs at a time, as a
task with its own cancel scope inside the socket's nursery (:mod:`trio_front.api.ws.socket`):
``response.cancel`` aborts its engine request at once and ``response.done`` reports ``cancelled`` with
the usage so far; closing the socket aborts whatever runs. A client that stops reading is cut off after
``WSOptions.send_timeout`` (see :mod:`trio_front.api.ws`).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from ..errors import APIError
from ..http import Receive, Scope, Send
from ..lora import refuse_adapter
from ..state import ServerState
from ..ws import Rejected, Socket, serve_socket
from .handler import RealtimeHandler
from .protocol import BETA, dialect_for

#: what browsers offer for the beta dialect (OpenAI's realtime-console sends it next to the key)
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"

__all__ = ["handle_websocket"]


async def handle_websocket(state: ServerState, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ``/v1/realtime`` socket: 404 for an unknown ``model``, 503 while the engine is not ready."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    model = query.get("model", [None])[0]
    # A browser cannot set the OpenAI-Beta header: it offers the "openai-beta.realtime-v1" subprotocol.
    beta_offered = BETA_SUBPROTOCOL in scope.get("subprotocols", ())
    dialect = BETA if beta_offered else dialect_for(scope.get("headers", []))

    def check() -> None:
        try:
            state.check_model(model)
            refuse_adapter(state, model, "Realtime")
            state.check_engine()
        except APIError as exc:
            raise Rejected(exc) from None

    def make_handler(sock: Socket) -> RealtimeHandler:
        return RealtimeHandler(sock, state, dialect)

    await serve_socket(state, scope, receive, send, make_handler, check=check)
