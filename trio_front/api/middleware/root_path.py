"""``--root-path``: the app is mounted under a prefix that a proxy may or may not strip.

The scope gets ``root_path``, and a path that starts with it (followed by ``/`` or nothing) is routed
without it, as starlette's ``get_route_path``: behind a proxy that strips the prefix the app sees
``/v1/models``, behind one that does not it sees ``/prefix/v1/models``, and both reach ``/v1/models``.
Without the flag, the server's own ``root_path`` (hypercorn's setting) is honoured the same way. The
layers outside this one (the access log, the header limit) see the path as the client sent it.
"""

from __future__ import annotations

from ..http import Receive, Scope, Send


class RootPath:
    """ASGI layer: sets ``scope["root_path"]`` (when *root_path* is given) and strips it from the path."""

    def __init__(self, app, root_path: str | None) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.root_path = root_path or ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        root = self.root_path or scope.get("root_path") or ""
        if root and scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            scope = {**scope, "root_path": root}  # hypercorn keeps its own scope: ours is a copy
            if path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
                scope["path"] = path[len(root) :] or "/"
        await self.app(scope, receive, send)
