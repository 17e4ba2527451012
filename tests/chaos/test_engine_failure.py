"""The engine dying under load (SIGKILL of a ``trio-front mock-engine`` subprocess) and the engine going
silent without dying (SIGSTOP: its sockets stay connected, only the liveness ping can tell).

Each test has streams of every API in flight (completions and chat, streamed and not, Responses over
HTTP streamed and not, Realtime and Responses WebSockets), each of which has seen its first output (or,
not streamed, is in the engine). Then the engine fails, and every one of them must end with an error
within 5 s (an in-band error event and the end of the body for SSE, a 5xx for a non-streamed request, a
``failed`` response on a WebSocket), ``/health`` must answer 503 with the reason, and a new request must
be refused at once.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import attrs
import httpx
import trio

from .clients import (
    DELTA,
    RESPONSES_DONE,
    ClientPlan,
    WSClient,
    connect,
    http_request,
    read_events,
    read_to_end,
    ws_creates,
    ws_path,
)
from .server import SubprocessServer, subprocess_engine_server

#: (api, streamed) and how many clients of each
KINDS = [
    ("completions", True), ("completions", False), ("chat", True), ("chat", False),
    ("responses", True), ("responses", False), ("realtime", True), ("responses_ws", True),
]  # fmt: skip
PER_KIND = 6
#: the issue's bound: every stream ends with an error within this long after the engine failed
END_WITHIN = 5.0


@attrs.define
class InFlight:
    plan: ClientPlan
    ready: trio.Event = attrs.field(factory=trio.Event)
    ended: float | None = None  # monotonic time the client saw its response end
    verdict: str = "not ended"


def plans() -> list[ClientPlan]:
    out = []
    for api, streamed in KINDS:
        for _ in range(PER_KIND):
            out.append(ClientPlan(len(out), api, "complete", "fin", 1, streamed, 2000, 0.0, 0.0, 1))
    return out


def sse_verdict(data: bytes, api: str) -> str:
    if not data.startswith(b"HTTP/1.1 200"):
        return f"status {data[:20]!r}"
    if api == "responses":
        failed = b"event: response.failed" in data
        return "error" if failed else "no response.failed event"
    events = [line[6:] for line in data.split(b"\n") if line.startswith(b"data: {")]
    if not events or b'"error"' not in events[-1]:
        return "no error event"
    return "error" if b"data: [DONE]" in data else "no [DONE]"


def plain_verdict(data: bytes) -> str:
    status = data[9:12]
    return "error" if status.startswith(b"5") else f"status {data[:40]!r}"


async def http_in_flight(port: int, client: InFlight) -> None:
    plan = client.plan
    head, body = http_request(plan)
    stream = await connect(port, rst=False)
    async with stream:
        await stream.send_all(head + body)
        if plan.stream:
            first = await read_events(stream, 1)
            client.ready.set()
            data = first + await read_to_end(stream)
        else:
            client.ready.set()  # the test waits for its engine request too
            data = await read_to_end(stream)
        client.ended = time.monotonic()
        client.verdict = sse_verdict(data, plan.api) if plan.stream else plain_verdict(data)


async def ws_in_flight(port: int, client: InFlight) -> None:
    plan = client.plan
    stream = await connect(port, rst=False)
    async with stream:
        ws = await WSClient.open(stream, ws_path(plan.api), [])
        for event in ws_creates(plan):
            await ws.send(event)
        await ws.until(DELTA)
        client.ready.set()
        ends = ("response.done", "error") if plan.api == "realtime" else (*RESPONSES_DONE, "error")
        try:
            event = await ws.until(*ends)
        except ConnectionError:
            client.ended = time.monotonic()
            client.verdict = "closed without a failed response"
            return
        client.ended = time.monotonic()
        status = event.get("response", {}).get("status")
        client.verdict = "error" if event["type"] == "error" or status == "failed" else f"ended {status}"


async def fail_under_load(
    server: SubprocessServer, fail: Any
) -> tuple[list[InFlight], float, dict[str, Any]]:
    """Start every client, wait until all are in flight, call *fail*, and let every client end. Returns
    the clients, the time of the failure, and the /health answer after it."""
    clients = [InFlight(p) for p in plans()]
    failed_at = 0.0
    health: dict[str, Any] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for client in clients:
                runner = ws_in_flight if client.plan.api in ("realtime", "responses_ws") else http_in_flight
                nursery.start_soon(runner, server.port, client)
            for client in clients:
                await client.ready.wait()
            while len(server.engine.named("add")) < len(clients):  # the non-streamed ones are in too
                await trio.sleep(0.02)
            assert all(c.ended is None for c in clients), "a 2000-token response ended before the failure"
            failed_at = time.monotonic()
            fail()
            with trio.move_on_after(END_WITHIN + 10):  # past the bound: reported below, not hung
                while any(c.ended is None for c in clients):
                    await trio.sleep(0.02)
            async with httpx.AsyncClient(base_url=server.url) as http:
                r = await http.get("/health")
                health = {"code": r.status_code, **r.json()}
                refused = await http.post("/v1/completions", json={"prompt": [1, 2], "max_tokens": 3})
                health["new request"] = refused.status_code
            nursery.cancel_scope.cancel()
    return clients, failed_at, health


def check(clients: list[InFlight], failed_at: float, health: dict[str, Any], label: str) -> None:
    ends = [c.ended - failed_at for c in clients if c.ended is not None]
    verdicts: dict[str, list[str]] = {}
    for c in clients:
        verdicts.setdefault(f"{c.plan.api}{'' if c.plan.stream else ' (plain)'}", []).append(c.verdict)
    print(
        f"\n{label}: {len(clients)} in-flight requests, {len(ends)} ended, after "
        f"{min(ends, default=0):.2f}..{max(ends, default=0):.2f} s; health {health}"
    )
    bad = {kind: v for kind, v in verdicts.items() if set(v) != {"error"}}
    assert not bad, bad
    assert len(ends) == len(clients) and max(ends) < END_WITHIN
    assert health["code"] == 503 and health["status"] == "dead"
    assert health["new request"] == 503


async def test_engine_killed_under_load() -> None:
    """No liveness ping: the engine's sockets closing (ZMQ's disconnect monitor) is what tells."""
    async with subprocess_engine_server() as server:
        clients, killed_at, health = await fail_under_load(
            server, lambda: server.engine.signal(signal.SIGKILL)
        )
        check(clients, killed_at, health, "engine SIGKILLed")
        assert "disconnected" in health["detail"], health


async def test_engine_that_stops_answering_is_caught_by_the_liveness_ping() -> None:
    """SIGSTOP: the process lives and its sockets stay connected, so only the ping (every 0.5 s, 1 s to
    answer) can tell; afterwards the engine is resumed and killed."""
    frontend = {"ping_interval": 0.5, "ping_timeout": 1.0}
    async with subprocess_engine_server(frontend=frontend) as server:
        try:
            clients, stopped_at, health = await fail_under_load(
                server, lambda: server.engine.signal(signal.SIGSTOP)
            )
        finally:
            server.engine.signal(signal.SIGCONT)
        check(clients, stopped_at, health, "engine SIGSTOPped")
        assert "stopped answering" in health["detail"], health
        assert server.engine.proc.poll() is None, "the engine was only stopped, not killed"
