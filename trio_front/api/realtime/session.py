"""The session of a Realtime socket: its settings, ``session.update``, and per-response overrides.

Accepted settings (session and ``response.create.response``): ``instructions``, ``output_modalities``
(beta ``modalities``; only ``["text"]``), ``max_output_tokens`` (beta ``max_response_output_tokens``; an
integer ≥ 1 or ``"inf"``, meaning whatever fits the context), ``truncation`` (session only: ``"auto"``,
the default as at OpenAI, drops the oldest items when the conversation outgrows the context;
``"disabled"`` answers ``response.create`` with an error instead; a ``retention_ratio`` object counts as
``"auto"``), ``tools`` (function tools) and ``tool_choice`` (``"auto"``/``"none"``/``"required"``/
``{"type": "function", "name"}``; checked with vLLM's rules by :mod:`.tools`). Sampling fields, as in
vLLM's other endpoints: ``temperature``, ``top_p``, ``top_k``, ``min_p``, ``presence_penalty``,
``frequency_penalty``, ``repetition_penalty``, ``seed``, ``stop``, ``ignore_eos``, ``min_tokens``. Audio
settings (``audio``, ``voice``, ``turn_detection``, ``input_audio_format``...), ``include``, ``tracing``
and ``prompt`` are ignored; other unknown fields too. Invalid values are refused as a whole (nothing of
that update applies).
"""

from __future__ import annotations

from typing import Any

import attrs

from trio_front.assistant import ToolPlan
from trio_front.serving.params import ParamError, build_params

from ..errors import APIError
from ..lora import refuse_adapter
from ..models import SamplingFields, structure
from ..state import ServerState
from .protocol import Dialect, EventError
from .tools import check_tools, tool_plan

SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
    "stop",
    "ignore_eos",
    "min_tokens",
)


@attrs.define
class Settings:
    instructions: str = ""
    max_output_tokens: int | None = None  # None: "inf"
    truncation: str = "auto"
    tools: list[dict[str, Any]] = attrs.field(factory=list)  # the Realtime form, as the client sent it
    tool_choice: Any = "auto"
    sampling: dict[str, Any] = attrs.field(factory=dict)

    def copy(self) -> Settings:
        return attrs.evolve(self, sampling=dict(self.sampling), tools=list(self.tools))

    def plan(self, state: ServerState, where: str) -> ToolPlan:
        return tool_plan(self.tools, self.tool_choice, state.assistant, where)


def apply(
    settings: Settings, data: dict[str, Any], dialect: Dialect, state: ServerState, *, where: str
) -> None:
    """Validate *data* (a session or response object) into *settings*; raise :class:`EventError`."""
    if "instructions" in data:
        value = data["instructions"]
        if value is not None and not isinstance(value, str):
            raise EventError("instructions must be a string", "invalid_value", param=f"{where}.instructions")
        settings.instructions = value or ""
    for key in (dialect.modalities_key, "output_modalities", "modalities"):
        if key in data and data[key] is not None:
            modalities = data[key]
            if not isinstance(modalities, list) or any(m not in ("text", "audio") for m in modalities):
                raise EventError(f"{key} must be a list of 'text'/'audio'", "invalid_value",
                                 param=f"{where}.{key}")  # fmt: skip
            if "audio" in modalities:
                raise EventError(
                    f"audio output is not supported: this server serves text models; use {key}: ['text']",
                    "unsupported_modality",
                    param=f"{where}.{key}",
                )
    for key in (dialect.max_tokens_key, "max_output_tokens", "max_response_output_tokens"):
        if key in data:
            value = data[key]
            if value in (None, "inf"):
                settings.max_output_tokens = None
            elif type(value) is int and value >= 1:
                settings.max_output_tokens = value
            else:
                raise EventError(f"{key} must be an integer >= 1 or 'inf', got {value!r}", "invalid_value",
                                 param=f"{where}.{key}")  # fmt: skip
    if "truncation" in data and where == "session":
        value = data["truncation"]
        if isinstance(value, dict) and value.get("type") == "retention_ratio":
            value = "auto"
        if value not in ("auto", "disabled"):
            raise EventError("truncation must be 'auto', 'disabled' or a retention_ratio object",
                             "invalid_value", param="session.truncation")  # fmt: skip
        settings.truncation = value
    if "tools" in data:
        settings.tools = check_tools(data["tools"], where)
    if "tool_choice" in data:
        settings.tool_choice = "auto" if data["tool_choice"] is None else data["tool_choice"]
    if "tools" in data or "tool_choice" in data:
        settings.plan(state, where)  # refuse a bad pair now, not at the next response
    sampling = {k: data[k] for k in SAMPLING_KEYS if k in data}
    if sampling:
        merged = {**settings.sampling, **sampling}
        sampling_fields(merged, state, where=where)  # validate now, not at the next response
        settings.sampling = {k: v for k, v in merged.items() if v is not None}


def sampling_fields(sampling: dict[str, Any], state: ServerState, *, where: str) -> SamplingFields:
    try:
        fields = structure(sampling, SamplingFields)
        build_params(fields, limits=state.limits, max_tokens=state.limits.max_model_len, stream=True)
    except APIError as exc:
        raise EventError(
            exc.message, "invalid_value", param=f"{where}.{exc.param}" if exc.param else where
        ) from None
    except ParamError as exc:
        raise EventError(
            str(exc), "invalid_value", param=f"{where}.{exc.param}" if exc.param else where
        ) from None
    return fields


class Session:
    """One socket's session settings and their wire form."""

    def __init__(self, session_id: str, model: str, dialect: Dialect) -> None:
        self.id = session_id
        self.model = model
        self.dialect = dialect
        self.settings = Settings()

    def update(self, data: Any, state: ServerState) -> None:
        if not isinstance(data, dict):
            raise EventError("session must be an object", "invalid_value", param="session")
        kind = data.get("type")
        if kind not in (None, "realtime"):
            raise EventError(f"session type {kind!r} is not supported (only 'realtime', text output)",
                             "invalid_value", param="session.type")  # fmt: skip
        model = data.get("model")
        if model is not None:
            try:
                state.check_model(model)
            except APIError as exc:
                raise EventError(exc.message, "model_not_found", param="session.model") from None
            try:
                refuse_adapter(state, model, "Realtime")
            except APIError as exc:
                raise EventError(exc.message, "invalid_value", param="session.model") from None
        settings = self.settings.copy()
        apply(settings, data, self.dialect, state, where="session")
        self.settings = settings

    def wire(self) -> dict[str, Any]:
        d, s = self.dialect, self.settings
        session: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.session",
            "model": self.model,
            d.modalities_key: ["text"],
            "instructions": s.instructions,
            d.max_tokens_key: "inf" if s.max_output_tokens is None else s.max_output_tokens,
            "tools": s.tools,
            "tool_choice": s.tool_choice,
            "truncation": s.truncation,
        }
        if d.beta:
            session.update({"turn_detection": None, "input_audio_transcription": None, "voice": None})
        else:
            session.update({"type": "realtime", "tracing": None, "prompt": None, "include": None})
        session.update(s.sampling)
        return session
