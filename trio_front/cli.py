"""``trio-front`` command line: one argparse sub-command per function pair.

Each sub-command has ``_add_<name>_parser(subparsers)`` (declares its flags and sets ``handler``) and a
handler ``(args) -> exit code``. :func:`main` builds the parser from that list and dispatches.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence


def _add_mock_engine_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mock-engine",
        help="run a mock vLLM engine core that attaches to a frontend's handshake address",
        description=(
            "A mock vLLM 0.32 engine core for tests and benchmarks. It connects like "
            "'vllm serve --headless --data-parallel-address HOST --data-parallel-rpc-port PORT' and "
            "produces deterministic tokens (see trio_front/engine/mock/rules.py): seed=1000000+K ends a "
            "request with EOS after K tokens. Exit status: 0 after SIGINT/SIGTERM, 1 if the engine died "
            "(a faithful hazard, e.g. a duplicate request id)."
        ),
    )
    p.add_argument("--engine-addr", required=True, help="the frontend's handshake address, tcp://HOST:PORT")
    p.add_argument("--step-ms", type=float, default=10.0, help="engine step time in ms (default 10)")
    p.add_argument("--max-model-len", type=int, default=2048, help="reported max_model_len (default 2048)")
    p.add_argument(
        "--vocab", type=int, default=4096, help="vocabulary size for the token rule (default 4096)"
    )
    p.add_argument("--max-num-seqs", type=int, default=256, help="running-request cap; extra requests wait")
    p.add_argument(
        "--vllm-version", default="0.32.0", help="vllm_version in the registration (default 0.32.0)"
    )
    p.add_argument(
        "--rank", type=int, default=0, help="data-parallel rank, i.e. the ZMQ identity (default 0)"
    )
    p.add_argument("--event-log", metavar="FILE", help="append events as JSON lines to FILE")
    p.add_argument("--log-steps", action="store_true", help="also log one 'step' event per engine step")
    p.add_argument(
        "--script",
        metavar="FILE",
        help="JSON script of prompt-substring -> output rules (format: trio_front/engine/mock/script.py)",
    )
    p.add_argument(
        "--hazards",
        choices=("faithful", "log"),
        default="faithful",
        help="faithful: die / stop reading / stop writing like the real engine; log: record and carry on",
    )
    p.set_defaults(handler=_run_mock_engine)


def _run_mock_engine(args: argparse.Namespace) -> int:
    import trio
    import zmq

    from .engine.mock import MockEngine, MockEngineConfig

    config = MockEngineConfig(
        engine_addr=args.engine_addr,
        step_ms=args.step_ms,
        max_model_len=args.max_model_len,
        vocab=args.vocab,
        max_num_seqs=args.max_num_seqs,
        vllm_version=args.vllm_version,
        rank=args.rank,
        event_log=args.event_log,
        keep_events=False,  # a long benchmark would grow the in-memory list without bound
        log_steps=args.log_steps,
        hazards=args.hazards,
        script=args.script,
    )
    ctx = zmq.Context()
    engine = MockEngine(config, zmq_context=ctx)

    async def serve() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
                await engine.run()
                nursery.cancel_scope.cancel()

    try:
        trio.run(serve)
    finally:
        ctx.term()  # honours the output sockets' linger, so ENGINE_CORE_DEAD gets out
    return 1 if engine.state == "dead" else 0


async def _cancel_on_signal(signals, scope) -> None:  # type: ignore[no-untyped-def]
    async for signum in signals:
        logging.getLogger("trio_front").info("got signal %d, stopping", signum)
        scope.cancel()
        return


def _add_frontend_options(p: argparse.ArgumentParser) -> None:
    """The flags ``run`` and ``serve`` share: vLLM's (``flags/options.py``) and trio-front's own."""
    from .flags.options import add_own_options, add_vllm_options

    add_vllm_options(p)
    add_own_options(p)


def _add_run_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="serve the OpenAI API for an engine that attaches to --engine-addr",
        description=(
            "Bind the engine handshake at --engine-addr and serve HTTP. Start the engine with: "
            "vllm serve DIR --headless --data-parallel-address HOST --data-parallel-rpc-port PORT"
        ),
    )
    p.add_argument(
        "--engine-addr", required=True, help="handshake address to bind: tcp://HOST:PORT or ipc://PATH"
    )
    p.add_argument("--model", required=True, help="the model directory (tokenizer, configs, chat template)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API-server processes sharing the port (SO_REUSEPORT), each with its own engine "
        "socket pair, like vLLM's --api-server-count (default 1)",
    )
    _add_frontend_options(p)
    p.set_defaults(handler=_run_frontend)


def _add_worker_parser(subparsers: argparse._SubParsersAction) -> None:
    # Started by `run --workers N`; no help= so that it is not listed (argparse would print
    # "worker ==SUPPRESS==" for help=SUPPRESS).
    p = subparsers.add_parser("worker")
    p.add_argument("--config-json", required=True)
    p.set_defaults(handler=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    import trio

    from .server import serve_frontend
    from .workers import load_config

    trio.run(serve_frontend, load_config(args.config_json))
    return 0


def _add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="start a headless vLLM engine as a child and serve it (default: the bundled tiny model)",
    )
    p.add_argument("model", nargs="?", help="model directory (default: the bundled tiny model)")
    p.add_argument("--engine-port", type=int, default=0, help="engine handshake port (default: a free one)")
    p.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for 'vllm serve' (repeatable), e.g. --engine-arg=--max-num-seqs=64",
    )
    _add_frontend_options(p)
    p.set_defaults(handler=_serve)


def _frontend_config(args: argparse.Namespace, engine_addr: str, model: str) -> object:
    """FrontendConfig for ``run`` / ``serve``: vLLM's flags through the table (``flags/``), then ours.
    Raises SystemExit naming the flag for a value trio-front cannot take."""
    from pathlib import Path

    from .flags.options import frontend_fields
    from .server import FrontendConfig

    return FrontendConfig(
        engine_addr=engine_addr,
        model=Path(model).resolve(),
        **frontend_fields(args),
        send_timeout=args.send_timeout,
        allow_version_mismatch=args.allow_engine_version_mismatch,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
    )


def _check_config(config: object) -> None:
    """Start-up errors (unknown parser names, a bad --structured-outputs-config) before anything runs."""
    from .server import assistant_options, lora_modules, moe_data_parallel

    try:
        assistant_options(config)  # type: ignore[arg-type]
        lora_modules(config)  # type: ignore[arg-type]
        moe_data_parallel(config)  # type: ignore[arg-type]
    except ValueError as exc:
        raise SystemExit(f"trio-front: error: {exc}") from None


def _run_frontend(args: argparse.Namespace) -> int:
    import trio

    from .server import serve_frontend

    config = _frontend_config(args, args.engine_addr, args.model)
    _check_config(config)
    if args.workers > 1:
        from .api.lora import ENV, runtime_updating_enabled

        if runtime_updating_enabled():  # as vLLM: each process would keep its own adapter registry
            raise SystemExit(f"trio-front: error: {ENV} cannot be used with --workers > 1")
        from .workers import run_supervisor

        return trio.run(run_supervisor, config, args.workers)
    trio.run(serve_frontend, config)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from functools import partial
    from pathlib import Path

    import trio

    from .engine.launch import pick_free_port
    from .server import BUNDLED_MODEL, EngineSupervisor, serve_frontend

    model = Path(args.model) if args.model else BUNDLED_MODEL
    port = args.engine_port or pick_free_port()
    config = _frontend_config(args, f"tcp://127.0.0.1:{port}", str(model))
    _check_config(config)
    engine_args = _engine_args(args)
    if _speculative(engine_args):  # the frontend refuses what the speculative sampler cannot do, as vLLM's
        import attrs

        config = attrs.evolve(config, speculative_decoding=True)  # type: ignore[misc]
    supervisor = EngineSupervisor(model.resolve(), "127.0.0.1", port, tuple(engine_args))
    trio.run(partial(serve_frontend, config, supervise=supervisor))
    return 0


def _speculative(engine_args: list[str]) -> bool:
    """Whether ``--engine-arg``s turn on vLLM's speculative decoding."""
    names = [a.split("=")[0].replace("_", "-") for a in engine_args if a.startswith("-")]
    prefixes = ("--speculative-config", "--spec-method", "--spec-model")  # dotted forms too
    return any(n == "-sc" or n.startswith(prefixes) for n in names)


def _engine_args(args: argparse.Namespace) -> list[str]:
    """``serve``: the ``vllm serve`` arguments of its engine: ``--engine-arg``s, and the flags the engine
    needs too: it gates grammars on the reasoning parser, compiles them with its own structured-outputs
    backend and tokenizer, caps logprobs itself, and loads adapters only with --enable-lora."""
    engine_args = list(args.engine_arg)
    given = {a.split("=")[0].replace("_", "-") for a in engine_args if a.startswith("--")}
    if args.reasoning_parser:
        engine_args.append(f"--reasoning-parser={args.reasoning_parser}")
    if args.structured_outputs_config:
        engine_args.append(f"--structured-outputs-config={args.structured_outputs_config}")
    if args.max_logprobs != 20:
        engine_args.append(f"--max-logprobs={args.max_logprobs}")
    if args.tokenizer and "--tokenizer" not in given:
        engine_args.append(f"--tokenizer={args.tokenizer}")
    if args.lora_modules and "--enable-lora" not in given:
        engine_args.append("--enable-lora")
    return engine_args


def build_parser() -> argparse.ArgumentParser:
    from . import frontend

    parser = argparse.ArgumentParser(
        prog="trio-front", description="An OpenAI-compatible frontend for vLLM on trio"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(subparsers)
    _add_serve_parser(subparsers)
    frontend.add_parser(subparsers)  # the drop-in `vllm serve` launches (frontend.py)
    _add_mock_engine_parser(subparsers)
    _add_worker_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .flags.options import vllm_spellings

    args = build_parser().parse_args(vllm_spellings(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
