"""Results JSON → markdown (figures per frontend, ratios trio-front / peer, targets) and PNG plots.

    .venv/bin/python bench/report.py [RESULTS.json ...] [--out FILE.md]

Without arguments it reports the newest ``bench/results/run-*.json``. Several files are merged (their
slots pooled), e.g. a mock run and a real-engine run. Each figure is the mean over the rounds of a
(engine, workload, frontend) cell, with the min–max spread in brackets when there is more than one round.
Plots go to ``bench/results/plots/<name>-*.png`` (matplotlib, Agg backend).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
FRONT_ORDER = (
    "trio-front", "trio-front-w2", "trio-front-w4", "trio-front-si4", "trio-front-si8", "vllm-py", "vllm-rs",
    "hypercorn-floor", "hypercorn-floor-direct", "hypercorn-floor-engine",
)  # fmt: skip
SUBJECT = "trio-front"
PEERS = ("vllm-py", "vllm-rs")
FLOOR = "hypercorn-floor"
FLOOR_DIRECT = "hypercorn-floor-direct"
FLOOR_ENGINE = "hypercorn-floor-engine"

Getter = Callable[[dict[str, Any]], float | None]


def _g(*path: str) -> Getter:
    def get(res: dict[str, Any]) -> float | None:
        cur: Any = res
        for p in path:
            if not isinstance(cur, dict) or p not in cur:
                return None
            cur = cur[p]
        return cur if isinstance(cur, int | float) else None

    return get


def _w5_kb(res: dict[str, Any]) -> float | None:
    v = (res.get("front") or {}).get("rss_bytes_per_stream")
    return None if v is None else v / 1024.0


def _rss_after(res: dict[str, Any]) -> float | None:
    return _g("measure", "trees", "front", "rss_mb_after")(res)


# (label, getter, lower_is_better) per workload family
METRICS: dict[str, list[tuple[str, Getter, bool]]] = {
    "W1": [
        ("req/s", _g("req_per_s"), False),
        ("TTFT p50 ms", _g("ttft_ms", "p50"), True),
        ("TTFT p99 ms", _g("ttft_ms", "p99"), True),
        ("front CPU ms/req", _g("front_cpu_ms_per_req"), True),
        ("front RSS MB", _rss_after, True),
        ("client CPU ms/req", _g("client_cpu_ms_per_req"), True),
        ("other procs CPU s", _g("other_cpu_s"), True),
        ("failed", _g("failed"), True),
    ],
    "W2": [
        ("req/s", _g("req_per_s"), False),
        ("output tok/s", _g("output_tok_per_s"), False),
        ("TTFT p50 ms", _g("ttft_ms", "p50"), True),
        ("TTFT p99 ms", _g("ttft_ms", "p99"), True),
        ("TTFT p50: send → engine ADD ms", _g("ttft_split", "admission_ms", "p50"), True),
        ("TTFT p50: ADD → first token ms", _g("ttft_split", "after_add_ms", "p50"), True),
        ("ITL p50 ms", _g("itl_ms", "p50"), True),
        ("ITL p99 ms", _g("itl_ms", "p99"), True),
        ("TPOT p50 ms", _g("tpot_ms", "p50"), True),
        ("front CPU ms/req", _g("front_cpu_ms_per_req"), True),
        ("front CPU µs/token", _g("front_cpu_us_per_token"), True),
        ("front RSS MB", _rss_after, True),
        ("client CPU ms/req", _g("client_cpu_ms_per_req"), True),
        ("other procs CPU s", _g("other_cpu_s"), True),
        ("failed", _g("failed"), True),
    ],
    "VB": [
        ("req/s", _g("req_per_s"), False),
        ("output tok/s", _g("output_tok_per_s"), False),
        ("TTFT p50 ms", _g("ttft_ms", "p50"), True),
        ("TTFT p99 ms", _g("ttft_ms", "p99"), True),
        ("ITL p50 ms", _g("itl_ms", "p50"), True),
        ("front CPU ms/req", _g("front_cpu_ms_per_req"), True),
        ("client wall s", _g("client_wall_s"), True),
        ("failed", _g("failed"), True),
    ],
    "W6": [
        ("req/s", _g("req_per_s"), False),
        ("TTFT p50 ms", _g("ttft_ms", "p50"), True),
        ("TTFT p99 ms", _g("ttft_ms", "p99"), True),
        ("ITL p50 ms", _g("itl_ms", "p50"), True),
        ("front CPU ms/req", _g("front_cpu_ms_per_req"), True),
        ("front CPU µs/token", _g("front_cpu_us_per_token"), True),
        ("front RSS MB", _rss_after, True),
        ("other procs CPU s", _g("other_cpu_s"), True),
        ("failed", _g("failed"), True),
    ],
    "W3": [
        ("abort p50 ms", _g("aborts", "abort_latency_ms", "p50"), True),
        ("abort p99 ms", _g("aborts", "abort_latency_ms", "p99"), True),
        ("abort max ms", _g("aborts", "abort_latency_ms", "max"), True),
        ("aborted", _g("aborts", "aborted"), False),
        ("leaked", _g("aborts", "leaked"), True),
        ("ran to completion", _g("aborts", "ran_to_completion_after_close"), True),
        ("unmatched", _g("aborts", "unmatched"), True),
        ("front CPU ms/req", _g("front_cpu_ms_per_req"), True),
    ],
    "W4": [
        ("front RSS start MB", _g("front", "rss_mb_start"), True),
        ("front RSS peak MB", _g("front", "rss_mb_peak"), True),
        ("growth MB", _g("front", "growth_mb"), True),
        ("growth KiB/stream", _g("front", "growth_kib_per_stream"), True),
        ("RSS MB/s, last third", _g("front", "rss_mb_per_s_last_third"), True),
        ("after close MB", _g("front", "rss_mb_after_close"), True),
        ("engine tokens/stream", _g("engine_events", "tokens_per_ended_request"), False),
        ("front CPU s", _g("measure", "trees", "front", "cpu_s"), True),
    ],
    "W5": [
        ("KiB per idle stream", _w5_kb, True),
        ("streams opened", lambda r: (r.get("levels") or [{}])[-1].get("streams"), False),
        ("open failed", _g("open_failed"), True),
    ],
}


def family(key: str) -> str:
    """The metrics family of a result key: W1t is a W1, W2c256 a W2, VB1t a VB."""
    return key[:2]


def one_line(key: str, res: dict[str, Any]) -> str:
    """A console summary of one workload result."""
    if "error" in res:
        return "ERROR " + str(res["error"])[:300]
    parts = []
    for label, get, _ in METRICS.get(family(key), [])[:6]:
        v = get(res)
        if v is not None:
            parts.append(f"{label}={v:g}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------- tables


def load(paths: list[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runs = [json.loads(p.read_text()) for p in paths]
    slots = [s for r in runs for s in r.get("slots", [])]
    return runs, slots


def cells(slots: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """``(engine, workload key, frontend) -> [result per round]`` (errored results left out)."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for s in slots:
        for key, res in s.get("workloads", {}).items():
            if "error" not in res:
                out.setdefault((s["engine"], key, s["frontend"]), []).append(res)
    return out


def _vals(results: list[dict[str, Any]], get: Getter) -> list[float]:
    return [v for v in (get(r) for r in results) if v is not None]


def _mean(vals: list[float]) -> float | None:
    return sum(vals) / len(vals) if vals else None


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    a = abs(x)
    return f"{x:.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 0.1 else f"{x:.3f}"


def _cell(vals: list[float]) -> str:
    if not vals:
        return "–"
    m = _mean(vals)
    if len(vals) == 1:
        return _fmt(m)
    return f"{_fmt(m)} [{_fmt(min(vals))}–{_fmt(max(vals))}]"


def _ratio(a: list[float], b: list[float]) -> str:
    ma, mb = _mean(a), _mean(b)
    if ma is None or mb is None or mb == 0:
        return "–"
    return f"{ma / mb:.2f}"


def tables(slots: list[dict[str, Any]]) -> list[str]:
    c = cells(slots)
    lines: list[str] = []
    engines = sorted({k[0] for k in c}, key=lambda e: (e != "mock", e))
    for engine in engines:
        keys = sorted({k[1] for k in c if k[0] == engine}, key=lambda k: _order((engine, k)))
        for key in keys:
            fronts = [f for f in FRONT_ORDER if (engine, key, f) in c]
            rounds = max(len(c[(engine, key, f)]) for f in fronts)
            lines.append(f"### {engine} engine — {key} ({rounds} round{'s' if rounds > 1 else ''})\n")
            against = (*PEERS, FLOOR, FLOOR_DIRECT, FLOOR_ENGINE)
            ratio_cols = [(SUBJECT, p) for p in against if SUBJECT in fronts and p in fronts]
            if "vllm-rs" in fronts and "vllm-py" in fronts:
                ratio_cols.append(("vllm-rs", "vllm-py"))
            # scale-out: N workers against one process of ours, and against vLLM's Python frontend
            for scaled in (f for f in fronts if f.startswith("trio-front-w")):
                ratio_cols += [(scaled, b) for b in (SUBJECT, "vllm-py") if b in fronts]
            head = ["metric", *fronts, *[f"{a} / {b}" for a, b in ratio_cols]]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            for label, get, _ in METRICS.get(family(key), []):
                vals = {f: _vals(c[(engine, key, f)], get) for f in fronts}
                if not any(vals.values()):
                    continue
                row = [
                    label,
                    *[_cell(vals[f]) for f in fronts],
                    *[_ratio(vals[a], vals[b]) for a, b in ratio_cols],
                ]
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    return lines


def targets(slots: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, evaluated where the data exists (reported, never asserted)."""
    c = cells(slots)

    def m(engine: str, key: str, front: str, get: Getter) -> float | None:
        return _mean(_vals(c.get((engine, key, front), []), get))

    cpu = _g("front_cpu_ms_per_req")
    rows: list[tuple[str, str, str]] = []

    def ratio_row(name: str, num: float | None, den: float | None, limit: float, le: bool) -> None:
        if num is None or den is None or den == 0:
            rows.append((name, "–", "no data"))
            return
        r = num / den
        ok = r <= limit if le else r >= limit
        rows.append((name, f"{r:.2f}", "met" if ok else "NOT met"))

    for engine in ("mock", "real"):
        for key in ("W1", "W2c256", "W2c1024"):
            ratio_row(
                f"{engine} {key}: CPU/req trio-front / vllm-py ≤ 0.5",
                m(engine, key, SUBJECT, cpu), m(engine, key, "vllm-py", cpu), 0.5, True,
            )  # fmt: skip
            ratio_row(
                f"{engine} {key}: CPU/req trio-front / vllm-rs ≤ 1.5",
                m(engine, key, SUBJECT, cpu), m(engine, key, "vllm-rs", cpu), 1.5, True,
            )  # fmt: skip
    for key in ("W1t", "VB1t", "VB2", "W6"):
        ratio_row(
            f"mock {key}: CPU/req trio-front / vllm-py ≤ {0.4 if key == 'VB2' else 0.45}",
            m("mock", key, SUBJECT, cpu), m("mock", key, "vllm-py", cpu), 0.4 if key == "VB2" else 0.45, True,
        )  # fmt: skip
    for key in ("W1t", "VB1t"):
        ratio_row(
            f"mock {key}: req/s trio-front / vllm-py ≥ 1.5",
            m("mock", key, SUBJECT, _g("req_per_s")), m("mock", key, "vllm-py", _g("req_per_s")), 1.5, False,
        )  # fmt: skip
    ratio_row(
        "mock VB2: TTFT p50 trio-front / vllm-py ≤ 0.5",
        m("mock", "VB2", SUBJECT, _g("ttft_ms", "p50")), m("mock", "VB2", "vllm-py", _g("ttft_ms", "p50")),
        0.5, True,
    )  # fmt: skip
    ratio_row(
        "mock W1: req/s trio-front / vllm-py ≥ 1.5",
        m("mock", "W1", SUBJECT, _g("req_per_s")), m("mock", "W1", "vllm-py", _g("req_per_s")), 1.5, False,
    )  # fmt: skip
    ttft50 = _g("ttft_ms", "p50")
    ratio_row(
        "mock W2c256: TTFT p50 trio-front / vllm-py ≤ 0.5",
        m("mock", "W2c256", SUBJECT, ttft50), m("mock", "W2c256", "vllm-py", ttft50), 0.5, True,
    )  # fmt: skip
    p99 = m("mock", "W3", SUBJECT, _g("aborts", "abort_latency_ms", "p99"))
    leaked = m("mock", "W3", SUBJECT, _g("aborts", "leaked"))
    if p99 is None:
        rows.append(("mock W3: abort p99 ≤ 5 ms, none leaked", "–", "no data"))
    else:
        ok = p99 <= 5.0 and not leaked
        rows.append(
            (
                "mock W3: abort p99 ≤ 5 ms, none leaked",
                f"{p99:.2f} ms, {leaked:.0f} leaked",
                "met" if ok else "NOT met",
            )
        )
    w4 = m("mock", "W4", SUBJECT, _g("front", "rss_mb_per_s_last_third"))
    if w4 is None:
        rows.append(("mock W4: memory bounded", "–", "no data"))
    else:
        growth = m("mock", "W4", SUBJECT, _g("front", "growth_mb"))
        rows.append(
            (
                "mock W4: memory bounded (flat after generation)",
                f"{w4:+.3f} MB/s, peak +{growth or 0:.1f} MB",
                "met" if w4 <= 0.05 else "NOT met",
            )
        )
    out = ["| target | value | status |", "|---|---|---|"]
    out += [f"| {a} | {b} | {s} |" for a, b, s in rows]
    return out


# ----------------------------------------------------------------------------------------------- plots


def plots(slots: list[dict[str, Any]], prefix: Path) -> list[Path]:
    """TTFT CDFs, CPU per request, abort latency CDF, W4 memory over time, W5 RSS vs streams."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return []
    c = cells(slots)
    fronts = [f for f in FRONT_ORDER if any(k[2] == f for k in c)]
    written: list[Path] = []
    prefix.parent.mkdir(parents=True, exist_ok=True)

    def save(fig: Any, name: str) -> None:
        path = Path(f"{prefix}-{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    ttft_keys = sorted({(e, k) for e, k, _ in c if family(k) in ("W1", "W2")}, key=_order)
    if ttft_keys:
        fig, axes = plt.subplots(1, len(ttft_keys), figsize=(4.2 * len(ttft_keys), 3.6), squeeze=False)
        for ax, (engine, key) in zip(axes[0], ttft_keys, strict=True):
            for front in fronts:
                for i, res in enumerate(c.get((engine, key, front), [])):
                    xs = res.get("ttft_samples_ms") or []
                    if xs:
                        ys = [(j + 1) / len(xs) for j in range(len(xs))]
                        ax.plot(xs, ys, label=front if i == 0 else None, color=_color(front), alpha=0.8)
            ax.set_title(f"TTFT CDF — {engine} {key}", fontsize=9)
            _log_x(ax)
            ax.set_xlabel("TTFT ms (log)")
            ax.legend(fontsize=7)
        save(fig, "ttft-cdf")

    cpu_keys = sorted({(e, k) for e, k, _ in c if family(k) in ("W1", "W2", "W3", "W6", "VB")}, key=_order)
    if cpu_keys:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cpu_keys)), 3.8))
        width = 0.8 / len(fronts)
        for j, front in enumerate(fronts):
            xs, ys, lo, hi = [], [], [], []
            for i, (engine, key) in enumerate(cpu_keys):
                vals = _vals(c.get((engine, key, front), []), _g("front_cpu_ms_per_req"))
                if vals:
                    mean = _mean(vals) or 0.0
                    xs.append(i + j * width)
                    ys.append(mean)
                    lo.append(mean - min(vals))
                    hi.append(max(vals) - mean)
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], label=front, color=_color(front))
        ax.set_xticks(
            [i + width for i in range(len(cpu_keys))], [f"{e}\n{k}" for e, k in cpu_keys], fontsize=8
        )
        ax.set_ylabel("frontend CPU ms / request")
        ax.set_title("Frontend CPU per request (mean, min–max over rounds)", fontsize=9)
        ax.legend(fontsize=8)
        save(fig, "cpu-per-request")

    if any(k == "W3" for _, k, _ in c):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for front in fronts:
            for i, res in enumerate(c.get(("mock", "W3", front), [])):
                xs = (res.get("aborts") or {}).get("abort_latency_samples_ms") or []
                if xs:
                    ys = [(j + 1) / len(xs) for j in range(len(xs))]
                    ax.plot(xs, ys, label=front if i == 0 else None, color=_color(front))
        ax.axvline(5.0, ls="--", color="grey", lw=0.8)
        _log_x(ax)
        ax.set_xlabel("client close → engine ABORT receipt, ms (log)")
        ax.set_title("W3 abort latency CDF (mock engine)", fontsize=9)
        ax.legend(fontsize=8)
        save(fig, "abort-latency")

    if any(k == "W4" for _, k, _ in c):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for front in fronts:
            for i, res in enumerate(c.get(("mock", "W4", front), [])):
                s = res.get("samples") or []
                if not s:
                    continue
                base = s[0]["rss_mb"].get("front") or 0.0
                ax.plot(
                    [x["t"] for x in s], [(x["rss_mb"].get("front") or 0.0) - base for x in s],
                    label=front if i == 0 else None, color=_color(front),
                )  # fmt: skip
        ax.set_xlabel("s since the slow streams opened (closed at the end of the hold)")
        ax.set_ylabel("frontend RSS growth MB")
        ax.set_title("W4 slow consumers: frontend memory over time", fontsize=9)
        ax.legend(fontsize=8)
        save(fig, "w4-memory")

    if any(k == "W5" for _, k, _ in c):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for front in fronts:
            for i, res in enumerate(c.get(("mock", "W5", front), [])):
                lv = res.get("levels") or []
                if not lv:
                    continue
                base = lv[0]["rss_mb"].get("front") or 0.0
                ax.plot(
                    [x["streams"] for x in lv], [(x["rss_mb"].get("front") or 0.0) - base for x in lv],
                    marker="o", label=front if i == 0 else None, color=_color(front),
                )  # fmt: skip
        ax.set_xlabel("idle open streams")
        ax.set_ylabel("frontend RSS growth MB")
        ax.set_title("W5 idle streams: frontend RSS", fontsize=9)
        ax.legend(fontsize=8)
        save(fig, "w5-rss")
    return written


def _order(ek: tuple[str, str]) -> tuple[bool, str, int, str]:
    engine, key = ek
    return (engine != "mock", key[:2], len(key), key)


def _log_x(ax: Any) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())


def _color(front: str) -> str:
    colors = {"trio-front": "tab:green", "trio-front-w2": "tab:olive", "trio-front-w4": "tab:cyan"}
    colors |= {"vllm-py": "tab:blue", "vllm-rs": "tab:orange", FLOOR: "tab:purple", FLOOR_DIRECT: "tab:pink"}
    colors[FLOOR_ENGINE] = "tab:brown"
    return colors.get(front, "tab:grey")


# ----------------------------------------------------------------------------------------------- markdown


def generate(paths: list[Path], out: Path | None = None) -> Path:
    """Write the markdown report (and plots) for *paths*; returns the markdown path."""
    runs, slots = load(paths)
    name = paths[0].stem if len(paths) == 1 else "combined"
    out = out or paths[0].with_name(f"{name}.md")
    pngs = plots(slots, out.parent / "plots" / out.stem)
    lines = [f"# Benchmark report: {', '.join(p.name for p in paths)}", ""]
    for r in runs:
        lines.append(
            f"- run `{r['run']}`: args `{json.dumps(r.get('args'))}`, machine {json.dumps(r.get('machine'))}"
        )
        for f, why in (r.get("unavailable") or {}).items():
            lines.append(f"  - **{f} not run**: {why}")
    lines.append("")
    lines.append("## Pairs")
    lines.append("")
    lines.append(
        "| engine | frontend | round | status | start→ready s | front RSS ready / end MB "
        "| front idle CPU ms/s | loadavg before |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for s in slots:
        tag = f" ({s['group']})" if s.get("group", "main") != "main" else ""
        la = "/".join(f"{x:.1f}" for x in s.get("loadavg_before", []))
        rss = f"{s.get('front_rss_mb_ready', '–')} / {s.get('front_rss_mb_end', '–')}"
        lines.append(
            f"| {s['engine']}{tag} | {s['frontend']} | {s['round']} | {s.get('status')} "
            f"| {s.get('startup_s', '–')} | {rss} | {s.get('front_idle_cpu_ms_per_s', '–')} | {la} |"
        )
        if s.get("status") != "ok":
            lines.append(f"|  | error: {str(s.get('error', ''))[:300]!r} |||||||")
        for key, res in s.get("workloads", {}).items():
            if "error" in res:
                lines.append(f"|  | {key} error: {str(res['error'])[:300]!r} |||||||")
    lines += ["", "## Targets (reported, not asserted)", "", *targets(slots), "", "## Figures", ""]
    lines += [
        "Mean over rounds, [min–max] with more than one round; ratio columns divide the means. CPU is the "
        "frontend's process tree (utime+stime from /proc) over the measured phase only.",
        "",
    ]
    lines += tables(slots)
    notes = _engine_notes(slots)
    if notes:
        lines += ["## Engine-side notes (mock event log)", "", *notes, ""]
    if pngs:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}](plots/{p.name})" for p in pngs]
    out.write_text("\n".join(lines) + "\n")
    return out


def _engine_notes(slots: list[dict[str, Any]]) -> list[str]:
    out = []
    for s in slots:
        for key, res in s.get("workloads", {}).items():
            hw = (res.get("engine_events") or {}).get("hazards_warnings") or {}
            if hw:
                out.append(f"- {s['engine']} {s['frontend']} r{s['round']} {key}: {json.dumps(hw)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="*", type=Path, help="results JSON files (default: the newest run)")
    ap.add_argument("--out", type=Path, help="markdown output path")
    args = ap.parse_args(argv)
    paths = args.results or sorted(RESULTS.glob("run-*.json"), key=lambda p: p.stat().st_mtime)[-1:]
    if not paths:
        print("no results", file=sys.stderr)
        return 1
    print(generate(paths, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
