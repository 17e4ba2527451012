"""HTTP/WebSocket layers in front of the routes: API keys, CORS, ``X-Request-Id``, the access log.

:func:`wrap` builds the chain once from :class:`HTTPOptions`; :class:`~trio_front.api.app.App` sends
every ASGI call through it. Each layer is a plain ASGI 3 callable in its own module.
"""

from __future__ import annotations

import attrs

from ..http import Receive, Scope, Send


@attrs.frozen
class HTTPOptions:
    """vLLM's HTTP flags, same meaning and defaults (``launchers/cli_args.py``)."""

    api_keys: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    allowed_methods: tuple[str, ...] = attrs.field(default=("*",), converter=tuple)
    allowed_headers: tuple[str, ...] = attrs.field(default=("*",), converter=tuple)
    allow_credentials: bool = False
    root_path: str | None = None
    enable_request_id_headers: bool = False
    access_log: bool = True
    h11_max_header_count: int = 256


def wrap(app, options: HTTPOptions):  # type: ignore[no-untyped-def]
    """The ASGI callable that runs *options*' layers and then *app*."""

    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)

    return call
