"""vLLM's ``--enable-scale-out`` routes: render (OpenAI request → ``GenerateRequest``), token-in/token-out
generate, and abort by request id (``vllm/entrypoints/scale_out/``).

Every route exists whatever the flag says: without ``--enable-scale-out`` each answers vLLM's 403
``PermissionDeniedError`` (``factories.py``), before reading anything of the request. With the flag, the
routes vLLM has but trio-front does not implement (Messages / Responses render, derender) answer 501 naming
themselves. Handlers take ``(state, body, send, headers)`` like every POST route (``api/app.py``) and run in
the request's cancel scope, so a client disconnect aborts what they started.
"""

from __future__ import annotations

from trio_front.api.errors import APIError
from trio_front.api.http import Headers, Send
from trio_front.api.state import ServerState

from . import generate, render

DISABLED_MESSAGE = (
    "Scale-out endpoints are disabled. Restart vllm serve with --enable-scale-out to enable them."
)

#: vLLM routes trio-front does not implement (they still answer 403 without the flag, as vLLM's do).
UNIMPLEMENTED = (
    "/v1/messages/render",
    "/v1/responses/render",
    "/v1/chat/completions/derender",
    "/v1/completions/derender",
)


def check_enabled(state: ServerState) -> None:
    """vLLM's 403 unless the server runs with ``--enable-scale-out``."""
    if not state.enable_scale_out:
        raise APIError(403, DISABLED_MESSAGE, type="PermissionDeniedError")


def _gated(handler: generate.Handler) -> generate.Handler:
    async def gated(state: ServerState, body: bytes, send: Send, headers: Headers) -> None:
        check_enabled(state)
        await handler(state, body, send, headers)

    return gated


def _unimplemented(path: str) -> generate.Handler:
    async def handler(state: ServerState, _body: bytes, _send: Send, _headers: Headers) -> None:
        check_enabled(state)
        raise APIError(501, f"POST {path} is not supported by trio-front", type="NotImplementedError")

    return handler


#: ``path -> handler`` for ``App.post_routes`` (all POST).
ROUTES: dict[str, generate.Handler] = {
    "/v1/chat/completions/render": _gated(render.render_chat),
    "/v1/completions/render": _gated(render.render_completions),
    "/inference/v1/generate": _gated(generate.handle_generate),
    "/inference/v1/abort_requests": _gated(generate.handle_abort_requests),
    **{path: _unimplemented(path) for path in UNIMPLEMENTED},
}

#: The generate route, for ``/load`` counting (vLLM decorates it with ``load_aware_call``).
LOAD_TRACKED = frozenset({"/inference/v1/generate"})
