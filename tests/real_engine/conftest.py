"""Fixtures for tests against the real vLLM 0.32 CPU engine (scripts/setup_engine.sh builds it).

Engine start-up costs ~20 s, and the headless engine's attachment is one-shot, so these fixtures keep one
engine and one :class:`EngineClient` per module. The client runs in its own trio loop on a thread (a
"portal"); tests are plain functions that call ``portal.run(async_fn, *args)``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from trio_front.engine.client import EngineClient, LinkConfig
from trio_front.engine.launch import (
    EngineNotInstalledError,
    EngineProcess,
    engine_env,
    find_engine_python,
    pick_free_port,
)

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "tiny-llama"
T = TypeVar("T")


def require_engine() -> None:
    try:
        find_engine_python()
    except EngineNotInstalledError as exc:
        if os.environ.get("CI"):
            raise  # CI installs the engine; missing it there is a failure, not a skip
        pytest.skip(f"vLLM engine venv not installed: {exc}")
    if not (MODEL / "model.safetensors").exists():
        pytest.skip("tiny model weights missing: run scripts/build_tiny_model.py")


class Portal:
    """A trio loop on a thread, owning a nursery for the lifetime of the fixture."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._started = threading.Event()
        self._stop: trio.Event | None = None
        self.nursery: trio.Nursery | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self.error: BaseException | None = None

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self._started.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()
        except BaseException as exc:  # surfaced by close()
            self.error = exc
            self._started.set()

    def __enter__(self) -> Portal:
        self._thread.start()
        self._started.wait()
        return self

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def start(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        async def starter() -> Any:
            assert self.nursery is not None
            return await self.nursery.start(fn, *args)

        return self.run(starter)

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


def start_engine(port: int, **kwargs: Any) -> EngineProcess:
    return EngineProcess.headless(MODEL, "127.0.0.1", port, **kwargs).start()


def open_client(portal: Portal, port: int, **config: Any) -> EngineClient:
    client = EngineClient(LinkConfig(f"tcp://127.0.0.1:{port}", **config))
    portal.start(client.run)
    return client


def wait_ready(portal: Portal, client: EngineClient, engine: EngineProcess, timeout: float = 240) -> None:
    async def wait() -> None:
        with trio.fail_after(timeout):
            while True:
                with trio.move_on_after(1):
                    await client.wait_ready()
                    return
                if engine.returncode is not None:
                    raise RuntimeError(f"engine exited early:\n{engine.read_log(tail=3000)}")

    portal.run(wait)


@pytest.fixture(scope="module")
def portal() -> Iterator[Portal]:
    with Portal() as p:
        yield p


@pytest.fixture(scope="module")
def engine_first(portal: Portal) -> Iterator[tuple[EngineClient, EngineProcess]]:
    """Engine started *before* the client binds: its HELLO must wait in libzmq and still be answered."""
    require_engine()
    port = pick_free_port()
    env = engine_env()
    env["VLLM_LOGGING_LEVEL"] = "DEBUG"  # to see the line the engine logs right after sending HELLO
    engine = start_engine(port, env=env)
    try:
        deadline = time.monotonic() + 180
        while "Waiting for init message from front-end" not in engine.read_log():
            if engine.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"engine never sent HELLO:\n{engine.read_log(tail=3000)}")
            time.sleep(0.2)
        client = open_client(portal, port)
        wait_ready(portal, client, engine)
        yield client, engine
    finally:
        engine.terminate()


#: The engine's (and trio-front's) structured-outputs config for grammar tests. The engine ignores
#: per-request whitespace options; without ``disable_any_whitespace`` a random-weights model pads JSON
#: with whitespace until ``max_tokens``.
STRUCTURED_CONFIG = '{"backend": "xgrammar", "disable_any_whitespace": true}'


@pytest.fixture(scope="session")
def structured_stack() -> Iterator[str]:
    """``trio-front run`` on a real engine started with :data:`STRUCTURED_CONFIG`; yields the ``/v1``
    base URL (served name ``tiny``). Shared by every module that needs grammars on the real engine."""
    import sys

    from trio_front.engine.launch import wait_for_http_health

    require_engine()
    engine_port, http_port = pick_free_port(), pick_free_port()
    ours = EngineProcess(
        [
            sys.executable,
            "-m",
            "trio_front.cli",
            "run",
            "--engine-addr",
            f"tcp://127.0.0.1:{engine_port}",
            "--model",
            str(MODEL),
            "--served-model-name",
            "tiny",
            "--port",
            str(http_port),
            "--structured-outputs-config",
            STRUCTURED_CONFIG,
        ],
        env=None,
    )
    ours.env.pop("VLLM_HOST_IP", None)
    engine = None
    try:
        ours.start()
        engine = start_engine(engine_port, extra_args=("--structured-outputs-config", STRUCTURED_CONFIG))
        wait_for_http_health(f"http://127.0.0.1:{http_port}/health", 300, process=ours)
        yield f"http://127.0.0.1:{http_port}/v1"
    finally:
        for proc in (ours, engine):
            if proc is not None:
                proc.terminate()
        if ours.returncode not in (0, None, -15):
            print(ours.read_log(tail=3000))
        if engine is not None:
            print(engine.read_log(tail=2000))
