"""``/health`` and ``/ping``, ``/v1/models`` and ``/v1/models/{id}``, ``/version``, ``/load``, ``/metrics``.

None of these talk to the engine: they answer from the client's state (registration, liveness, counters),
so they cannot hang and there is nothing to cancel but the response being sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import trio_front
from trio_front.engine.client import ClientState
from trio_front.metrics import Metrics, OurSeries, multiprocess
from trio_front.serving.lora import model_permission

from .errors import APIError
from .http import Send, send_json
from .state import ServerState

STARTED = int(time.time())


async def health(state: ServerState, send: Send) -> None:
    """200 once the engine is ready; 503 while it starts and after it died (with the reason). Also
    ``GET|POST /ping`` (SageMaker's name for it)."""
    engine = state.engine
    pending = sorted(state.lora.pending) if state.lora is not None else []
    if engine.state is ClientState.READY and pending:
        # vLLM's server is not up before its --lora-modules are loaded; a load balancer must not route
        # requests for an adapter that would still answer 503.
        detail = f"loading LoRA adapters: {', '.join(pending)}"
        await send_json(send, 503, {"status": "starting", "detail": detail})
    elif engine.state is ClientState.READY:
        await send_json(send, 200, b"{}")
    else:
        reason = str(engine.error) if engine.error else "the engine is still starting"
        if engine.data_parallel:  # 200 only once every rank registered; name the dead ones
            if engine.dead_ranks:
                reason += f" (dead engine rank(s): {', '.join(map(str, engine.dead_ranks))})"
            elif engine.state is ClientState.STARTING:
                reason += f" ({len(engine.registrations)} of {engine.balancer.count} ranks registered)"
        await send_json(send, 503, {"status": engine.state.value, "detail": reason})


def _base_card(state: ServerState, name: str) -> dict[str, Any]:
    registration = state.engine.registration
    return {
        "id": name,
        "object": "model",
        "created": STARTED,
        "owned_by": "vllm",
        "root": state.model_path,
        "parent": None,
        # None until the engine registered: it alone knows the effective context length.
        "max_model_len": registration.max_model_len if registration else None,
        "permission": [model_permission(int(time.time()))],
    }


def model_cards(state: ServerState) -> list[dict[str, Any]]:
    """vLLM's ``show_available_models``: one base card per served name (``--served-model-name A B``: A,
    then B, all with the model path as ``root``), then one per LoRA adapter (``state.lora.cards(created)``,
    when configured; their ``parent`` is the first name unless the adapter named another)."""
    cards = [_base_card(state, name) for name in state.served_model_names]
    if state.lora is not None:
        cards.extend(state.lora.cards(STARTED))
    return cards


async def models(state: ServerState, send: Send) -> None:
    await send_json(send, 200, {"object": "list", "data": model_cards(state)})


async def retrieve_model(state: ServerState, model_id: str, send: Send) -> None:
    """``GET /v1/models/{id}`` (the openai SDK's ``models.retrieve``; vLLM 0.32 has no such route): the
    card ``/v1/models`` lists under that id, or a 404."""
    for card in model_cards(state):
        if card["id"] == model_id:
            await send_json(send, 200, card)
            return
    raise APIError(404, f"The model `{model_id}` does not exist.", param="model", type="NotFoundError")


async def load(state: ServerState, send: Send) -> None:
    """``{"server_load": N}``: generate requests in flight, counted by the app only with
    ``--enable-server-load-tracking`` (otherwise 0, as vLLM)."""
    await send_json(send, 200, {"server_load": state.server_load})


async def version(state: ServerState, send: Send) -> None:
    registration = state.engine.registration
    await send_json(
        send,
        200,
        {
            "version": registration.vllm_version if registration else None,
            "trio_front_version": trio_front.__version__,
        },
    )


class _EngineCollector(Collector):
    """Process-local gauges: whether this process's engine link is up (with ``--workers``, the process
    that answers the scrape reports its own link; all workers share one engine)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "trio_front_engine_up", "1 while the engine link is ready", labels=["model_name"]
        )
        up.add_metric(
            [self.state.served_model_name], 1.0 if self.state.engine.state is ClientState.READY else 0.0
        )
        yield up


def make_registry(state: ServerState) -> CollectorRegistry:
    """The registry ``/metrics`` serves, and the engine client's :class:`~trio_front.metrics.Metrics`.

    vLLM's series are created once the engine registered (their token buckets follow ``max_model_len``);
    ours and the WebSocket counters exist from the start. With ``PROMETHEUS_MULTIPROC_DIR`` set
    (``--workers``) the registry reads every worker's values (:mod:`trio_front.metrics.multiprocess`).
    """
    local = CollectorRegistry(auto_describe=False)
    name = state.served_model_name
    ours = OurSeries(local, name)
    state.ws_stats.bind(ours.ws)
    engine = state.engine

    def factory(registration: Any) -> Metrics:
        cfg = engine.config
        return Metrics(local, name, engine.max_model_len, cfg.engine_count, ours, cfg.engine_start_index)

    engine.metrics_factory = factory
    if engine.registration is not None and engine.metrics is None:
        engine.metrics = factory(engine.registration)
    return multiprocess.exporting_registry(local, [_EngineCollector(state)])


async def metrics(registry: CollectorRegistry, send: Send) -> None:
    body = generate_latest(registry)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body})
