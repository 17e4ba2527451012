"""CORS (``--allowed-origins``, ``--allowed-methods``, ``--allowed-headers``, ``--allow-credentials``).

vLLM installs starlette's ``CORSMiddleware`` always (with its defaults: no origin, every method, every
header, no credentials), with ``allow_origin_regex=None``, ``allow_private_network=False``, no exposed
headers and ``max_age=600``; this is that middleware's behaviour, message for message (starlette 1.10):

* a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered here, never
  by the app: 200 ``OK``, or 400 ``Disallowed CORS origin, method, headers, private-network`` (the
  failures found), both plain text with ``Vary`` and the allowed methods, headers and max age;
* any other HTTP response gets ``Access-Control-Allow-Origin`` (``*``, or the request's origin when it is
  listed or credentials are allowed), ``Access-Control-Allow-Credentials`` when configured, and
  ``Vary: Origin`` where the answer depends on the origin (starlette adds it to every response that does
  not echo an origin, with or without ``Origin``).

WebSockets pass untouched (browsers do not apply CORS to them).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..http import Headers, Receive, Scope, Send
from .plumbing import Message, first, rebind, set_header, values

ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY")
SAFELISTED_HEADERS = {"Accept", "Accept-Language", "Content-Language", "Content-Type"}
MAX_AGE = 600

_PREFLIGHT_VARY = (
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
    "Access-Control-Request-Private-Network"
)


class CORS:
    """ASGI layer: starlette's ``CORSMiddleware`` with vLLM's arguments."""

    def __init__(  # type: ignore[no-untyped-def]
        self,
        app,
        *,
        allow_origins: Iterable[str] = (),
        allow_methods: Iterable[str] = ("*",),
        allow_headers: Iterable[str] = ("*",),
        allow_credentials: bool = False,
    ) -> None:
        origins = tuple(allow_origins)
        methods = tuple(allow_methods)
        headers = tuple(allow_headers)
        if "*" in methods:
            methods = ALL_METHODS
        self.app = app
        self.allow_origins = origins
        self.allow_methods = methods
        self.allow_all_origins = "*" in origins
        self.allow_all_headers = "*" in headers
        self.allow_credentials = allow_credentials
        self.preflight_explicit_allow_origin = not self.allow_all_origins or allow_credentials

        simple: Headers = []
        if self.allow_all_origins:
            simple.append((b"access-control-allow-origin", b"*"))
        if allow_credentials:
            simple.append((b"access-control-allow-credentials", b"true"))
        self.simple_headers = simple

        # Insertion order is starlette's (a dict there); the names are lower-cased on the way out.
        preflight: dict[str, str] = {"Vary": _PREFLIGHT_VARY}
        if not self.preflight_explicit_allow_origin:
            preflight["Access-Control-Allow-Origin"] = "*"
        preflight["Access-Control-Allow-Methods"] = ", ".join(methods)
        preflight["Access-Control-Max-Age"] = str(MAX_AGE)
        listed = sorted(SAFELISTED_HEADERS | set(headers))
        if listed and not self.allow_all_headers:
            preflight["Access-Control-Allow-Headers"] = ", ".join(listed)
        if allow_credentials:
            preflight["Access-Control-Allow-Credentials"] = "true"
        self.preflight_headers = preflight
        self.allow_headers = [name.lower() for name in listed]

    def is_allowed_origin(self, origin: str) -> bool:
        return self.allow_all_origins or origin in self.allow_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = scope["headers"]
        raw_origin = first(request_headers, b"origin")
        origin = None if raw_origin is None else raw_origin.decode("latin-1")
        if (
            origin is not None
            and scope["method"] == "OPTIONS"
            and first(request_headers, b"access-control-request-method") is not None
        ):
            await self._preflight(request_headers, origin, send)
            return

        async def forward(_owner: object, message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self._simple_headers(list(message.get("headers", ())), origin)
            await send(message)

        await self.app(scope, receive, rebind(forward, send))

    def _simple_headers(self, headers: Headers, origin: str | None) -> Headers:
        """starlette's ``CORSMiddleware.send`` on a response's headers (*headers* is a copy: the app may
        send the same list with every response)."""
        if origin is not None:
            for name, value in self.simple_headers:
                set_header(headers, name, value)
        if origin is not None and (
            (self.allow_all_origins and self.allow_credentials)
            or (not self.allow_all_origins and self.is_allowed_origin(origin))
        ):
            set_header(headers, b"access-control-allow-origin", origin.encode("latin-1"))
        set_header(headers, b"vary", b", ".join([*values(headers, b"vary"), b"Origin"]))
        return headers

    async def _preflight(self, request_headers: Headers, origin: str, send: Send) -> None:
        method = (first(request_headers, b"access-control-request-method") or b"").decode("latin-1")
        raw_requested = first(request_headers, b"access-control-request-headers")
        requested = None if raw_requested is None else raw_requested.decode("latin-1")
        private_network = first(request_headers, b"access-control-request-private-network")

        headers = dict(self.preflight_headers)
        failures: list[str] = []
        if self.is_allowed_origin(origin):
            if self.preflight_explicit_allow_origin:
                headers["Access-Control-Allow-Origin"] = origin
        else:
            failures.append("origin")
        if method not in self.allow_methods:
            failures.append("method")
        if self.allow_all_headers and requested is not None:
            headers["Access-Control-Allow-Headers"] = requested  # mirrored: every header is allowed
        elif requested is not None:
            for name in requested.lower().split(","):
                if name.strip() not in self.allow_headers:
                    failures.append("headers")
                    break
        if private_network is not None:  # vLLM never allows private-network access
            failures.append("private-network")

        status, body = (400, "Disallowed CORS " + ", ".join(failures)) if failures else (200, "OK")
        encoded = body.encode()
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        raw.append((b"content-length", str(len(encoded)).encode()))
        raw.append((b"content-type", b"text/plain; charset=utf-8"))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": encoded})
