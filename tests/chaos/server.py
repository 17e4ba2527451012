"""Servers for the chaos tests: the app under hypercorn configured as ``serve`` configures it
(:func:`trio_front.listen.hypercorn_config`), with the mock engine either in the test's trio loop (its event
log and live ids readable directly) or as a ``trio-front mock-engine`` subprocess that a test can SIGKILL
or SIGSTOP (its event log is a JSON-lines file).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import hypercorn.trio
import trio

from tests.api.conftest import MODEL, engine_ipc_addr, free_port
from tests.api.ws_fixtures import WSServer
from trio_front.api.app import App
from trio_front.api.ws import WSOptions
from trio_front.engine.mock import MockEngineConfig, run_mock_engine
from trio_front.listen import hypercorn_config
from trio_front.server import FrontendConfig, build_app


async def _serve_app(
    nursery: trio.Nursery, engine_addr: str, frontend: dict[str, Any] | None, ws: WSOptions | None
) -> tuple[App, int]:
    port = free_port()
    fields = {"ping_interval": 0, "port": port, **(frontend or {})}
    config = FrontendConfig(engine_addr=engine_addr, model=MODEL, **fields)
    app = build_app(config)
    if ws is not None:
        app.state.ws_options = ws
    hconfig = hypercorn_config(config)
    hconfig.graceful_timeout = 1  # tests cancel the nursery; no drain to wait for
    await nursery.start(hypercorn.trio.serve, app, hconfig)
    return app, port


@asynccontextmanager
async def storm_server(
    *, frontend: dict[str, Any] | None = None, ws: WSOptions | None = None, **mock_options: Any
) -> AsyncIterator[WSServer]:
    """The app with the in-process mock engine (MockEngineConfig fields in *mock_options*, default step
    2 ms); *frontend* adds FrontendConfig fields (e.g. ``http_timeout_keep_alive``)."""
    async with trio.open_nursery() as nursery:
        engine_addr = engine_ipc_addr()
        app, port = await _serve_app(nursery, engine_addr, frontend, ws)
        mock = await nursery.start(
            run_mock_engine, MockEngineConfig(engine_addr, **{"step_ms": 2, **mock_options})
        )
        with trio.fail_after(10):
            await app.engine.wait_ready()
        yield WSServer(app, mock, port)
        nursery.cancel_scope.cancel()


@attrs.define
class EngineProcess:
    """A ``trio-front mock-engine`` subprocess and its event log file."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def events(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text() if self.log_path.exists() else ""
        # the last line may be half-written while the engine runs
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == event]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> None:
        """Kill it whatever its state (a stopped process gets SIGCONT first, so it can die) and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.send_signal(signal.SIGCONT)
        self.proc.wait(timeout=10)


@attrs.define
class SubprocessServer:
    app: App
    engine: EngineProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def subprocess_engine_server(
    *, frontend: dict[str, Any] | None = None, step_ms: float = 20, max_num_seqs: int = 512
) -> AsyncIterator[SubprocessServer]:
    """The app in this trio loop, its engine a mock-engine subprocess attached over IPC."""
    with tempfile.TemporaryDirectory(prefix="tf-chaos-") as tmp:
        log_path = Path(tmp) / "engine-events.jsonl"
        async with trio.open_nursery() as nursery:
            engine_addr = engine_ipc_addr()
            app, port = await _serve_app(nursery, engine_addr, frontend, None)
            command = [
                sys.executable, "-m", "trio_front.cli", "mock-engine", "--engine-addr", engine_addr,
                "--step-ms", str(step_ms), "--max-num-seqs", str(max_num_seqs), "--event-log", str(log_path),
            ]  # fmt: skip
            proc = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ}
            )
            engine = EngineProcess(proc, log_path)
            try:
                with trio.fail_after(30):  # the subprocess imports trio, zmq and msgspec first
                    await app.engine.wait_ready()
                yield SubprocessServer(app, engine, port)
            finally:
                engine.stop()
                nursery.cancel_scope.cancel()
