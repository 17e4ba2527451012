"""Graceful shutdown: SIGTERM stops accepting, lets in-flight requests and WebSocket responses finish for
``--shutdown-timeout`` seconds (saying every second what it waits for), then aborts what is left in one
ABORT and closes the WebSockets with 1001 (``server.py::serve_frontend``, ``api/ws/shutdown.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import orjson
import pytest
import trio
import trio_websocket

from trio_front.engine.mock import MockEngineConfig, run_mock_engine
from trio_front.server import FrontendConfig, serve_frontend

from .conftest import MODEL, engine_ipc_addr, free_port


async def _run(shutdown_timeout: float, max_tokens: int, step_ms: float = 20.0) -> dict:
    """Serve on a mock, stream one completion, SIGTERM after its first chunk; report what happened."""
    out: dict = {"chunks": 0, "finish": None, "text": ""}
    async with trio.open_nursery() as nursery:
        host, mock, served, times = await _serve(nursery, shutdown_timeout, step_ms)
        url = f"http://{host}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
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
        out["exited_at"] = times["exited"]
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


# ---------------------------------------------------------------------------------- WebSockets

NAME = MODEL.name  # the served model name


class _WS:
    """A trio-websocket client recording every event it reads and the close code it ends with."""

    def __init__(self, conn: trio_websocket.WebSocketConnection) -> None:
        self.conn = conn
        self.events: list[dict] = []
        self.close_code: int | None = None

    async def send(self, event: dict) -> None:
        await self.conn.send_message(orjson.dumps(event).decode())

    async def until(self, kind: str) -> dict:
        with trio.fail_after(20):
            while True:
                event = orjson.loads(await self.conn.get_message())
                self.events.append(event)
                if event["type"] == kind:
                    return event

    async def read_to_close(self) -> None:
        """Read until the server closes the socket (the test's nursery bounds it)."""
        try:
            while True:
                self.events.append(orjson.loads(await self.conn.get_message()))
        except trio_websocket.ConnectionClosed as exc:
            self.close_code = exc.reason.code

    def kinds(self, prefix: str = "") -> list[str]:
        return [e["type"] for e in self.events if e["type"].startswith(prefix)]


async def _serve(nursery: trio.Nursery, shutdown_timeout: float, step_ms: float) -> tuple:
    """serve_frontend on a mock in *nursery*; returns (url, mock, exited event, exit-time holder)."""
    config = FrontendConfig(
        engine_addr=engine_ipc_addr(),
        model=MODEL,
        port=free_port(),
        ping_interval=0,
        shutdown_timeout=shutdown_timeout,
    )
    mock = await nursery.start(run_mock_engine, MockEngineConfig(config.engine_addr, step_ms=step_ms))
    exited = trio.Event()
    times: dict = {}

    async def serve() -> None:
        await serve_frontend(config)
        times["exited"] = time.monotonic()
        exited.set()

    nursery.start_soon(serve)
    url = f"127.0.0.1:{config.port}"
    async with httpx.AsyncClient(base_url=f"http://{url}", timeout=5) as client:
        with trio.fail_after(20):
            while True:
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.05)
    return url, mock, exited, times


async def _realtime(nursery: trio.Nursery, url: str, max_output_tokens: int) -> _WS:
    """A Realtime socket whose response has started (its first delta read)."""
    ws = _WS(await trio_websocket.connect_websocket_url(nursery, f"ws://{url}/v1/realtime?model={NAME}"))
    await ws.until("session.created")
    session = {"type": "realtime", "output_modalities": ["text"], "max_output_tokens": max_output_tokens}
    await ws.send({"type": "session.update", "session": session})
    await ws.until("session.updated")
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    await ws.send({"type": "conversation.item.create", "item": item})
    await ws.until("conversation.item.done")
    await ws.send({"type": "response.create"})
    await ws.until("response.output_text.delta")
    return ws


async def test_websocket_responses_finish_in_the_drain_then_sockets_close_with_1001(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level("INFO", logger="trio_front")
    tokens = 80  # 1.6 s of tokens at 20 ms a step: the drain lasts more than a second
    async with trio.open_nursery() as nursery:
        url, mock, exited, times = await _serve(nursery, shutdown_timeout=15, step_ms=20)
        realtime = await _realtime(nursery, url, tokens)
        responses = _WS(await trio_websocket.connect_websocket_url(nursery, f"ws://{url}/v1/responses"))
        await responses.send(
            {"type": "response.create", "model": NAME, "input": "Hi", "max_output_tokens": tokens}
        )
        await responses.until("response.output_text.delta")
        idle = _WS(await trio_websocket.connect_websocket_url(nursery, f"ws://{url}/v1/responses"))
        http: dict = {"chunks": 0}

        async def stream() -> None:
            body = {"prompt": "hello", "max_tokens": tokens, "ignore_eos": True, "stream": True}
            async with httpx.AsyncClient(base_url=f"http://{url}", timeout=30) as client:
                async with client.stream("POST", "/v1/completions", json=body) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: {"):
                            choice = json.loads(line[6:])["choices"][0]
                            http["chunks"] += 1
                            http["finish"] = choice["finish_reason"] or http.get("finish")

        nursery.start_soon(stream)
        with trio.fail_after(10):
            while not http["chunks"]:
                await trio.sleep(0.01)
        signalled = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await trio.sleep(0.1)
        # a new response on an open socket is refused while draining; the running one goes on
        await responses.send(
            {"type": "response.create", "model": NAME, "input": "more", "max_output_tokens": 4}
        )
        refused = await responses.until("error")
        await realtime.send({"type": "response.create"})  # and on Realtime
        refused_realtime = await realtime.until("error")
        async with trio.open_nursery() as readers:
            for ws in (realtime, responses, idle):
                readers.start_soon(ws.read_to_close)
        with trio.fail_after(20):
            await exited.wait()
        nursery.cancel_scope.cancel()

    assert refused["status"] == 503 and refused["error"]["code"] == "server_shutting_down", refused
    assert refused_realtime["error"]["code"] == "server_shutting_down", refused_realtime
    done = next(e for e in realtime.events if e["type"] == "response.done")
    assert done["response"]["status"] == "incomplete", done
    assert done["response"]["usage"]["output_tokens"] == tokens, done
    assert responses.kinds("response.incomplete") == ["response.incomplete"], responses.kinds()
    final = next(e for e in responses.events if e["type"] == "response.incomplete")
    assert final["response"]["usage"]["output_tokens"] == tokens, final
    assert http["finish"] == "length" and http["chunks"] >= tokens, http
    assert (realtime.close_code, responses.close_code, idle.close_code) == (1001, 1001, 1001)
    assert not mock.log.named("abort")  # everything finished: nothing was aborted
    assert times["exited"] - signalled < 12
    messages = [r.getMessage() for r in caplog.records]
    # at the signal it says what it waits for: the HTTP stream, three engine requests, two WebSocket
    # responses (the idle socket is open but holds nothing)
    begun = [m for m in messages if m.startswith("shutting down: signal SIGTERM")]
    assert len(begun) == 1, messages
    assert "1 HTTP request(s), 3 engine request(s), 2 WebSocket response(s) (3 WebSocket(s) open)" in begun[0]
    # and again every second while it waits (the HTTP stream, started last, runs well past 1 s)
    progress = [m for m in messages if m.startswith("draining (")]
    assert progress and all("WebSocket response(s)" in m for m in progress), messages
    assert any(m.startswith("drained in") for m in messages), messages


async def test_websocket_responses_outliving_the_drain_are_aborted_and_told() -> None:
    async with trio.open_nursery() as nursery:
        url, mock, exited, times = await _serve(nursery, shutdown_timeout=0.5, step_ms=20)
        realtime = await _realtime(nursery, url, 2000)  # 40 s of tokens
        responses = _WS(await trio_websocket.connect_websocket_url(nursery, f"ws://{url}/v1/responses"))
        await responses.send(
            {"type": "response.create", "model": NAME, "input": "Hi", "max_output_tokens": 2000}
        )
        await responses.until("response.output_text.delta")
        signalled = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        async with trio.open_nursery() as readers:
            for ws in (realtime, responses):
                readers.start_soon(ws.read_to_close)
        with trio.fail_after(20):
            await exited.wait()
        with trio.move_on_after(2):
            while len(mock.log.named("abort")) < 2:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    # each response's end is sent before the close frame
    done = next(e for e in realtime.events if e["type"] == "response.done")
    assert done["response"]["status"] == "failed", done
    assert responses.kinds("response.failed") == ["response.failed"], responses.kinds()
    assert (realtime.close_code, responses.close_code) == (1001, 1001)
    assert len(mock.log.named("abort")) == 2
    assert times["exited"] - signalled < 0.5 + 4


async def test_an_idle_websocket_does_not_hold_the_exit() -> None:
    """SIGINT with only an idle socket open: no drain to wait for; 1001 at once, a prompt exit."""
    async with trio.open_nursery() as nursery:
        url, _mock, exited, times = await _serve(nursery, shutdown_timeout=30, step_ms=20)
        idle = _WS(await trio_websocket.connect_websocket_url(nursery, f"ws://{url}/v1/responses"))
        signalled = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)
        with trio.fail_after(10):
            await idle.read_to_close()
            await exited.wait()
        nursery.cancel_scope.cancel()
    assert idle.close_code == 1001
    # generous under load; before 1001 it took hypercorn's graceful timeout (2 s) and ended in 1006
    assert times["exited"] - signalled < 1.5


# ---------------------------------------------------------------------------------- a real process


async def test_idle_ctrl_c_exits_promptly_and_the_log_says_listening_then_ready() -> None:
    """``trio-front run`` on a ``mock-engine`` process, an idle keep-alive connection and an idle WebSocket
    open: SIGINT ends the process promptly (exit 0); the start-up log says once that it listens, then
    that it is ready (hypercorn's own "Running on" no more, which came out twice)."""
    port, engine_addr = free_port(), engine_ipc_addr()
    cli = [sys.executable, "-m", "trio_front.cli"]
    front = await trio.lowlevel.open_process(
        [*cli, "run", "--engine-addr", engine_addr, "--model", str(MODEL), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    engine = await trio.lowlevel.open_process([*cli, "mock-engine", "--engine-addr", engine_addr])
    output = bytearray()
    try:
        async with trio.open_nursery() as nursery:

            async def read_output() -> None:
                assert front.stdout is not None
                async for data in front.stdout:
                    output.extend(data)

            nursery.start_soon(read_output)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                with trio.fail_after(60):  # two interpreters starting on a busy machine
                    while True:
                        try:
                            if (await client.get("/health")).status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        await trio.sleep(0.1)
                ws = _WS(
                    await trio_websocket.connect_websocket_url(nursery, f"ws://127.0.0.1:{port}/v1/responses")
                )
                signalled = time.monotonic()
                front.send_signal(signal.SIGINT)  # with the client's keep-alive connection still open
                with trio.fail_after(15):
                    rc = await front.wait()
                took = time.monotonic() - signalled
                await ws.read_to_close()
    finally:
        for process in (front, engine):
            if process.returncode is None:
                process.kill()
            await process.wait()
    log = output.decode(errors="replace")
    print(f"idle SIGINT → exit {rc} after {took:.2f} s")
    assert rc == 0, log
    assert ws.close_code == 1001, log
    assert took < 5, log  # about 0.3 s here; the bound is for a loaded CI machine
    assert "Running on" not in log, log
    lines = log.splitlines()
    listening = [i for i, line in enumerate(lines) if "trio-front serving" in line and "listening" in line]
    ready = [i for i, line in enumerate(lines) if "ready: the engine registered" in line]
    assert len(listening) == 1 and len(ready) == 1 and listening[0] < ready[0], log
    assert "trio-front stopped" in log, log
