"""vLLM's ``/metrics`` series (``vllm:*``), computed as vLLM 0.32's Python frontend computes them.

The reference is ``vllm/v1/metrics/loggers.py`` (``PrometheusStatLogger``: names, help texts, labels
``model_name`` + ``engine``, buckets from ``buckets.py``) and ``vllm/v1/metrics/stats.py``
(``IterationStats``, ``RequestStateStats``: what each value is made of):

* per ``EngineCoreOutputs`` message with outputs (one "iteration"): ``time.time()`` once; token counters
  and ``iteration_tokens_total`` from the outputs and their ``prefill_stats``;
* per output: TTFT (that wall time − the request's ``arrival_time``) on its first output, else the
  inter-token latency (the difference of successive messages' engine ``timestamp``); QUEUED / SCHEDULED /
  PREEMPTED events give the queue, prefill, decode and inference intervals;
* per finished request (the engine finished it, or a stop string did): ``request_success{finished_reason}``
  and the per-request histograms. A request the client aborted is not a finished request (vLLM's
  ``abort_requests`` drops its state), so it counts only in the token counters;
* per ``SchedulerStats``: the running/waiting gauges, KV cache usage and the prefix cache counters (deltas).

Recording is on the engine client's reader path (one call per output), so it does the arithmetic inline
and touches prometheus_client objects that were bound to their labels up front. Nothing here blocks or
awaits; there is nothing to cancel.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# vllm/v1/metrics/buckets.py
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                           60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
TIME_TO_FIRST_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                               5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
INTER_TOKEN_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
REQUEST_PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
REQUEST_NUM_PREEMPTIONS_BUCKETS = (1, 2, 3, 4, 5, 10, 20)

#: ``FinishReason`` in vLLM's order, as ``str(reason)`` spells them (the ``finished_reason`` label).
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
QUEUED, SCHEDULED, PREEMPTED = 1, 2, 3
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")


def build_1_2_5_buckets(max_value: int) -> list[float]:
    """vLLM's ``build_1_2_5_buckets``: 1, 2, 5, 10, 20, 50, ... up to *max_value* (``request_tokens``)."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return buckets
            buckets.append(value)
        exponent += 1


class Parent:
    """An ``n > 1`` request's children (vLLM's ``ParentRequest``): ``n`` and the longest child are
    recorded once the last registered child finished."""

    __slots__ = ("key", "live", "max_generation_tokens", "n")

    def __init__(self, key: str) -> None:
        self.key = key
        self.n = 0
        self.live = 0
        self.max_generation_tokens = 0


class RequestStats:
    """vLLM's ``RequestStateStats`` plus what the output processor keeps beside it, for one engine request."""

    __slots__ = ("arrival_time", "first_token_ts", "last_token_ts", "max_tokens", "num_cached_tokens",
                 "num_generation_tokens", "num_preemptions", "parent", "prefilling", "prompt_len",
                 "queued_ts", "scheduled_ts")  # fmt: skip

    def __init__(self, arrival_time: float, prompt_len: int, max_tokens: int | None, parent: Parent | None):
        self.arrival_time = arrival_time
        self.prompt_len = prompt_len
        self.max_tokens = max_tokens
        self.parent = parent
        self.prefilling = True
        self.queued_ts = 0.0
        self.scheduled_ts = 0.0
        self.first_token_ts = 0.0
        self.last_token_ts = 0.0
        self.num_generation_tokens = 0
        self.num_preemptions = 0
        self.num_cached_tokens = 0


class Iteration:
    """One ``EngineCoreOutputs`` message's sums (vLLM's ``IterationStats``)."""

    __slots__ = ("cached", "computed", "engine", "external", "generation", "itl_counts", "itl_sum",
                 "local_hit", "now", "preempted", "prompt", "timestamp")  # fmt: skip

    def __init__(self, timestamp: float, engine: _Engine) -> None:
        self.engine = engine
        self.now = time.time()
        self.timestamp = timestamp
        self.generation = 0
        self.prompt = 0
        self.computed = 0
        self.cached = 0
        self.local_hit = 0
        self.external = 0
        self.preempted = 0
        # inter-token latencies bucketed here and added to the histogram once per message: a
        # prometheus_client observe takes a lock per bucket and sum (several µs), too much per output
        self.itl_counts = [0] * (len(INTER_TOKEN_LATENCY_BUCKETS) + 1)
        self.itl_sum = 0.0


def _add_observations(child: Histogram, counts: list[int], total: float) -> None:
    """Add pre-bucketed observations to a labelled histogram *child* (same buckets, +Inf last): what
    ``observe`` would have done once per value. Uses prometheus_client's ``_buckets``/``_sum`` values,
    which both its in-process and its multiprocess (mmap) value classes provide."""
    buckets = child._buckets  # type: ignore[attr-defined]
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
    child._sum.inc(total)  # type: ignore[attr-defined]


def _observe(child: Histogram, value: float) -> None:
    """``child.observe(value)`` without its per-call checks and bucket scan (same storage: one
    non-cumulative bucket, the first bound >= *value*, plus the sum)."""
    child._buckets[bisect_left(child._upper_bounds, value)].inc(1)  # type: ignore[attr-defined]
    child._sum.inc(value)  # type: ignore[attr-defined]


class _Engine:
    """The label-bound children of every series for one engine index."""

    def __init__(self, series: VllmSeries, labels: tuple[str, str]) -> None:
        s = series
        self.running = s.running.labels(*labels)
        self.waiting = s.waiting.labels(*labels)
        self.waiting_capacity = s.waiting_by_reason.labels(*labels, "capacity")
        self.waiting_deferred = s.waiting_by_reason.labels(*labels, "deferred")
        self.kv_usage = s.kv_cache_usage.labels(*labels)
        self.prefix_queries = s.prefix_cache_queries.labels(*labels)
        self.prefix_hits = s.prefix_cache_hits.labels(*labels)
        self.preemptions = s.num_preemptions.labels(*labels)
        self.prompt_tokens = s.prompt_tokens.labels(*labels)
        self.prompt_by_source = [s.prompt_tokens_by_source.labels(*labels, src) for src in PROMPT_SOURCES]
        self.prompt_cached = s.prompt_tokens_cached.labels(*labels)
        self.generation_tokens = s.generation_tokens.labels(*labels)
        self.success = [s.request_success.labels(*labels, reason) for reason in FINISH_REASONS]
        self.iteration_tokens = s.iteration_tokens.labels(*labels)
        self.ttft = s.ttft.labels(*labels)
        self.itl = s.itl.labels(*labels)
        self.e2e = s.e2e.labels(*labels)
        self.queue = s.queue_time.labels(*labels)
        self.prefill = s.prefill_time.labels(*labels)
        self.decode = s.decode_time.labels(*labels)
        self.inference = s.inference_time.labels(*labels)
        self.tpot = s.time_per_output_token.labels(*labels)
        self.req_prompt = s.request_prompt_tokens.labels(*labels)
        self.req_generation = s.request_generation_tokens.labels(*labels)
        self.req_max_generation = s.request_max_num_generation_tokens.labels(*labels)
        self.params_n = s.request_params_n.labels(*labels)
        self.params_max_tokens = s.request_params_max_tokens.labels(*labels)
        self.req_preemptions = s.request_num_preemptions.labels(*labels)
        self.req_prefill_kv = s.request_prefill_kv_computed_tokens.labels(*labels)


class VllmSeries:
    """vLLM's series in *registry* for *model_name* (the first served name, as vLLM's label) and engines
    ``0..engine_count-1``; ``max_model_len`` caps the token-count buckets (vLLM's ``request_tokens``)."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        model_name: str,
        max_model_len: int,
        engine_count: int = 1,
        engine_start: int = 0,
    ) -> None:
        labels = ["model_name", "engine"]
        tokens = build_1_2_5_buckets(max_model_len)

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            # mostrecent: with --workers only one process gets the engine's SchedulerStats at a time
            return Gauge(name, doc, [*labels, *extra], registry=registry, multiprocess_mode="mostrecent")

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, [*labels, *extra], registry=registry)

        def hist(name: str, doc: str, buckets: Any) -> Histogram:
            return Histogram(name, doc, labels, registry=registry, buckets=buckets)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.waiting_by_reason = gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. "
            "Reason labels: 'capacity' = waiting for scheduling capacity; "
            "'deferred' = deferred by transient constraints "
            "(LoRA budget, KV transfer, blocked status). "
            "Sum of all reasons equals vllm:num_requests_waiting.",
            ("reason",),
        )
        self.kv_cache_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_cache_queries = counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
        )
        self.prefix_cache_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        )
        self.num_preemptions = counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine."
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.prompt_tokens_by_source = counter(
            "vllm:prompt_tokens_by_source", "Number of prompt tokens by source.", ("source",)
        )
        self.prompt_tokens_cached = counter(
            "vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external)."
        )
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.request_success = counter(
            "vllm:request_success", "Count of successfully processed requests.", ("finished_reason",)
        )
        self.request_prompt_tokens = hist(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens
        )
        self.request_generation_tokens = hist(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", tokens
        )
        self.iteration_tokens = hist(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            ITERATION_TOKENS_BUCKETS,
        )
        self.request_max_num_generation_tokens = hist(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            tokens,
        )
        self.request_params_n = hist(
            "vllm:request_params_n", "Histogram of the n request parameter.", REQUEST_PARAMS_N_BUCKETS
        )
        self.request_params_max_tokens = hist(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", tokens
        )
        self.ttft = hist(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TIME_TO_FIRST_TOKEN_BUCKETS,
        )
        self.itl = hist(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            INTER_TOKEN_LATENCY_BUCKETS,
        )
        self.time_per_output_token = hist(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            INTER_TOKEN_LATENCY_BUCKETS,
        )
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.queue_time = hist(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.inference_time = hist(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.prefill_time = hist(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.decode_time = hist(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.request_num_preemptions = hist(
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            REQUEST_NUM_PREEMPTIONS_BUCKETS,
        )
        self.request_prefill_kv_computed_tokens = hist(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            tokens,
        )
        # label ``engine`` = the global DP rank (outputs' ``engine_index``); a node may manage ranks R..
        self.engine_start = engine_start
        self.engines = [
            _Engine(self, (model_name, str(engine_start + i))) for i in range(max(engine_count, 1))
        ]

    # -- requests ---------------------------------------------------------------------------------

    @staticmethod
    def add_request(
        arrival_time: float, prompt_len: int, max_tokens: int | None, parent: Parent | None = None
    ) -> RequestStats:
        """A new engine request (a child of *parent* when it is one of ``n > 1`` samples)."""
        if parent is not None:
            parent.n += 1
            parent.live += 1
        return RequestStats(arrival_time, prompt_len, max_tokens, parent)

    # -- outputs (the reader calls these, in this order, for each message) ------------------------

    def begin(self, engine_index: int, timestamp: float) -> Iteration:
        """A message with outputs from engine *engine_index* stamped *timestamp* (engine clock)."""
        engines = self.engines
        i = engine_index - self.engine_start
        return Iteration(timestamp, engines[i] if 0 <= i < len(engines) else engines[0])

    def engine(self, engine_index: int) -> _Engine:
        engines = self.engines
        i = engine_index - self.engine_start
        return engines[i] if 0 <= i < len(engines) else engines[0]

    @staticmethod
    def output(it: Iteration, st: RequestStats, out: Any) -> None:
        """One ``EngineCoreOutput`` of a live request (vLLM's ``IterationStats.update_from_output``)."""
        e = it.engine
        n = len(out.new_token_ids)
        it.generation += n
        ts = it.timestamp
        if st.prefilling:
            ps = out.prefill_stats
            if ps is not None:
                it.prompt += ps.get("num_prompt_tokens", 0)
                it.computed += ps.get("num_computed_tokens", 0)
                it.cached += ps.get("num_cached_tokens", 0)
                it.local_hit += ps.get("num_local_cached_tokens", 0)
                it.external += ps.get("num_external_cached_tokens", 0)
                st.num_cached_tokens = ps.get("num_cached_tokens", 0)
            _observe(e.ttft, it.now - st.arrival_time)
        st.num_generation_tokens += n
        events = out.events
        if events:
            for event in events:
                kind = event.get("type") if isinstance(event, dict) else event[0]
                stamp = event.get("timestamp") if isinstance(event, dict) else event[1]
                if kind == QUEUED:
                    st.queued_ts = stamp
                elif kind == SCHEDULED:
                    if st.scheduled_ts == 0.0:  # preemptions re-schedule; vLLM keeps the first
                        st.scheduled_ts = stamp
                elif kind == PREEMPTED:
                    it.preempted += 1
                    st.num_preemptions += 1
        if st.prefilling:
            st.first_token_ts = ts
            st.prefilling = False
        else:
            itl = ts - st.last_token_ts
            # Prometheus' bucket is the first bound >= the value (+Inf last): bisect_left
            it.itl_counts[bisect_left(INTER_TOKEN_LATENCY_BUCKETS, itl)] += 1
            it.itl_sum += itl
        st.last_token_ts = ts

    @staticmethod
    def end_iteration(it: Iteration) -> None:
        """The message's sums into the counters (vLLM's ``PrometheusStatLogger.record``)."""
        e = it.engine
        e.preemptions.inc(it.preempted)
        e.prompt_tokens.inc(it.prompt)
        by_source = e.prompt_by_source
        by_source[0].inc(it.computed)
        by_source[1].inc(it.local_hit)
        by_source[2].inc(it.external)
        e.prompt_cached.inc(it.cached)
        e.generation_tokens.inc(it.generation)
        e.iteration_tokens.observe(it.computed + it.generation)
        counts = it.itl_counts
        if any(counts):
            _add_observations(e.itl, counts, it.itl_sum)

    @staticmethod
    def finish(st: RequestStats, reason: int, now: float, e: _Engine) -> None:
        """*st* finished with FinishReason *reason* at wall time *now* (vLLM's
        ``update_from_finished_request`` + ``ParentRequest.observe_finished_request``)."""
        e.success[reason].inc()
        _observe(e.e2e, now - st.arrival_time)
        _observe(e.queue, st.scheduled_ts - st.queued_ts)
        _observe(e.prefill, st.first_token_ts - st.scheduled_ts)
        decode = st.last_token_ts - st.first_token_ts
        _observe(e.decode, decode)
        _observe(e.inference, st.last_token_ts - st.scheduled_ts)
        _observe(e.req_preemptions, st.num_preemptions)
        _observe(e.req_prefill_kv, st.prompt_len - max(st.num_cached_tokens, 0))
        _observe(e.req_prompt, st.prompt_len)
        gen = st.num_generation_tokens
        _observe(e.req_generation, gen)
        _observe(e.tpot, decode / (gen - 1) if gen - 1 > 0 else 0)
        if st.max_tokens:
            _observe(e.params_max_tokens, st.max_tokens)
        parent = st.parent
        if parent is None:
            _observe(e.req_max_generation, gen)
            _observe(e.params_n, 1)
            return
        parent.live -= 1
        parent.max_generation_tokens = max(parent.max_generation_tokens, gen)
        if parent.live == 0:
            _observe(e.req_max_generation, parent.max_generation_tokens)
            _observe(e.params_n, parent.n)

    @staticmethod
    def drop(st: RequestStats) -> None:
        """*st* was aborted by the frontend: not a finished request; its parent's children are aborted
        with it (vLLM aborts a parent's children together), so the parent is never recorded."""
        if st.parent is not None:
            st.parent.live = -(10**9)  # never reaches 0 again

    @staticmethod
    def scheduler_stats(stats: dict[str, Any], e: _Engine) -> None:
        """One ``SchedulerStats`` map (gauges set, prefix cache deltas added)."""
        running = stats.get("num_running_reqs", 0)
        waiting = stats.get("num_waiting_reqs", 0)
        skipped = stats.get("num_skipped_waiting_reqs", 0)
        e.running.set(running)
        e.waiting.set(waiting + skipped)
        e.waiting_capacity.set(waiting)
        e.waiting_deferred.set(skipped)
        e.kv_usage.set(stats.get("kv_cache_usage", 0.0))
        prefix = stats.get("prefix_cache_stats")
        if isinstance(prefix, dict):
            e.prefix_queries.inc(prefix.get("queries", 0))
            e.prefix_hits.inc(prefix.get("hits", 0))
