"""``trio-front run --workers N``: N API-server processes on one port, attached to one engine.

This is vLLM's ``--api-server-count`` pattern on the engine side: the engine connects to every input/output
socket pair advertised in INIT and routes each request's outputs to the pair named by its
``client_index``. So:

* the **supervisor** (this module, the process the user started) binds the handshake address and starts N
  worker processes; each worker binds its own input ROUTER / output PULL on kernel-chosen ports and reports
  them on its stdout as one JSON line; the supervisor then answers the engine's HELLO with INIT listing all
  N pairs, and afterwards only watches: a signal is forwarded to every worker, and if one worker exits the
  others are stopped too (a worker cannot re-attach to the engine: attachment is one-shot);
* each **worker** is a normal ``trio-front run`` with ``client_index = i`` that does not own the handshake
  and binds the HTTP port with ``SO_REUSEPORT``, so the kernel spreads connections across workers.

With ``--data-parallel-size M`` the supervisor handshakes with all M ranks, each rank connects to every
worker's pair, and every worker balances over all M ranks on its own counts (``client_count = N`` scales
them, as in vLLM).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

import attrs
import trio
import zmq

from trio_front.engine import wire
from trio_front.engine.handshake import serve_handshake
from trio_front.engine.zmq_trio import make_socket
from trio_front.metrics import multiprocess as metrics_multiprocess
from trio_front.server import FrontendConfig

log = logging.getLogger("trio_front.workers")

#: How long a worker may take to start and report its socket pair.
WORKER_START_TIMEOUT = 60.0


def worker_config(config: FrontendConfig, index: int, workers: int = 1) -> FrontendConfig:
    """Worker *index* of *workers*: its own engine pair and client index; every worker routes to every
    data-parallel rank (each rank connects to all the pairs, as with vLLM's --api-server-count)."""
    host = (
        config.engine_addr[len("tcp://") :].rsplit(":", 1)[0]
        if config.engine_addr.startswith("tcp://")
        else None
    )
    if host is None:
        raise ValueError("--workers needs a tcp:// engine address")
    return attrs.evolve(config, client_index=index, owns_handshake=False, reuse_port=True, report_pair=True,
                        bind_host=host, client_count=workers)  # fmt: skip


async def run_supervisor(config: FrontendConfig, workers: int) -> int:
    """Run *workers* worker processes and the handshake; return an exit status.

    ``/metrics`` is correct across the workers: they write prometheus_client's multiprocess files into a
    directory this supervisor creates, passes in ``PROMETHEUS_MULTIPROC_DIR`` and removes when it stops
    (also on error or cancellation).
    """
    with metrics_multiprocess.owned_directory() as metrics_dir:
        return await _supervise(config, workers, metrics_dir)


async def _supervise(config: FrontendConfig, workers: int, metrics_dir: str) -> int:
    ctx = zmq.Context.instance()
    handshake = make_socket(ctx, zmq.ROUTER, bind=config.engine_addr)
    procs: list[trio.Process] = []
    status = 0
    try:
        async with trio.open_nursery() as nursery:
            pairs: list[tuple[str, str]] = []
            for index in range(workers):
                cfg = worker_config(config, index, workers)
                argv = [sys.executable, "-m", "trio_front.cli", "worker", "--config-json", _dump(cfg)]
                env = {**os.environ, metrics_multiprocess.ENV: metrics_dir}
                proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, env=env)
                procs.append(proc)
            with trio.fail_after(WORKER_START_TIMEOUT):
                for proc in procs:
                    pairs.append(await _read_pair(proc))
            log.info("%d workers bound their engine sockets; serving the handshake on %s", workers,
                     config.engine_addr)  # fmt: skip
            init = wire.HandshakeInit(
                addresses=wire.EngineAddresses(inputs=[p[0] for p in pairs], outputs=[p[1] for p in pairs])
            )
            nursery.start_soon(
                _handshake_then_close, handshake, init, config.engine_addr, config.data_parallel_size
            )
            nursery.start_soon(_forward_signals, procs)
            exited = trio.Event()
            for proc in procs:
                nursery.start_soon(_watch_worker, proc, exited, metrics_dir)
            await exited.wait()
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(config.shutdown_timeout + config.graceful_timeout + 10):
                for proc in procs:
                    await proc.wait()
            nursery.cancel_scope.cancel()
    finally:
        handshake.close()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
        status = max((abs(p.returncode or 0) for p in procs), default=0)
    return 0 if status in (0, signal.SIGTERM, signal.SIGINT) else 1


async def _read_pair(proc: trio.Process) -> tuple[str, str]:
    assert proc.stdout is not None
    buffer = b""
    while b"\n" not in buffer:
        chunk = await proc.stdout.receive_some(4096)
        if not chunk:
            raise RuntimeError(f"worker {proc.pid} exited before reporting its sockets")
        buffer += chunk
    report = json.loads(buffer.split(b"\n", 1)[0])
    return report["input"], report["output"]


async def _handshake_then_close(sock, init: wire.HandshakeInit, address: str, ranks: int = 1) -> None:  # type: ignore[no-untyped-def]
    await serve_handshake(sock, init, engine_count=ranks, address=address)
    sock.close()


async def _watch_worker(proc: trio.Process, exited: trio.Event, metrics_dir: str) -> None:
    await proc.wait()
    log.info("worker %d exited with %s", proc.pid, proc.returncode)
    metrics_multiprocess.mark_dead(metrics_dir, proc.pid)
    exited.set()


async def _forward_signals(procs: list[trio.Process]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("got %s; stopping %d workers", signal.Signals(signum).name, len(procs))
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)


def _dump(config: FrontendConfig) -> str:
    data = attrs.asdict(config)
    data["model"] = str(config.model)
    data["tokenizer"] = None if config.tokenizer is None else str(config.tokenizer)
    return json.dumps(data)


def load_config(text: str) -> FrontendConfig:
    from pathlib import Path

    data = json.loads(text)
    data["model"] = Path(data["model"])
    return FrontendConfig(**data)
