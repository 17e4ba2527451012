"""``vllm bench serve`` as a second load generator: the client vLLM's users run, against the same pair.

`run` starts ``vllm bench serve --backend openai[-chat] --dataset-name random`` from the engine venv (it
runs on CPU here: no GPU is needed for a client; it imports torch, so its start-up costs ~10–16 CPU-s)
and reads its ``--save-result`` JSON. The frontend's and the engine's CPU are read from /proc just before
the client starts and after it exits. That window also holds the client's start-up, when the pair is
idle, and its one ready-check request, so the per-request figure is
``(cpu − idle_rate × (wall − duration)) / (num_prompts + 1)``, with ``idle_rate`` the pair's idle CPU
measured by the harness and ``duration`` the client's own benchmark duration. Blocking; a timeout kills
the client's process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import procstat
from trio_front.engine.launch import TINY_MODEL_DIR, engine_env, find_engine_python


def command(spec: dict[str, Any], port: int, model: str, out: Path) -> list[str]:
    """The ``vllm bench serve`` command line for *spec* (keys: ``chat``, ``prompt_len``, ``max_tokens``,
    ``num_requests``, ``concurrency``, ``seed``)."""
    vllm = find_engine_python().parent / "vllm"
    chat = bool(spec.get("chat"))
    return [
        str(vllm), "bench", "serve",
        "--backend", "openai-chat" if chat else "openai",
        "--endpoint", "/v1/chat/completions" if chat else "/v1/completions",
        "--base-url", f"http://127.0.0.1:{port}",
        "--model", model, "--tokenizer", str(TINY_MODEL_DIR),
        "--dataset-name", "random",
        "--random-input-len", str(spec["prompt_len"]), "--random-output-len", str(spec["max_tokens"]),
        "--random-range-ratio", "0",
        "--num-prompts", str(spec["num_requests"]), "--max-concurrency", str(spec["concurrency"]),
        "--request-rate", "inf", "--ignore-eos", "--temperature", "0", "--num-warmups", "0",
        "--seed", str(spec.get("seed", 0)), "--disable-tqdm",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
    ]  # fmt: skip


def run(
    spec: dict[str, Any], port: int, model: str, watch: dict[str, int], idle_ms_per_s: float,
    work_dir: Path, key: str, timeout: float = 1200.0,
) -> dict[str, Any]:  # fmt: skip
    """Run the client once; figures in the harness's names (``req_per_s``, ``ttft_ms``, ...) plus
    ``front_cpu_ms_per_req`` (see the module docstring), or ``{"error": ...}``."""
    out = work_dir / f"{key}.vllm-bench.json"
    argv = command(spec, port, model, out)
    log = (work_dir / f"{key}.vllm-bench.log").open("wb")
    before = {n: procstat.snapshot(p, with_rss=False) for n, p in watch.items()}
    busy0 = procstat.machine_busy_seconds()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=engine_env(), start_new_session=True
    )
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"error": f"vllm bench serve timed out after {timeout:.0f} s", "argv": argv}
    finally:
        log.close()
    wall = time.monotonic() - t0
    after = {n: procstat.snapshot(p, with_rss=False) for n, p in watch.items()}
    if rc != 0 or not out.exists():
        tail = (work_dir / f"{key}.vllm-bench.log").read_text(errors="replace")[-2000:]
        return {"error": f"vllm bench serve exit {rc}: {tail}", "argv": argv}
    r = json.loads(out.read_text())
    dur = float(r.get("duration") or 0.0)
    n = int(r.get("completed") or 0)
    res: dict[str, Any] = {
        "argv": argv,
        "client_wall_s": round(wall, 2),
        "duration_s": round(dur, 3),
        "ok": n,
        "failed": int(r.get("failed") or (spec["num_requests"] - n)),
        "req_per_s": round(float(r.get("request_throughput") or 0.0), 2),
        "output_tok_per_s": round(float(r.get("output_throughput") or 0.0), 1),
        "ttft_ms": {"p50": r.get("median_ttft_ms"), "p99": r.get("p99_ttft_ms")},
        "itl_ms": {"p50": r.get("median_itl_ms"), "p99": r.get("p99_itl_ms")},
        "tpot_ms": {"p50": r.get("median_tpot_ms")},
        "input_tokens": r.get("total_input_tokens"),
        "output_tokens": r.get("total_output_tokens"),
        "machine_busy_s": round(procstat.machine_busy_seconds() - busy0, 2),
    }
    for name, a in before.items():
        cpu = after[name].cpu_since(a)
        res[f"{name}_cpu_s_window"] = round(cpu, 3)
        if name == "front" and n:
            busy = max(0.0, cpu - idle_ms_per_s / 1000.0 * max(0.0, wall - dur))
            res["front_cpu_ms_per_req"] = round(busy * 1000.0 / (n + 1), 3)
    return res
