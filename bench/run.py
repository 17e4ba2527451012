"""One command for the whole benchmark: start each (frontend, fresh engine) pair, run the workloads, report.

    .venv/bin/python bench/run.py [--engines mock,real] [--frontends trio-front,vllm-py,vllm-rs]
                                  [--workloads W1,W2,W3,W4,W5] [--quick] [--rounds N]

For each engine, pairs run one at a time in alternating order (A B C, C B A, ...); each pair gets a
fresh engine, then every selected workload (each with its own warm-up) in a separate load-generator
process (bench/loadgen.py). Results go to ``bench/results/run-<stamp>.json``, process logs to
``bench/results/raw/<stamp>/``, and bench/report.py turns the JSON into ``run-<stamp>.md`` and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import enginelog, peers, plan, procstat, report, vllmbench

RESULTS = peers.REPO / "bench" / "results"
LOADGEN = peers.REPO / "bench" / "loadgen.py"


def rss_mb(pid: int) -> float:
    """RSS of *pid*'s process tree in MiB."""
    return round(procstat.rss_bytes(procstat.tree_pids(pid)) / 2**20, 1)


def idle_cpu(pid: int, seconds: float = 3.0) -> float:
    """CPU ms per second that *pid*'s tree burns while no request is in flight."""
    a = procstat.snapshot(pid, with_rss=False)
    time.sleep(seconds)
    b = procstat.snapshot(pid, with_rss=False)
    return round(b.cpu_since(a) * 1000.0 / (b.t - a.t), 2)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_loadgen(spec: dict[str, Any], work_dir: Path, key: str, timeout: float) -> dict[str, Any]:
    """Run one load-generator process; its JSON result (or ``{"error": ...}``)."""
    spec_path, out_path = work_dir / f"{key}.spec.json", work_dir / f"{key}.out.json"
    spec_path.write_text(json.dumps(spec))
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(LOADGEN), str(spec_path), str(out_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=peers.REPO,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"load generator timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not out_path.exists():
        return {"error": f"load generator exit {proc.returncode}: {proc.stderr[-2000:]}"}
    res = json.loads(out_path.read_text())
    res["loadgen_wall_s"] = round(time.monotonic() - t0, 2)
    return res


def derive(res: dict[str, Any], wl: plan.Workload, pair: peers.Pair) -> None:
    """Add per-request CPU figures and (mock) the engine's view of the phase; drop bulky raw lists."""
    m = res.get("measure", {})
    trees = m.get("trees", {})
    if "machine_busy_s" in m:  # CPU other processes on the machine used during the phase (noise)
        ours = sum(t["cpu_s"] for t in trees.values()) + m.get("client_cpu_s", 0.0)
        res["other_cpu_s"] = round(max(0.0, m["machine_busy_s"] - ours), 2)
    ok = res.get("ok") or res.get("closed_by_client") or 0
    if wl.spec.get("kind") == "vllm-bench":
        return  # its figures come from vllmbench.run
    if report.family(wl.key) in ("W1", "W2", "W3", "W6") and ok:
        for name in ("front", "engine"):
            if name in trees:
                res[f"{name}_cpu_ms_per_req"] = round(trees[name]["cpu_s"] * 1000.0 / ok, 3)
        res["client_cpu_ms_per_req"] = round(m.get("client_cpu_s", 0.0) * 1000.0 / ok, 3)
    if report.family(wl.key) in ("W2", "W6") and res.get("output_tokens") and "front" in trees:
        res["front_cpu_us_per_token"] = round(trees["front"]["cpu_s"] * 1e6 / res["output_tokens"], 2)
    if pair.event_log is not None and pair.event_log.exists() and "phase_start_t" in res:
        if wl.grace_s:
            time.sleep(wl.grace_s)
        events = enginelog.read_events(pair.event_log, res["phase_start_t"] - 0.5, time.monotonic())
        res["engine_events"] = enginelog.window_summary(events)
        if "records" in res:
            res["ttft_split"] = enginelog.ttft_split(events, res["records"], wl.spec.get("tag", "bx"))
        if wl.family == "W3":
            res["aborts"] = enginelog.analyze_aborts(events, res.pop("closed", []), wl.spec.get("tag", "bx"))
            res["front_cpu_ms_per_req"] = round(
                trees.get("front", {}).get("cpu_s", 0.0) * 1000.0 / max(1, res["aborts"]["closed_by_client"]),
                3,
            )
    res.pop("closed", None)
    res.pop("records", None)


def run_pair(
    frontend: str, engine: str, rnd: int, wls: list[plan.Workload], raw_dir: Path, group: str
) -> dict[str, Any]:
    """Start a fresh pair, run *wls* on it, stop it; the slot's result dict."""
    name = f"{engine}-{frontend}-{group}-r{rnd}"
    slot: dict[str, Any] = {
        "engine": engine,
        "frontend": frontend,
        "round": rnd,
        "group": group,
        "loadavg_before": os.getloadavg(),
        "workloads": {},
    }
    cfg = plan.engine_config(engine, group)
    slot["engine_config"] = cfg.describe()
    pair = peers.Pair(frontend, cfg, raw_dir / name)
    log(f"start {name}")
    try:
        pair.start()
    except Exception as exc:
        slot["status"] = "failed"
        slot["error"] = f"start: {exc!r}"[:3000]
        slot["front_log_tail"] = pair.front.read_log(tail=3000) if pair.front else ""
        slot["engine_log_tail"] = pair.eng.read_log(tail=3000) if pair.eng else ""
        pair.stop()
        log(f"  FAILED to start: {exc!r}"[:500])
        return slot
    try:
        slot["startup_s"] = pair.startup_s
        slot["startup"] = pair.timings
        slot["front_rss_mb_ready"] = rss_mb(pair.front.pid)  # type: ignore[union-attr]
        slot["front_idle_cpu_ms_per_s"] = idle_cpu(pair.front.pid)  # type: ignore[union-attr]
        for wl in wls:
            spec = {**wl.spec, "port": pair.http_port, "model": pair.model_id, "watch": pair.pids()}
            timeout = 1800.0
            if wl.spec["kind"] == "vllm-bench":
                res = vllmbench.run(
                    wl.spec, pair.http_port, pair.model_id or "", pair.pids(),
                    slot["front_idle_cpu_ms_per_s"], raw_dir / name, wl.key, timeout,
                )  # fmt: skip
            else:
                res = run_loadgen(spec, raw_dir / name, wl.key, timeout)
            if "error" not in res:
                derive(res, wl, pair)
            slot["workloads"][wl.key] = res
            log(f"  {wl.key}: {report.one_line(wl.key, res)}")
            if not pair.front.is_running() or not pair.eng.is_running():  # type: ignore[union-attr]
                slot["error"] = f"a process exited during {wl.key}"
                break
            time.sleep(1.0)
        slot["front_rss_mb_end"] = rss_mb(pair.front.pid)  # type: ignore[union-attr]
        slot["status"] = "ok" if "error" not in slot else "partial"
    except Exception as exc:
        slot["status"] = "failed"
        slot["error"] = traceback.format_exc()[-3000:]
        log(f"  FAILED: {exc!r}")
    finally:
        slot["exit_codes"] = pair.stop()
    return slot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="mock,real", help="comma list of mock, real (default both)")
    ap.add_argument(
        "--frontends",
        default=",".join(peers.FRONTENDS),
        help="comma list (default all three; trio-front-wN: N workers)",
    )
    ap.add_argument(
        "--workloads",
        default="W1,W1T,W6,VB,W2,W3,W4,W5",
        help="comma list of W1, W1T, W6, VB (vllm bench serve), W2..W5 (default all)",
    )
    ap.add_argument("--quick", action="store_true", help="fewer requests, one round: a smoke run of minutes")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 2, --quick 1)")
    ap.add_argument("--tag", default="", help="suffix for the results file name")
    ap.add_argument(
        "--results-dir", type=Path, default=RESULTS, help="where results go (default bench/results)"
    )
    args = ap.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    frontends = [f for f in args.frontends.split(",") if f]
    families = {w.strip().upper() for w in args.workloads.split(",") if w.strip()}
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    for e in engines:
        if e not in peers.ENGINES:
            ap.error(f"unknown engine {e!r}")
    for f in frontends:
        if not peers.is_frontend(f):
            ap.error(f"unknown frontend {f!r}")

    peers.raise_nofile_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S") + (f"-{args.tag}" if args.tag else "")
    results_dir: Path = args.results_dir.resolve()
    raw_dir = results_dir / "raw" / stamp
    raw_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "run": stamp,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "max_num_seqs": plan.MAX_NUM_SEQS,
        "unavailable": {},
        "slots": [],
    }
    out_path = results_dir / f"run-{stamp}.json"
    available = []
    for f in frontends:
        why = peers.frontend_unavailable(f)
        if why:
            result["unavailable"][f] = why
            log(f"skip {f}: {why}")
        else:
            available.append(f)
    for engine in engines:
        wls = [w for w in plan.workloads(engine, args.quick) if w.family in families]
        result.setdefault("workloads", {})[engine] = {w.key: {"title": w.title, **w.spec} for w in wls}
        for group in plan.GROUPS:
            batch = [w for w in wls if w.group == group]
            if not batch:
                continue
            for rnd, frontend in plan.slot_order(available, rounds):
                todo = batch
                if frontend in peers.FLOORS:  # the mock's W1/W2 (and W3 for the engine floor) mean anything
                    families_here = ("W1", "W2", "W3") if frontend == peers.FLOOR_ENGINE else ("W1", "W2")
                    todo = [w for w in batch if engine == "mock" and w.family in families_here]
                    if not todo:
                        continue
                result["slots"].append(run_pair(frontend, engine, rnd, todo, raw_dir, group))
                out_path.write_text(json.dumps(result, indent=1))
                time.sleep(2.0)
    out_path.write_text(json.dumps(result, indent=1))
    log(f"results: {out_path}")
    md = report.generate([out_path])
    log(f"report: {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
