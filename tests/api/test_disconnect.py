"""A client that goes away, at every stage of a request, aborts the engine request exactly once.

Raw sockets make the disconnect precise: the request is written, the test waits until the server is
at the stage under test (tokenizing, queued in the engine, prefill, decode, a non-streaming request still
running), then closes the connection. The mock engine's event log is the witness: exactly one ABORT for
each request id it was given, and nothing left running in the engine or registered in the client.
"""

from __future__ import annotations

import random

import orjson
import pytest
import trio

from trio_front.api import disconnect
from trio_front.serving.generation import Generation
from trio_front.text.tokenizer import Tokenizer

from .conftest import Server, start_server


async def open_request(
    server: Server, path: str, body: dict, *, linger_reset: bool = False
) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    if linger_reset:  # close with RST instead of FIN
        import socket
        import struct

        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()
    await stream.send_all(head + payload)
    return stream


async def read_until(stream: trio.SocketStream, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    with trio.fail_after(10):
        while marker not in data and len(data) < limit:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    return data


async def wait_adds(server: Server, count: int) -> None:
    with trio.fail_after(10):
        while len(server.adds()) < count:
            await trio.sleep(0.005)


async def assert_one_abort_each(server: Server, expected: int) -> None:
    await server.settle()
    adds, aborts = server.adds(), server.aborts()
    assert len(adds) == expected
    assert sorted(aborts) == sorted(adds), "every request aborted exactly once"
    assert server.app.engine.open_requests == 0
    assert not server.mock.live_request_ids


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_disconnect_during_decode_streaming(server: Server, reset: bool) -> None:
    stream = await open_request(
        server,
        "/v1/completions",
        {"prompt": [1, 2, 3], "max_tokens": 1000, "stream": True},
        linger_reset=reset,
    )
    await read_until(stream, b"data: {" * 1)
    await read_until(stream, b"data: {")
    await stream.aclose()
    await assert_one_abort_each(server, 1)


async def test_disconnect_of_a_non_streaming_request(server: Server) -> None:
    stream = await open_request(
        server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}
    )
    await wait_adds(server, 1)
    await trio.sleep(0.05)  # decoding, nothing sent to the client yet
    await stream.aclose()
    await assert_one_abort_each(server, 1)


async def test_under_hypercorn_no_watcher_task_is_needed(server: Server, monkeypatch) -> None:
    """The disconnect is seen by hypercorn's own connection task (our hook on its stream), not by a
    watcher task one scheduler pass later; a hypercorn upgrade that breaks the hook fails here."""
    watched: list[int] = []
    run_with_watcher = disconnect._run_with_watcher

    async def spy(*args):
        watched.append(1)
        return await run_with_watcher(*args)

    monkeypatch.setattr(disconnect, "_run_with_watcher", spy)
    stream = await open_request(
        server, "/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 1000, "stream": True}
    )
    await read_until(stream, b"data: {")
    await stream.aclose()
    await assert_one_abort_each(server, 1)
    assert watched == []


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/v1/responses"])
async def test_every_post_route_aborts_from_the_disconnect_itself(
    server: Server, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """``drive`` registers the generations' abort as a disconnect callback, so it runs where the disconnect
    is seen, before the cancelled handler unwinds (which would abort too, one scheduler pass later)."""
    causes: list[str] = []
    abort = Generation.abort

    def spy(self: Generation, cause: str = "aborted") -> None:
        causes.append(cause)
        abort(self, cause)

    monkeypatch.setattr(Generation, "abort", spy)
    body: dict = {"max_tokens": 1000, "stream": True}
    if path == "/v1/completions":
        body["prompt"] = [1, 2, 3]
    elif path == "/v1/chat/completions":
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["input"] = "hi"
        body["max_output_tokens"] = body.pop("max_tokens")
    stream = await open_request(server, path, body)
    await read_until(stream, b"data: {")
    await stream.aclose()
    await assert_one_abort_each(server, 1)
    assert causes == ["client disconnected"]


@pytest.mark.parametrize("server", [{"step_ms": 400}], indirect=True)
async def test_disconnect_during_prefill(server: Server) -> None:
    stream = await open_request(
        server, "/v1/completions", {"prompt": [1, 2], "max_tokens": 50, "stream": True}
    )
    await wait_adds(server, 1)  # in the engine, first token not produced yet (steps are 400 ms)
    await stream.aclose()
    with trio.fail_after(1):  # the abort does not wait for an engine step
        await server.mock.log.wait_for("abort")
    await assert_one_abort_each(server, 1)


@pytest.mark.parametrize("server", [{"max_num_seqs": 1}], indirect=True)
async def test_disconnect_while_queued_in_the_engine(server: Server) -> None:
    busy = await open_request(
        server, "/v1/completions", {"prompt": [1, 2], "max_tokens": 2000, "stream": True}
    )
    await wait_adds(server, 1)
    queued = await open_request(
        server, "/v1/completions", {"prompt": [1, 3], "max_tokens": 10, "stream": True}
    )
    await wait_adds(server, 2)
    await queued.aclose()
    with trio.fail_after(5):
        await server.mock.log.wait_for("abort", request_id=server.adds()[1])
    await busy.aclose()
    await assert_one_abort_each(server, 2)


async def test_disconnect_while_tokenizing_never_reaches_the_engine(server: Server, monkeypatch) -> None:
    entered = trio.Event()
    original = Tokenizer.encode_async

    async def slow_encode(self, text, *, add_special_tokens=True):
        entered.set()
        await trio.sleep(5)
        return await original(self, text, add_special_tokens=add_special_tokens)

    monkeypatch.setattr(Tokenizer, "encode_async", slow_encode)
    stream = await open_request(server, "/v1/completions", {"prompt": "hello", "max_tokens": 5})
    with trio.fail_after(5):
        await entered.wait()
    await stream.aclose()
    await trio.sleep(0.2)
    assert server.adds() == [] and server.aborts() == []
    # the handler is gone too: nothing is waiting on the tokenizer any more
    assert server.app.engine.open_requests == 0


async def test_stop_string_and_client_close_do_not_double_abort(server: Server) -> None:
    stream = await open_request(
        server, "/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 50, "stream": True, "stop": ["zzzz"]}
    )
    await read_until(stream, b"data: {")
    await stream.aclose()
    await assert_one_abort_each(server, 1)


async def test_200_concurrent_streams_closed_early_leave_no_live_request(server: Server) -> None:
    rng = random.Random(3)

    async def one(i: int) -> None:
        stream = await open_request(
            server, "/v1/completions", {"prompt": [1, 10 + i], "max_tokens": 2000, "stream": True}
        )
        wanted, seen, data = rng.randrange(1, 6), 0, b""
        with trio.fail_after(20):
            while seen < wanted:  # a random number of SSE events, then hang up
                data += await stream.receive_some(65536)
                seen = data.count(b"data: {")
        await stream.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
    await assert_one_abort_each(server, 200)


async def test_server_shutdown_aborts_in_flight_requests(nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    streams = [
        await open_request(server, "/v1/completions", {"prompt": [1, i], "max_tokens": 2000, "stream": True})
        for i in range(5)
    ]
    await wait_adds(server, 5)
    server.app.begin_shutdown()
    await assert_one_abort_each(server, 5)
    for stream in streams:  # every response ends (with an in-band error event), none hangs
        data = await read_until(stream, b"data: [DONE]")
        assert b"data: [DONE]" in data
        await stream.aclose()
    nursery.cancel_scope.cancel()
