"""``--workers N``: one set of series across N processes, with prometheus_client's multiprocess mode.

The supervisor owns a temporary directory (:func:`owned_directory`), hands it to every worker in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client reads it when it is first imported, so it must be in the
worker's environment from the start), marks a worker's files dead when it exits (``livesum`` gauges drop
its share) and removes the directory when it stops. Each worker's ``/metrics`` then reads every
process's files (:func:`exporting_registry`), whichever worker the kernel gave the scrape to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

ENV = "PROMETHEUS_MULTIPROC_DIR"


def directory() -> str | None:
    """The multiprocess directory this process writes to, or ``None`` (single process)."""
    return os.environ.get(ENV) or None


@contextlib.contextmanager
def owned_directory() -> Iterator[str]:
    """A fresh directory for the workers' metric files, removed (with them) on the way out, also on
    cancellation or error. If the user set ``PROMETHEUS_MULTIPROC_DIR`` themselves, that one is used and
    left alone."""
    given = directory()
    if given is not None:
        yield given
        return
    path = tempfile.mkdtemp(prefix="trio-front-metrics-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def mark_dead(path: str, pid: int) -> None:
    """A worker exited: its live gauges no longer count (counters and histograms keep its totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


def exporting_registry(local: CollectorRegistry, process_local: list[Collector]) -> CollectorRegistry:
    """What ``/metrics`` serves: *local* itself in a single process; with a multiprocess directory, every
    process's values (prometheus_client's ``MultiProcessCollector``) plus *process_local* collectors."""
    path = directory()
    if path is None:
        for collector in process_local:
            local.register(collector)
        return local
    from prometheus_client import multiprocess

    registry = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry, path=path)
    for collector in process_local:
        registry.register(collector)
    return registry
