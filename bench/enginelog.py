"""The mock engine's event log (JSON lines, ``t`` = ``time.monotonic()``): W3 aborts, per-phase counts.

Request ids: each request the load generator sends carries ``X-Request-Id: <tag><6 digits>``. vLLM's Python
front builds the engine id from it (``cmpl-<xid>-0-<8 hex>``); other fronts may not, so a request is also
matched by its first chunk's ``id`` (the engine id, or a prefix of it ending at a ``-``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import stats


def read_events(path: Path, t0: float = float("-inf"), t1: float = float("inf")) -> list[dict[str, Any]]:
    """Events with ``t0 <= t <= t1`` (malformed lines skipped)."""
    out = []
    with path.open("rb") as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if t0 <= ev.get("t", 0.0) <= t1:
                out.append(ev)
    return out


def window_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of adds, finishes by reason, aborts, and every hazard/warning kind (frontend bugs show here)."""
    counts: dict[str, int] = {}
    finishes: dict[str, int] = {}
    notes: dict[str, int] = {}
    tokens = 0
    for ev in events:
        name = ev.get("event", "?")
        counts[name] = counts.get(name, 0) + 1
        if name in ("finish", "abort"):
            tokens += int(ev.get("tokens") or 0)
        if name == "finish":
            reason = str(ev.get("reason")).rsplit(".", 1)[-1].lower()
            finishes[reason] = finishes.get(reason, 0) + 1
        elif name in ("hazard", "warning", "dead"):
            key = f"{name}:{ev.get('kind') or ev.get('reason')}"
            notes[key] = notes.get(key, 0) + 1
    ends = counts.get("finish", 0) + counts.get("abort", 0)
    return {
        "events": counts,
        "finish_reasons": finishes,
        "hazards_warnings": notes,
        "tokens_generated": tokens,  # by requests that finished or were aborted in the window
        "tokens_per_ended_request": round(tokens / ends, 1) if ends else None,
    }


def _prefixes(rid: str) -> Iterator[str]:
    yield rid
    parts = rid.split("-")
    for i in range(len(parts) - 1, 0, -1):
        yield "-".join(parts[:i])


def _xid_re(tag: str) -> re.Pattern[str]:
    """The load generator's ``X-Request-Id`` (``<tag><6 digits>``), as found inside an engine request id."""
    return re.compile(re.escape(tag) + r"\d{6}")


def analyze_aborts(
    events: list[dict[str, Any]], closed: list[dict[str, Any]], tag: str, *, spans: bool = False
) -> dict[str, Any]:
    """W3: for each request the client closed, the engine's ABORT receipt time minus the close time.

    ``closed`` items: ``{"xid", "id", "close_t"}``. ``events`` should span the phase plus a grace period.
    Classes: aborted (latency recorded), ran to completion after the client left (a non-abort finish
    after ``close_t``), finished before the close, engine-side abort finish, leaked (added, never finished
    nor aborted), unmatched (no ``add`` found for the request). With *spans*, ``abort_spans`` lists each
    aborted request's ``[close_t, receipt_t]`` (for tracing stalls: ``bench/abort_stall.py``).
    """
    xid_re = _xid_re(tag)
    adds: dict[str, dict[str, Any]] = {}
    by_key: dict[str, str] = {}
    aborts: dict[str, dict[str, Any]] = {}
    finishes: dict[str, dict[str, Any]] = {}
    abort_unknown = 0
    for ev in events:
        name, rid = ev.get("event"), ev.get("request_id")
        if rid is None:
            continue
        if name == "add":
            adds[rid] = ev
            for key in _prefixes(rid):
                by_key.setdefault(key, rid)
            m = xid_re.search(rid)
            if m:
                by_key.setdefault("x:" + m.group(0), rid)
        elif name == "abort":
            aborts.setdefault(rid, ev)
        elif name == "finish":
            finishes.setdefault(rid, ev)
        elif name == "abort_unknown":
            abort_unknown += 1
    latencies: list[float] = []
    pairs: list[list[float]] = []
    classes = {
        "aborted": 0,
        "ran_to_completion_after_close": 0,
        "finished_before_close": 0,
        "engine_abort_finish": 0,
        "leaked": 0,
        "unmatched": 0,
    }
    matched: set[str] = set()
    for c in closed:
        rid = by_key.get("x:" + c["xid"]) or (by_key.get(c["id"]) if c.get("id") else None)
        if rid is None:
            classes["unmatched"] += 1
            continue
        matched.add(rid)
        ab, fin = aborts.get(rid), finishes.get(rid)
        if ab is not None:
            classes["aborted"] += 1
            latencies.append(ab["t"] - c["close_t"])
            pairs.append([c["close_t"], ab["t"]])
        elif fin is not None:
            reason = str(fin.get("reason")).lower()
            if "abort" in reason:
                classes["engine_abort_finish"] += 1
            elif fin["t"] >= c["close_t"]:
                classes["ran_to_completion_after_close"] += 1
            else:
                classes["finished_before_close"] += 1
        else:
            classes["leaked"] += 1
    lat_ms = [x * 1000.0 for x in latencies]
    extra = {"abort_spans": pairs} if spans else {}
    return {
        **extra,
        "closed_by_client": len(closed),
        **classes,
        "adds_in_window_not_closed_by_client": len(set(adds) - matched),
        "abort_unknown_events": abort_unknown,
        "abort_latency_ms": stats.summary(lat_ms),
        "abort_latency_samples_ms": sorted(round(x, 3) for x in lat_ms),
    }


def ttft_split(events: list[dict[str, Any]], records: list[list[Any]], tag: str) -> dict[str, Any]:
    """Where a stream's TTFT goes: client send → the engine's receipt of the request (``admission``: the
    frontend's parsing, validation, tokenization and its scheduler's queue) and receipt → the client's
    first token (``after_add``: the engine's steps plus the frontend's delivery of the first output).

    ``records`` items: ``[xid, start, ttft]`` (``time.monotonic()`` seconds, as the mock's event log).
    Requests are matched by their ``X-Request-Id`` inside the engine's request id, as in
    :func:`analyze_aborts`; a frontend that does not carry it into the id gives ``matched: 0``.
    """
    xid_re = _xid_re(tag)
    added: dict[str, float] = {}
    for ev in events:
        if ev.get("event") == "add":
            m = xid_re.search(str(ev.get("request_id", "")))
            if m:
                added.setdefault(m.group(0), ev["t"])
    admission, after_add = [], []
    for xid, start, ttft in records:
        t = added.get(xid)
        if t is not None:
            admission.append(t - start)
            after_add.append(start + ttft - t)
    return {
        "matched": len(admission),
        "of": len(records),
        "admission_ms": stats.summary(admission, 1000.0),
        "after_add_ms": stats.summary(after_add, 1000.0),
    }
