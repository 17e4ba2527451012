"""Where the frontend listens (Unix socket, an inherited bound-not-listening fd) and what one connection
may hold: the request-head size limit, slow-header clients (slowloris) and idle connections are cut after
the keep-alive timeout while a streamed completion runs on normally.

Timings are printed (run with ``-s``) and asserted only within generous bounds: the machine is shared.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio

from trio_front.listen import hypercorn_config
from trio_front.server import FrontendConfig

from .conftest import MODEL
from .listen_fixtures import Listening, listening

PROMPT = [1, 50, 60, 70]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory for Unix sockets: pytest's tmp_path can exceed AF_UNIX's 108-byte path limit."""
    with tempfile.TemporaryDirectory(prefix="tf-") as path:
        yield Path(path)


def port_of(server: Listening) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def complete(client: httpx.AsyncClient, max_tokens: int = 5) -> str:
    r = await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": max_tokens})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def uds_client(path: str | Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)), base_url="http://local")


async def test_unix_socket(short_dir: Path) -> None:
    path = short_dir / "api.sock"
    async with listening({"uds": str(path)}) as server:
        assert server.binds == [f"http://unix:{path}"]
        async with uds_client(path) as client:
            assert await complete(client) == server.expected_text(PROMPT, 5)
        # a second server on a live socket is refused (hypercorn's unix: bind would unlink it)
        with pytest.raises(ValueError, match="another server is listening on it"):
            hypercorn_config(server.config)
    assert path.exists()  # left behind, as by vLLM; the next start replaces the stale file
    async with listening({"uds": str(path)}) as server:
        async with uds_client(path) as client:
            assert await complete(client) == server.expected_text(PROMPT, 5)
    (short_dir / "file").write_text("not a socket")
    with pytest.raises(ValueError, match="exists and is not a socket"):
        check(uds=str(short_dir / "file"))


def refuses_connections(address: Any, family: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address)
        except ConnectionRefusedError:
            return True
        return False


async def test_inherited_tcp_socket_bound_not_listening() -> None:
    """vLLM's ``frontend`` drop-in: ``--listen-fd`` is bound, not listening; serving calls listen()."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    assert refuses_connections(("127.0.0.1", port), socket.AF_INET)
    async with listening({"listen_fd": sock.detach(), "port": 1}) as server:  # port: ignored for the fd
        assert server.binds == [f"http://127.0.0.1:{port}"]
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert await complete(client) == server.expected_text(PROMPT, 5)


async def test_inherited_unix_socket_bound_not_listening(short_dir: Path) -> None:
    path = str(short_dir / "fd.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    assert refuses_connections(path, socket.AF_UNIX)
    async with listening({"listen_fd": sock.detach()}) as server:
        assert server.binds == [f"http://unix:{path}"]
        async with uds_client(path) as client:
            assert await complete(client) == server.expected_text(PROMPT, 5)


def check(**fields: Any) -> None:
    hypercorn_config(FrontendConfig(engine_addr="ipc:///unused", model=MODEL, **fields))


def test_bad_inherited_fds_name_the_flag() -> None:
    read, write = os.pipe()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unbound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        os.close(write)
        for fd, message in (
            (write, f"--listen-fd {write}: not an open file descriptor"),
            (read, f"--listen-fd {read}: not a socket"),
            (udp.fileno(), "not a TCP or Unix stream socket"),
            (unbound.fileno(), "the socket is not bound"),
        ):
            with pytest.raises(ValueError) as error:
                check(listen_fd=fd)
            assert message in str(error.value)
        assert udp.fileno() != -1 and unbound.fileno() != -1  # the check leaves the fd open
    finally:
        os.close(read)
        udp.close()
        unbound.close()


async def raw_request(port: int, head: bytes, timeout: float = 30) -> bytes:
    """Send a request head (and nothing more); everything the server answers until it closes or the
    response's head is in. Reads while sending: a server refusing a big head may close before all of it
    arrived."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = bytearray()
    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                try:
                    await stream.send_all(head)
                except trio.BrokenResourceError:
                    pass  # the server closed while we were still sending

            nursery.start_soon(send)
            while b"\r\n\r\n" not in received:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                received += data
            nursery.cancel_scope.cancel()
    await stream.aclose()
    return bytes(received)


def head_with(header_bytes: int) -> bytes:
    return b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * header_bytes + b"\r\n\r\n"


async def test_request_head_size_limit() -> None:
    """vLLM's default --h11-max-incomplete-event-size (4 MiB, where hypercorn's own is 16 KiB) caps the
    request line plus headers: a 64 KiB header passes, 5 MiB → 431 and the connection closes. A configured
    limit is honoured. (h11 checks the size of a head still incomplete after a read, so a head may pass the
    limit by less than one read, 64 KiB; the oversize cases are well past that.)"""
    async with listening() as server:
        assert (await raw_request(port_of(server), head_with(64 * 1024))).startswith(b"HTTP/1.1 200")
        answer = await raw_request(port_of(server), head_with(5 * 1024 * 1024))
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    async with listening({"h11_max_incomplete_event_size": 8192}) as server:
        assert (await raw_request(port_of(server), head_with(6000))).startswith(b"HTTP/1.1 200")
        answer = await raw_request(port_of(server), head_with(200_000))
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


async def test_a_stalled_request_body_gets_408(monkeypatch: pytest.MonkeyPatch) -> None:
    """hypercorn times out only the request head; a body that stops arriving must not hold the request
    for ever (``http.py::read_body``). Nothing reaches the engine."""
    monkeypatch.setattr("trio_front.api.http.BODY_STALL_TIMEOUT", 0.5)
    async with listening() as server:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port_of(server))
            head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            await stream.send_all(head + b"Content-Length: 100\r\n\r\n" + b'{"prompt": ')
            answer = b""
            while chunk := await stream.receive_some(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and b"}" in answer:
                    break
            await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"stalled" in answer
        assert server.mock.log.named("add") == []


@attrs.define
class Streamed:
    text: str
    completion_tokens: int
    first_token_s: float
    total_s: float


async def stream_completion(server: Listening, max_tokens: int) -> Streamed:
    body = {
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    parts: list[str] = []
    usage: dict[str, Any] = {}
    start = trio.current_time()
    first = None
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        async with client.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = orjson.loads(line[6:])
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event["choices"]:
                    if choice["text"] and first is None:
                        first = trio.current_time() - start
                    parts.append(choice["text"])
    return Streamed("".join(parts), usage["completion_tokens"], first or 0.0, trio.current_time() - start)


async def slow_client(port: int, closed_after: list[float], interval: float) -> None:
    """A slowloris client: a request line, then header bytes one at a time every *interval* seconds,
    never ending the head; records how long after connecting the server closed the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def trickle() -> None:
            try:
                await stream.send_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                while True:
                    await trio.sleep(interval)
                    await stream.send_all(b"a")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        nursery.start_soon(trickle)
        try:
            data = await stream.receive_some(65536)
            assert data == b"", data  # nothing is answered: the head never ends
        except trio.BrokenResourceError:
            pass  # a reset (the server closed with trickled bytes unread) is a close too
        closed_after.append(trio.current_time() - start)
        nursery.cancel_scope.cancel()
    await stream.aclose()


async def idle_client(port: int, closed_after: list[float], request_first: bool) -> None:
    """Connects and sends nothing (or one request, then nothing: an idle keep-alive connection);
    records how long after connecting (or after its response) the server closed it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    if request_first:
        await stream.send_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += await stream.receive_some(65536)
        assert answer.startswith(b"HTTP/1.1 200")
    start = trio.current_time()
    try:
        assert await stream.receive_some(65536) == b""
    except trio.BrokenResourceError:
        pass
    closed_after.append(trio.current_time() - start)
    await stream.aclose()


async def test_slowloris_is_cut_after_keep_alive_and_a_stream_runs_on() -> None:
    """50 clients trickling header bytes (one every 0.2 s) are all closed about keep-alive (vLLM's 5 s)
    after they connected, because hypercorn's idle timer runs until a request head is complete and bytes
    do not restart it (uvicorn's does restart on every byte). A streamed completion started during the
    flood gets every token in about its usual time."""
    keep_alive = FrontendConfig(engine_addr="", model=MODEL).http_timeout_keep_alive
    tokens = 300
    async with listening() as server:
        baseline = await stream_completion(server, tokens)
        closed_after: list[float] = []
        with trio.fail_after(keep_alive + 30):  # clients the server never closes would wait forever
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(slow_client, port_of(server), closed_after, 0.2)
                await trio.sleep(1.0)
                during = await stream_completion(server, tokens)
        expected = server.expected_text(PROMPT, tokens)
        for streamed in (baseline, during):
            assert streamed.text == expected and streamed.completion_tokens == tokens
        print(
            f"\nslowloris: 50 clients closed after {min(closed_after):.2f}..{max(closed_after):.2f} s "
            f"(keep-alive {keep_alive} s); {tokens}-token stream: baseline {baseline.total_s:.3f} s "
            f"(first token {baseline.first_token_s * 1000:.1f} ms), during the flood {during.total_s:.3f} s "
            f"(first token {during.first_token_s * 1000:.1f} ms)"
        )
        assert len(closed_after) == 50
        assert keep_alive - 0.5 <= min(closed_after) and max(closed_after) <= keep_alive + 5
        assert during.total_s <= max(10 * baseline.total_s, baseline.total_s + 3)


async def test_idle_connection_flood_does_not_stall_the_engine_link() -> None:
    """300 connections that never send a byte, plus 20 idle keep-alive connections after one request:
    a streamed completion during the flood completes normally, and the server closes every idle
    connection after the (configured) keep-alive timeout."""
    keep_alive = 2.0
    tokens = 300
    async with listening({"http_timeout_keep_alive": keep_alive}) as server:
        baseline = await stream_completion(server, tokens)
        silent: list[float] = []
        kept: list[float] = []
        with trio.fail_after(keep_alive + 30):
            async with trio.open_nursery() as nursery:
                for i in range(320):
                    if i < 300:
                        nursery.start_soon(idle_client, port_of(server), silent, False)
                    else:
                        nursery.start_soon(idle_client, port_of(server), kept, True)
                await trio.sleep(0.5)
                during = await stream_completion(server, tokens)
                assert not silent  # the stream finished while every idle connection was still open
        assert during.text == server.expected_text(PROMPT, tokens) and during.completion_tokens == tokens
        print(
            f"\nidle flood: 300 silent connections closed after {min(silent):.2f}..{max(silent):.2f} s, "
            f"20 idle keep-alive ones {min(kept):.2f}..{max(kept):.2f} s after their response "
            f"(keep-alive {keep_alive} s); {tokens}-token stream: baseline {baseline.total_s:.3f} s, "
            f"during the flood {during.total_s:.3f} s (first token {during.first_token_s * 1000:.1f} ms)"
        )
        assert len(silent) == 300 and len(kept) == 20
        assert keep_alive - 0.5 <= min(silent + kept) and max(silent + kept) <= keep_alive + 5
        assert during.total_s <= max(10 * baseline.total_s, baseline.total_s + 3)
