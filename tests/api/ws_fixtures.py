"""Fixtures and helpers for the WebSocket tests (Realtime, Responses WebSocket mode, flow control).

The whole server runs in the test's trio loop (mock engine + hypercorn + the app), so a test can look at
the engine client, the mock's event log and the WebSocket counters directly. Clients: trio-websocket
(trio-native), the official ``openai`` SDK in a worker thread (its sync client; its async client is
asyncio-only), and a raw wsproto client for the stuck-reader test (it needs a tiny receive buffer).
"""

from __future__ import annotations

import gc
import socket as stdlib_socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import hypercorn.config
import hypercorn.trio
import orjson
import trio
import trio_websocket
import wsproto
import wsproto.events

from trio_front.api.app import App
from trio_front.api.ws import WSOptions, WSStats
from trio_front.engine.mock import MockEngine, MockEngineConfig, run_mock_engine
from trio_front.server import FrontendConfig, build_app

from .conftest import MODEL, engine_ipc_addr, free_port


@attrs.define
class WSServer:
    app: App
    mock: MockEngine
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def stats(self) -> WSStats:
        return self.app.state.ws_stats

    def adds(self) -> list[str]:
        return [e["request_id"] for e in self.mock.log.named("add")]

    def ends(self) -> dict[str, list[str]]:
        """request id → the ``finish``/``abort`` events the mock saw for it."""
        ends: dict[str, list[str]] = {}
        for e in self.mock.log.events:
            if e["event"] in ("finish", "abort"):
                ends.setdefault(e["request_id"], []).append(e["event"])
        return ends

    async def settle(self, timeout: float = 15) -> None:
        """Wait until no socket, response or engine request is left."""
        with trio.fail_after(timeout):
            while (
                self.app.engine.open_requests
                or self.mock.live_request_ids
                or self.stats.open_sockets
                or self.stats.running_responses
            ):
                await trio.sleep(0.01)
        await trio.sleep(0.05)

    def assert_every_request_ended_once(self) -> None:
        ends = self.ends()
        for rid in self.adds():
            assert len(ends.get(rid, [])) == 1, f"{rid}: {ends.get(rid)}"
        assert not self.mock.live_request_ids
        assert self.app.engine.open_requests == 0


async def start_ws_server(
    nursery: trio.Nursery,
    *,
    ws: WSOptions | None = None,
    ping_interval: float | None = None,
    keep_alive_interval: float | None = None,
    frontend: dict[str, Any] | None = None,
    **mock_options: Any,
) -> WSServer:
    """Mock engine + app under hypercorn on port 0-ish; *ws* sets the WebSocket limits, *ping_interval*
    hypercorn's WebSocket pings, the rest are MockEngineConfig fields (default step 2 ms)."""
    port = free_port()
    engine_addr = engine_ipc_addr()
    config_ = FrontendConfig(
        engine_addr=engine_addr,
        model=MODEL,
        ping_interval=0,
        keep_alive_interval=keep_alive_interval,
        **(frontend or {}),  # e.g. tool_call_parser
    )
    app = build_app(config_)
    if ws is not None:
        app.state.ws_options = ws
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 1
    config.backlog = 1024
    config.websocket_ping_interval = ping_interval
    config.accesslog = None
    await nursery.start(hypercorn.trio.serve, app, config)
    options = {"step_ms": 2, **mock_options}
    mock = await nursery.start(run_mock_engine, MockEngineConfig(engine_addr, **options))
    with trio.fail_after(10):
        await app.engine.wait_ready()
    return WSServer(app, mock, port)


@asynccontextmanager
async def running_server(**options: Any) -> AsyncIterator[WSServer]:
    """``async with running_server(ws=WSOptions(...), step_ms=...) as server:`` (see start_ws_server)."""
    async with trio.open_nursery() as nursery:
        yield await start_ws_server(nursery, **options)
        nursery.cancel_scope.cancel()


class Client:
    """A trio-websocket client that speaks JSON events."""

    def __init__(self, conn: trio_websocket.WebSocketConnection) -> None:
        self.conn = conn

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.conn.send_message(event if isinstance(event, str) else orjson.dumps(event).decode())

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        with trio.fail_after(timeout):
            return orjson.loads(await self.conn.get_message())

    async def until(self, kind: str, timeout: float = 10) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Receive until an event of type *kind*; return it and everything received before it."""
        seen: list[dict[str, Any]] = []
        with trio.fail_after(timeout):
            while True:
                event = await self.recv(timeout)
                if event["type"] == kind:
                    return event, seen
                seen.append(event)


def open_client(url: str, **kwargs: Any):  # type: ignore[no-untyped-def]
    return trio_websocket.open_websocket_url(url, **kwargs)


def count_tasks() -> int:
    """All tasks alive in this trio run (walks the task tree from the root)."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def collect() -> None:
    for _ in range(3):
        gc.collect()


class RawClient:
    """A wsproto client on a socket with a tiny receive buffer: it sends, and reads only when told to.

    trio-websocket cannot set ``SO_RCVBUF`` before connecting, and a default receive buffer plus the
    server's send buffer hold megabytes on loopback, which would make the stuck-reader test slow."""

    def __init__(self, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        self.stream = stream
        self.ws = ws

    @classmethod
    async def connect(cls, port: int, path: str, *, rcvbuf: int = 4096) -> RawClient:
        sock = trio.socket.socket()
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(ws.send(wsproto.events.Request(host="127.0.0.1", target=path)))
        with trio.fail_after(10):
            while True:
                ws.receive_data(await stream.receive_some(4096))
                for event in ws.events():
                    if isinstance(event, wsproto.events.AcceptConnection):
                        return cls(stream, ws)
                    raise AssertionError(f"handshake failed: {event}")

    async def send(self, event: dict[str, Any]) -> None:
        await self.stream.send_all(self.ws.send(wsproto.events.TextMessage(orjson.dumps(event).decode())))

    async def read_all(self) -> tuple[list[dict[str, Any]], bool]:
        """Read until the server closes or resets the connection; return the events and whether it was
        a reset (RST) rather than an orderly close."""
        events: list[dict[str, Any]] = []
        reset = False
        partial: list[str] = []
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                reset = True
                break
            if not data:
                break
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, wsproto.events.TextMessage):
                    partial.append(event.data)
                    if event.message_finished:
                        events.append(orjson.loads("".join(partial)))
                        partial.clear()
        return events, reset
