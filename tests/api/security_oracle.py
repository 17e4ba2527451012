"""vLLM 0.32's own HTTP middleware over synthetic ASGI requests (engine venv only; run by test_security.py).

The stack is the one ``init_entrypoints_middleware`` registers (CORS, API keys, ``X-Request-Id``) for the
given flags, rebuilt from the FastAPI app's ``user_middleware`` around a trivial app, so it is vLLM's
classes with vLLM's arguments in vLLM's order, without FastAPI's routing.

stdin: ``{"cases": [{"flags": {...}, "scope": {"type", "method", "path", "headers": [[k, v], ...],
"subprotocols"?}}, ...]}``; stdout (last line): one answer per case: ``{"reached": bool, "messages":
[{"type", "status"?, "headers"?, "body"?}, ...]}`` (bytes as latin-1 strings). The trivial app answers
HTTP with 200, ``content-type: application/json``, ``vary: Accept-Encoding`` and ``{}``, and accepts a
WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from argparse import Namespace


def stack_for(flags: dict, inner):  # type: ignore[no-untyped-def]
    from fastapi import FastAPI
    from vllm.entrypoints.serve.middleware.register import init_entrypoints_middleware

    args = Namespace(
        allowed_origins=flags.get("allowed_origins", []),
        allow_credentials=flags.get("allow_credentials", False),
        allowed_methods=flags.get("allowed_methods", ["*"]),
        allowed_headers=flags.get("allowed_headers", ["*"]),
        api_key=flags.get("api_key"),
        enable_request_id_headers=flags.get("enable_request_id_headers", False),
        middleware=[],
    )
    app = FastAPI()
    init_entrypoints_middleware(args, app, ())
    stack = inner
    for middleware in reversed(app.user_middleware):  # the first entry is the outermost
        stack = middleware.cls(stack, *middleware.args, **middleware.kwargs)
    return stack


async def run(case: dict) -> dict:
    reached = False
    messages: list[dict] = []

    async def inner(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal reached
        reached = True
        if scope["type"] == "http":
            headers = [(b"content-type", b"application/json"), (b"vary", b"Accept-Encoding")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"{}"})
        else:
            await receive()
            await send({"type": "websocket.accept"})

    raw = case["scope"]
    scope = {
        "type": raw["type"],
        "path": raw["path"],
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in raw["headers"]],
        "client": ("127.0.0.1", 1234),
        "http_version": "1.1",
        "extensions": {"websocket.http.response": {}} if raw["type"] == "websocket" else {},
    }
    if raw["type"] == "http":
        scope["method"] = raw["method"]
    else:
        scope["subprotocols"] = raw.get("subprotocols", [])
    incoming = [
        {"type": "http.request", "body": b"", "more_body": False}
        if raw["type"] == "http"
        else {"type": "websocket.connect"}
    ]

    async def receive():  # type: ignore[no-untyped-def]
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)

    async def send(message):  # type: ignore[no-untyped-def]
        out = {"type": message["type"]}
        if "status" in message:
            out["status"] = message["status"]
        if "headers" in message:
            out["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in message["headers"]]
        if "body" in message:
            out["body"] = bytes(message["body"]).decode("latin-1")
        if "subprotocol" in message:
            out["subprotocol"] = message["subprotocol"]
        messages.append(out)

    await stack_for(case["flags"], inner)(scope, receive, send)
    return {"reached": reached, "messages": messages}


def main() -> None:
    os.environ.pop("VLLM_API_KEY", None)
    job = json.loads(sys.stdin.read())
    out = [asyncio.run(run(case)) for case in job["cases"]]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
