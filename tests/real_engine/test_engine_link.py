"""The engine link against the real vLLM 0.32 CPU engine on the bundled tiny model.

Greedy decoding on the tiny model is deterministic, so each test first asks the engine for a reference
continuation and then derives EOS / stop-token cases from it rather than hard-coding token ids.
"""

from __future__ import annotations

import random
import time

import pytest
import trio

from trio_front.engine import wire
from trio_front.engine.client import ClientState, EngineClient, EngineDeadError
from trio_front.engine.launch import EngineProcess, pick_free_port

from .conftest import Portal, open_client, require_engine, start_engine, wait_ready

pytestmark = pytest.mark.real_engine

PROMPT = [1, 755, 3001, 40, 1200, 17]


def greedy(max_tokens: int, **kw) -> wire.SamplingParams:
    return wire.SamplingParams(
        temperature=0.0, max_tokens=max_tokens, output_kind=wire.OutputKind.DELTA, **kw
    )


async def collect(client: EngineClient, prompt: list[int], params: wire.SamplingParams):
    tokens: list[int] = []
    last = None
    async with client.generate(prompt, params, id_prefix="t") as stream:
        async for delta in stream:
            tokens.extend(delta.token_ids)
            last = delta
    return tokens, last.finish_reason, last.stop_reason


def test_handshake_with_engine_started_first(engine_first) -> None:
    client, _ = engine_first
    assert client.state is ClientState.READY
    assert client.registration.vllm_version.startswith("0.32")
    assert client.max_model_len == 2048


def test_finish_reasons_length_eos_stop_token_min_tokens(portal: Portal, engine_first) -> None:
    client, _ = engine_first

    async def scenario() -> None:
        ref, finish, _ = await collect(client, PROMPT, greedy(12))
        assert len(ref) == 12 and finish is wire.FinishReason.LENGTH
        # EOS: pretend the third generated token is the tokenizer's EOS.
        eos = ref[2]
        first = ref.index(eos)
        tokens, finish, stop = await collect(
            client, PROMPT, greedy(12, eos_token_id=eos, all_stop_token_ids=[eos])
        )
        assert tokens == ref[: first + 1] and finish is wire.FinishReason.STOP and stop is None
        # A stop token id: finish STOP with stop_reason = that id.
        stop_id = ref[4]
        first = ref.index(stop_id)
        tokens, finish, stop = await collect(
            client, PROMPT, greedy(12, stop_token_ids=[stop_id], all_stop_token_ids=[stop_id])
        )
        assert tokens == ref[: first + 1] and finish is wire.FinishReason.STOP and stop == stop_id
        # min_tokens masks EOS until reached.
        eos = ref[0]
        tokens, finish, _ = await collect(
            client, PROMPT, greedy(12, min_tokens=5, eos_token_id=eos, all_stop_token_ids=[eos])
        )
        assert len(tokens) >= 5 and eos not in tokens[:5]
        assert finish is wire.FinishReason.LENGTH or (finish is wire.FinishReason.STOP and tokens[-1] == eos)

    portal.run(scenario)


def test_200_concurrent_requests_with_exact_token_counts(portal: Portal, engine_first) -> None:
    client, _ = engine_first
    rng = random.Random(7)
    jobs = [
        ([1, *(rng.randrange(4, 4000) for _ in range(rng.randrange(1, 40)))], rng.randrange(1, 40))
        for _ in range(200)
    ]
    results: dict[int, tuple[int, wire.FinishReason]] = {}

    async def one(i: int) -> None:
        tokens, finish, _ = await collect(client, jobs[i][0], greedy(jobs[i][1]))
        results[i] = (len(tokens), finish)

    async def scenario() -> None:
        with trio.fail_after(180):
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)

    portal.run(scenario)
    assert len(results) == 200
    for i, (count, finish) in results.items():
        assert (count, finish) == (jobs[i][1], wire.FinishReason.LENGTH), i
    assert client.open_requests == 0


def test_100_of_200_aborted_mid_generation_while_the_rest_complete(portal: Portal, engine_first) -> None:
    client, _ = engine_first
    completed: list[int] = []
    aborted: list[str] = []
    finished_first: list[str] = []

    async def one(i: int) -> None:
        async with client.generate([1, 100 + i, 200 + i], greedy(48), id_prefix=f"r{i}") as stream:
            count = 0
            async for delta in stream:
                count += len(delta.token_ids)
                if i % 2 and count >= 1 + i % 7:
                    # On a loaded machine the engine may finish a request before its consumer runs (all
                    # 48 tokens in one coalesced delta): then there is nothing to abort.
                    (aborted if stream.registered else finished_first).append(stream.request_id)
                    return  # leaving the block early aborts the engine request
            completed.append(count)

    async def scenario() -> None:
        with trio.fail_after(180):
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
        # The engine freed them: its scheduler stats drop to zero running and waiting.
        with trio.fail_after(20):
            while True:
                stats = client.scheduler_stats or {}
                if stats.get("num_running_reqs") == 0 and stats.get("num_waiting_reqs") == 0:
                    break
                await client.call_utility("is_sleeping")
                await trio.sleep(0.1)

    before = client.stats["aborted"]
    portal.run(scenario)
    assert len(aborted) + len(finished_first) == 100 and len(aborted) >= 90
    assert client.stats["aborted"] - before == len(aborted)
    assert completed == [48] * 100
    assert client.open_requests == 0


def test_utility_call(portal: Portal, engine_first) -> None:
    client, _ = engine_first
    assert portal.run(client.call_utility, "is_sleeping") is False
    assert portal.run(client.call_utility, "get_supported_tasks") == ["generate"]

    async def failing() -> str:
        try:
            await client.call_utility("list_loras")
        except Exception as exc:
            return str(exc)
        return "no error"

    assert "list_loras" in portal.run(failing)


def test_client_first_then_engine_and_kill_mid_stream(portal: Portal) -> None:
    """Client bound first, engine started second; SIGKILL ends every open stream within 5 s."""
    require_engine()
    port = pick_free_port()
    client = open_client(portal, port)
    engine: EngineProcess = start_engine(port)
    try:
        wait_ready(portal, client, engine)
        outcomes: list[tuple[str, float | str]] = []

        async def one(i: int, started: trio.Event, killed_at: list[float]) -> None:
            # ignore_eos: a random-weights model may pick EOS early on another machine's numerics, and a
            # stream that ends before the kill proves nothing. Finished outcomes say how and when.
            tokens, reason = 0, None
            try:
                params = greedy(1900, ignore_eos=True)
                async with client.generate([1, 5 + i], params, id_prefix=f"k{i}") as stream:
                    async for delta in stream:
                        tokens += len(delta.token_ids)
                        reason = delta.finish_reason
                        started.set()
                outcomes.append(("finished", f"{reason} after {tokens} tokens, killed={bool(killed_at)}"))
            except EngineDeadError:
                outcomes.append(("dead", time.monotonic() - killed_at[0]))

        async def scenario() -> None:
            killed_at: list[float] = []
            started = trio.Event()
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(one, i, started, killed_at)
                await started.wait()
                await trio.sleep(0.3)
                killed_at.append(time.monotonic())
                await trio.to_thread.run_sync(engine.kill)

        portal.run(scenario)
        assert len(outcomes) == 20
        assert all(kind == "dead" for kind, _ in outcomes), outcomes
        assert max(float(t) for _, t in outcomes) < 5.0
        assert client.state is ClientState.DEAD
    finally:
        engine.terminate()
