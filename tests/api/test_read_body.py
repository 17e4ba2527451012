"""Reading a request body from hypercorn's app queue (``http.py::read_body``): what has already arrived
is taken without a pass of trio's scheduler per message; what has not is awaited."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trio_front.api import transport
from trio_front.api.disconnect import ClientDisconnected
from trio_front.api.errors import APIError
from trio_front.api.http import read_body


def queue(*messages: dict[str, Any]) -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
    """hypercorn's app queue (``hypercorn/trio/task_group.py``: a memory channel, the app gets its
    bound ``receive``), holding *messages*."""
    send, receive = trio.open_memory_channel[Any](10)
    for message in messages:
        send.send_nowait(message)
    return send, receive


def body(data: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


async def test_a_body_already_queued_is_read_without_yielding() -> None:
    # hypercorn queues the body and an empty final message; both are there when the app starts.
    _, receive = queue(body(b'{"prompt": ', True), body(b"[1, 2]}", True), body(b"", False))
    ran: list[bool] = []

    async def other() -> None:
        ran.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        assert await read_body(receive.receive) == b'{"prompt": [1, 2]}'
        assert ran == []  # no other task ran: read_body never gave the scheduler a pass
    assert ran == [True]


async def test_a_chunk_still_on_its_way_is_awaited() -> None:
    send, receive = queue(body(b"abc", True))

    async def later() -> None:
        await trio.sleep(0.05)
        await send.send(body(b"def", False))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        assert await read_body(receive.receive) == b"abcdef"


async def test_a_stall_after_a_queued_chunk_is_408() -> None:
    _send, receive = queue(body(b"abc", True))
    with pytest.raises(APIError) as caught:
        await read_body(receive.receive, stall_timeout=0.05)
    assert caught.value.status == 408


async def test_a_queued_disconnect_and_the_size_limit() -> None:
    _, receive = queue(body(b"abc", True), {"type": "http.disconnect"})
    with pytest.raises(ClientDisconnected):
        await read_body(receive.receive)
    _, receive = queue(body(b"x" * 10, True), body(b"x" * 10, False))
    with pytest.raises(APIError) as caught:
        await read_body(receive.receive, limit=15)
    assert caught.value.status == 413


async def test_a_cancelled_reader_takes_nothing() -> None:
    _, receive = queue(body(b"abc", False))
    with trio.CancelScope() as scope:
        scope.cancel()
        await read_body(receive.receive)
    assert scope.cancelled_caught
    assert receive.receive_nowait() == body(b"abc", False)


async def test_receive_nowait_only_for_a_memory_channels_receive() -> None:
    _, receive = queue()
    assert transport.receive_nowait(receive.receive) == receive.receive_nowait

    async def other_server_receive() -> dict[str, Any]:
        return body(b"", False)

    assert transport.receive_nowait(other_server_receive) is None
    # With another server's receive, read_body awaits it as before.
    assert await read_body(other_server_receive) == b""
