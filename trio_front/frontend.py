"""``trio-front frontend``: the drop-in frontend that vLLM 0.32's ``vllm serve`` launches.

With ``VLLM_USE_RUST_FRONTEND=1 VLLM_RUST_FRONTEND_PATH=$(command -v trio-front)``, ``vllm serve MODEL
[flags]`` binds the HTTP socket (bound, not listening) and two listening stream sockets for the engines'
ZMQ connections, starts the engines, runs their start-up handshake itself, and spawns::

    trio-front frontend --listen-fd N --input-listener-fd N --output-listener-fd N
        --engine-start-index I --engine-count C --data-parallel-size D
        [--grpc-listen-fd N] [--coordinator-address ADDR] --args-json '{...}'

(``vllm/v1/utils.py`` RustFrontendProcessManager). The args JSON holds the snake_case dest of every
``vllm serve`` flag whose value is not the default, plus ``model_tag``, ``engine_ready_timeout_secs`` and
``http_timeout_keep_alive``; ``trio_front.flags.args_json`` maps it to :class:`FrontendConfig` fields.

Contract with the supervisor: a flag we do not honour but that changes what clients see makes us exit
non-zero with one line naming it (vLLM then tears everything down); harmless unknown keys get one warning.
We listen at once and answer ``/health`` 503 until the engine registered on the input socket. SIGTERM
(vLLM's shutdown) drains for ``shutdown_timeout`` (shortened to end :data:`KILL_WINDOW_MARGIN` s before
vLLM's SIGKILL, which comes ``max(shutdown_timeout, 5)`` s after SIGTERM), aborts the rest and exits 0;
an engine that has not registered within ``engine_ready_timeout_secs`` is a start-up failure (non-zero).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("trio_front")

#: What the frontend reads from a model repository on the Hugging Face hub: the tokenizer, configs,
#: generation config and chat templates. The engine downloads the weights itself.
TOKENIZER_PATTERNS: tuple[str, ...] = ("*.json", "*.jinja", "*.model", "*.tiktoken", "*.txt")

#: Exit status for a refused flag or unusable argument (argparse's own usage-error status).
EXIT_REFUSED = 2

#: vLLM SIGKILLs its frontend ``max(shutdown_timeout, 5)`` s after SIGTERM (``_shutdown_subprocesses``). The
#: drain ends this long before that, leaving room for the abort, hypercorn closing the connections
#: (:data:`CLOSE_TIMEOUT`, plus serve_frontend's 1 s hard bound) and the process exit.
KILL_WINDOW_MARGIN = 2.0
CLOSE_TIMEOUT = 0.5


class RefusedError(Exception):
    """Start-up arguments the drop-in cannot honour; ``str()`` is the one line for stderr."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Declare the ``frontend`` sub-command with exactly the argv vLLM 0.32's supervisor passes."""
    p = subparsers.add_parser(
        "frontend",
        help="the frontend `vllm serve` launches (VLLM_USE_RUST_FRONTEND=1 VLLM_RUST_FRONTEND_PATH=...)",
        description=(
            "Run as vLLM 0.32's supervised frontend: adopt the HTTP socket and the engines' ZMQ listener "
            "sockets vLLM bound, read vLLM's flags from --args-json, and serve until SIGTERM. Not meant to "
            "be started by hand: run `VLLM_USE_RUST_FRONTEND=1 VLLM_RUST_FRONTEND_PATH=$(command -v "
            "trio-front) vllm serve MODEL [vLLM flags]`."
        ),
    )
    p.add_argument("--listen-fd", type=int, required=True, help="HTTP socket (bound, not listening)")
    p.add_argument(
        "--input-listener-fd", type=int, required=True, help="listening socket for the input ROUTER"
    )
    p.add_argument(
        "--output-listener-fd", type=int, required=True, help="listening socket for the output PULL"
    )
    p.add_argument("--engine-start-index", type=int, required=True, help="first engine rank served")
    p.add_argument("--engine-count", type=int, required=True, help="number of engines served")
    p.add_argument("--data-parallel-size", type=int, required=True, help="vLLM's data-parallel size")
    p.add_argument("--grpc-listen-fd", type=int, help="gRPC socket (refused: no gRPC server here)")
    p.add_argument(
        "--coordinator-address", help="the DP coordinator's front-end address (load counts, waves)"
    )
    p.add_argument("--args-json", required=True, help="vLLM's non-default `vllm serve` flags as JSON")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """The ``frontend`` handler: map the arguments, resolve the model, serve until a signal.

    Returns 0 after SIGINT/SIGTERM, :data:`EXIT_REFUSED` (after one line on stderr) for refused flags or
    bad arguments, 1 for a start-up failure (model files, engine-ready timeout, adapters).
    """
    try:
        config = build_config(args)
    except RefusedError as exc:
        print(f"trio-front frontend: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    import trio

    from .server import serve_frontend

    trio.run(serve_frontend, config)
    # vLLM's supervisor says nothing about a frontend that exits 0 in time: say it ourselves.
    log.info("trio-front frontend stopped cleanly (exit status 0)")
    return 0


def build_config(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Any:
    """vLLM's argv → :class:`FrontendConfig` (model files resolved to local directories).

    Raises :class:`RefusedError` naming every refused flag (argv and args JSON together) or the bad
    argument; logs one warning listing unknown args-JSON keys and one line listing ignored ones.
    """
    from .engine.zmq_trio import listener_endpoint
    from .flags.args_json import from_args_json
    from .listen import inherited_socket, tls_context
    from .server import FrontendConfig, assistant_options, lora_modules

    # Wrong fds would fail later, deep in hypercorn or libzmq: check them first, naming the flag.
    try:
        inherited_socket(args.listen_fd)
        for flag, fd in (
            ("--input-listener-fd", args.input_listener_fd),
            ("--output-listener-fd", args.output_listener_fd),
        ):
            try:
                listener_endpoint(fd)
            except ValueError as exc:
                raise ValueError(f"{flag}: {exc}") from None
    except ValueError as exc:
        raise RefusedError(str(exc)) from None
    try:
        data = json.loads(args.args_json)
    except json.JSONDecodeError as exc:
        raise RefusedError(f"--args-json is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RefusedError(f"--args-json must be a JSON object, got {type(data).__name__}")
    result = from_args_json(data, environ)
    # The args JSON repeats some argv facts (data_parallel_size, grpc_port): name each flag once.
    named = {entry.split()[0] for entry in result.refused if entry}
    refused = [*(e for e in _refused_topology(args) if e.split()[0] not in named), *result.refused]
    if refused:
        raise RefusedError("vLLM flags trio-front does not support: " + "; ".join(refused))
    if result.unknown:
        log.warning(
            "ignoring args-json keys unknown to vLLM 0.32's `vllm serve`: %s",
            ", ".join(sorted(result.unknown)),
        )
    if result.ignored:
        log.info("vLLM flags with no effect on this frontend: %s", ", ".join(sorted(result.ignored)))
    fields = dict(result.fields)
    model_tag = fields.pop("model", None) or data.get("model_tag") or data.get("model")
    if not model_tag:
        raise RefusedError("--args-json names no model (model_tag)")
    download = result.download  # revision, tokenizer_revision, hf_token, download_dir, as given
    try:
        model_dir = resolve_model_dir(
            str(model_tag),
            revision=download.get("revision"),
            token=download.get("hf_token"),
            download_dir=download.get("download_dir"),
            environ=environ,
        )
        tokenizer = fields.pop("tokenizer", None)
        if tokenizer is not None:
            # vLLM: the tokenizer's revision defaults to the model's
            fields["tokenizer"] = resolve_model_dir(
                str(tokenizer),
                revision=download.get("tokenizer_revision") or download.get("revision"),
                token=download.get("hf_token"),
                download_dir=download.get("download_dir"),
                environ=environ,
            )
    except (OSError, ValueError) as exc:
        raise RefusedError(str(exc)) from None
    fields.update(_fit_kill_window(float(fields.get("shutdown_timeout", 0.0))))
    # vLLM's served name defaults to the model as given (a hub id or a path), not a directory's name.
    if not fields.get("served_model_name"):
        fields["served_model_name"] = str(model_tag)
    try:
        config = FrontendConfig(
            engine_addr="",  # vLLM's supervisor owns the handshake
            model=model_dir,
            listen_fd=args.listen_fd,
            input_fd=args.input_listener_fd,
            output_fd=args.output_listener_fd,
            **{**fields, **_topology(args)},
        )
        assistant_options(config)  # unknown parser names, a bad structured-outputs config
        lora_modules(config)
        tls_context(config)  # missing or unreadable certificate files, a key without a certificate
    except (TypeError, ValueError) as exc:
        raise RefusedError(str(exc)) from None
    return config


def _fit_kill_window(shutdown_timeout: float) -> dict[str, float]:
    """The drain and close budgets that end inside vLLM's kill window (see :data:`KILL_WINDOW_MARGIN`)."""
    window = max(shutdown_timeout, 5.0)
    drain = max(0.0, min(shutdown_timeout, window - KILL_WINDOW_MARGIN))
    if drain < shutdown_timeout:
        log.info(
            "--shutdown-timeout %g: in-flight requests get %g s, so the exit fits inside the %g s vLLM "
            "gives its frontend before killing it",
            shutdown_timeout,
            drain,
            window,
        )
    return {"shutdown_timeout": drain, "graceful_timeout": CLOSE_TIMEOUT}


def _topology(args: argparse.Namespace) -> dict[str, Any]:
    """The engine ranks vLLM's argv hands this frontend (they override the args JSON's DP keys)."""
    return {
        "data_parallel_size": args.data_parallel_size,
        "engine_start_index": args.engine_start_index,
        "engine_count": args.engine_count,
        "coordinator_address": args.coordinator_address,
    }


def _refused_topology(args: argparse.Namespace) -> list[str]:
    """The argv parts this frontend cannot serve: an engine range outside the DP group, gRPC."""
    refused = []
    if args.data_parallel_size < 1:
        refused.append(f"--data-parallel-size {args.data_parallel_size} (must be at least 1)")
    elif (
        args.engine_count < 1
        or not 0 <= args.engine_start_index <= args.data_parallel_size - args.engine_count
    ):
        refused.append(
            f"--engine-start-index {args.engine_start_index} --engine-count {args.engine_count} (not a "
            f"range of the {args.data_parallel_size} data-parallel ranks)"
        )
    if args.grpc_listen_fd is not None:
        refused.append("--grpc-port (no gRPC server in trio-front)")
    return refused


def resolve_model_dir(
    name: str,
    *,
    revision: str | None = None,
    token: bool | str | None = None,
    download_dir: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Path:
    """A local directory holding *name*'s tokenizer and config files.

    *name* is used as is when it is a directory (vLLM's rule too); otherwise it is a Hugging Face hub
    repository id, and :data:`TOKENIZER_PATTERNS` of it are fetched with ``huggingface_hub`` into
    *download_dir* (default: the hub cache, where the engine's download lands too) at *revision*, with
    *token* (vLLM's ``--hf-token``: a token, or true for the stored login). With ``HF_HUB_OFFLINE`` set,
    only the cache is looked at. Raises ``ValueError`` with a message naming *name* when it cannot be
    found. Blocking (network); called before the trio loop starts.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if name.startswith(("/", "./", "../", "~")):
        raise ValueError(f"model {name!r}: no such directory")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    offline = environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")
    try:
        local = snapshot_download(
            repo_id=name,
            revision=revision,
            token=token,
            cache_dir=download_dir,
            allow_patterns=list(TOKENIZER_PATTERNS),
            local_files_only=offline,
        )
    except HFValidationError as exc:
        raise ValueError(f"model {name!r} is neither a directory nor a hub repository id: {exc}") from None
    except Exception as exc:  # hub errors (not found, gated, offline cache miss) have many types
        where = " (HF_HUB_OFFLINE is set: only the local cache was searched)" if offline else ""
        raise ValueError(f"model {name!r}: cannot fetch its tokenizer files{where}: {exc}") from None
    return Path(local)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trio_front.frontend frontend ...``: the same as ``trio-front frontend ...``."""
    parser = argparse.ArgumentParser(prog="trio-front")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
