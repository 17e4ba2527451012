"""Trace the abort-latency tail: fresh (frontend, mock) pairs, one cancellation storm each, every slow abort
set against the frontend's garbage-collector pauses.

    .venv/bin/python -m bench.abort_stall [--runs 8] [--streams 200] [--close-after-max 10]
                                          [--frontends trio-front,vllm-rs] [--json OUT]

Each run: a fresh pair on the 10 ms-step mock engine (``max_num_seqs`` 256), N streams of 1000 max tokens
opened at once and each closed after 1..M chunks (``loadgen.py``'s ``cancel`` kind, the W3 storm). Latency
is the client's close to the mock's receipt of the ABORT (one clock, ``time.monotonic()``).

trio-front pairs run with ``TRIO_FRONT_GC_TRACE`` (``trio_front/gc_heap.py``): every collection's span is
logged. An abort is *explained by a pause* when a collection of generation >= 1 (or any collection over
1 ms) overlaps its close-to-receipt window. Printed per run: p50 / p99 / max, the aborts over 5 ms, how many
of them a pause overlaps, and the pauses in the storm by generation (count, longest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import enginelog, peers, plan, stats
from bench.run import RESULTS, log, run_loadgen
from trio_front.gc_heap import TRACE_ENV

SLOW_MS = 5.0


def read_pauses(path: Path, t0: float, t1: float) -> list[tuple[int, float, float]]:
    """``(generation, start, end)`` of the collections in ``[t0, t1]`` from a ``TRIO_FRONT_GC_TRACE`` file."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        gen, start, end, _ = line.split()
        if float(end) >= t0 and float(start) <= t1:
            out.append((int(gen), float(start), float(end)))
    return out


def explain(spans: list[list[float]], pauses: list[tuple[int, float, float]]) -> dict[str, Any]:
    """Slow aborts and the pauses that overlap them."""
    big = [p for p in pauses if p[0] >= 1 or p[2] - p[1] > 0.001]
    slow = [(c, r) for c, r in spans if (r - c) * 1000.0 > SLOW_MS]
    overlapped = [(c, r) for c, r in slow if any(s <= r and e >= c for _, s, e in big)]
    by_gen: dict[str, dict[str, float]] = {}
    for gen, s, e in pauses:
        slot = by_gen.setdefault(str(gen), {"count": 0, "max_ms": 0.0, "total_ms": 0.0})
        slot["count"] += 1
        slot["max_ms"] = round(max(slot["max_ms"], (e - s) * 1000.0), 3)
        slot["total_ms"] = round(slot["total_ms"] + (e - s) * 1000.0, 3)
    return {"slow": len(slow), "slow_with_pause": len(overlapped), "pauses": by_gen}


def one_run(frontend: str, run: int, args: argparse.Namespace, raw: Path) -> dict[str, Any]:
    name = f"{frontend}-r{run}"
    trace = raw / f"{name}-gc.log"
    if frontend.startswith("trio-front"):
        os.environ[TRACE_ENV] = str(trace)
    else:
        os.environ.pop(TRACE_ENV, None)
    pair = peers.Pair(frontend, plan.engine_config("mock"), raw / name)
    try:
        pair.start()
        spec = {
            "kind": "cancel", "prompt_len": 32, "max_tokens": 1000, "concurrency": args.streams,
            "num_requests": args.streams, "close_after_max": args.close_after_max, "seed": 31 + run,
            "tag": "asx", "port": pair.http_port, "model": pair.model_id, "watch": pair.pids(),
        }  # fmt: skip
        res = run_loadgen(spec, raw / name, "storm", 600.0)
        if "error" in res:
            return {"frontend": frontend, "run": run, "error": res["error"]}
        time.sleep(3.0)  # the ABORTs of the last closes reach the mock's log
        events = enginelog.read_events(pair.event_log, res["phase_start_t"] - 0.5, time.monotonic())  # type: ignore[arg-type]
        ab = enginelog.analyze_aborts(events, res.get("closed", []), "asx", spans=True)
    finally:
        pair.stop()
        os.environ.pop(TRACE_ENV, None)
    spans = ab.pop("abort_spans")
    # The storm's span: the first close to the last receipt (the start-up freeze's own collection, just
    # before the storm, is left out).
    t0 = min((c for c, _ in spans), default=0.0)
    t1 = max((r for _, r in spans), default=0.0)
    out = {
        "frontend": frontend,
        "run": run,
        "latency_ms": stats.summary([(r - c) * 1000.0 for c, r in spans]),
        "aborted": ab["aborted"],
        "leaked": ab["leaked"],
        "closed": ab["closed_by_client"],
    }
    if frontend.startswith("trio-front"):
        out.update(explain(spans, read_pauses(trace, t0, t1)))
    return out


def line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['frontend']:<12} run {r['run']}: error {r['error'][:200]}"
    lat = r["latency_ms"]
    text = (
        f"{r['frontend']:<12} run {r['run']}: p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} "
        f"max {lat['max']:.1f} ms, aborted {r['aborted']}/{r['closed']}, leaked {r['leaked']}"
    )
    if "slow" in r:
        gens = ", ".join(
            f"gen{g} x{p['count']} max {p['max_ms']:.1f} ms" for g, p in sorted(r["pauses"].items())
        )
        text += f"; >{SLOW_MS:g} ms: {r['slow']} ({r['slow_with_pause']} overlap a GC pause)"
        text += f"; GC: {gens or 'none'}"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--close-after-max", type=int, default=10)
    ap.add_argument("--frontends", default="trio-front")
    ap.add_argument("--json", type=Path, default=None, help="write every run's figures here")
    args = ap.parse_args(argv)
    peers.raise_nofile_limit()
    raw = RESULTS / "raw" / (time.strftime("%Y%m%d-%H%M%S") + "-abort-stall")
    raw.mkdir(parents=True, exist_ok=True)
    results = []
    for run in range(args.runs):
        for frontend in args.frontends.split(","):
            log(f"run {run} {frontend}")
            r = one_run(frontend, run, args, raw)
            results.append(r)
            print(line(r), flush=True)
    for frontend in args.frontends.split(","):
        p99 = [r["latency_ms"]["p99"] for r in results if r["frontend"] == frontend and "latency_ms" in r]
        if p99:
            print(f"{frontend}: p99 over {len(p99)} runs: {', '.join(f'{x:.1f}' for x in sorted(p99))} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
