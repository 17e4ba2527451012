"""An in-process server for API tests: the mock engine and trio-front's ASGI app under hypercorn, all in
the test's trio loop, so tests can look at the engine client and the mock's event log directly."""

from __future__ import annotations

import secrets
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import hypercorn.config
import hypercorn.trio
import pytest
import trio

from trio_front.api.app import App
from trio_front.engine.mock import MockEngine, MockEngineConfig, run_mock_engine
from trio_front.server import FrontendConfig, build_app

MODEL = Path(__file__).resolve().parents[2] / "models" / "tiny-llama"


def engine_ipc_addr() -> str:
    """A fresh handshake address: IPC, so no free-port race with other processes on the machine."""
    return f"ipc://{tempfile.gettempdir()}/trio-front-test-{secrets.token_hex(6)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@attrs.define
class Server:
    app: App
    mock: MockEngine
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def adds(self) -> list[str]:
        return [e["request_id"] for e in self.mock.log.named("add")]

    def aborts(self) -> list[str]:
        return [e["request_id"] for e in self.mock.log.named("abort")]

    async def settle(self) -> None:
        """Wait until nothing is in flight (aborts sent and received)."""
        with trio.fail_after(10):
            while self.app.engine.open_requests or self.mock.live_request_ids:
                await trio.sleep(0.01)
        await trio.sleep(0.05)


async def start_server(nursery: trio.Nursery, *, frontend: dict | None = None, **mock_options) -> Server:
    """*frontend*: extra :class:`FrontendConfig` fields (e.g. ``tool_call_parser``); the rest configures
    the mock engine."""
    port = free_port()
    engine_addr = engine_ipc_addr()
    app = build_app(
        FrontendConfig(
            engine_addr=engine_addr,
            model=Path(mock_options.pop("model", MODEL)),
            ping_interval=0,
            keep_alive_interval=mock_options.pop("keep_alive_interval", None),
            **(frontend or {}),
        )
    )
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 1
    await nursery.start(hypercorn.trio.serve, app, config)
    mock = await nursery.start(
        run_mock_engine, MockEngineConfig(engine_addr, **{"step_ms": 2, **mock_options})
    )
    with trio.fail_after(10):
        await app.engine.wait_ready()
    return Server(app, mock, port)


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    options = getattr(request, "param", {})
    async with trio.open_nursery() as nursery:
        yield await start_server(nursery, **options)
        nursery.cancel_scope.cancel()
