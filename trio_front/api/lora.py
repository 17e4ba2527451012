"""``POST /v1/load_lora_adapter`` and ``POST /v1/unload_lora_adapter`` (vLLM's ``serve/lora`` router).

The routes exist only when ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` is ``1``/``true`` (read as vLLM reads it;
:func:`runtime_updating_enabled`), and the CLI refuses that together with ``--workers`` > 1, as vLLM does
with ``--api-server-count`` > 1 (each process has its own registry and id counter).

Success is HTTP 200 with vLLM's plain-text body; refusals are OpenAI error JSON with vLLM's statuses and
messages (``serving/lora.py`` has the checks). A client that disconnects during a load cancels it; the
registry is then unchanged.
"""

from __future__ import annotations

import logging
import os

import attrs

from trio_front.serving.lora import LoRAError, LoRARegistry

from .errors import APIError
from .http import Headers, Send
from .models import parse_json, structure
from .state import ServerState

log = logging.getLogger("trio_front.api")

ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def runtime_updating_enabled() -> bool:
    """vLLM's ``envs.VLLM_ALLOW_RUNTIME_LORA_UPDATING``."""
    return os.environ.get(ENV, "0").strip().lower() in ("1", "true")


@attrs.define(kw_only=True)
class LoadLoRAAdapterRequest:
    lora_name: str
    lora_path: str
    load_inplace: bool = False
    is_3d_lora_weight: bool = False


@attrs.define(kw_only=True)
class UnloadLoRAAdapterRequest:
    lora_name: str
    lora_int_id: int | None = None


def _registry(state: ServerState) -> LoRARegistry:
    registry = state.lora
    if registry is None:  # build_app always sets one; a hand-built state may not
        raise APIError(500, "LoRA adapters are not configured on this server")
    return registry


async def _send_text(send: Send, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _api_error(exc: LoRAError) -> APIError:
    return APIError(exc.status, exc.message, type=exc.type)


async def load_lora_adapter(state: ServerState, body: bytes, send: Send, headers: Headers) -> None:
    req = structure(parse_json(body), LoadLoRAAdapterRequest)
    registry = _registry(state)
    # Checks that need no engine come first (vLLM answers them without one too).
    try:
        registry.check_load(req.lora_name, req.lora_path, req.load_inplace)
    except LoRAError as exc:
        raise _api_error(exc) from None
    state.check_engine()
    try:
        text = await registry.load(
            req.lora_name,
            req.lora_path,
            load_inplace=req.load_inplace,
            is_3d_lora_weight=req.is_3d_lora_weight,
        )
    except LoRAError as exc:
        raise _api_error(exc) from None
    await _send_text(send, text)


async def unload_lora_adapter(state: ServerState, body: bytes, send: Send, headers: Headers) -> None:
    req = structure(parse_json(body), UnloadLoRAAdapterRequest)
    try:
        text = await _registry(state).unload(req.lora_name, req.lora_int_id)
    except LoRAError as exc:
        raise _api_error(exc) from None
    await _send_text(send, text)


#: The routes ``App`` adds when :func:`runtime_updating_enabled`.
ROUTES = {
    "/v1/load_lora_adapter": load_lora_adapter,
    "/v1/unload_lora_adapter": unload_lora_adapter,
}


def refuse_adapter(state: ServerState, model: str | None, api: str) -> None:
    """400 if *model* names a LoRA adapter on an API that does not route adapters (Realtime): serving the
    base model under the adapter's name would be a silent substitution."""
    if model is not None and state.lora is not None and state.lora.resolve(model) is not None:
        raise APIError(400, f"the {api} API does not serve LoRA adapters; `{model}` is one", param="model")
