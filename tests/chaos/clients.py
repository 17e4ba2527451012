"""Chaos clients: raw-socket HTTP and WebSocket clients that leave at a planned moment, and the checks
that nothing they started is left behind.

Every client follows a :class:`ClientPlan` drawn from a seeded generator (:func:`make_plans`), so a run is
reproducible in what each client does; only the timing of the server's side varies. A client leaves

* **HTTP** (``/v1/completions``, ``/v1/chat/completions``, ``/v1/responses``): in the request head
  (``head``), mid-body (``body``: the whole head, part of the body), after sending the request but before
  the response head (``before_headers``: at once for a stream, after a few ms of a long non-streamed
  generation), after *k* SSE events (``after_k``), or not at all (``complete``: it reads to the end);
* **WebSocket** (Realtime ``/v1/realtime``, Responses ``/v1/responses``): mid-handshake (``handshake``),
  mid-frame (``partial_frame``: half a ``response.create`` frame), right after sending its creates
  (``before_events``), after *k* text deltas (``after_k``), after cancelling one response and starting
  another (``cancel``, Realtime only), or after its responses completed (``complete``, with a close frame);

either with a FIN (an ordinary ``close()``) or with an RST (``SO_LINGER`` 0, then ``close()``). No
WebSocket close frame is sent when leaving early: the peer just goes away.

:func:`check_clean` reads the mock engine's event log and the server's counters: every engine request
ended exactly once (one ``finish`` or one ``abort``), nothing is live in the engine or registered in the
engine client, no socket or response is open, and no hazard or warning was logged by the mock.
"""

from __future__ import annotations

import gc
import random
import socket as stdlib_socket
import struct
import tracemalloc
from collections import Counter
from typing import Any

import attrs
import orjson
import trio
import wsproto
import wsproto.events

from tests.api.ws_fixtures import WSServer, count_tasks

MODEL = "tiny-llama"
HTTP_APIS = ("completions", "chat", "responses")
WS_APIS = ("realtime", "responses_ws")
APIS = HTTP_APIS + WS_APIS
#: moment → relative weight; engine requests get started by all but head/body/handshake/partial_frame
HTTP_MOMENTS = {"head": 1, "body": 2, "before_headers": 3, "after_k": 5, "complete": 2}
WS_MOMENTS = {
    "handshake": 1,
    "partial_frame": 1,
    "before_events": 2,
    "after_k": 4,
    "cancel": 2,
    "complete": 2,
}
PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions", "responses": "/v1/responses"}
REALTIME_PATH = f"/v1/realtime?model={MODEL}"
#: long enough that a leaving client always leaves while its request runs (2 ms steps: 4 s and more)
LONG = 2000


@attrs.define
class ClientPlan:
    index: int
    api: str
    moment: str
    how: str  # "fin" | "rst"
    k: int  # events to read first (after_k, cancel)
    stream: bool  # HTTP: a streamed request
    max_tokens: int
    start: float  # seconds after the storm began
    delay: float  # before_headers: how long a non-streamed client waits before it leaves
    lanes: int  # Responses WebSocket: how many responses (stream_id lanes) it starts

    @property
    def tag(self) -> str:
        """The X-Request-Id of an HTTP client; completions and chat put it into the engine request id."""
        return f"chaos{self.index:06d}"

    @property
    def reaches_engine(self) -> bool:
        return self.moment not in ("head", "body", "handshake", "partial_frame")


def make_plans(
    count: int, seed: int, *, apis: tuple[str, ...] = APIS, spread: float = 2.0
) -> list[ClientPlan]:
    """*count* client plans, round-robin over *apis*, moments drawn by weight, starts uniform over
    *spread* seconds; the same arguments give the same plans."""
    rng = random.Random(seed)
    plans = []
    for index in range(count):
        api = apis[index % len(apis)]
        moments = dict(HTTP_MOMENTS if api in HTTP_APIS else WS_MOMENTS)
        if api == "responses_ws":
            del moments["cancel"]  # no cancel event in the Responses WebSocket mode
        moment = rng.choices(list(moments), weights=list(moments.values()))[0]
        stream = True if moment == "after_k" else rng.random() < 0.6
        plans.append(
            ClientPlan(
                index=index,
                api=api,
                moment=moment,
                how=rng.choice(("fin", "rst")),
                k=rng.randrange(1, 9),
                stream=stream,
                max_tokens=rng.randrange(1, 13) if moment == "complete" else LONG,
                start=rng.uniform(0, spread),
                delay=rng.uniform(0.005, 0.15),
                lanes=rng.choice((1, 1, 2)),
            )
        )
    return plans


def tally(plans: list[ClientPlan]) -> Counter[str]:
    """Counts by API, by moment and by way of leaving (for the printed figures)."""
    counts: Counter[str] = Counter()
    for p in plans:
        counts[p.api] += 1
        counts[f"{p.moment}"] += 1
        counts[p.how] += 1
    return counts


# ---------------------------------------------------------------------------------------- sockets


async def connect(port: int, *, rst: bool, rcvbuf: int | None = None) -> trio.SocketStream:
    """A TCP stream to the server; with *rst* its close sends a reset instead of a FIN."""
    sock = trio.socket.socket()
    if rcvbuf is not None:  # before connect, so the window is small from the start
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    if rst:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))
    return trio.SocketStream(sock)


async def close(stream: trio.SocketStream) -> None:
    await stream.aclose()


def http_body(api: str, plan: ClientPlan) -> dict[str, Any]:
    text = f"chaos client {plan.index}"
    if api == "completions":
        return {
            "prompt": [1, 20 + plan.index % 3000, 7],
            "max_tokens": plan.max_tokens,
            "stream": plan.stream,
        }
    if api == "chat":
        return {
            "messages": [{"role": "user", "content": text}],
            "max_tokens": plan.max_tokens,
            "stream": plan.stream,
        }
    return {"input": text, "max_output_tokens": plan.max_tokens, "stream": plan.stream}


def http_request(plan: ClientPlan, *, keep_alive: bool = False) -> tuple[bytes, bytes]:
    """The request head and body for *plan* (``connection: close`` unless *keep_alive*)."""
    body = orjson.dumps(http_body(plan.api, plan))
    head = (
        f"POST {PATHS[plan.api]} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"x-request-id: {plan.tag}\r\ncontent-length: {len(body)}\r\n"
        f"{'' if keep_alive else 'connection: close'}\r\n\r\n"
    ).encode()
    return head, body


async def read_events(stream: trio.SocketStream, k: int) -> bytes:
    """Read until *k* SSE data events arrived or the server closed; return what was read."""
    data = b""
    while data.count(b"data: {") < k:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data


async def read_to_end(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def run_http_client(port: int, plan: ClientPlan, rng: random.Random, trace: list[str]) -> str:
    """Carry out an HTTP *plan*; return what the client saw (``left``, ``ok``, or a failure note).
    *trace* is unused (the HTTP clients' notes say enough)."""
    head, body = http_request(plan)
    stream = await connect(port, rst=plan.how == "rst")
    try:
        if plan.moment == "head":
            await stream.send_all(head[: rng.randrange(1, len(head) - 4)])
            return "left"
        if plan.moment == "body":
            await stream.send_all(head + body[: rng.randrange(0, len(body))])
            await trio.sleep(rng.uniform(0, 0.02))  # the server may or may not have read it yet
            return "left"
        await stream.send_all(head + body)
        if plan.moment == "before_headers":
            if plan.stream:
                return "left"  # at once: the stream's head goes out only with its first event
            with trio.move_on_after(plan.delay):
                if await stream.receive_some(65536):
                    return "early answer"  # a 2000-token generation cannot have finished
            return "left"
        if plan.moment == "after_k":
            data = await read_events(stream, plan.k)
            return "left" if data.startswith(b"HTTP/1.1 200") else f"status {data[:12]!r}"
        data = await read_to_end(stream)
        if not data.startswith(b"HTTP/1.1 200"):
            return f"status {data[:40]!r}"
        if plan.stream and b"data: [DONE]" not in data and b"response.completed" not in data:
            if b"response.incomplete" not in data:
                return "unfinished stream"
        return "ok"
    finally:
        await close(stream)


# ---------------------------------------------------------------------------------------- WebSocket


class WSClient:
    """A wsproto client on a raw socket: it sends events and counts what it receives."""

    def __init__(self, stream: trio.SocketStream, ws: wsproto.WSConnection, trace: list[str]) -> None:
        self.stream = stream
        self.ws = ws
        self.trace = trace  # what was sent and received, for a failure's report
        self.partial: list[str] = []
        self.pending: list[dict[str, Any]] = []
        self.closed = False

    @staticmethod
    def handshake_bytes(path: str) -> tuple[wsproto.WSConnection, bytes]:
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        return ws, ws.send(wsproto.events.Request(host="127.0.0.1", target=path))

    @classmethod
    async def open(cls, stream: trio.SocketStream, path: str, trace: list[str]) -> WSClient:
        ws, request = cls.handshake_bytes(path)
        await stream.send_all(request)
        client = cls(stream, ws, trace)
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("closed during the handshake")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, wsproto.events.AcceptConnection):
                    return client
                if isinstance(event, wsproto.events.TextMessage):  # arrived with the accept
                    client._text(event)
                else:
                    raise ConnectionError(f"handshake refused: {event!r}")

    def _text(self, event: wsproto.events.TextMessage) -> None:
        self.partial.append(event.data)
        if event.message_finished:
            event = orjson.loads("".join(self.partial))
            self.partial.clear()
            self.pending.append(event)
            self.trace.append(f"<{event.get('type')}")

    def frame(self, event: dict[str, Any]) -> bytes:
        return self.ws.send(wsproto.events.TextMessage(orjson.dumps(event).decode()))

    async def send(self, event: dict[str, Any]) -> None:
        self.trace.append(f">{event['type']}")
        await self.stream.send_all(self.frame(event))

    async def recv(self) -> dict[str, Any] | None:
        """The next event, or None once the server closed."""
        while not self.pending:
            if self.closed:
                return None
            data = await self.stream.receive_some(65536)
            if not data:
                self.closed = True
                return None
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, wsproto.events.TextMessage):
                    self._text(event)
                elif isinstance(event, wsproto.events.CloseConnection):
                    self.closed = True
                elif isinstance(event, wsproto.events.Ping):
                    await self.stream.send_all(self.ws.send(event.response()))
        return self.pending.pop(0)

    async def until(self, *kinds: str) -> dict[str, Any]:
        """The next event of one of *kinds*; an ``error`` event (unless asked for) or the server closing
        raises :class:`ConnectionError`."""
        while True:
            event = await self.recv()
            if event is None:
                raise ConnectionError(f"closed while waiting for {kinds}")
            if event["type"] in kinds:
                return event
            if event["type"] == "error":
                raise ConnectionError(f"error event while waiting for {kinds}: {event.get('error')}")

    async def close_properly(self) -> None:
        """A close frame, then wait for the server's."""
        await self.stream.send_all(self.ws.send(wsproto.events.CloseConnection(code=1000)))
        while not self.closed:
            data = await self.stream.receive_some(65536)
            if not data:
                break
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, wsproto.events.CloseConnection):
                    self.closed = True


def ws_path(api: str) -> str:
    return REALTIME_PATH if api == "realtime" else "/v1/responses"


def user_item(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def ws_creates(plan: ClientPlan, max_tokens: int | None = None) -> list[dict[str, Any]]:
    """The events that start *plan*'s responses (Realtime: one item then one response)."""
    limit = plan.max_tokens if max_tokens is None else max_tokens
    if plan.api == "realtime":
        return [
            {"type": "conversation.item.create", "item": user_item(f"chaos client {plan.index}")},
            {"type": "response.create", "response": {"max_output_tokens": limit}},
        ]
    return [
        {
            "type": "response.create",
            "model": MODEL,
            "input": f"chaos client {plan.index} lane {lane}",
            "max_output_tokens": limit,
            **({"stream_id": f"s{lane}"} if plan.lanes > 1 else {}),
        }
        for lane in range(plan.lanes)
    ]


DELTA = "response.output_text.delta"
REALTIME_DONE = ("response.done",)
RESPONSES_DONE = ("response.completed", "response.incomplete", "response.failed")


async def run_ws_client(port: int, plan: ClientPlan, rng: random.Random, trace: list[str]) -> str:
    """Carry out a WebSocket *plan*; return ``left``, ``ok`` or a failure note. *trace* gets the event
    types sent (``>``) and received (``<``)."""
    stream = await connect(port, rst=plan.how == "rst")
    try:
        path = ws_path(plan.api)
        if plan.moment == "handshake":
            _, request = WSClient.handshake_bytes(path)
            await stream.send_all(request[: rng.randrange(1, len(request) - 2)])
            return "left"
        client = await WSClient.open(stream, path, trace)
        creates = ws_creates(plan)
        if plan.moment == "partial_frame":
            frame = client.frame(creates[-1])
            for event in creates[:-1]:
                await client.send(event)
            await stream.send_all(frame[: rng.randrange(1, len(frame))])
            return "left"
        for event in creates:
            await client.send(event)
        if plan.moment == "before_events":
            return "left"
        if plan.moment == "after_k":
            seen = 0
            while seen < plan.k:
                event = await client.recv()
                if event is None:
                    return "closed by the server"
                seen += event["type"] == DELTA
            return "left"
        if plan.moment == "cancel":  # Realtime: cancel mid-response, start another, leave with it running
            for _ in range(plan.k):
                await client.until(DELTA)
            await client.send({"type": "response.cancel"})
            done = await client.until("response.done")
            if done["response"]["status"] != "cancelled":
                return f"cancel gave {done['response']['status']}"
            # The conversation now holds the cancelled answer too: leave room for it in the context.
            await client.send({"type": "response.create", "response": {"max_output_tokens": LONG // 2}})
            if rng.random() < 0.5:
                await client.until("response.created")
            return "left"
        # complete: every response ends, then a proper close
        ends = REALTIME_DONE if plan.api == "realtime" else RESPONSES_DONE
        statuses = []
        for _ in range(1 if plan.api == "realtime" else plan.lanes):
            done = await client.until(*ends)
            statuses.append(done["response"]["status"])
        if not all(s in ("completed", "incomplete") for s in statuses):
            return f"statuses {statuses}"
        await client.close_properly()
        return "ok"
    finally:
        await close(stream)


# ---------------------------------------------------------------------------------------- the storm


@attrs.define
class StormResult:
    plans: list[ClientPlan]
    outcomes: Counter[str]
    failures: list[tuple[ClientPlan, str]]
    elapsed: float


async def storm(port: int, plans: list[ClientPlan], *, seed: int, timeout: float = 60) -> StormResult:
    """Run every plan (each client starts at its ``start`` offset); a client that raises or does not
    finish within *timeout* counts as a failure, never as a pass."""
    outcomes: Counter[str] = Counter()
    failures: list[tuple[ClientPlan, str]] = []
    started = trio.current_time()

    async def one(plan: ClientPlan) -> None:
        rng = random.Random(seed * 1_000_003 + plan.index)
        await trio.sleep(plan.start)
        runner = run_http_client if plan.api in HTTP_APIS else run_ws_client
        trace: list[str] = []
        try:
            with trio.fail_after(timeout):
                result = await runner(port, plan, rng, trace)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, ConnectionError) as exc:
            result = f"{type(exc).__name__}: {exc}; last events {trace[-12:]}"
        outcomes[result if result in ("left", "ok") else "failed"] += 1
        if result not in ("left", "ok"):
            failures.append((plan, result))

    async with trio.open_nursery() as nursery:
        for plan in plans:
            nursery.start_soon(one, plan)
    return StormResult(plans, outcomes, failures, trio.current_time() - started)


# ---------------------------------------------------------------------------------------- checks


@attrs.define
class Report:
    adds: int
    aborts: int
    finishes: int
    abort_unknown: int
    problems: list[str]

    def line(self) -> str:
        return (
            f"engine: {self.adds} adds, {self.aborts} aborts, {self.finishes} finishes, "
            f"{self.abort_unknown} abort_unknown; problems: {self.problems or 'none'}"
        )


def check_clean(
    server: WSServer, plans: list[ClientPlan], *, since: int = 0, failed: frozenset[int] = frozenset()
) -> Report:
    """What is left over after a settled storm, from the mock's event log (events from index *since*)
    and the server's counters. ``problems`` is empty when nothing leaked. Clients whose index is in
    *failed* (reported as failures already, e.g. reset by an overloaded server) are not judged one by one."""
    events = server.mock.log.events[since:]
    adds = [e["request_id"] for e in events if e["event"] == "add"]
    ends: dict[str, list[str]] = {}
    for e in events:
        if e["event"] in ("finish", "abort"):
            ends.setdefault(e["request_id"], []).append(e["event"])
    problems = []
    unended = [rid for rid in adds if len(ends.get(rid, [])) != 1]
    if unended:
        problems.append(f"{len(unended)} engine requests not ended exactly once, e.g. {unended[:3]}")
    for kind in ("hazard", "warning"):
        flagged = [e for e in events if e["event"] == kind]
        if flagged:
            problems.append(f"{len(flagged)} mock {kind}s, e.g. {flagged[:2]}")
    if server.mock.live_request_ids:
        problems.append(f"live in the mock: {sorted(server.mock.live_request_ids)[:3]}")
    if server.app.engine.open_requests:
        problems.append(f"engine.open_requests = {server.app.engine.open_requests}")
    if server.stats.open_sockets or server.stats.running_responses:
        problems.append(
            f"open sockets {server.stats.open_sockets}, responses {server.stats.running_responses}"
        )
    # HTTP completions/chat carry the client's tag in the engine id: check each client's fate.
    by_tag: dict[str, list[str]] = {}
    for rid in adds:
        if rid.startswith(("cmpl-chaos", "chatcmpl-chaos")):
            by_tag.setdefault(rid.split("-")[1], []).append(rid)
    for plan in plans:
        if plan.api not in ("completions", "chat") or plan.index in failed:
            continue
        rids = by_tag.get(plan.tag, [])
        fates = [e for rid in rids for e in ends.get(rid, [])]
        if not plan.reaches_engine and rids:
            problems.append(f"{plan.tag} ({plan.moment}) reached the engine")
        elif plan.moment == "complete" and fates != ["finish"]:
            problems.append(f"{plan.tag} (complete) ended {fates}")
        elif plan.moment in ("after_k", "before_headers") and fates not in ([], ["abort"]):
            problems.append(f"{plan.tag} ({plan.moment}) ended {fates}")
    return Report(
        adds=len(adds),
        aborts=sum(1 for e in events if e["event"] == "abort"),
        finishes=sum(1 for e in events if e["event"] == "finish"),
        abort_unknown=sum(1 for e in events if e["event"] == "abort_unknown"),
        problems=problems,
    )


def collect() -> None:
    for _ in range(3):
        gc.collect()


async def settle_tasks(baseline: int, timeout: float = 10) -> int:
    """Wait (bounded) until the run's task count is back to *baseline*; return the count reached.

    hypercorn ends a connection's tasks a little after the socket closed, except when the client left
    before its request head was complete: then its connection task waits for the idle timer
    (``http_timeout_keep_alive``) and, after a bare FIN with nothing sent, keeps the socket open
    (CLOSE_WAIT) as long. *timeout* must exceed the keep-alive."""
    with trio.move_on_after(timeout):
        while count_tasks() > baseline:
            await trio.sleep(0.05)
    return count_tasks()


def retained_bytes(snapshot: tracemalloc.Snapshot) -> tuple[int, list[tracemalloc.Statistic]]:
    """Bytes still held that were allocated since tracemalloc started, leaving out the mock engine (its
    event log grows by design), the chaos clients' own records and tracemalloc itself."""
    filtered = snapshot.filter_traces(
        [
            tracemalloc.Filter(False, "*/engine/mock/*"),
            tracemalloc.Filter(False, "*/tests/chaos/*"),
            tracemalloc.Filter(False, tracemalloc.__file__),
        ]
    )
    stats = filtered.statistics("lineno")
    return sum(s.size for s in stats), stats[:10]
