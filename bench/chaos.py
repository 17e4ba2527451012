"""A longer, parameterised run of the chaos suite (``tests/chaos/``): thousands of clients leaving at seeded
random moments across every API, then optionally the engine killed and the engine stopped under load.

    .venv/bin/python bench/chaos.py [--clients 5000] [--rounds 3] [--spread 30] [--keep-alive 5] [--seed 1]
                                    [--apis completions,chat,responses,realtime,responses_ws]
                                    [--step-ms 2] [--trace] [--engine-failures]

Each round runs ``--clients`` clients (``tests/chaos/clients.py``: mid-head, mid-body, before the response
head, after k events, mid-handshake, mid-frame, cancel, or complete; FIN or RST) started uniformly over
``--spread`` seconds against an in-process server (mock engine, hypercorn configured as ``serve``
configures it), waits until nothing is in flight, and prints the figures: clients by API, by moment and
by way of leaving, engine adds/aborts/finishes, leaks (requests not ended exactly once, live ids, open
sockets, mock hazards), tasks and traced memory (``--trace``: tracemalloc over rounds 2.., about 3x
slower). Exit status 1 if anything leaked or a client failed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import tracemalloc
from pathlib import Path

import trio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.ws_fixtures import count_tasks
from tests.chaos import clients
from tests.chaos.server import storm_server, subprocess_engine_server
from trio_front.api.ws import WSOptions


async def storms(args: argparse.Namespace) -> bool:
    apis = tuple(args.apis.split(","))
    unknown = set(apis) - set(clients.APIS)
    if unknown:
        raise SystemExit(f"--apis: unknown {sorted(unknown)}; choose from {', '.join(clients.APIS)}")
    ok = True
    frontend = {"http_timeout_keep_alive": args.keep_alive}
    async with storm_server(
        frontend=frontend, ws=WSOptions(send_timeout=10), step_ms=args.step_ms, max_num_seqs=4096
    ) as server:
        baseline = count_tasks()  # the idle server's tasks; each round must come back to it
        for round_ in range(args.rounds):
            seed = args.seed * 1000 + round_
            plans = clients.make_plans(args.clients, seed=seed, apis=apis, spread=args.spread)
            for plan in plans:
                plan.index += round_ * args.clients
            since = len(server.mock.log.events)
            tracing = args.trace and round_ > 0
            clients.collect()
            if tracing:
                tracemalloc.start()
            started = time.monotonic()
            result = await clients.storm(server.port, plans, seed=seed, timeout=120)
            await server.settle(timeout=60)
            settled = time.monotonic() - started
            tasks = await clients.settle_tasks(baseline, args.keep_alive + 10)
            retained = ""
            if tracing:
                clients.collect()
                size, _ = clients.retained_bytes(tracemalloc.take_snapshot())
                tracemalloc.stop()
                retained = f", traced memory retained {size / 2**10:.0f} KiB"
            failed = frozenset(plan.index for plan, _ in result.failures)
            report = clients.check_clean(server, plans, since=since, failed=failed)
            counts = clients.tally(plans)
            print(
                f"round {round_ + 1}: {len(plans)} clients in {result.elapsed:.1f} s (settled at "
                f"{settled:.1f} s); {dict(sorted(counts.items()))}; outcomes {dict(result.outcomes)}; "
                f"{report.line()}; tasks {tasks} (baseline {baseline}){retained}",
                flush=True,
            )
            for plan, note in result.failures[:5]:
                print(f"  failed: {plan} -> {note}")
            ok = ok and not result.failures and not report.problems and tasks <= baseline
    return ok


async def engine_failures() -> bool:
    """The two engine-failure scenarios of tests/chaos/test_engine_failure.py, with their figures."""
    from tests.chaos import test_engine_failure as failure

    ok = True
    for label, signum, frontend in (
        ("engine SIGKILLed", signal.SIGKILL, None),
        ("engine SIGSTOPped", signal.SIGSTOP, {"ping_interval": 0.5, "ping_timeout": 1.0}),
    ):
        async with subprocess_engine_server(frontend=frontend) as server:
            try:
                result = await failure.fail_under_load(server, lambda s=server, n=signum: s.engine.signal(n))
            finally:
                server.engine.signal(signal.SIGCONT)
        try:
            failure.check(*result, label)
        except AssertionError as exc:
            print(f"  {label}: FAILED {exc}")
            ok = False
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=5000, help="clients per round (default 5000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds on the same server (default 3)")
    p.add_argument("--spread", type=float, default=30.0, help="seconds over which a round's clients start")
    p.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        help="--http-timeout-keep-alive (default vLLM's 5 s); hypercorn's idle timer also closes a "
        "connection whose request head it has not parsed by then, so an overloaded run sees resets",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--apis", default=",".join(clients.APIS), help="comma-separated subset of the APIs")
    p.add_argument("--step-ms", type=float, default=2.0, help="mock engine step (default 2 ms)")
    p.add_argument("--trace", action="store_true", help="tracemalloc over rounds 2.. (about 3x slower)")
    p.add_argument("--engine-failures", action="store_true", help="also kill and stop the engine under load")
    args = p.parse_args()
    if args.clients < 1 or args.rounds < 1 or args.spread < 0:
        p.error("--clients and --rounds must be positive and --spread not negative")
    ok = trio.run(storms, args)
    if args.engine_failures:
        ok = trio.run(engine_failures) and ok
    print("no leaks, no failed clients" if ok else "LEAKS OR FAILURES (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
