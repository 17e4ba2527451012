"""Data-parallel routing: which engine rank gets a request (vLLM's ``DPLBAsyncMPClient``).

The client manages the ranks ``start .. start+count-1`` (all of them with internal load balancing; a
node's own with ``--data-parallel-start-rank`` / ``--engine-start-index``). Each request goes to

* the rank named by the ``X-data-parallel-rank`` header, an index into the managed ranks, range-checked
  as vLLM's input processor does (``data_parallel_rank R is out of range [0, N).``, a 400); or
* the least-loaded rank by vLLM's score: ``max(client_count * own in-flight, waiting + running)`` plus a
  penalty of ``6 * waiting * max(0, kv_cache_usage - 0.5)``, scanning from a start that rotates on every
  pick (so ties round-robin) and bumping the picked rank's waiting count by ``client_count`` until the
  next snapshot. The snapshot is the coordinator's published counts when one runs (``coordinator.py``),
  else each rank's own ``SchedulerStats`` (``num_waiting_reqs``, ``num_running_reqs``, ``kv_cache_usage``)
  as they arrive with its outputs.

The header's value reaches :meth:`EngineClient.generate` through :data:`REQUESTED_RANK`, a context
variable the ASGI layer sets per HTTP request (``server.py``): every endpoint's engine requests (n > 1
children and beam-search steps included) see it without each endpoint passing it along.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import Any

from . import wire

#: The ``X-data-parallel-rank`` of the HTTP request being served (``None``: let the balancer choose).
REQUESTED_RANK: ContextVar[int | None] = ContextVar("trio_front_dp_rank", default=None)


class RankRangeError(ValueError):
    """``X-data-parallel-rank`` names no managed rank (vLLM answers 400 with this message)."""

    def __init__(self, rank: int, count: int) -> None:
        super().__init__(f"data_parallel_rank {rank} is out of range [0, {count}).")
        self.rank = rank


def parse_rank_header(value: str | None) -> int | None:
    """vLLM's ``_get_data_parallel_rank``: an int, else ``None`` (a non-integer header is ignored)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class Balancer:
    """Per-rank load state of one frontend process and vLLM's choice of rank.

    *start*/*count*: the managed global ranks; *client_index*/*client_count*: this process among the
    API processes (``--workers``), which spreads their first picks and scales the in-flight floor.
    Synchronous and never awaits: the engine client calls it on its send and reader paths.
    """

    def __init__(self, start: int, count: int, *, client_index: int = 0, client_count: int = 1) -> None:
        if count < 1 or start < 0:
            raise ValueError(f"bad engine range: start {start}, count {count}")
        self.start = start
        self.count = count
        self.client_count = max(client_count, 1)
        self.identities = [wire.engine_identity(start + i) for i in range(count)]
        #: this process's unfinished requests per managed rank (exact)
        self.inflight = [0] * count
        #: ``[waiting, running, kv_cache_usage]`` per managed rank: the latest snapshot, plus local bumps
        self.counts: list[list[Any]] = [[0, 0, 0.0] for _ in range(count)]
        #: requests sent per managed rank since start (for reports and tests)
        self.assigned = [0] * count
        self._scan = (count * client_index) // self.client_count

    def index_of(self, engine_index: int) -> int | None:
        """The managed index of global rank *engine_index* (as outputs carry it), or ``None``."""
        i = engine_index - self.start
        return i if 0 <= i < self.count else None

    def pick(self, requested: int | None = None) -> int:
        """The managed index for a new request (*requested*: the header's rank); counts it in flight.
        Raises :class:`RankRangeError` for a rank outside ``[0, count)``."""
        if requested is not None:
            if not 0 <= requested < self.count:
                raise RankRangeError(requested, self.count)
            index = requested
        elif self.count == 1:
            index = 0
        else:
            index = self._least_loaded()
        self.inflight[index] += 1
        self.assigned[index] += 1
        return index

    def _least_loaded(self) -> int:
        counts, inflight, n, k = self.counts, self.inflight, self.count, self.client_count
        best: float = sys.maxsize
        chosen = 0
        for step in range(n):
            i = (self._scan + step) % n
            waiting, running, kv_usage = counts[i]
            score: float = max(k * inflight[i], waiting + running)
            if waiting:
                # A queue on a KV-bound rank drains slowly: prefer others (0 up to 50 % usage, 3x at 100 %).
                score += waiting * 6.0 * max(0.0, kv_usage - 0.5)
            if score < best:
                best, chosen = score, i
        counts[chosen][0] += k  # until the next snapshot says otherwise
        self._scan = (self._scan + 1) % n
        return chosen

    def done(self, index: int) -> None:
        """A request on managed rank *index* finished or was aborted."""
        if self.inflight[index] > 0:
            self.inflight[index] -= 1

    def scheduler_stats(self, engine_index: int, stats: dict[str, Any]) -> None:
        """Rank *engine_index*'s own ``SchedulerStats`` (used when no coordinator publishes counts)."""
        i = self.index_of(engine_index)
        if i is not None:
            self.counts[i] = [
                int(stats.get("num_waiting_reqs") or 0),
                int(stats.get("num_running_reqs") or 0),
                float(stats.get("kv_cache_usage") or 0.0),
            ]

    def coordinator_counts(self, counts: list[list[Any]]) -> None:
        """The coordinator's ``[[waiting, running, kv_usage], ...]`` for all ranks: keep ours."""
        mine = counts[self.start : self.start + self.count]
        if len(mine) == self.count:
            self.counts = [[int(w), int(r), float(kv)] for w, r, kv in mine]
