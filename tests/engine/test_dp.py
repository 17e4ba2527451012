"""Data-parallel engines at the engine-client level: two mock engines (ranks 0 and 1) behind one client.

Load spreads over both ranks, ``data_parallel_rank`` (the ``X-data-parallel-rank`` header's value) pins
one, ABORTs reach the rank that holds the request, utility calls reach every rank, and a rank's death
fails every stream at once and is attributed to that rank. Nothing leaks: the mocks' request tables and
the client's in-flight counts are empty at the end.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from trio_front.engine import wire
from trio_front.engine.client import ClientState, EngineClient, EngineDeadError, LinkConfig
from trio_front.engine.dp import REQUESTED_RANK, Balancer, RankRangeError
from trio_front.engine.mock import MockEngine, MockEngineConfig

SHORT = wire.SamplingParams(max_tokens=6, temperature=0.0)
LONG = wire.SamplingParams(max_tokens=4000, temperature=0.0)


def ipc_addr() -> str:
    return f"ipc://{tempfile.gettempdir()}/tf-dp-{os.getpid()}-{os.urandom(4).hex()}"


@asynccontextmanager
async def dp_group(ranks: int = 2, **link) -> AsyncIterator[tuple[EngineClient, list[MockEngine]]]:
    addr = ipc_addr()
    client = EngineClient(LinkConfig(addr, engine_count=ranks, ping_interval=0, **link))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        engines = [
            await nursery.start(MockEngine(MockEngineConfig(addr, step_ms=2, rank=r)).run)
            for r in range(ranks)
        ]
        with trio.fail_after(10):
            await client.wait_ready()
        yield client, engines
        nursery.cancel_scope.cancel()


async def run_one(client: EngineClient, params: wire.SamplingParams = SHORT, **kw) -> tuple[str, int, int]:
    """Run a request to the end; (request id, managed rank, tokens)."""
    tokens = 0
    async with client.generate([5, 6, 7], params, **kw) as stream:
        async for delta in stream:
            tokens += len(delta.token_ids)
    return stream.request_id, stream.engine, tokens


def assert_no_leak(client: EngineClient, engines: list[MockEngine]) -> None:
    assert client.open_requests == 0
    assert client.balancer.inflight == [0] * len(engines)
    for engine in engines:
        assert engine.live_request_ids == set(), engine.config.rank


def added(engine: MockEngine) -> set[str]:
    return {e["request_id"] for e in engine.events if e["event"] == "add"}


async def test_registration_from_every_rank_and_load_spreads() -> None:
    async with dp_group() as (client, engines):
        assert sorted(client.registrations) == [0, 1]
        results: list[tuple[str, int, int]] = []

        async def one() -> None:
            results.append(await run_one(client))

        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(one)
        assert len(results) == 40 and all(tokens == 6 for *_, tokens in results)
        per_rank = [sum(1 for _, rank, _ in results if rank == r) for r in (0, 1)]
        # Burst of equal requests, exact in-flight floor: vLLM's score alternates the ranks.
        assert per_rank == [20, 20], per_rank
        assert client.balancer.assigned == per_rank
        for rank, engine in enumerate(engines):
            assert added(engine) == {rid for rid, r, _ in results if r == rank}
        # Sequential requests (nothing in flight) still rotate through the ranks.
        sequential = [(await run_one(client))[1] for _ in range(6)]
        assert sorted(sequential) == [0, 0, 0, 1, 1, 1]
        assert_no_leak(client, engines)


async def test_header_rank_pins_and_is_range_checked() -> None:
    async with dp_group() as (client, engines):
        token = REQUESTED_RANK.set(1)
        try:
            ranks = [(await run_one(client))[1] for _ in range(5)]
        finally:
            REQUESTED_RANK.reset(token)
        token = REQUESTED_RANK.set(2)
        try:
            with pytest.raises(RankRangeError, match=r"data_parallel_rank 2 is out of range \[0, 2\)\."):
                client.generate([1, 2], SHORT)
        finally:
            REQUESTED_RANK.reset(token)
        assert ranks == [1] * 5
        assert len(added(engines[1])) == 5 and not added(engines[0])
        with pytest.raises(RankRangeError):
            client.generate([1, 2], SHORT, data_parallel_rank=-1)
        assert (await run_one(client, data_parallel_rank=0))[1] == 0
        assert client.balancer.inflight == [0, 0]
        assert_no_leak(client, engines)


async def test_aborts_reach_the_owning_rank() -> None:
    async with dp_group() as (client, engines):
        streams = [client.generate([9, 9], LONG) for _ in range(6)]
        by_rank = {r: {s.request_id for s in streams if s.engine == r} for r in (0, 1)}
        assert all(len(ids) == 3 for ids in by_rank.values())
        for engine in engines:
            await engine.log.wait_for("add")
        # One by one (leaving the context) and in a batch (n>1 children's path).
        async with streams[0]:
            pass
        client.abort_streams(streams[1:], cause="test")
        with trio.fail_after(5):
            for rank, engine in enumerate(engines):
                for rid in by_rank[rank]:
                    await engine.log.wait_for("abort", request_id=rid)
        for rank, engine in enumerate(engines):
            aborted = {e["request_id"] for e in engine.events if e["event"] == "abort"}
            unknown = [e for e in engine.events if e["event"] == "abort_unknown"]
            assert aborted == by_rank[rank] and not unknown
        assert client.stats["aborted"] == 6
        await trio.sleep(0.05)  # a step's late outputs for the aborted ids are dropped
        assert_no_leak(client, engines)


async def test_utility_reaches_every_rank() -> None:
    async with dp_group() as (client, engines):
        assert await client.call_utility_all("is_sleeping") == [False, False]
        assert await client.call_utility("reset_prefix_cache") is True
        for engine in engines:
            methods = [e["method"] for e in engine.events if e["event"] == "utility"]
            assert methods == ["is_sleeping", "reset_prefix_cache"]


@pytest.mark.parametrize("sentinel", [True, False], ids=["crash", "kill9"])
async def test_rank_death_fails_streams_at_once_and_names_the_rank(sentinel: bool) -> None:
    async with dp_group() as (client, engines):
        errors: list[BaseException] = []
        started = trio.Event()
        count = 0

        async def stream_until_error() -> None:
            nonlocal count
            try:
                async with client.generate([3, 4], LONG) as stream:
                    async for _ in stream:
                        count += 1
                        if count >= 8:
                            started.set()
            except EngineDeadError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(stream_until_error)
            await started.wait()
            killed_at = trio.current_time()
            engines[1].die(sentinel=sentinel)
            with trio.fail_after(5):
                while len(errors) < 4:
                    await trio.sleep(0.01)
            failed_in = trio.current_time() - killed_at
        assert len(errors) == 4 and failed_in < 5
        assert client.state is ClientState.DEAD
        with trio.fail_after(5):
            while not client.dead_ranks:
                await trio.sleep(0.02)
        assert client.dead_ranks == [1]
        with pytest.raises(EngineDeadError):
            client.generate([1], SHORT)


def test_balancer_score_follows_snapshot_and_kv_pressure() -> None:
    lb = Balancer(0, 3)
    lb.scheduler_stats(0, {"num_waiting_reqs": 4, "num_running_reqs": 10, "kv_cache_usage": 0.9})
    lb.scheduler_stats(1, {"num_waiting_reqs": 0, "num_running_reqs": 3, "kv_cache_usage": 0.2})
    lb.scheduler_stats(2, {"num_waiting_reqs": 0, "num_running_reqs": 5, "kv_cache_usage": 0.2})
    assert lb.pick() == 1  # least waiting + running
    lb.coordinator_counts([[0, 0, 0.0], [9, 9, 0.9], [0, 1, 0.0]])
    assert lb.pick() == 0
    # Managed ranks 2..3 of a 4-rank group (a second node): the header indexes managed ranks.
    node = Balancer(2, 2)
    assert node.identities == [b"\x02\x00", b"\x03\x00"]
    assert node.index_of(3) == 1 and node.index_of(0) is None
    with pytest.raises(RankRangeError, match=r"out of range \[0, 2\)"):
        node.pick(2)


async def test_abort_figures_under_mixed_load() -> None:
    """100 streams over both ranks, every other one left after a seeded number of deltas: the aborts each
    rank received are exactly the ones sent to it, and no rank saw an abort for a request it did not hold."""
    rng = random.Random(14)
    async with dp_group() as (client, engines):
        sent: dict[int, set[str]] = {0: set(), 1: set()}

        async def one(i: int) -> None:
            leave_after = rng.randint(1, 5) if i % 2 else None
            async with client.generate([2, i % 50 + 3], LONG if leave_after else SHORT) as stream:
                seen = 0
                async for _ in stream:
                    seen += 1
                    if leave_after is not None and seen >= leave_after:
                        sent[stream.engine].add(stream.request_id)
                        break

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
        with trio.fail_after(5):
            for rank, engine in enumerate(engines):
                await engine.log.wait_for("abort", count=len(sent[rank]))
        received = {r: {e["request_id"] for e in engines[r].events if e["event"] == "abort"} for r in (0, 1)}
        counts = [len(sent[r]) for r in (0, 1)], [len(received[r]) for r in (0, 1)]
        print("aborts sent per rank {}, received {}".format(*counts))
        assert received == sent and sum(map(len, sent.values())) == 50
        assert not any(e["event"] == "abort_unknown" for engine in engines for e in engine.events)
        await trio.sleep(0.05)
        assert_no_leak(client, engines)
