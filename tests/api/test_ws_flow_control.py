"""Flow control of the WebSocket APIs: the outbox, a stuck reader, a flooding client, and a storm of
sockets that create and cancel responses. The mock engine's event log is the witness that every engine
request ended exactly once (one ``finish`` or one ``abort``)."""

from __future__ import annotations

import random
import resource
import time
import tracemalloc
from typing import Any

import trio

from trio_front.api.ws import Outbox, WSOptions

from .ws_fixtures import Client, RawClient, collect, count_tasks, open_client, running_server

MODEL = "tiny-llama"
REALTIME = f"/v1/realtime?model={MODEL}"


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


# ---------------------------------------------------------------------------------------- the outbox


async def test_outbox_coalesces_only_with_the_last_entry_and_bounds_replies() -> None:
    box = Outbox(limit=3)
    box.push({"type": "a"})
    assert box.push_delta("r1", {"type": "d", "n": 1}, "delta", "x") is False
    assert box.push_delta("r1", {"type": "d", "n": 2}, "delta", "y") is True
    box.push({"type": "b"})
    assert box.push_delta("r1", {"type": "d", "n": 3}, "delta", "z") is False  # not past "b": order kept
    assert len(box) == 4 and box.coalesced == 1 and box.queued_chars == 3
    assert [await box.get() for _ in range(4)] == [
        {"type": "a"},
        {"type": "d", "n": 1, "delta": "xy"},
        {"type": "b"},
        {"type": "d", "n": 3, "delta": "z"},
    ]
    for i in range(3):
        await box.put({"i": i})
    with trio.move_on_after(0.05) as blocked:
        await box.put({"i": 3})  # full: the reader waits (and stops reading the socket)
    assert blocked.cancelled_caught and len(box) == 3
    box.push({"i": "from a response"})  # responses never wait
    assert len(box) == 4
    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.put, {"i": 4})
        await trio.testing.wait_all_tasks_blocked()
        await box.get()
        await box.get()  # room again: the waiting put goes through
    assert len(box) == 3
    box.close()
    assert len(box) == 0 and box.push_delta("r", {}, "delta", "x") is True
    await box.put({"late": True})  # no-op, no wait, once closed
    try:
        await box.get()
    except trio.EndOfChannel:
        pass
    else:
        raise AssertionError("a closed outbox ends its reader")


# ---------------------------------------------------------------------------------------- stuck reader


async def test_a_reader_that_stops_is_closed_and_its_request_aborted() -> None:
    send_timeout = 2.0
    async with running_server(
        ws=WSOptions(send_timeout=send_timeout), step_ms=0.2, max_model_len=400_000
    ) as server:
        client = await RawClient.connect(server.port, REALTIME, rcvbuf=4096)
        await client.send({"type": "conversation.item.create", "item": user("write a long story")})
        collect()
        tracemalloc.start()
        try:
            base_traced, _ = tracemalloc.get_traced_memory()
            base_rss = rss_mb()
            started = time.monotonic()
            await client.send({"type": "response.create", "response": {"max_output_tokens": 300_000}})
            traced_peak = 0
            with trio.fail_after(send_timeout + 20):
                while not server.stats.stuck_closed_total or server.stats.open_sockets:
                    await trio.sleep(0.05)
                    traced_peak = max(traced_peak, tracemalloc.get_traced_memory()[0] - base_traced)
            closed_after = time.monotonic() - started
            rss_growth = rss_mb() - base_rss
        finally:
            tracemalloc.stop()
        events, reset = await client.read_all()
        await server.settle()

        stats = server.stats
        adds = server.adds()
        abort = server.mock.log.named("abort")[0]
        print(
            f"\nstuck reader: closed after {closed_after:.2f} s (send_timeout {send_timeout} s), "
            f"{abort['tokens']} tokens generated before the abort, outbox high water "
            f"{stats.outbox_high_water} events, {stats.coalesced_deltas_total} deltas coalesced, traced "
            f"memory peak +{traced_peak / 2**20:.2f} MiB, RSS +{rss_growth:.1f} MiB, client got "
            f"{len(events)} events then {'RST' if reset else 'FIN'}"
        )
        assert stats.stuck_closed_total == 1 and reset
        assert [server.ends()[rid] for rid in adds] == [["abort"]]
        assert send_timeout <= closed_after < send_timeout + 10  # + the time to fill the TCP buffers
        # Thousands of tokens were produced while the client read nothing; the server held a handful of
        # events (the deltas merged into one) and memory in the order of the response's own text.
        assert stats.coalesced_deltas_total > 100 and abort["tokens"] > stats.coalesced_deltas_total
        assert stats.outbox_high_water <= 8
        assert traced_peak < 4 * 2**20


async def test_a_client_that_floods_without_reading_is_not_read_either() -> None:
    """The reader stops taking events while the outbox is full, so the client's own sends back up."""
    options = WSOptions(send_timeout=1.0, max_outbox=16)
    async with running_server(ws=options) as server:
        client = await RawClient.connect(server.port, REALTIME, rcvbuf=4096)
        sent = 0
        item = user("x" * 2000)

        async def flood() -> None:
            nonlocal sent
            try:
                while True:
                    await client.send({"type": "conversation.item.create", "item": item})
                    sent += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                while not server.stats.stuck_closed_total or server.stats.open_sockets:
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        await server.settle()
        print(f"\nflooding client: sent {sent} items before its sends blocked/failed; "
              f"outbox high water {server.stats.outbox_high_water}")  # fmt: skip
        assert server.stats.stuck_closed_total == 1
        assert server.stats.outbox_high_water <= options.max_outbox + 1


# ---------------------------------------------------------------------------------------- storm


async def test_cancellation_storm() -> None:
    sockets, duration = 200, 8.0
    async with running_server(ws=WSOptions(send_timeout=10), step_ms=2, max_num_seqs=512) as server:
        # Warm up every code path once, so first-use allocations do not count as growth.
        await storm(server, sockets=4, duration=0.5, seed=0, rounds=6)
        await server.settle()
        collect()
        tasks_before = count_tasks()
        warmup_adds = len(server.adds())
        rss_before = rss_mb()
        tracemalloc.start()
        tracemalloc.reset_peak()
        try:
            started = time.monotonic()
            counts = await storm(server, sockets=sockets, duration=duration, seed=1)
            elapsed = time.monotonic() - started
            await server.settle(timeout=30)
            collect()
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [
                    tracemalloc.Filter(False, "*/engine/mock/*"),
                    tracemalloc.Filter(False, tracemalloc.__file__),
                ]
            )
            leaked = sum(stat.size for stat in snapshot.statistics("filename"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        rss_after = rss_mb()
        tasks_after = count_tasks()

        adds, ends = server.adds()[warmup_adds:], server.ends()
        aborted = sum(1 for rid in adds if ends.get(rid) == ["abort"])
        finished = sum(1 for rid in adds if ends.get(rid) == ["finish"])
        print(
            f"\nstorm: {sockets} sockets for {elapsed:.1f} s: {counts['created']} responses created, "
            f"{counts['cancelled']} cancelled, {counts['completed']} completed, {counts['closed_running']} "
            f"left running at close; engine: {len(adds)} adds, {aborted} aborts, {finished} finishes; "
            f"traced memory after settle +{leaked / 2**20:.2f} MiB (peak {peak / 2**20:.1f} MiB), RSS "
            f"{rss_before:.0f} → {rss_after:.0f} MiB; tasks {tasks_before} → {tasks_after}"
        )
        server.assert_every_request_ended_once()
        assert counts["created"] >= sockets * 5 and counts["cancelled"] >= sockets
        assert aborted + finished == len(adds)
        assert server.stats.open_sockets == 0 and server.stats.running_responses == 0
        assert tasks_after == tasks_before
        assert leaked < 2 * 2**20, snapshot.statistics("lineno")[:10]


async def storm(server: Any, *, sockets: int, duration: float, seed: int, rounds: int = 4) -> dict[str, int]:
    """Each socket: response.create, then cancel at once, cancel after the first delta, or let it finish
    (a few tokens), in a tight loop (at least *rounds* times, then until *duration* is over); at the end
    it closes the socket with a response still running."""
    counts = {"created": 0, "cancelled": 0, "completed": 0, "closed_running": 0}
    deadline = trio.current_time() + duration

    async def one(index: int) -> None:
        rng = random.Random(seed * 100_000 + index)
        async with open_client(f"{server.ws_url}{REALTIME}", message_queue_size=64) as conn:
            c = Client(conn)
            await c.recv()
            await c.send({"type": "conversation.item.create", "item": user(f"socket {index}")})
            await c.until("conversation.item.done")
            done_rounds = 0
            while done_rounds < rounds or trio.current_time() < deadline:
                done_rounds += 1
                mode = rng.randrange(3)
                await c.send(
                    {"type": "response.create", "response": {"max_output_tokens": 6 if mode == 2 else 400}}
                )
                counts["created"] += 1
                if mode == 0:
                    await c.send({"type": "response.cancel"})
                elif mode == 1:
                    await c.until("response.output_text.delta", timeout=30)
                    await c.send({"type": "response.cancel"})
                done, _ = await c.until("response.done", timeout=30)
                status = done["response"]["status"]
                if status == "cancelled":
                    counts["cancelled"] += 1
                elif status in ("completed", "incomplete"):
                    counts["completed"] += 1
                else:
                    raise AssertionError(done)
            await c.send({"type": "response.create"})
            counts["created"] += 1
            counts["closed_running"] += 1
            if rng.random() < 0.5:
                await c.until("response.created", timeout=30)

    async with trio.open_nursery() as nursery:
        for index in range(sockets):
            nursery.start_soon(one, index)
    return counts


async def test_shutdown_does_not_wait_for_a_stuck_client() -> None:
    """hypercorn's shielded send would hold a cancelled connection (and the server's exit) until the client
    reads; the watchdog resets the connection when the socket is cancelled mid-send."""
    with trio.fail_after(15):
        async with running_server(
            ws=WSOptions(send_timeout=300), step_ms=0.2, max_model_len=400_000
        ) as server:
            client = await RawClient.connect(server.port, REALTIME, rcvbuf=4096)
            await client.send({"type": "conversation.item.create", "item": user("go")})
            await client.send({"type": "response.create", "response": {"max_output_tokens": 300_000}})
            with trio.fail_after(10):
                while server.stats.coalesced_deltas_total == 0 and not server.mock.log.named("abort"):
                    await trio.sleep(0.05)
                    if server.stats.running_responses and server.mock.log.named("add"):
                        break
            await trio.sleep(1.0)  # the client has read nothing: the server's writer is blocked by now
            stopping = time.monotonic()
        stopped_after = time.monotonic() - stopping
    _, reset = await client.read_all()
    print(f"\nshutdown with a stuck client took {stopped_after:.2f} s")
    assert reset and server.stats.open_sockets == 0
