"""``/metrics``: vLLM's series (:mod:`.vllm_series`) and ours (:mod:`.ours`), across workers
(:mod:`.multiprocess`).

:class:`Metrics` is what the engine client calls on its hot path (per request, per output message); the
``/metrics`` route (``trio_front/api/admin.py``) builds it once the engine registered (vLLM's token-count
buckets depend on ``max_model_len``) and serves its registry.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from .ours import OurSeries
from .vllm_series import Iteration, Parent, RequestStats, VllmSeries

__all__ = ["Iteration", "Metrics", "OurSeries", "RequestStats", "VllmSeries"]


class Metrics:
    """vLLM's and our series for one server process.

    *id_tag* is the engine client's request-id tag: children ``{i}_{parent}`` of a parent id carrying it
    are grouped as vLLM's ``ParentRequest`` (``request_params_n`` and ``request_max_num_generation_tokens``
    are recorded once per parent).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        model_name: str,
        max_model_len: int,
        engine_count: int = 1,
        ours: OurSeries | None = None,
        engine_start: int = 0,
    ) -> None:
        self.registry = registry
        self.vllm = VllmSeries(registry, model_name, max_model_len, engine_count, engine_start)
        self.ours = ours if ours is not None else OurSeries(registry, model_name)
        self._parents: dict[str, Parent] = {}

    def add_request(self, request: Any, id_tag: str) -> RequestStats:
        """An ADD was sent for *request* (a ``wire.EngineCoreRequest``)."""
        parent = None
        rid: str = request.request_id
        head, sep, parent_id = rid.partition("_")
        if sep and head.isdigit() and id_tag in parent_id:
            parent = self._parents.get(parent_id)
            if parent is None:
                parent = self._parents[parent_id] = Parent(parent_id)
        params = request.sampling_params
        return VllmSeries.add_request(
            request.arrival_time,
            len(request.prompt_token_ids or ()),
            params.max_tokens if params is not None else None,
            parent,
        )

    def finish(self, st: RequestStats, reason: int, now: float, engine_index: int = 0) -> None:
        """*st*'s request finished with FinishReason *reason* (engine finish, or a stop string: STOP)."""
        VllmSeries.finish(st, reason, now, self.vllm.engine(engine_index))
        parent = st.parent
        if parent is not None and parent.live <= 0:
            self._parents.pop(parent.key, None)

    def drop(self, st: RequestStats) -> None:
        """*st*'s request was aborted by the frontend (not a finished request for vLLM)."""
        VllmSeries.drop(st)
        if st.parent is not None:
            self._parents.pop(st.parent.key, None)
