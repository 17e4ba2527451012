"""``api/http.py`` in isolation: SSE writes (held events leave with the next write) and the disconnect
watcher's callbacks (they run the moment the client leaves, before the cancelled work has unwound)."""

from __future__ import annotations

import orjson
import pytest
import trio

from trio_front.api.disconnect import on_disconnect, run_with_disconnect
from trio_front.api.http import SSEWriter, chunk_encoder
from trio_front.cli import build_parser


async def test_held_events_leave_with_done_in_one_write() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    sse = SSEWriter(send)
    await sse.event({"a": 1})
    await sse.event({"b": 2}, hold=True)
    await sse.event(b'{"c":3}', hold=True)
    await sse.done()
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body", "http.response.body"]
    assert sent[1] == {"type": "http.response.body", "body": b'data: {"a":1}\n\n', "more_body": True}
    assert sent[2] == {
        "type": "http.response.body",
        "body": b'data: {"b":2}\n\ndata: {"c":3}\n\ndata: [DONE]\n\n',
        "more_body": False,
    }


async def test_a_held_event_goes_out_with_the_next_event() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    sse = SSEWriter(send)
    await sse.event({"b": 2}, hold=True)
    await sse.keep_alive()
    await sse.close()
    assert sent[1]["body"] == b'data: {"b":2}\n\n: keep-alive\n\n' and sent[1]["more_body"] is True
    assert sent[2] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_disconnect_callbacks_run_before_the_work_unwinds() -> None:
    order: list[str] = []
    send_disconnect, receive_disconnect = trio.open_memory_channel[dict](1)

    async def work() -> None:
        on_disconnect(lambda: order.append("callback"))
        try:
            await trio.sleep_forever()
        finally:
            order.append("unwound")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_disconnect.send, {"type": "http.disconnect"})
        completed = await run_with_disconnect(receive_disconnect.receive, work)
    assert completed is False
    assert order == ["callback", "unwound"]


async def test_disconnect_callbacks_are_not_run_when_the_work_completes() -> None:
    called: list[int] = []
    _send, receive = trio.open_memory_channel[dict](1)

    async def work() -> None:
        on_disconnect(lambda: called.append(1))

    assert await run_with_disconnect(receive.receive, work) is True
    on_disconnect(lambda: called.append(2))  # outside a request: ignored
    assert called == []


def test_stream_interval_flag() -> None:
    parser = build_parser()
    args = parser.parse_args(["run", "--engine-addr", "tcp://127.0.0.1:1", "--model", "m"])
    assert args.stream_interval == 1  # vLLM's default: every engine step
    args = parser.parse_args(["run", "--engine-addr", "tcp://h:1", "--model", "m", "--stream-interval", "8"])
    assert args.stream_interval == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--engine-addr", "tcp://h:1", "--model", "m", "--stream-interval", "0"])


def test_chunk_encoder_matches_serializing_the_whole_chunk() -> None:
    head = {"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m\u00e9"}
    encode = chunk_encoder(head)
    for choice in ({"index": 0, "text": 'a"b\n'}, {"index": 1, "text": "", "finish_reason": "length"}):
        assert encode(choice) == orjson.dumps({**head, "choices": [choice]})
