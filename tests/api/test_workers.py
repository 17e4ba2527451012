"""`trio-front run --workers 2`: two API-server processes on one port, one (mock) engine, outputs routed
back to the right process by client_index."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import trio

from trio_front.engine.launch import pick_free_port, wait_for_http_health

from .conftest import MODEL


async def test_two_workers_share_the_port_and_the_engine() -> None:
    engine_port, http_port = pick_free_port(), pick_free_port()
    log = Path(tempfile.mkdtemp()) / "events.jsonl"
    front = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trio_front.cli",
            "run",
            "--workers",
            "2",
            "--engine-addr",
            f"tcp://127.0.0.1:{engine_port}",
            "--model",
            str(MODEL),
            "--port",
            str(http_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    mock = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trio_front.cli",
            "mock-engine",
            "--engine-addr",
            f"tcp://127.0.0.1:{engine_port}",
            "--step-ms",
            "2",
            "--event-log",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await trio.to_thread.run_sync(wait_for_http_health, f"http://127.0.0.1:{http_port}/health", 60)

        async def one(i: int) -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=20) as client:
                r = await client.post("/v1/completions", json={"prompt": [1, 7, i + 4], "max_tokens": 4})
                assert r.status_code == 200, r.text
                assert r.json()["usage"]["completion_tokens"] == 4

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(one, i)
        events = [json.loads(line) for line in log.read_text().splitlines()]
        adds = [e for e in events if e["event"] == "add"]
        assert len(adds) == 40
        assert {e["client_index"] for e in adds} == {0, 1}, "both workers served requests"
        assert len([e for e in events if e["event"] == "finish"]) == 40
    finally:
        front.send_signal(signal.SIGTERM)
        try:
            front.wait(timeout=20)
        finally:
            stderr = front.stderr.read().decode() if front.stderr else ""
        mock.terminate()
        mock.wait(timeout=10)
    assert front.returncode == 0, stderr[-3000:]
    await trio.sleep(0.2)
    pattern = f"trio_front.cli.*127.0.0.1:{engine_port}"
    leftover = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    assert leftover.strip() == ""
