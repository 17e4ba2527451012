"""trio-front (``run`` + a headless real engine) and vLLM's own ``vllm serve``, side by side on the tiny
model, both serving it as ``tiny``: the pair every differential test compares.

:func:`vllm_pair` is a context manager yielding the two server roots (``http://127.0.0.1:PORT``, no ``/v1``:
``/tokenize`` and ``/detokenize`` live at the root). Both engines start concurrently (~30-40 s on 2 cores);
leaving the context terminates all three process groups, on every exit path. For iterating on a test module,
``TRIO_FRONT_TEST_PAIR=OURS_ROOT,THEIRS_ROOT`` reuses two servers already running instead.

:func:`shared_pair` is the one pair the differential modules (test_surface_vs_vllm, test_lm_eval) share, to
pay the start-up once: started by the first module that asks, terminated when the pytest session ends.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import NamedTuple

import pytest

from trio_front.engine.launch import (
    EngineProcess,
    full_vllm_serve_command,
    pick_free_port,
    wait_for_http_health,
)

from .conftest import MODEL, require_engine, start_engine

NAME = "tiny"


class Pair(NamedTuple):
    ours: str  # trio-front root URL
    theirs: str  # vllm serve root URL


@contextmanager
def vllm_pair(ours_args: tuple[str, ...] = (), theirs_args: tuple[str, ...] = ()) -> Iterator[Pair]:
    if reuse := os.environ.get("TRIO_FRONT_TEST_PAIR"):
        ours_url, theirs_url = reuse.split(",")
        yield Pair(ours_url, theirs_url)
        return
    require_engine()
    engine_port, ours_port, theirs_port = pick_free_port(), pick_free_port(), pick_free_port()
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
            NAME,
            "--port",
            str(ours_port),
            *ours_args,
        ],
        env=None,
    )
    ours.env.pop("VLLM_HOST_IP", None)
    theirs = EngineProcess(
        full_vllm_serve_command(
            MODEL, "127.0.0.1", theirs_port, served_model_name=NAME, extra_args=theirs_args
        )
    )
    engine = None
    try:
        ours.start()
        engine = start_engine(engine_port)
        theirs.start()
        wait_for_http_health(f"http://127.0.0.1:{ours_port}/health", 300, process=ours)
        wait_for_http_health(f"http://127.0.0.1:{theirs_port}/health", 300, process=theirs)
        yield Pair(f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{theirs_port}")
    finally:
        for proc in (ours, theirs, engine):
            if proc is not None:
                proc.terminate()
        if ours.returncode not in (0, None, -15):
            print(ours.read_log(tail=3000))


_shared: Pair | None = None


def shared_pair(request: pytest.FixtureRequest) -> Pair:
    """The session's shared pair (see the module docstring); call it from a fixture."""
    global _shared
    if _shared is None:
        stack = ExitStack()
        # --enable-scale-out on both sides so the scale-out differential shares this pair too (it only
        # adds routes).
        pair = stack.enter_context(vllm_pair(("--enable-scale-out",), ("--enable-scale-out",)))

        def close() -> None:
            global _shared
            _shared = None
            stack.close()

        # The session node's finalizers run at session teardown, after every module using the pair.
        request.session.addfinalizer(close)
        _shared = pair
    return _shared
