"""HTTP/WebSocket layers in front of the routes: API keys, CORS, ``X-Request-Id``, the access log.

:func:`wrap` builds the chain once from :class:`HTTPOptions`; :class:`~trio_front.api.app.App` sends
every ASGI call through it. Each layer is a plain ASGI 3 callable in its own module. From the outside in:

1. :mod:`.access_log` (``access_log``): sees every request as the client sent it, refusals included;
2. :mod:`.header_limit` (``h11_max_header_count``): 431 before anything else looks at the request;
3. :mod:`.root_path` (``root_path``): routes ``/prefix/v1/...`` and ``/v1/...`` alike;
4. :mod:`.request_id` (``enable_request_id_headers``): outside the key check, as in vLLM, so a 401 has
   the header too;
5. :mod:`.cors` (always, as vLLM installs it): outside the key check, unlike vLLM (where a 401 carries no
   CORS headers and a browser sees an opaque network error), so an allowed origin can read the 401;
   preflights never reach the key check in either order (``OPTIONS`` is not guarded);
6. :mod:`.auth` (``api_keys``): innermost, right before the routes.

A layer that is off is not in the chain at all. Layers that look at responses wrap ``send`` so that the
app still finds hypercorn's connection under it (:func:`.plumbing.rebind`).
"""

from __future__ import annotations

import attrs

from .access_log import AccessLog
from .auth import Auth
from .cors import CORS
from .header_limit import HeaderLimit
from .request_id import RequestId
from .root_path import RootPath


def _root_path(value: str | None) -> str | None:
    """``/prefix`` (a trailing ``/`` dropped: it would never match a path); ``None`` for none."""
    if not value:
        return None
    if not value.startswith("/"):
        raise ValueError(f"root_path {value!r} must start with '/'")
    return value.rstrip("/") or None


def _positive(_instance: object, attribute: attrs.Attribute, value: int) -> None:  # type: ignore[type-arg]
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


@attrs.frozen
class HTTPOptions:
    """vLLM's HTTP flags, same meaning and defaults (``launchers/cli_args.py``)."""

    #: any one of them opens the guarded routes; empty strings are dropped (as vLLM drops them)
    api_keys: tuple[str, ...] = attrs.field(default=(), converter=lambda keys: tuple(k for k in keys if k))
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    allowed_methods: tuple[str, ...] = attrs.field(default=("*",), converter=tuple)
    allowed_headers: tuple[str, ...] = attrs.field(default=("*",), converter=tuple)
    allow_credentials: bool = False
    root_path: str | None = attrs.field(default=None, converter=_root_path)
    enable_request_id_headers: bool = False
    access_log: bool = True
    h11_max_header_count: int = attrs.field(default=256, validator=_positive)


def wrap(app, options: HTTPOptions):  # type: ignore[no-untyped-def]
    """The ASGI callable that runs *options*' layers and then *app* (see the module's docstring)."""
    chain = app
    if options.api_keys:
        chain = Auth(chain, options.api_keys)
    chain = CORS(
        chain,
        allow_origins=options.allowed_origins,
        allow_methods=options.allowed_methods,
        allow_headers=options.allowed_headers,
        allow_credentials=options.allow_credentials,
    )
    if options.enable_request_id_headers:
        chain = RequestId(chain)
    chain = RootPath(chain, options.root_path)
    chain = HeaderLimit(chain, options.h11_max_header_count)
    if options.access_log:
        chain = AccessLog(chain)
    return chain


__all__ = ["HTTPOptions", "wrap"]
