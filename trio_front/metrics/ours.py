"""trio-front's own series (``trio_front_*``), beside vLLM's: what the frontend does that vLLM has no
name for.

All are prometheus_client objects (so ``--workers N`` aggregates them through the multiprocess directory,
see :mod:`.multiprocess`). Recording is a counter increment at the place the event happens; nothing blocks.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: ``trio_front_engine_aborts_total{cause}`` values
ABORT_CAUSES = ("client_left", "stop_string", "timeout", "shutdown", "api", "other")

#: Seconds from the moment a client's disconnect is handled to the ABORT being on the engine socket.
ABORT_LATENCY_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


def abort_cause(cause: str) -> str:
    """Map the engine client's free-text abort causes to the ``cause`` label."""
    if cause == "stop string":
        return "stop_string"
    if "disconnect" in cause or cause in ("cancelled", "closed early") or cause.startswith("socket"):
        return "client_left"
    if "timeout" in cause or "timed out" in cause:
        return "timeout"
    if "shutdown" in cause or "shut down" in cause:
        return "shutdown"
    if cause == "abort_requests" or cause.startswith("response.cancel"):
        return "api"
    return "other"


class OurSeries:
    """The ``trio_front_*`` series for one server, label ``model_name``."""

    def __init__(self, registry: CollectorRegistry | None, model_name: str) -> None:
        labels = ["model_name"]
        name = (model_name,)

        def counter(metric: str, doc: str) -> Counter:
            return Counter(metric, doc, labels, registry=registry)

        def gauge(metric: str, doc: str) -> Gauge:
            return Gauge(metric, doc, labels, registry=registry, multiprocess_mode="livesum")

        self.submitted = counter("trio_front_requests_submitted", "Engine requests submitted").labels(*name)
        self.finished = counter(
            "trio_front_requests_finished", "Engine requests the engine finished (any finish reason)"
        ).labels(*name)
        self.aborted = counter(
            "trio_front_requests_aborted", "Engine requests the frontend aborted (any cause)"
        ).labels(*name)
        self.open = gauge("trio_front_requests_open", "Engine requests in flight").labels(*name)
        aborts = Counter(
            "trio_front_engine_aborts",
            "Engine requests aborted by the frontend, by cause (client_left: the client disconnected or "
            "its task was cancelled; stop_string: a stop string matched before the engine finished; "
            "timeout; shutdown: the server stopped with the request open; api: abort_requests or "
            "response.cancel; other)",
            [*labels, "cause"],
            registry=registry,
        )
        self.aborts = {cause: aborts.labels(*name, cause) for cause in ABORT_CAUSES}
        self.abort_latency = Histogram(
            "trio_front_client_abort_latency_seconds",
            "Seconds from handling a client's disconnect to its engine requests' ABORT being sent",
            labels,
            registry=registry,
            buckets=ABORT_LATENCY_BUCKETS,
        ).labels(*name)
        ws = {
            "open_sockets": gauge(
                "trio_front_ws_sessions_open", "WebSocket sessions open (Realtime, Responses)"
            ),
            "running_responses": gauge("trio_front_ws_responses_running", "WebSocket responses generating"),
            "sockets_total": counter("trio_front_ws_sessions", "WebSocket sessions accepted"),
            "responses_total": counter("trio_front_ws_responses", "WebSocket responses started"),
            "cancelled_total": counter(
                "trio_front_ws_responses_cancelled",
                "WebSocket responses cancelled (response.cancel or the socket closed)",
            ),
            "stuck_closed_total": counter(
                "trio_front_ws_send_timeouts",
                "WebSockets closed because a send waited longer than --send-timeout (client stopped reading)",
            ),
            "coalesced_deltas_total": counter(
                "trio_front_ws_outbox_coalesced_deltas",
                "Text deltas merged into a queued one while a WebSocket client lagged",
            ),
        }
        #: WSStats field → bound metric (see :class:`trio_front.api.ws.options.WSStats`)
        self.ws = {key: metric.labels(*name) for key, metric in ws.items()}
        self._name = name
        # "min" across --workers: a rank is down as soon as any API process found it dead.
        self._rank_up = Gauge(
            "trio_front_engine_rank_up",
            "1 while the engine rank (data-parallel rank, label engine) is registered and alive, 0 once dead",
            [*labels, "engine"],
            registry=registry,
            multiprocess_mode="min",
        )

    def rank_up(self, rank: int, up: bool) -> None:
        """Engine rank *rank* registered (``True``) or was found dead (``False``)."""
        self._rank_up.labels(*self._name, str(rank)).set(1 if up else 0)

    def count_abort(self, cause: str, streams: int) -> None:
        self.aborted.inc(streams)
        self.aborts[abort_cause(cause)].inc(streams)
