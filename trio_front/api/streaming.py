"""Driving one or several :class:`Generation` objects for an HTTP response.

A single generation (the common case) is iterated directly, one SSE event per engine step: the engine
client coalesces deltas while the client lags, so a slow reader gets bigger events, never a backlog. For
several prompts in one request, one task per generation feeds a channel of size 0 (a rendezvous), so a
slow client stalls the producers rather than growing a queue; their engine outputs keep coalescing.

Inside an HTTP request, :func:`drive` also has the generations aborted the moment the client leaves
(:func:`~.disconnect.on_disconnect`), not once the cancelled task has unwound.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack

import trio

from trio_front.serving.generation import Chunk, Generation

from .disconnect import on_disconnect

OnChunk = Callable[[int, Generation, Chunk], Awaitable[None]]
OnIdle = Callable[[], Awaitable[None]]


async def drive(
    generations: Sequence[Generation],
    on_chunk: OnChunk,
    *,
    keep_alive: float | None = None,
    on_idle: OnIdle | None = None,
) -> None:
    """Run every generation to its end, calling ``on_chunk(index, generation, chunk)`` in order per index.

    With *keep_alive*, ``on_idle()`` is awaited whenever no chunk arrived for that many seconds (SSE
    comments keep proxies from cutting a stream during a long prefill or queueing).
    """
    async with AsyncExitStack() as stack:
        for generation in generations:
            await stack.enter_async_context(generation)
        if len(generations) > 1:
            # Leaving early aborts every live sibling in one ABORT (n>1 children, several prompts), before
            # the generations' own exits would send one each.
            stack.callback(abort_together, generations, "closed early")
        on_disconnect(lambda: _abort_on_disconnect(generations))
        if len(generations) == 1:
            await _drive_one(0, generations[0], on_chunk, keep_alive, on_idle)
            return
        send, receive = trio.open_memory_channel[tuple[int, Generation, Chunk]](0)

        async def produce(index: int, generation: Generation, send: trio.MemorySendChannel) -> None:
            async with send:
                while (chunk := await generation.next_chunk()) is not None:
                    await send.send((index, generation, chunk))

        async with trio.open_nursery() as nursery:
            async with send:
                for index, generation in enumerate(generations):
                    nursery.start_soon(produce, index, generation, send.clone())
            async with receive:
                while True:
                    with trio.move_on_after(keep_alive if keep_alive else float("inf")) as idle:
                        try:
                            item = await receive.receive()
                        except trio.EndOfChannel:
                            break
                    if idle.cancelled_caught:
                        if on_idle is not None:
                            await on_idle()
                        continue
                    await on_chunk(*item)


def _abort_on_disconnect(generations: Sequence[Generation]) -> None:
    """The client left: abort now, and time it (``trio_front_client_abort_latency_seconds``: from this
    disconnect callback to the ABORT on the engine socket)."""
    began = time.perf_counter()
    abort_together(generations, "client disconnected")
    metrics = generations[0].engine.metrics if generations else None
    if metrics is not None:
        metrics.ours.abort_latency.observe(time.perf_counter() - began)


def abort_together(generations: Sequence[Generation], cause: str) -> None:
    """Abort every live engine request of *generations* in one ABORT message (synchronous)."""
    if len(generations) == 1:
        generations[0].abort(cause)
        return
    streams = [g.stream for g in generations if g.stream is not None]
    if streams:
        streams[0].client.abort_streams(streams, cause)


async def _drive_one(
    index: int, generation: Generation, on_chunk: OnChunk, keep_alive: float | None, on_idle: OnIdle | None
) -> None:
    if not keep_alive:
        while (chunk := await generation.next_chunk()) is not None:
            await on_chunk(index, generation, chunk)
        return
    while True:
        with trio.move_on_after(keep_alive) as idle:
            chunk = await generation.next_chunk()  # cancelling the wait loses no engine output
        if idle.cancelled_caught:
            if on_idle is not None:
                await on_idle()
            continue
        if chunk is None:
            return
        await on_chunk(index, generation, chunk)
