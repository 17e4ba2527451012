"""Raw HTTP/1.x against the real hypercorn server: ``api/direct_body.py`` writes streamed chunks directly
on HTTP/1.1 (and the client still gets a well-formed chunked body), HTTP/1.0 keeps the ASGI path, and a
``Connection: close`` / HTTP/1.0 response is followed by the server closing the connection."""

from __future__ import annotations

import socket
import time

import orjson
import pytest
import trio

from trio_front.api import direct_body

from .conftest import Server, start_server
from .test_http_api import expected_tokens, sse

BODY = {"prompt": [1, 5, 6], "max_tokens": 12, "stream": True, "stream_options": {"include_usage": True}}


@pytest.fixture
def direct_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    writes: list[bytes] = []
    original = direct_body.DirectBody.write

    async def counting(self: direct_body.DirectBody, data: bytes) -> bool:
        wrote = await original(self, data)
        if wrote:
            writes.append(data)
        return wrote

    monkeypatch.setattr(direct_body.DirectBody, "write", counting)
    return writes


async def test_http11_stream_is_written_directly(server: Server, direct_writes: list[bytes]) -> None:
    events = await sse(server, "/v1/completions", BODY)
    text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
    assert text == server.app.state.tokenizer.decode(expected_tokens([1, 5, 6], 12))
    assert events[-1]["usage"]["completion_tokens"] == 12
    # every chunk but the held last one (which leaves with usage and [DONE] through ASGI) went directly
    assert len(direct_writes) >= 1
    assert all(w.startswith(b"data: ") for w in direct_writes)


def post_completion(body: dict, *, version: bytes = b"1.1", close: bool = True) -> bytes:
    """A raw ``POST /v1/completions`` request (``Connection: close`` unless *close* is false; HTTP/1.0
    closes by itself)."""
    data = orjson.dumps(body)
    connection = b"Connection: close\r\n" if close and version == b"1.1" else b""
    return (
        b"POST /v1/completions HTTP/"
        + version
        + b"\r\nHost: x\r\nContent-Type: application/json\r\n"
        + connection
        + b"Content-Length: "
        + str(len(data)).encode()
        + b"\r\n\r\n"
        + data
    )


async def raw_exchange(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        parts = []
        with trio.fail_after(10):
            while data := await stream.receive_some(65536):
                parts.append(data)
    return b"".join(parts)


async def test_http10_client_gets_a_close_delimited_body_written_directly(
    server: Server, direct_writes: list[bytes]
) -> None:
    response = await raw_exchange(server.port, post_completion(BODY, version=b"1.0"))
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    # close-delimited, no chunk framing: the body is the events themselves
    assert payload.startswith(b"data: {") and payload.endswith(b"data: [DONE]\n\n")
    events = [orjson.loads(e[6:]) for e in payload.split(b"\n\n") if e and e != b"data: [DONE]"]
    text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
    assert text == server.app.state.tokenizer.decode(expected_tokens([1, 5, 6], 12))
    assert len(direct_writes) >= 1 and b"".join(direct_writes) in payload


async def test_http11_raw_bytes_are_valid_chunked_framing(server: Server) -> None:
    response = await raw_exchange(server.port, post_completion(BODY))
    head, _, rest = response.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    payload = b""
    while True:  # decode the chunked body by hand: any framing error fails here
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            break
        payload, rest = payload + rest[:size], rest[size:]
        assert rest.startswith(b"\r\n")
        rest = rest[2:]
    assert payload.endswith(b"data: [DONE]\n\n") and payload.count(b"data: ") >= 13


async def test_connection_close_after_a_json_response(server: Server) -> None:
    request = post_completion({"prompt": [1, 5, 6], "max_tokens": 3})
    response = await raw_exchange(server.port, request)  # returns only at EOF (fails after 10 s)
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and orjson.loads(payload)["usage"]["completion_tokens"] == 3


async def test_a_streamed_response_whose_client_stops_reading_is_cut_off(nursery: trio.Nursery) -> None:
    """--send-timeout for SSE: the client never reads, the server's writes back up, and one chunk that stays
    unsent for the timeout gets the connection reset and the engine request aborted."""
    server = await start_server(nursery, step_ms=0.2, max_model_len=400_000)
    server.app.state.send_timeout = 1.0
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", server.port))
    stream = trio.SocketStream(sock)
    body = {"prompt": [1, 5, 6], "max_tokens": 300_000, "ignore_eos": True, "stream": True}
    started = time.monotonic()
    await stream.send_all(post_completion(body, close=False))
    with trio.fail_after(30):
        while not server.aborts():
            await trio.sleep(0.05)
    cut_after = time.monotonic() - started
    abort = server.mock.log.named("abort")[0]
    assert server.aborts() == server.adds()  # the one request, aborted, not finished
    assert 1.0 <= cut_after < 15, cut_after
    assert abort["tokens"] < 300_000
    with pytest.raises((ConnectionResetError, trio.BrokenResourceError)):  # RST, not a clean end
        with trio.fail_after(10):
            while await stream.receive_some(1 << 20):
                pass
    await server.settle()
    assert server.app.engine.open_requests == 0
