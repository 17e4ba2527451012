"""What every endpoint shares: the engine client, the text layer, the model's limits and server options."""

from __future__ import annotations

import secrets
from typing import Any

import attrs

from trio_front.assistant import AssistantConfig
from trio_front.engine import wire
from trio_front.engine.client import ClientState, EngineClient
from trio_front.serving.fingerprint import system_fingerprint
from trio_front.serving.params import ModelLimits, ParamError
from trio_front.serving.sampling_defaults import SamplingDefaults
from trio_front.serving.structured import StructuredConfig
from trio_front.text.chat import ChatRenderer, merge_kwargs
from trio_front.text.tokenizer import Tokenizer

from .errors import APIError
from .http import Headers, header
from .middleware import HTTPOptions
from .ws.options import WSOptions, WSStats


@attrs.define(eq=False)
class ServerState:
    engine: EngineClient
    tokenizer: Tokenizer
    renderer: ChatRenderer
    served_model_name: str
    model_path: str
    keep_alive_interval: float | None = None
    #: a streamed response whose client reads nothing this long is cut off (``--send-timeout``)
    send_timeout: float = 30.0
    ws_options: WSOptions = attrs.Factory(WSOptions)
    ws_stats: WSStats = attrs.Factory(WSStats)
    #: tool calling and reasoning (``--enable-auto-tool-choice``, ``--tool-call-parser``, ...)
    assistant: AssistantConfig = attrs.Factory(AssistantConfig)
    #: ``--structured-outputs-config``
    structured: StructuredConfig = attrs.Factory(StructuredConfig)
    #: ``--max-logprobs`` (vLLM's default 20)
    max_logprobs: int = 20
    #: ``--enable-scale-out``: the render / token-in-token-out routes answer instead of 403
    enable_scale_out: bool = False
    #: ``--enable-server-load-tracking``: ``/load`` reports :attr:`server_load`
    track_server_load: bool = False
    #: generate requests in flight (counted only with :attr:`track_server_load`)
    server_load: int = 0
    #: LoRA adapters (``serving/lora.py``); ``None`` until configured
    lora: Any = None
    #: further names of the base model (``--served-model-name A B ...``: B ...)
    served_model_aliases: tuple[str, ...] = ()
    #: the chat response's role (``--response-role``)
    response_role: str = "assistant"
    #: ``--trust-request-chat-template``: a request may bring its own ``chat_template``
    trust_request_chat_template: bool = False
    #: the model's generation-config sampling defaults (``serving/sampling_defaults.py``)
    sampling_defaults: SamplingDefaults = attrs.Factory(SamplingDefaults)
    #: ``--return-tokens-as-token-ids``: logprobs show ``token_id:<id>`` unless a request says otherwise
    return_tokens_as_token_ids: bool = False
    #: ``--enable-force-include-usage``: every stream carries usage, as with ``include_usage`` and
    #: ``continuous_usage_stats``, whatever its ``stream_options`` say
    enable_force_include_usage: bool = False
    #: keys, CORS, request-id headers, access log (``api/middleware/``)
    http: HTTPOptions = attrs.Factory(HTTPOptions)
    #: the engine runs speculative decoding (vLLM's ``--speculative-config``, known to ``serve``/``frontend``)
    speculative_decoding: bool = False
    #: vLLM's ``--fingerprint-mode`` / ``--fingerprint-value`` (``serving/fingerprint.py``)
    fingerprint_mode: str = "full"
    fingerprint_value: str | None = None
    #: ``--anthropic-disabled-thinking-effort``; ``auto`` is replaced by the template probe's answer
    #: on first use (``api/anthropic/effort.py``)
    anthropic_disabled_thinking_effort: str = "auto"
    _limits: ModelLimits | None = None
    _fingerprint: tuple[str | None] | None = None

    @property
    def limits(self) -> ModelLimits:
        if self._limits is None:
            self._limits = ModelLimits.from_tokenizer(
                self.tokenizer,
                self.engine.max_model_len,
                max_logprobs=self.max_logprobs,
                sampling=self.sampling_defaults,
                speculative_decoding=self.speculative_decoding,
            )
        return self._limits

    @property
    def system_fingerprint(self) -> str | None:
        """The responses' ``system_fingerprint``, computed once from the engine's registration."""
        if self._fingerprint is None:
            registration = self.engine.registration
            if registration is None:  # not ready: no response is built before it is
                return None
            mode, value = self.fingerprint_mode, self.fingerprint_value
            self._fingerprint = (system_fingerprint(mode, value, registration, self.model_path),)
        return self._fingerprint[0]

    @property
    def served_model_names(self) -> tuple[str, ...]:
        """Every name of the base model (``--served-model-name A B ...``), the first one first."""
        return (self.served_model_name, *self.served_model_aliases)

    def response_model(self, lora_request: Any = None) -> str:
        """The ``model`` of a response: vLLM's ``OpenAIServingModels.model_name`` — the adapter's name
        for a LoRA request, else the *first* served name, whichever base name the request used."""
        if lora_request is not None:
            return str(lora_request.lora_name)
        return self.served_model_name

    def stream_usage(self, stream_options: dict[str, Any] | None) -> tuple[bool, bool]:
        """vLLM's ``should_include_usage``: ``(a usage event before [DONE], usage on every chunk)`` —
        ``(True, True)`` with ``--enable-force-include-usage``, else ``stream_options``' ``include_usage``
        and ``include_usage and continuous_usage_stats``. 400 for a non-boolean option."""
        wanted = include_usage(stream_options)
        continuous = (stream_options or {}).get("continuous_usage_stats", False)
        if continuous is not None and not isinstance(continuous, bool):
            raise APIError(
                400, "stream_options.continuous_usage_stats must be a boolean", param="stream_options"
            )
        if self.enable_force_include_usage:
            return True, True
        return wanted, wanted and bool(continuous)

    def tokens_as_ids(self, requested: bool | None) -> bool:
        """A request's ``return_tokens_as_token_ids``; unset (``None``) falls back to the server's
        ``--return-tokens-as-token-ids``, as vLLM's ``_create_*_logprobs`` do."""
        return self.return_tokens_as_token_ids if requested is None else bool(requested)

    def check_model(self, requested: str | None) -> None:
        """Pass for no model, the base model's names (and its path, a trio-front extension) and registered
        LoRA adapters; 503 for a ``--lora-modules`` adapter not loaded yet, else vLLM's 404 (which lists
        the served names)."""
        if requested and requested not in self.served_model_names and requested != self.model_path:
            if self.lora is not None:
                if self.lora.resolve(requested) is not None:
                    return
                if self.lora.is_pending(requested):
                    raise APIError(503, f"the LoRA adapter `{requested}` is still loading; retry shortly")
            names = ", ".join(self.served_model_names)
            raise APIError(
                404,
                f"The model `{requested}` does not exist. Valid aliases: {names}.",
                param="model",
                type="NotFoundError",
            )

    def check_chat_template(
        self, chat_template: str | None, chat_template_kwargs: dict[str, Any] | None
    ) -> None:
        """vLLM's ``validate_chat_template``: without ``--trust-request-chat-template`` a request may not
        bring its own template (``chat_template``, or ``chat_template_kwargs.chat_template``): a 400."""
        if self.trust_request_chat_template:
            return
        kwargs_template = isinstance(chat_template_kwargs, dict) and (
            chat_template_kwargs.get("chat_template") is not None
        )
        if chat_template is not None or kwargs_template:
            raise APIError(
                400,
                "Chat template is passed with request, but --trust-request-chat-template is not set. "
                "Refused request with untrusted chat template.",
            )

    def chat_template_kwargs(self, requested: dict[str, Any] | None) -> dict[str, Any] | None:
        """What the reasoning parser sees (and the engine gets as ``reasoning_parser_kwargs``): the
        request's ``chat_template_kwargs`` over ``--default-chat-template-kwargs`` (the renderer's
        ``default_kwargs``, which it applies itself when rendering), as vLLM's ``with_defaults``: with
        defaults, a request's ``None``/``"auto"`` values do not override them."""
        defaults = self.renderer.default_kwargs
        if not defaults:
            return requested
        return merge_kwargs(defaults, requested if isinstance(requested, dict) else None)

    def chat_role(self, add_generation_prompt: bool, messages: list[Any]) -> str:
        """vLLM's ``get_chat_request_role``: ``--response-role`` when the prompt asks for a new turn, else
        the role of the last message (the answer continues it)."""
        if add_generation_prompt:
            return self.response_role
        last = messages[-1] if messages else None
        role = last.get("role") if isinstance(last, dict) else None
        return role if isinstance(role, str) else self.response_role

    def resolve_lora(self, requested: str | None) -> Any:
        """The ``wire.LoRARequest`` for a registered adapter name, ``None`` for the base model; 404 for
        an unknown name (``serving/lora.py`` keeps the registry)."""
        if self.lora is not None and requested is not None:
            found = self.lora.resolve(requested)
            if found is not None:
                return found
        self.check_model(requested)
        return None

    def check_engine(self) -> None:
        """503 unless the engine can take requests (before its handshake, or after it died)."""
        state = self.engine.state
        if state is ClientState.READY:
            return
        if state is ClientState.STARTING:
            raise APIError(503, "the engine is still starting; retry shortly")
        raise APIError(503, f"the engine is unavailable: {self.engine.error}")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


def base_request_id(body_id: str | None, headers: Headers) -> str:
    """vLLM's ``_base_request_id``: the ``X-Request-Id`` header, else the body's ``request_id``, else a
    random hex id. The API prefixes it (``cmpl-``, ``chatcmpl-``); engine ids append a unique suffix, so
    two clients sending the same id cannot collide in the engine."""
    value = header(headers, b"x-request-id")
    if value is not None:
        return value
    return body_id if body_id is not None else secrets.token_hex(16)


def response_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed answer's usage carries vLLM's detail keys, null when there is nothing to say (its
    streamed usage event leaves them out). Completions, chat and beam search share it."""
    usage.setdefault("prompt_tokens_details", None)
    usage.setdefault("completion_tokens_details", None)
    return usage


def param_error(exc: ParamError) -> APIError:
    return APIError(400, str(exc), param=exc.param)


def engine_failure(
    constraint: object | None, param: str = "response_format", error: wire.RequestError | None = None
) -> APIError:
    """The engine finished a request with an error. A vLLM 0.33 engine may say why (*error*): answered
    with vLLM's status for it (400 validation, 503 retryable such as ``engine_paused``, else 500) and its
    message. Otherwise, with a structured-output constraint that is the constraint's fault (the engine
    could not compile or follow it; it keeps serving): a 400; else a 500 (the engine log says why)."""
    if error is not None:
        invalid = error.code == wire.RequestError.VALIDATION_ERROR and constraint is not None
        return APIError(error.http_status, error.message, param=param if invalid else None)
    if constraint is not None:
        return APIError(
            400,
            "the engine rejected this request's structured-output constraint (it could not compile or "
            "follow it); the engine log has its reason",
            param=param,
        )
    return APIError(500, "the engine failed to process this request")


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def include_usage(stream_options: dict[str, Any] | None) -> bool:
    if stream_options is None:
        return False
    value = stream_options.get("include_usage", False)
    if value is None:  # vLLM's StreamOptions field is ``bool | None``
        return False
    if not isinstance(value, bool):
        raise APIError(400, "stream_options.include_usage must be a boolean", param="stream_options")
    return value


def stream_fingerprint(state: ServerState) -> dict[str, str]:
    """The ``system_fingerprint`` key for a stream's terminal chunks (none at all when it is null: vLLM's
    stream chunks leave out null fields)."""
    fingerprint = state.system_fingerprint
    return {} if fingerprint is None else {"system_fingerprint": fingerprint}
