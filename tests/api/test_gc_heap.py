"""The start-up heap is frozen once the engine is ready, and the opt-in collector trace (``gc_heap.py``)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import httpx
import pytest
import trio

from trio_front import gc_heap
from trio_front.engine.mock import MockEngineConfig, run_mock_engine
from trio_front.server import FrontendConfig, serve_frontend

from .conftest import MODEL, engine_ipc_addr, free_port


@pytest.fixture(autouse=True)
def _unfrozen():  # type: ignore[no-untyped-def]
    """A frozen heap is never collected: give the test process its collector back."""
    gc.unfreeze()
    yield
    gc.unfreeze()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_freeze_moves_survivors_out_and_later_garbage_is_still_collected() -> None:
    assert gc.get_freeze_count() == 0
    assert gc_heap.freeze_startup_heap() == gc.get_freeze_count() > 1000
    garbage = _Cycle()
    ref = weakref.ref(garbage)
    del garbage
    gc.collect()
    assert ref() is None  # allocated after the freeze: collected as before


def test_trace_writes_each_full_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gc.log"
    monkeypatch.setenv(gc_heap.TRACE_ENV, str(path))
    trace = gc_heap.install_trace_from_env()
    assert trace is not None
    try:
        _Cycle()
        gc.collect(2)
        gc.collect(1)
    finally:
        gc.callbacks.remove(trace)
    lines = [line.split() for line in path.read_text().splitlines()]
    assert [g for g, *_ in lines[-2:]] == ["2", "1"]
    for _, start, end, collected in lines:
        assert float(start) <= float(end) and int(collected) >= 0
    assert int(lines[-2][3]) >= 1  # the cycle


def test_no_trace_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gc_heap.TRACE_ENV, raising=False)
    assert gc_heap.install_trace_from_env() is None


async def test_serve_freezes_once_the_engine_registered() -> None:
    config = FrontendConfig(engine_addr=engine_ipc_addr(), model=MODEL, port=free_port(), ping_interval=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_frontend, config)
        await trio.sleep(0.5)
        assert gc.get_freeze_count() == 0  # listening, no engine yet: nothing frozen
        await nursery.start(run_mock_engine, MockEngineConfig(config.engine_addr))
        with trio.fail_after(20):
            while gc.get_freeze_count() == 0:
                await trio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.port}", timeout=5) as client:
            body = {"model": "tiny-llama", "prompt": "Hi", "max_tokens": 2}
            assert (await client.post("/v1/completions", json=body)).status_code == 200
        nursery.cancel_scope.cancel()
