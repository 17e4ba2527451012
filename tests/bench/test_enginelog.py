"""The bench's reading of the mock engine's event log: W3's abort matching and W2's TTFT split.

These turn raw events into the headline figures (abort latency, leaked requests, admission time), so
each class of request is pinned here with hand-made events: a wrong match would print a wrong figure,
not fail a run.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import enginelog

TAG = "asx"


def add(t: float, rid: str) -> dict[str, Any]:
    return {"t": t, "event": "add", "request_id": rid}


def abort(t: float, rid: str) -> dict[str, Any]:
    return {"t": t, "event": "abort", "request_id": rid}


def finish(t: float, rid: str, reason: str = "length") -> dict[str, Any]:
    return {"t": t, "event": "finish", "request_id": rid, "reason": reason}


def closed(n: int, close_t: float) -> dict[str, Any]:
    return {"xid": f"{TAG}{n:06d}", "id": None, "close_t": close_t}


def test_every_class_of_closed_request() -> None:
    # Engine ids carry the client's X-Request-Id inside a frontend's own prefix and suffix, as
    # trio-front's, vLLM's and vllm-rs's do ("cmpl-<xid>-0-<hex>").
    events = [
        add(1.000, f"cmpl-{TAG}000001-0-aa"),
        add(1.001, f"cmpl-{TAG}000002-0-bb"),
        add(1.002, f"cmpl-{TAG}000003-0-cc"),
        add(1.003, f"cmpl-{TAG}000004-0-dd"),
        add(1.004, f"cmpl-{TAG}000005-0-ee"),
        add(1.005, "cmpl-other-request"),  # in the window, not one the client closed
        abort(1.5032, f"cmpl-{TAG}000001-0-aa"),  # 3.2 ms after its close
        finish(1.600, f"cmpl-{TAG}000002-0-bb"),  # ran on after the client left at 1.5
        finish(1.400, f"cmpl-{TAG}000003-0-cc"),  # done before the close at 1.5
        finish(1.510, f"cmpl-{TAG}000004-0-dd", reason="FinishReason.ABORT"),
        # 000005: added, never finished nor aborted: leaked
        {"t": 1.7, "event": "abort_unknown", "request_id": "gone"},
    ]
    clients = [closed(n, 1.5) for n in (1, 2, 3, 4, 5, 9)]
    out = enginelog.analyze_aborts(events, clients, TAG, spans=True)
    assert out["closed_by_client"] == 6
    assert out["aborted"] == 1
    assert out["ran_to_completion_after_close"] == 1
    assert out["finished_before_close"] == 1
    assert out["engine_abort_finish"] == 1
    assert out["leaked"] == 1
    assert out["unmatched"] == 1  # 000009 never reached the engine
    assert out["adds_in_window_not_closed_by_client"] == 1
    assert out["abort_unknown_events"] == 1
    assert out["abort_latency_ms"]["count"] == 1
    assert out["abort_latency_ms"]["p50"] == pytest.approx(3.2, abs=1e-6)
    assert out["abort_spans"] == [[1.5, 1.5032]]


def test_the_first_abort_counts_and_a_close_matches_only_its_own_id() -> None:
    # A second ABORT of the same id (an idempotent re-send) must not move the receipt time; the client's
    # close of 000011 must not be matched to request 000001.
    events = [
        add(2.0, f"cmpl-{TAG}000001-0-aa"),
        abort(2.102, f"cmpl-{TAG}000001-0-aa"),
        abort(2.300, f"cmpl-{TAG}000001-0-aa"),
    ]
    out = enginelog.analyze_aborts(events, [closed(1, 2.1), closed(11, 2.1)], TAG)
    assert out["aborted"] == 1 and out["unmatched"] == 1
    assert out["abort_latency_samples_ms"] == [pytest.approx(2.0, abs=1e-6)]
    assert "abort_spans" not in out


def test_ttft_split_adds_up_to_the_ttft() -> None:
    events = [add(10.040, f"cmpl-{TAG}000001-0-aa"), add(10.100, f"chatcmpl-{TAG}000002-1")]
    records = [
        [f"{TAG}000001", 10.000, 0.070],  # 40 ms to the engine, 30 ms after it
        [f"{TAG}000002", 10.050, 0.080],  # 50 ms, then 30 ms
        [f"{TAG}000003", 10.060, 0.090],  # never reached the engine's log: not matched
    ]
    out = enginelog.ttft_split(events, records, TAG)
    assert (out["matched"], out["of"]) == (2, 3)
    assert out["admission_ms"]["min"] == pytest.approx(40.0)
    assert out["admission_ms"]["max"] == pytest.approx(50.0)
    assert out["after_add_ms"]["min"] == pytest.approx(30.0)
    assert out["after_add_ms"]["max"] == pytest.approx(30.0)


def test_ttft_split_of_a_frontend_that_drops_the_request_id() -> None:
    out = enginelog.ttft_split([add(1.0, "cmpl-0123abcd")], [[f"{TAG}000001", 0.9, 0.2]], TAG)
    assert out["matched"] == 0
    assert out["admission_ms"]["count"] == 0
