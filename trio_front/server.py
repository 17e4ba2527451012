"""Wiring for ``trio-front run`` and ``trio-front serve``: model files → text layer, engine link, ASGI app,
hypercorn on trio, signals, and (for ``serve``) a supervised headless vLLM engine.

Task tree of a running server (nothing outlives :func:`serve_frontend`'s nursery)::

    serve_frontend
    ├── signal watcher         SIGINT/SIGTERM → abort in-flight engine requests, stop hypercorn
    ├── [engine supervisor]    (``serve`` only) progress while loading; the engine exiting stops us
    └── hypercorn.trio.serve   connections, each request in its own nursery
        └── lifespan           owns the EngineClient's tasks
"""

from __future__ import annotations

import json
import logging
import signal
import time
from functools import partial
from pathlib import Path

import attrs
import hypercorn.trio
import trio

from trio_front import gc_heap
from trio_front.api import middleware
from trio_front.api.app import App
from trio_front.api.errors import APIError
from trio_front.api.middleware import HTTPOptions
from trio_front.api.middleware.plumbing import first
from trio_front.api.state import ServerState
from trio_front.api.ws import WSOptions
from trio_front.api.ws import shutdown as ws_shutdown
from trio_front.assistant import AssistantConfig
from trio_front.engine.client import ClientState, EngineClient, LinkConfig
from trio_front.engine.dp import REQUESTED_RANK, RankRangeError, parse_rank_header
from trio_front.listen import hypercorn_config
from trio_front.serving.lora import LoRAModule, LoRARegistry, StaticLoadError, parse_lora_modules
from trio_front.serving.sampling_defaults import load_sampling_defaults
from trio_front.serving.structured import StructuredConfig
from trio_front.text.chat import ChatRenderer
from trio_front.text.tokenizer import Tokenizer

log = logging.getLogger("trio_front")

REPO = Path(__file__).resolve().parents[1]
BUNDLED_MODEL = REPO / "models" / "tiny-llama"


@attrs.frozen
class FrontendConfig:
    engine_addr: str
    model: Path
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    keep_alive_interval: float | None = None
    #: stream a request's tokens in deltas of this many (first and last excepted); 1 = every step
    stream_interval: int = 1
    #: a client (SSE or WebSocket) that leaves one write unread this long is cut off, its requests aborted
    send_timeout: float = 30.0
    #: after the drain and the abort, seconds hypercorn gets to close the connections
    graceful_timeout: float = 2.0
    allow_version_mismatch: bool = False
    ping_interval: float = 5.0
    ping_timeout: float = 30.0
    chat_template: str | None = None
    #: Tool calling and reasoning, vLLM's flags of the same names (``assistant/config.py``).
    enable_auto_tool_choice: bool = False
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    exclude_tools_when_tool_choice_none: bool = False
    #: vLLM's ``--structured-outputs-config`` JSON (``serving/structured.py``); must agree with the engine's.
    structured_outputs_config: str | None = None
    #: vLLM's ``--max-logprobs``: the cap on ``logprobs``/``top_logprobs``/``prompt_logprobs`` (and beam
    #: width x 2); ``serve`` passes it to the engine.
    max_logprobs: int = 20
    #: vLLM's ``--lora-modules`` entries (``name=path`` or JSON), loaded at start-up (``serving/lora.py``).
    lora_modules: tuple[str, ...] = ()
    #: vLLM's ``--enable-scale-out``: ``/v1/*/render``, ``/inference/v1/generate`` and its abort route.
    enable_scale_out: bool = False
    #: vLLM's ``--enable-server-load-tracking``: ``/load`` counts in-flight generate requests.
    enable_server_load_tracking: bool = False
    # ---- Deployment flags with vLLM's names and defaults (``trio_front/flags/`` maps them for ``run``,
    # ``serve`` and the ``frontend`` drop-in).
    #: further names the model answers to (vLLM's ``--served-model-name A B``: A is ``served_model_name``)
    served_model_aliases: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: the tokenizer's directory when it is not the model's (vLLM's ``--tokenizer``)
    tokenizer: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    #: ``--api-key`` (repeatable) or ``VLLM_API_KEY``: any one of them opens the guarded routes
    api_keys: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    allowed_methods: tuple[str, ...] = attrs.field(default=("*",), converter=tuple)
    allowed_headers: tuple[str, ...] = attrs.field(default=("*",), converter=tuple)
    allow_credentials: bool = False
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_ca_certs: str | None = None
    #: ``ssl.CERT_NONE`` (0), ``CERT_OPTIONAL`` (1) or ``CERT_REQUIRED`` (2), as vLLM's int flag
    ssl_cert_reqs: int = 0
    ssl_ciphers: str | None = None
    #: serve HTTP on this Unix socket path instead of host:port
    uds: str | None = None
    #: the path prefix a proxy strips (ASGI ``root_path``)
    root_path: str | None = None
    #: answer every response with ``X-Request-Id`` (the client's, else a fresh uuid4 hex)
    enable_request_id_headers: bool = False
    #: one access-log line per request (vLLM's uvicorn access log; ``--disable-uvicorn-access-log``)
    access_log: bool = True
    #: the chat response's role (vLLM's ``--response-role``)
    response_role: str = "assistant"
    #: ``auto`` (the model's generation_config.json), ``vllm`` (none) or a directory holding one
    generation_config: str = "auto"
    #: JSON object of sampling defaults overriding the generation config's (``--override-generation-config``)
    override_generation_config: str | None = None
    #: seconds SIGTERM lets in-flight requests finish before aborting them (vLLM's; 0 = abort at once)
    shutdown_timeout: float = 0.0
    #: let a request's own ``chat_template`` be used (vLLM refuses it otherwise)
    trust_request_chat_template: bool = False
    #: ``chat_template_kwargs`` every request starts from (vLLM's ``--default-chat-template-kwargs``)
    default_chat_template_kwargs: dict | None = None
    #: the server default of a request's unset ``return_tokens_as_token_ids``
    return_tokens_as_token_ids: bool = False
    #: usage on every stream, as if each asked for ``stream_options.include_usage``
    enable_force_include_usage: bool = False
    #: the engine runs speculative decoding: min_p and logit_bias are refused as vLLM refuses them
    speculative_decoding: bool = False
    #: ``system_fingerprint``: full, hash, custom (``fingerprint_value``) or none (serving/fingerprint.py)
    fingerprint_mode: str = "full"
    fingerprint_value: str | None = None
    #: ``thinking.disabled`` on /v1/messages → this reasoning_effort (``auto``: probe the chat template)
    anthropic_disabled_thinking_effort: str = "auto"
    #: HTTP/1.1 limits (vLLM's ``--h11-max-incomplete-event-size`` / ``--h11-max-header-count``)
    h11_max_incomplete_event_size: int = 4194304
    h11_max_header_count: int = 256
    #: idle keep-alive connections close after this many seconds (vLLM's VLLM_HTTP_TIMEOUT_KEEP_ALIVE)
    http_timeout_keep_alive: float = 5.0
    #: give up (exit non-zero) if the engine has not registered after this long (VLLM_ENGINE_READY_TIMEOUT_S)
    engine_ready_timeout: float = 600.0
    #: ``frontend`` drop-in: inherited sockets (HTTP bound-not-listening; the engines' ZMQ listeners)
    listen_fd: int | None = None
    input_fd: int | None = None
    output_fd: int | None = None
    #: Multi-process scale-out (``workers.py``): this process's client index, whether it owns the
    #: handshake, whether it shares the HTTP port (SO_REUSEPORT) and reports its engine sockets on stdout.
    client_index: int = 0
    owns_handshake: bool = True
    reuse_port: bool = False
    report_pair: bool = False
    bind_host: str | None = None
    #: API processes in all (``--workers``; vLLM's ``client_count``: scales the balancer's in-flight floor)
    client_count: int = 1
    # ---- Data parallelism (``engine/dp.py``): vLLM's ``--data-parallel-size`` ranks in the group. ``run``
    # manages (and handshakes) all of them; the ``frontend`` drop-in manages ``engine_count`` from
    # ``engine_start_index`` (vLLM's argv); ``serve`` starts ``data_parallel_size_local`` of them (default
    # all) as one headless ``vllm serve`` and waits for the rest from other nodes.
    data_parallel_size: int = 1
    data_parallel_size_local: int | None = None
    engine_start_index: int = 0
    engine_count: int | None = None
    #: a vLLM DP coordinator's front-end address (the drop-in's ``--coordinator-address``)
    coordinator_address: str | None = None

    @property
    def managed_engines(self) -> int:
        """How many engine ranks this frontend routes to."""
        return self.data_parallel_size if self.engine_count is None else self.engine_count


def assistant_options(config: FrontendConfig) -> tuple[AssistantConfig, StructuredConfig]:
    """Check the tool/reasoning/structured-output flags; raises ValueError with a message naming the
    flag (an unknown parser name lists the known ones)."""
    assistant = AssistantConfig(
        enable_auto_tool_choice=config.enable_auto_tool_choice,
        tool_call_parser=config.tool_call_parser,
        reasoning_parser=config.reasoning_parser,
        exclude_tools_when_tool_choice_none=config.exclude_tools_when_tool_choice_none,
    )
    text = config.structured_outputs_config
    return assistant, StructuredConfig.from_json(text) if text else StructuredConfig()


def lora_modules(config: FrontendConfig) -> list[LoRAModule]:
    """Check ``--lora-modules`` (syntax, and no adapter named like the served model); raises ValueError
    naming the flag."""
    modules = parse_lora_modules(config.lora_modules)
    served = (config.served_model_name or config.model.name, *config.served_model_aliases)
    for module in modules:
        if module.name in served:
            raise ValueError(f"--lora-modules: the adapter name {module.name!r} is a served model name")
    return modules


def moe_data_parallel(config: FrontendConfig) -> None:
    """Refuse data-parallel MoE engines without vLLM's DP coordinator (``ValueError``): their ranks step
    in lock-step waves that the coordinator starts (START_DP_WAVE), and `run` / `serve` start none, so
    a request on one rank would wait for idle peers forever. vLLM's own launch (the drop-in
    ``frontend``) passes ``--coordinator-address`` and is served."""
    if config.data_parallel_size <= 1 or config.coordinator_address is not None:
        return
    from trio_front.text.model_files import load_model_files

    experts = load_model_files(config.model).num_experts
    if experts:
        raise ValueError(
            f"--data-parallel-size {config.data_parallel_size} with a MoE model ({experts} experts per layer "
            "in config.json) needs vLLM's DP coordinator, which trio-front run/serve do not start; launch "
            "it with vllm serve (VLLM_USE_RUST_FRONTEND=1 VLLM_RUST_FRONTEND_PATH=$(command -v "
            "trio-front)), or use --data-parallel-size 1"
        )


def build_app(config: FrontendConfig) -> App:
    assistant, structured = assistant_options(config)
    static_loras = lora_modules(config)
    tokenizer = Tokenizer.from_pretrained(config.tokenizer or config.model)
    renderer = ChatRenderer(
        tokenizer,
        default_template=_read_template(config.chat_template),
        default_kwargs=config.default_chat_template_kwargs or {},
    )
    if config.input_fd is not None and config.output_fd is not None:  # `frontend`: vLLM bound them
        link = LinkConfig(None, input_fd=config.input_fd, output_fd=config.output_fd)
    elif config.owns_handshake:
        link = LinkConfig(config.engine_addr)
    else:  # another process owns the handshake; bind our own pair on the engine-facing host
        host = config.bind_host or "127.0.0.1"
        link = LinkConfig(None, input_addr=f"tcp://{host}:0", output_addr=f"tcp://{host}:0")
    engine = EngineClient(
        attrs.evolve(
            link,
            engine_count=config.managed_engines,
            engine_start_index=config.engine_start_index,
            client_count=config.client_count,
            coordinator_addr=config.coordinator_address,
            client_index=config.client_index,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            allow_version_mismatch=config.allow_version_mismatch,
            stream_interval=config.stream_interval,
        )
    )
    state = ServerState(
        engine=engine,
        tokenizer=tokenizer,
        renderer=renderer,
        served_model_name=config.served_model_name or config.model.name,
        model_path=str(config.model),
        keep_alive_interval=config.keep_alive_interval,
        send_timeout=config.send_timeout,
        ws_options=WSOptions(send_timeout=config.send_timeout),
        assistant=assistant,
        structured=structured,
        max_logprobs=config.max_logprobs,
        enable_scale_out=config.enable_scale_out,
        track_server_load=config.enable_server_load_tracking,
        served_model_aliases=config.served_model_aliases,
        response_role=config.response_role,
        trust_request_chat_template=config.trust_request_chat_template,
        return_tokens_as_token_ids=config.return_tokens_as_token_ids,
        enable_force_include_usage=config.enable_force_include_usage,
        speculative_decoding=config.speculative_decoding,
        fingerprint_mode=config.fingerprint_mode,
        fingerprint_value=config.fingerprint_value,
        anthropic_disabled_thinking_effort=config.anthropic_disabled_thinking_effort,
        sampling_defaults=load_sampling_defaults(
            config.model, config.generation_config, config.override_generation_config
        ),
        http=HTTPOptions(
            api_keys=config.api_keys,
            allowed_origins=config.allowed_origins,
            allowed_methods=config.allowed_methods,
            allowed_headers=config.allowed_headers,
            allow_credentials=config.allow_credentials,
            root_path=config.root_path,
            enable_request_id_headers=config.enable_request_id_headers,
            access_log=config.access_log,
            h11_max_header_count=config.h11_max_header_count,
        ),
    )
    # Always a registry (empty without --lora-modules): the runtime load endpoint may fill it.
    state.lora = LoRARegistry(engine, (*state.served_model_names, state.model_path), static_loras)
    app = App(state)
    # X-data-parallel-rank reaches every endpoint's engine requests through a context variable (dp.py).
    # Inside the keys / CORS / access-log layers (as the routes are), so a 401 still comes first.
    app._asgi = middleware.wrap(RankHeader(app._route, config.managed_engines), state.http)
    return app


class RankHeader:
    """ASGI layer for vLLM's ``X-data-parallel-rank`` header: an integer value pins the HTTP request's
    engine requests to that managed rank (:data:`~trio_front.engine.dp.REQUESTED_RANK`); out of range, a
    POST is answered 400 with vLLM's message before any work. A non-integer value is ignored, as vLLM's
    ``_get_data_parallel_rank`` ignores it. Other requests pass through untouched."""

    def __init__(self, app, ranks: int) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.ranks = ranks

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = first(scope["headers"], b"x-data-parallel-rank")
        rank = parse_rank_header(raw.decode("latin-1") if raw is not None else None)
        if rank is None:
            await self.app(scope, receive, send)
            return
        if not 0 <= rank < self.ranks and scope["method"] == "POST":
            error = APIError(400, str(RankRangeError(rank, self.ranks)))
            body = error.json()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        token = REQUESTED_RANK.set(rank)
        try:
            await self.app(scope, receive, send)
        finally:
            REQUESTED_RANK.reset(token)


def _read_template(value: str | None) -> str | None:
    """``--chat-template``: a file path, or the template itself (a long one is no valid path)."""
    if value is None or "{" in value:
        return value
    try:
        return Path(value).read_text() if Path(value).is_file() else value
    except OSError:
        return value


async def serve_frontend(
    config: FrontendConfig,
    *,
    supervise: EngineSupervisor | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM (or the supervised engine exits); ``started`` gets the bound URLs.

    A signal stops accepting connections at once; with ``shutdown_timeout`` > 0 in-flight requests and
    WebSocket responses then get that long to finish (``/health`` says 503, new requests, upgrades and
    WebSocket responses are refused; the log says every second what is still running) before the rest is
    aborted in one ABORT. A second signal ends the wait. Anything else that ends the server (the engine
    died, a start-up failure) aborts at once. Then every WebSocket sends what its responses queued and
    closes with 1001 (going away). ``serve``'s engine is stopped only after that, and the whole exit is
    bounded: vLLM's supervisor kills its frontend ``max(shutdown_timeout, 5)`` seconds after SIGTERM.
    """
    gc_heap.install_trace_from_env()
    app = build_app(config)
    if supervise is not None and config.data_parallel_size > 1:  # `serve -dp N`: the engine starts the ranks
        supervise = attrs.evolve(
            supervise,
            data_parallel_size=config.data_parallel_size,
            data_parallel_size_local=config.data_parallel_size_local,
        )
    hconfig = hypercorn_config(config)
    # hypercorn's clock starts at the stop trigger: the drain, then a short grace for connections to close.
    hconfig.graceful_timeout = config.shutdown_timeout + config.graceful_timeout
    hconfig.errorlog = _hypercorn_logger()
    stop = trio.Event()
    drain = False
    startup_failed = False
    drain_scope = trio.CancelScope()
    stopping_since = 0.0

    def shutdown(reason: str, *, graceful: bool = False) -> None:
        nonlocal drain, stopping_since
        if stop.is_set():
            if drain and not drain_scope.cancel_called:
                log.info("%s again: aborting what is still running", reason)
            drain_scope.cancel()  # asked again: stop waiting for in-flight requests
            return
        stopping_since = trio.current_time()
        drain = graceful and config.shutdown_timeout > 0 and _busy(app)
        if drain:
            log.info(
                "shutting down: %s; waiting up to %g s (--shutdown-timeout) for %s (a second signal aborts "
                "them)",
                reason,
                config.shutdown_timeout,
                _describe(_pending(app)),
            )
        else:
            log.info("shutting down: %s", reason)
        stop.set()

    def fail(reason: str) -> None:
        nonlocal startup_failed
        startup_failed = True
        shutdown(reason)

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, app, hconfig, shutdown_trigger=stop.wait))
        # hypercorn's own "Running on" is filtered out (_hypercorn_logger): this line says more.
        log.info(
            "trio-front serving %s on %s: listening, not ready until the engine registers (/health answers "
            "503 until then; Ctrl-C to quit)",
            app.state.served_model_name,
            ", ".join(binds),
        )
        async with trio.open_nursery() as helpers:
            helpers.start_soon(_watch_signals, shutdown)
            if supervise is not None:
                helpers.start_soon(supervise.run, app.engine, shutdown)
            helpers.start_soon(_report_ready, app.engine, binds)
            helpers.start_soon(_ready_deadline, app.engine, config.engine_ready_timeout, fail)
            if app.state.lora is not None and app.state.lora.static_modules:

                async def load_loras() -> None:
                    if not await _load_static_loras(app.state.lora):
                        fail("the --lora-modules adapters could not be loaded")

                helpers.start_soon(load_loras)
            if config.report_pair:  # tell the supervisor where the engine must connect (workers.py)
                in_addr, out_addr = app.engine.bound_pair or ("", "")
                print(json.dumps({"input": in_addr, "output": out_addr}), flush=True)
            task_status.started(binds)
            await stop.wait()
            app.draining = True  # /health 503, new POSTs refused
            ws_shutdown.begin_drain(app.state.ws_stats)  # new upgrades and WebSocket responses refused
            if drain:
                with drain_scope, trio.move_on_after(config.shutdown_timeout):
                    await _drain(app, config.shutdown_timeout)
                if _busy(app):
                    log.info("aborting what is still running: %s", _describe(_pending(app)))
                else:
                    log.info("drained in %.1f s", trio.current_time() - stopping_since)
            app.begin_shutdown()  # aborts every engine request still open, in one ABORT
            sockets = app.state.ws_stats.open_sockets
            left_open = await ws_shutdown.close_all(app.state.ws_stats, config.graceful_timeout)
            if sockets:
                log.info(
                    "closed %d WebSocket(s) with 1001 (going away)%s",
                    sockets - left_open,
                    f"; {left_open} not closing in time are cut" if left_open else "",
                )
            # The helpers (``serve``'s engine supervisor too) stop only now: the engine outlives the drain.
            helpers.cancel_scope.cancel(reason="server shutdown")
        # hypercorn now closes the connections; bound the whole exit.
        nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout + 1
    log.info("trio-front stopped %.1f s after the shutdown began", trio.current_time() - stopping_since)
    if startup_failed:
        raise SystemExit(1)  # like vLLM, whose start-up fails when a static adapter does not load


def _pending(app: App) -> tuple[int, int, int, int]:
    """What a drain waits for: HTTP requests (streams included), engine requests, WebSocket responses; and
    the WebSockets open (which close once their responses are done)."""
    ws = app.state.ws_stats
    return app.in_flight, app.engine.open_requests, ws.running_responses, ws.open_sockets


def _busy(app: App) -> bool:
    return any(_pending(app)[:3])


def _describe(pending: tuple[int, int, int, int]) -> str:
    http, engine, responses, sockets = pending
    parts = [f"{http} HTTP request(s)", f"{engine} engine request(s)", f"{responses} WebSocket response(s)"]
    return ", ".join(parts) + f" ({sockets} WebSocket(s) open)"


async def _drain(app: App, timeout: float, report_every: float = 1.0) -> None:
    """Return once no HTTP request, engine request or WebSocket response is running; log what is left every
    *report_every* seconds. The caller bounds the wait (and cancels it on a second signal)."""
    started = trio.current_time()
    next_report = started + report_every
    while _busy(app):
        now = trio.current_time()
        if now >= next_report:
            log.info(
                "draining (%.0f of %g s): waiting for %s", now - started, timeout, _describe(_pending(app))
            )
            next_report += report_every
        await trio.sleep(0.02)


class _DropRunningOn(logging.Filter):
    """hypercorn logs "Running on URL (CTRL + C to quit)" when it listens; serve_frontend's own line says
    that and whether the engine is there yet."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on ")


_RUNNING_ON_FILTER = _DropRunningOn()


def _hypercorn_logger() -> logging.Logger:
    """hypercorn's error log as a plain logger: given a Logger, hypercorn adds no handler of its own (with
    its default it adds a stderr handler *and* propagates to ours, so every line came out twice)."""
    logger = logging.getLogger("hypercorn.error")
    if _RUNNING_ON_FILTER not in logger.filters:
        logger.addFilter(_RUNNING_ON_FILTER)
    return logger


async def _ready_deadline(engine: EngineClient, timeout: float, fail) -> None:  # type: ignore[no-untyped-def]
    """vLLM's VLLM_ENGINE_READY_TIMEOUT_S: an engine that has not registered by then is a start-up failure."""
    with trio.move_on_after(timeout):
        try:
            await engine.wait_ready()
        except Exception:
            pass  # the engine died while starting: that has its own report and shutdown
        return
    fail(f"the engine did not register within {timeout:g} s (VLLM_ENGINE_READY_TIMEOUT_S)")


async def _load_static_loras(registry: LoRARegistry) -> bool:
    """Load ``--lora-modules`` once the engine is ready; False (reason logged) if that fails."""
    try:
        await registry.engine.wait_ready()
    except Exception:
        return True  # the engine never came up: that has its own report and shutdown
    try:
        await registry.load_static()
    except StaticLoadError as exc:
        log.error("%s", exc)
        return False
    log.info("loaded LoRA adapters: %s", ", ".join(m.name for m in registry.static_modules))
    return True


async def _report_ready(engine: EngineClient, binds: list[str]) -> None:
    """Say once that the server answers now (the engine registered), with a request to try."""
    started = trio.current_time()
    try:
        await engine.wait_ready()
    except Exception:
        return
    # What exists now lives as long as the process: out of the cyclic collector's walks (gc_heap.py).
    gc_heap.freeze_startup_heap()
    url = binds[0] if binds else ""
    curl = f"curl {url}"
    if "://unix:" in url:  # hypercorn's name for a Unix socket bind: curl needs the path apart
        scheme, path = url.split("://unix:", 1)
        curl = f"curl --unix-socket {path} {scheme}://localhost"
    log.info("ready: the engine registered %.1f s after the server started listening; try: "
             "%s/v1/completions -H 'Content-Type: application/json' "
             "-d '{\"prompt\": \"def hello(\", \"max_tokens\": 16}'",
             trio.current_time() - started, curl)  # fmt: skip


async def _watch_signals(shutdown) -> None:  # type: ignore[no-untyped-def]
    """The first SIGINT/SIGTERM starts a graceful shutdown; a second one ends its drain at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            shutdown(f"signal {signal.Signals(signum).name}", graceful=True)


@attrs.define
class EngineSupervisor:
    """Runs a headless vLLM engine as a child of ``trio-front serve``: starts it, shows progress while it
    loads, stops the server if it exits, and tears its whole process group down on the way out."""

    model: Path
    host: str
    port: int
    extra_args: tuple[str, ...] = ()
    progress_interval: float = 5.0
    #: the group's size, and how many of its ranks (from 0) this engine process runs
    data_parallel_size: int = 1
    data_parallel_size_local: int | None = None

    async def run(self, engine: EngineClient, shutdown) -> None:  # type: ignore[no-untyped-def]
        """Start the engine and watch it until cancelled (the server's shutdown), then stop its process
        group (SIGTERM, SIGKILL after 15 s; shielded, and said in the log since it is what an exit waits
        for). The engine exiting on its own shuts the server down and keeps its log (path logged)."""
        from trio_front.engine.launch import EngineProcess

        process = EngineProcess.headless(
            self.model,
            self.host,
            self.port,
            extra_args=self.extra_args,
            data_parallel_size=self.data_parallel_size,
            data_parallel_size_local=self.data_parallel_size_local,
        )
        process.start()
        log.info("started vLLM engine (pid %d), log: %s", process.pid, process.log_path)
        if self.data_parallel_size > 1:
            local = self.data_parallel_size_local or self.data_parallel_size
            log.info(
                "it runs data-parallel ranks 0..%d of %d; %s",
                local - 1,
                self.data_parallel_size,
                "all are local"
                if local == self.data_parallel_size
                else f"ranks {local}..{self.data_parallel_size - 1} must connect from other nodes "
                f"(vllm serve MODEL --headless -dp {self.data_parallel_size} -dpl K -dpr {local} "
                f"--data-parallel-address HOST --data-parallel-rpc-port {self.port})",
            )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._progress, process, engine)
                await trio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
                nursery.cancel_scope.cancel()
            process.keep_log()  # it exited while it was needed: its log says why
            log.error(
                "the vLLM engine exited with status %s; log tail:\n%s",
                process.returncode,
                process.read_log(tail=3000),
            )
            shutdown("the engine process exited")
        finally:
            with trio.CancelScope(shield=True):
                if process.is_running():
                    # Measured: vLLM 0.32's headless process exits ~5 s after SIGTERM (its own teardown
                    # after it logs "Shutting down."), idle or not; the wait is its, so say so.
                    log.info(
                        "stopping the vLLM engine (pid %d): SIGTERM; vLLM's headless engine takes about 5 s "
                        "to exit (SIGKILL after 15 s)",
                        process.pid,
                    )
                started = trio.current_time()
                rc = await trio.to_thread.run_sync(process.terminate)
                log.info("vLLM engine stopped in %.1f s (exit status %s)", trio.current_time() - started, rc)

    async def _progress(self, process, engine: EngineClient) -> None:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        while engine.state is ClientState.STARTING:
            await trio.sleep(self.progress_interval)
            if engine.state is ClientState.STARTING:
                last = _last_line(process.read_log(tail=2000))
                log.info("engine loading (%.0f s): %s", time.monotonic() - started, last)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][-160:] if lines else "(no output yet)"
