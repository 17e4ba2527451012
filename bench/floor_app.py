"""The ``hypercorn-floor`` frontend: what hypercorn-on-trio costs with (almost) no application at all.

The issue sets a floor: "hypercorn-on-trio serves a hello-world at ~1.6–1.9k req/s per core and costs ~50 µs
per SSE event; our per-request cost should approach that floor, not multiply it". This app measures that
floor side by side with the real frontends, in the same run, under the same load generator.

It speaks just enough of ``/v1/completions`` for the load generator, with trio-front's hypercorn settings
and trio-front's ASGI message pattern, and no engine, no tokenizer, no validation:

* the body is read and parsed with orjson (``max_tokens``, ``stream``), as any server must;
* a streamed response is ``http.response.start``, one ``http.response.body`` per token but the last, and
  the last chunk, the usage event and ``[DONE]`` in one final body message (trio-front's ``hold=True``);
  a token is due at each tick of one 10 ms clock that wakes every stream at once, as the mock engine's
  step does (a stream that falls behind skips ticks: it sends one token per tick it sees, never a batch);
* each token is the text ``"a"``.

So for W1 (1 output token) it is exactly trio-front's hypercorn traffic: a POST with a 1024-id body, a
response start and one final body message. For W2 it streams every event through ASGI, i.e. without
trio-front's direct socket writes (``api/direct_body.py``): a floor for *hypercorn's* streaming path.

With ``--direct`` (the ``hypercorn-floor-direct`` frontend) a stream is written through trio-front's own
:class:`~trio_front.api.http.SSEWriter`, i.e. the middle of the body goes straight to the socket
(``api/direct_body.py``) and the last chunk, the usage event and ``[DONE]`` leave in one final ASGI message:
trio-front's streaming path with nothing else of trio-front, one task per stream woken per 10 ms step. That
is the W2 floor of this design (hypercorn, trio, a task per request, one ``send()`` per token); what
trio-front spends above it is the engine link, the detokenizer and the response building.

With ``--engine-addr ADDR`` (the ``hypercorn-floor-engine`` frontend) the tokens come from the pair's
engine instead of the clock: trio-front's engine link (:class:`~trio_front.engine.client.EngineClient`,
owning the handshake at *ADDR*), its disconnect hook (``api/disconnect.py``: hypercorn's own connection
task cancels the request and sends the ABORT when it reads the client's close) and its ``SSEWriter``.
Nothing else of trio-front: the prompt's token ids go to the engine as they came (no validation, no
tokenizer, no detokenizer: each token is the text ``"a"``), no middleware, no request model. That is the
abort-latency floor of this design (W3): hypercorn, trio, the engine link and one task per request.

Run as ``python bench/floor_app.py --port N [--host H] [--direct | --engine-addr ADDR]``;
``bench/peers.py`` starts it as the frontend of a pair (without ``--engine-addr``, the pair's mock engine is
started too and simply never attached).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import hypercorn.config
import hypercorn.trio
import orjson
import trio

STEP_S = 0.010


class Ticker:
    """One clock for every stream: :meth:`tick` returns at the next 10 ms step."""

    def __init__(self) -> None:
        self._event = trio.Event()

    async def run(self) -> None:
        while True:
            await trio.sleep(STEP_S)
            event, self._event = self._event, trio.Event()
            event.set()

    async def tick(self) -> None:
        await self._event.wait()


TICKER = Ticker()
#: ``--direct``: stream through trio-front's SSEWriter (direct socket writes) instead of ASGI messages
DIRECT = False
#: ``--engine-addr``: the engine link (a trio-front ``EngineClient``) the tokens come from, else None
ENGINE: Any = None
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
JSON_HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        async with trio.open_nursery() as nursery:  # the clock (or the engine link) lives as long as the app
            if ENGINE is None:
                nursery.start_soon(TICKER.run)
            else:
                await nursery.start(ENGINE.run)
            while True:
                kind = (await receive())["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    nursery.cancel_scope.cancel()
                    return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/v1/completions" and scope["method"] == "POST":
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if ENGINE is None:
            await _completion(orjson.loads(body), send)
        else:
            xid = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
            await _engine_completion(orjson.loads(body), xid, receive, send)
    elif path == "/v1/models":
        await _json(send, 200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})
    elif path == "/health":
        await _json(send, 200, {})
    else:
        await _json(send, 404, {"error": {"message": "not found"}})


async def _completion(request: dict[str, Any], send: Any) -> None:
    n = int(request.get("max_tokens") or 16)
    head = {"id": "cmpl-floor", "object": "text_completion", "created": int(time.time()), "model": "tiny"}
    usage = {"prompt_tokens": len(request.get("prompt") or ()), "completion_tokens": n}
    usage["total_tokens"] = usage["prompt_tokens"] + n
    if not request.get("stream"):
        for _ in range(n):
            await TICKER.tick()
        choice = {"index": 0, "text": "a" * n, "finish_reason": "length"}
        await _json(send, 200, {**head, "choices": [choice], "usage": usage})
        return
    if DIRECT:
        await _direct_stream(n, head, usage, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    for _ in range(n - 1):
        await TICKER.tick()
        event = {**head, "choices": [{"index": 0, "text": "a", "finish_reason": None}]}
        await send({"type": "http.response.body", "body": _sse(event), "more_body": True})
    await TICKER.tick()
    last = {**head, "choices": [{"index": 0, "text": "a", "finish_reason": "length"}]}
    tail = _sse(last) + _sse({**head, "choices": [], "usage": usage}) + b"data: [DONE]\n\n"
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _direct_stream(n: int, head: dict[str, Any], usage: dict[str, Any], send: Any) -> None:
    from trio_front.api.http import SSEWriter, chunk_encoder  # only this mode needs trio-front

    sse = SSEWriter(send)
    encode = chunk_encoder(head)
    await sse.start()
    for i in range(n):
        await TICKER.tick()
        last = i == n - 1
        choice = {"index": 0, "text": "a", "finish_reason": "length" if last else None}
        await sse.event(encode(choice), hold=last)
    await sse.event({**head, "choices": [], "usage": usage}, hold=True)
    await sse.done()


async def _engine_completion(request: dict[str, Any], xid: str, receive: Any, send: Any) -> None:
    """A completion of the engine's tokens: ADD, each delta an SSE event (direct writes), ABORT when the
    client leaves (hypercorn's task, at once) or on the way out. The engine request id carries the client's
    ``X-Request-Id`` *xid*, as vLLM's and trio-front's do (the bench matches the engine's events by it)."""
    from trio_front.api.disconnect import on_disconnect, run_with_disconnect
    from trio_front.api.http import SSEWriter, chunk_encoder
    from trio_front.engine import wire
    from trio_front.engine.client import EngineClosedError, EngineNotReadyError

    prompt = request.get("prompt")
    if not isinstance(prompt, list):
        await _json(send, 400, {"error": {"message": "the engine floor takes token-id prompts only"}})
        return
    stream = bool(request.get("stream"))
    n = int(request.get("max_tokens") or 16)
    kind = wire.OutputKind.DELTA if stream else wire.OutputKind.FINAL_ONLY
    params = wire.SamplingParams(max_tokens=n, temperature=0.0, output_kind=kind)
    head = {"id": "cmpl-floor", "object": "text_completion", "created": int(time.time()), "model": "tiny"}
    usage = {"prompt_tokens": len(prompt), "completion_tokens": 0, "total_tokens": len(prompt)}

    async def work() -> None:
        async with ENGINE.generate(prompt, params, id_prefix=f"cmpl-{xid}" if xid else "cmpl") as out:
            on_disconnect(out.abort)
            if not stream:
                text, reason = "", None
                async for delta in out:
                    text += "a" * len(delta.token_ids)
                    reason = delta.finish_reason
                usage["completion_tokens"] = len(text)
                usage["total_tokens"] = usage["prompt_tokens"] + len(text)
                choice = {"index": 0, "text": text, "finish_reason": str(reason) if reason else None}
                await _json(send, 200, {**head, "choices": [choice], "usage": usage})
                return
            sse = SSEWriter(send)
            encode = chunk_encoder(head)
            await sse.start()
            async for delta in out:
                usage["completion_tokens"] += len(delta.token_ids)
                last = delta.finish_reason is not None
                reason = str(delta.finish_reason) if last else None
                choice = {"index": 0, "text": "a" * len(delta.token_ids), "finish_reason": reason}
                await sse.event(encode(choice), hold=last)
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            await sse.event({**head, "choices": [], "usage": usage}, hold=True)
            await sse.done()

    try:
        await run_with_disconnect(receive, work, send)
    except EngineClosedError:
        # The disconnect's abort failed the stream while its task was already runnable (a delta had
        # woken it): the abort went out; nothing is left to send.
        return
    except EngineNotReadyError as exc:
        await _json(send, 503, {"error": {"message": str(exc)}})


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


async def _json(send: Any, status: int, payload: Any) -> None:
    body = orjson.dumps(payload)
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--direct", action="store_true", help="stream through trio-front's SSEWriter")
    parser.add_argument("--engine-addr", help="stream the engine's tokens (handshake address to bind)")
    args = parser.parse_args()
    global DIRECT, ENGINE
    DIRECT = args.direct
    if args.engine_addr:
        from trio_front.engine.client import EngineClient, LinkConfig

        ENGINE = EngineClient(LinkConfig(args.engine_addr))
    config = hypercorn.config.Config()
    # trio-front's settings (trio_front/server.py serve_frontend)
    config.bind = [f"{args.host}:{args.port}"]
    config.backlog = 2048
    config.keep_alive_timeout = 75
    config.accesslog = None
    trio.run(hypercorn.trio.serve, app, config)


if __name__ == "__main__":
    main()
