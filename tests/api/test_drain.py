"""Graceful shutdown: SIGTERM stops accepting, lets in-flight requests finish for ``--shutdown-timeout``
seconds, then aborts what is left in one ABORT (``server.py::serve_frontend``)."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest
import trio

from trio_front.engine.mock import MockEngineConfig, run_mock_engine
from trio_front.server import FrontendConfig, serve_frontend

from .conftest import MODEL, engine_ipc_addr, free_port


async def _run(shutdown_timeout: float, max_tokens: int, step_ms: float = 20.0) -> dict:
    """Serve on a mock, stream one completion, SIGTERM after its first chunk; report what happened."""
    config = FrontendConfig(
        engine_addr=engine_ipc_addr(),
        model=MODEL,
        port=free_port(),
        ping_interval=0,
        shutdown_timeout=shutdown_timeout,
    )
    out: dict = {"chunks": 0, "finish": None, "text": ""}
    async with trio.open_nursery() as nursery:
        mock = await nursery.start(run_mock_engine, MockEngineConfig(config.engine_addr, step_ms=step_ms))
        served = trio.Event()

        async def serve() -> None:
            await serve_frontend(config)
            out["exited_at"] = time.monotonic()
            served.set()

        nursery.start_soon(serve)
        url = f"http://127.0.0.1:{config.port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            with trio.fail_after(20):
                while True:
                    try:
                        if (await client.get("/health")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.05)
            body = {"prompt": "hello", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
            async with client.stream("POST", "/v1/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:  # the server ended the stream
                        out["error"] = event["error"]["message"]
                        continue
                    choice = event["choices"][0]
                    out["chunks"] += 1
                    out["text"] += choice["text"]
                    out["finish"] = choice["finish_reason"] or out["finish"]
                    if out["chunks"] == 1:
                        out["signalled_at"] = time.monotonic()
                        os.kill(os.getpid(), signal.SIGTERM)
                        await trio.sleep(0.2)
                        # the listener is closed: a new connection is refused
                        try:
                            async with httpx.AsyncClient(base_url=url, timeout=2) as fresh:
                                out["new_connection"] = (await fresh.get("/health")).status_code
                        except httpx.HTTPError as exc:
                            out["new_connection"] = type(exc).__name__
        with trio.fail_after(shutdown_timeout + 10):
            await served.wait()
        with trio.move_on_after(2):  # the ABORT may still be on its way to the mock
            while not mock.log.named("abort") and mock.live_request_ids:
                await trio.sleep(0.02)
        out["aborts"] = [e["request_id"] for e in mock.log.named("abort")]
        nursery.cancel_scope.cancel()
    return out


async def test_in_flight_request_finishes_within_the_shutdown_timeout() -> None:
    out = await _run(shutdown_timeout=5, max_tokens=40)  # about 0.8 s of tokens
    assert out["finish"] == "length" and out["chunks"] >= 40, out
    assert out["new_connection"] == "ConnectError", out
    assert out["aborts"] == [], out
    # it exits as soon as the stream is done, not at the end of the timeout
    assert out["exited_at"] - out["signalled_at"] < 4, out


async def test_what_outlives_the_shutdown_timeout_is_aborted_at_its_end() -> None:
    out = await _run(shutdown_timeout=0.5, max_tokens=500)  # 10 s of tokens
    assert out["finish"] is None and 1 <= out["chunks"] < 400 and "shut" in out["error"], out
    assert len(out["aborts"]) == 1, out
    assert out["exited_at"] - out["signalled_at"] < 0.5 + 3, out


@pytest.mark.parametrize("shutdown_timeout", [0.0])
async def test_no_shutdown_timeout_aborts_at_once(shutdown_timeout: float) -> None:
    out = await _run(shutdown_timeout=shutdown_timeout, max_tokens=500)
    assert out["finish"] is None and out["chunks"] < 100 and "shut" in out["error"], out
    assert len(out["aborts"]) == 1, out
    assert out["exited_at"] - out["signalled_at"] < 3, out
