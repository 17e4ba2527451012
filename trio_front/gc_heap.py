"""The cyclic garbage collector while serving: the start-up heap frozen, and an opt-in pause trace.

A full (generation 2) collection walks every tracked object. After start-up that is ~50k objects of
modules, classes, templates and the app's tables, which never die: walking them took 14 ms on this
project's 2-core machines, and a request whose ABORT or chunk falls in that pause waits for it.
`freeze_startup_heap` moves them to the permanent generation once the engine is ready (what vLLM's API
server does in its lifespan, ``freeze_gc_heap``), so later collections only walk what serving allocated.

``TRIO_FRONT_GC_TRACE=<path>`` appends one line per collection (short young ones excepted),
``<generation> <start> <end> <collected>`` (``time.monotonic()`` seconds, the clock the bench's mock
engine logs with), for tracing stalls against other events (``bench/abort_stall.py``). Off by default:
the callback runs on every collection.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import IO, Any

log = logging.getLogger("trio_front.gc")

TRACE_ENV = "TRIO_FRONT_GC_TRACE"
#: Generation-0 collections shorter than this are not written (they take ~0.1 ms, thousands a second).
MIN_TRACED_GEN0_S = 0.0005


def freeze_startup_heap() -> int:
    """Collect everything once, then freeze what survived; returns the number of objects frozen.
    Idempotent (a second call freezes only what was allocated since)."""
    gc.collect(0)
    gc.collect(1)
    gc.collect(2)
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d start-up objects out of the collector's reach", frozen)
    return frozen


class PauseTrace:
    """A ``gc.callbacks`` entry writing each collection's span to a line-buffered file."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.monotonic()
        else:
            end = time.monotonic()
            if info["generation"] == 0 and end - self._start < MIN_TRACED_GEN0_S:
                return  # the many short young collections would only add writes to what is traced
            self._out.write(f"{info['generation']} {self._start:.6f} {end:.6f} {info['collected']}\n")


def install_trace_from_env() -> PauseTrace | None:
    """Start the pause trace when ``TRIO_FRONT_GC_TRACE`` names a file (appended to; the file stays open
    for the process's life, one line written per collection)."""
    path = os.environ.get(TRACE_ENV)
    if not path:
        return None
    trace = PauseTrace(open(path, "a", buffering=1))  # open for the process's life
    gc.callbacks.append(trace)
    return trace
