"""``/health`` and ``/ping``, ``/v1/models`` and ``/v1/models/{id}``, ``/version``, ``/load``, ``/metrics``.

None of these talk to the engine: they answer from the client's state (registration, liveness, counters),
so they cannot hang and there is nothing to cancel but the response being sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

import trio_front
from trio_front.engine.client import ClientState
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
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        engine = self.state.engine
        stats = engine.stats
        labels = ["model_name"]
        name = [self.state.served_model_name]
        for key, help_text in (
            ("submitted", "Requests submitted to the engine"),
            ("finished", "Requests the engine finished"),
            ("aborted", "Requests aborted by the frontend"),
        ):
            family = CounterMetricFamily(f"trio_front_requests_{key}", help_text, labels=labels)
            family.add_metric(name, stats[key])
            yield family
        open_requests = GaugeMetricFamily(
            "trio_front_requests_open", "Engine requests in flight", labels=labels
        )
        open_requests.add_metric(name, engine.open_requests)
        yield open_requests
        up = GaugeMetricFamily("trio_front_engine_up", "1 while the engine link is ready", labels=labels)
        up.add_metric(name, 1.0 if engine.state is ClientState.READY else 0.0)
        yield up
        sched = engine.scheduler_stats or {}
        for key in ("num_running_reqs", "num_waiting_reqs", "kv_cache_usage"):
            if isinstance(sched.get(key), (int, float)):
                gauge = GaugeMetricFamily(
                    f"trio_front_engine_{key}", f"Engine scheduler {key}", labels=labels
                )
                gauge.add_metric(name, float(sched[key]))
                yield gauge
        yield from self._websockets(labels, name)

    def _websockets(
        self, labels: list[str], name: list[str]
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        ws = self.state.ws_stats
        for key, help_text in (
            ("open_sockets", "WebSockets open (Realtime and Responses)"),
            ("running_responses", "WebSocket responses generating"),
        ):
            gauge = GaugeMetricFamily(f"trio_front_ws_{key}", help_text, labels=labels)
            gauge.add_metric(name, float(getattr(ws, key)))
            yield gauge
        for key, help_text in (
            ("sockets", "WebSockets accepted"),
            ("responses", "WebSocket responses started"),
            ("cancelled", "WebSocket responses cancelled (response.cancel or socket closed)"),
            ("stuck_closed", "WebSockets closed because the client stopped reading"),
            ("coalesced_deltas", "Text deltas merged while a WebSocket client lagged"),
        ):
            family = CounterMetricFamily(f"trio_front_ws_{key}", help_text, labels=labels)
            family.add_metric(name, getattr(ws, f"{key}_total"))
            yield family


def make_registry(state: ServerState) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_EngineCollector(state))
    return registry


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
