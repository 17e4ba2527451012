"""An in-process server configured by :func:`trio_front.listen.hypercorn_config`, as ``serve`` runs it.

``conftest.start_server`` builds its own hypercorn Config (plain TCP, hypercorn's defaults); the TLS,
Unix-socket, inherited-fd and connection-limit tests need the frontend's own, so they start the server
here: the mock engine, the app and hypercorn all in the test's trio loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import hypercorn.trio
import trio

from trio_front.api.app import App
from trio_front.engine.mock import MockEngine, MockEngineConfig, mock_token, run_mock_engine
from trio_front.listen import hypercorn_config
from trio_front.server import FrontendConfig, build_app

from .conftest import MODEL, engine_ipc_addr, free_port

VOCAB = 4096


@attrs.define
class Listening:
    app: App
    mock: MockEngine
    config: FrontendConfig
    #: what hypercorn reports it serves, e.g. ``https://127.0.0.1:PORT`` or ``http://unix:/path``
    binds: list[str]

    @property
    def url(self) -> str:
        return self.binds[0]

    def expected_text(self, prompt_ids: list[int], n: int) -> str:
        """The mock engine's answer (its token rule) to a token-id prompt, *n* tokens long."""
        return self.app.state.tokenizer.decode([mock_token(prompt_ids, i, VOCAB) for i in range(n)])


async def start_listening(
    nursery: trio.Nursery, frontend: dict[str, Any] | None = None, **mock_options: Any
) -> Listening:
    """Serve with ``hypercorn_config(FrontendConfig(**frontend))`` (a free 127.0.0.1 port unless
    *frontend* says where); the rest are MockEngineConfig fields (default step 2 ms)."""
    engine_addr = engine_ipc_addr()
    fields = {"port": free_port(), **(frontend or {})}
    config = FrontendConfig(engine_addr=engine_addr, model=MODEL, ping_interval=0, **fields)
    app = build_app(config)
    hconfig = hypercorn_config(config)
    hconfig.graceful_timeout = 1  # tests cancel the nursery; no drain to wait for
    binds = await nursery.start(hypercorn.trio.serve, app, hconfig)
    mock = await nursery.start(
        run_mock_engine, MockEngineConfig(engine_addr, **{"step_ms": 2, **mock_options})
    )
    with trio.fail_after(10):
        await app.engine.wait_ready()
    return Listening(app, mock, config, binds)


@asynccontextmanager
async def listening(frontend: dict[str, Any] | None = None, **mock_options: Any) -> AsyncIterator[Listening]:
    """``async with listening({"ssl_certfile": ...}) as server:`` (see :func:`start_listening`)."""
    async with trio.open_nursery() as nursery:
        yield await start_listening(nursery, frontend, **mock_options)
        nursery.cancel_scope.cancel()
