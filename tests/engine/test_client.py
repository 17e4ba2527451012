"""EngineClient against a scripted engine peer: handshake, routing, coalescing, and the cancellation
paths in httpcore's shape (cancel while waiting, while holding undelivered outputs, during shutdown):
each must leave no registered request and send exactly one ABORT."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_front.engine import wire
from trio_front.engine.client import (
    ClientState,
    EngineClient,
    EngineClosedError,
    EngineDeadError,
    EngineNotReadyError,
    LinkConfig,
    UtilityCallError,
)

from .peer import ScriptedEngine

PARAMS = wire.SamplingParams(max_tokens=8, temperature=0.0)


def free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def out(
    rid: str, tokens: list[int], finish: wire.FinishReason | None = None, stop=None
) -> wire.EngineCoreOutput:
    return wire.EngineCoreOutput(
        request_id=rid,
        new_token_ids=tokens,
        finish_reason=None if finish is None else int(finish),
        stop_reason=stop,
    )


@asynccontextmanager
async def linked(**config) -> AsyncIterator[tuple[EngineClient, ScriptedEngine, trio.Nursery]]:
    addr = free_addr()
    engine_kw = {k: config.pop(k) for k in ("vllm_version", "answer_utilities") if k in config}
    client = EngineClient(LinkConfig(addr, ping_interval=config.pop("ping_interval", 0), **config))
    engine = ScriptedEngine(addr, **engine_kw)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await nursery.start(engine.run)
            await client.wait_ready()
            yield client, engine, nursery
            nursery.cancel_scope.cancel()


async def test_engine_started_first_then_client() -> None:
    addr = free_addr()
    engine = ScriptedEngine(addr)
    client = EngineClient(LinkConfig(addr, ping_interval=0))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.run)  # its HELLO waits in libzmq until we bind
            await trio.sleep(0.2)
            await nursery.start(client.run)
            await client.wait_ready()
            assert client.state is ClientState.READY
            assert client.max_model_len == 256
            nursery.cancel_scope.cancel()


async def test_submit_before_ready_is_refused() -> None:
    client = EngineClient(LinkConfig(free_addr(), ping_interval=0))
    with pytest.raises(EngineNotReadyError):
        client.generate([1, 2, 3], PARAMS)


async def test_outputs_are_routed_and_finish_unregisters() -> None:
    async with linked() as (client, engine, _):
        async with client.generate([1, 2, 3], PARAMS, id_prefix="cmpl-abc") as stream:
            await engine.wait_for(lambda: engine.adds)
            request = engine.adds[0]
            assert request.request_id.startswith("cmpl-abc-")
            assert request.prompt_token_ids == [1, 2, 3]
            assert request.sampling_params.max_tokens == 8
            engine.emit(out(stream.request_id, [5]))
            engine.emit(out(stream.request_id, [6], wire.FinishReason.LENGTH))
            seen = [delta async for delta in stream]
        tokens = [t for d in seen for t in d.token_ids]
        assert tokens == [5, 6]
        assert seen[-1].finish_reason is wire.FinishReason.LENGTH
        assert client.open_requests == 0
        await trio.sleep(0.05)
        assert engine.aborts == []  # finished in the engine: nothing to abort


async def test_request_ids_are_unique() -> None:
    async with linked() as (client, engine, _):
        ids = set()
        for _ in range(500):
            stream = client.generate([1], PARAMS, id_prefix="x")
            ids.add(stream.request_id)
            stream.abort()
        assert len(ids) == 500


async def test_lagging_consumer_gets_one_merged_delta() -> None:
    async with linked() as (client, engine, _):
        async with client.generate([1], PARAMS) as stream:
            for tok in range(10):
                engine.emit(out(stream.request_id, [tok]))
            engine.emit(out(stream.request_id, [10], wire.FinishReason.STOP, stop=10))
            await trio.sleep(0.1)  # the reader routes everything while nobody consumes
            delta = await stream.next_delta()
        assert delta.token_ids == list(range(11))
        assert delta.finish_reason is wire.FinishReason.STOP and delta.stop_reason == 10
        assert delta.steps == 11


async def test_stream_interval_hands_out_first_then_every_n_tokens_then_the_last() -> None:
    async with linked(stream_interval=4) as (client, engine, _):
        async with client.generate([1], PARAMS) as stream:
            got = []
            for tok in range(10):
                finish = wire.FinishReason.LENGTH if tok == 9 else None
                engine.emit(out(stream.request_id, [tok], finish))
                await trio.sleep(0.01)  # one engine step at a time; the consumer is never behind
                with trio.move_on_after(0.02):
                    while True:
                        got.append((await stream.next_delta()).token_ids)
                        if stream._done:
                            break
        # vLLM's rule: the first output at once, then deltas of N tokens, and the final one whatever size.
        assert got == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_stream_interval_per_request_and_held_tokens_wait_for_no_one() -> None:
    async with linked() as (client, engine, _):
        async with client.generate([1], PARAMS, stream_interval=3) as stream:
            engine.emit(out(stream.request_id, [0]))
            assert (await stream.next_delta()).token_ids == [0]
            engine.emit(out(stream.request_id, [1]))
            with trio.move_on_after(0.1) as waited:  # one token is not a delta yet: nobody is woken
                await stream.next_delta()
            assert waited.cancelled_caught
            engine.emit(out(stream.request_id, [2]), out(stream.request_id, [3]))
            delta = await stream.next_delta()
            assert delta.token_ids == [1, 2, 3] and delta.steps == 3
        await engine.wait_for(lambda: len(engine.aborted_ids) == 1)  # left early: exactly one abort


async def test_consumers_are_woken_a_slice_per_scheduler_pass() -> None:
    """One message with an output for each of 6 waiting streams, ``wake_slice=2``: everything is routed
    first, then the consumers are woken two at a time, so the first ones run (and sockets get polled)
    while the others still wait; nothing is lost."""
    async with linked(wake_slice=2) as (client, engine, _):
        streams = [client.generate([1], PARAMS) for _ in range(6)]
        still_parked: list[int] = []

        async def consume(stream) -> None:
            async with stream:
                assert (await stream.next_delta()).token_ids == [7]
                still_parked.append(sum(s._waiter is not None for s in streams))

        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(consume, stream)
            await engine.wait_for(lambda: len(engine.adds) == 6)
            await trio.testing.wait_all_tasks_blocked()
            engine.emit(*(out(s.request_id, [7]) for s in streams))
        assert len(still_parked) == 6
        assert max(still_parked) >= 2  # woken all at once, none would still be parked


@pytest.mark.parametrize(
    ("budget", "expected"), [(60.0, "ww|ww|ww"), (0.0, "ww|wwww")], ids=["quick-passes", "slow-pass"]
)
async def test_a_slow_pass_gets_the_rest_woken_at_once(
    budget: float, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6 consumers, ``wake_slice=2``: a yield to the scheduler after every two while passes are quick; once
    a pass took longer than ``wake_pass_budget`` (here: any), everyone left is woken at once."""
    client = EngineClient(LinkConfig("tcp://127.0.0.1:1", wake_slice=2, wake_pass_budget=budget))
    trace: list[str] = []
    checkpoint = trio.lowlevel.checkpoint

    async def traced_checkpoint() -> None:
        trace.append("|")
        await checkpoint()

    class Consumer:
        def _wake(self) -> None:
            trace.append("w")

    monkeypatch.setattr(trio.lowlevel, "checkpoint", traced_checkpoint)
    await client._wake_in_slices([Consumer() for _ in range(6)])  # type: ignore[list-item]
    assert "".join(trace) == expected


async def test_late_outputs_for_unknown_ids_are_dropped() -> None:
    async with linked() as (client, engine, _):
        engine.emit(out("nobody-1", [1]))
        async with client.generate([1], PARAMS) as stream:
            engine.emit(out(stream.request_id, [2], wire.FinishReason.LENGTH))
            assert [d.token_ids async for d in stream] == [[2]]
        assert client.stats["late_outputs"] == 1


# ------------------------------------------------------------------------------------------- aborts


async def test_cancel_while_waiting_sends_exactly_one_abort() -> None:
    async with linked() as (client, engine, _):
        with trio.move_on_after(0.05):
            async with client.generate([1], PARAMS) as stream:
                async for _ in stream:
                    pass
        await engine.wait_for(lambda: engine.aborts)
        await trio.sleep(0.05)
        assert engine.aborted_ids == [stream.request_id]
        assert client.open_requests == 0


async def test_cancel_while_holding_undelivered_outputs_sends_one_abort() -> None:
    async with linked() as (client, engine, _):
        with trio.CancelScope() as scope:
            async with client.generate([1], PARAMS) as stream:
                engine.emit(out(stream.request_id, [1]), out(stream.request_id, [2]))
                await trio.sleep(0.05)
                assert stream._pending is not None  # outputs arrived, nobody read them
                scope.cancel()
                await trio.sleep(1)
        await engine.wait_for(lambda: engine.aborts)
        await trio.sleep(0.05)
        assert engine.aborted_ids == [stream.request_id]
        assert client.open_requests == 0


async def test_outer_deadline_cannot_skip_the_abort() -> None:
    """An outer scope's cancellation (a server deadline) still sends the abort: it needs no await."""
    async with linked() as (client, engine, _):
        with trio.move_on_after(0.05):
            async with trio.open_nursery() as inner:

                async def consume() -> None:
                    async with client.generate([1], PARAMS) as stream:
                        try:
                            async for _ in stream:
                                pass
                        finally:
                            await trio.sleep(0)  # an await in cleanup is cancelled at once here

                inner.start_soon(consume)
        await engine.wait_for(lambda: engine.aborts)
        assert len(engine.aborted_ids) == 1
        assert client.open_requests == 0


async def test_break_out_early_aborts_once_and_explicit_abort_is_idempotent() -> None:
    async with linked() as (client, engine, _):
        async with client.generate([1], PARAMS) as stream:
            engine.emit(out(stream.request_id, [7]))
            async for _ in stream:
                break
            stream.abort("stop string")
            stream.abort("again")
        await engine.wait_for(lambda: engine.aborts)
        await trio.sleep(0.05)
        assert engine.aborted_ids == [stream.request_id]
        assert stream.abort_cause == "stop string"


async def test_exception_inside_the_stream_aborts() -> None:
    async with linked() as (client, engine, _):
        with pytest.raises(KeyError):
            async with client.generate([1], PARAMS) as stream:
                raise KeyError("boom")
        await engine.wait_for(lambda: engine.aborts)
        assert engine.aborted_ids == [stream.request_id]
        assert stream.abort_cause == "error: KeyError"


async def test_client_shutdown_aborts_open_streams_once_and_fails_them() -> None:
    addr = free_addr()
    client = EngineClient(LinkConfig(addr, ping_interval=0))
    engine = ScriptedEngine(addr)
    errors: list[BaseException] = []
    client_scope = trio.CancelScope()

    async def run_client(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with client_scope:
            await client.run(task_status=task_status)

    async def consume(stream) -> None:
        async with stream:
            try:
                async for _ in stream:
                    pass
            except EngineClosedError as exc:
                errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_client)
            await nursery.start(engine.run)
            await client.wait_ready()
            streams = [client.generate([1], PARAMS) for _ in range(3)]
            async with trio.open_nursery() as consumers:
                for stream in streams:
                    consumers.start_soon(consume, stream)
                await trio.testing.wait_all_tasks_blocked(0.01)
                client_scope.cancel()  # the lifespan ends before the requests do
            await engine.wait_for(lambda: engine.aborts)
            await trio.sleep(0.05)
            assert sorted(engine.aborted_ids) == sorted(s.request_id for s in streams)
            assert len(engine.aborts) == 1  # one message for all of them
            assert len(errors) == 3
            assert client.state is ClientState.CLOSED
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------------ death, utility


async def test_engine_dead_sentinel_fails_every_stream_and_call() -> None:
    async with linked() as (client, engine, nursery):
        streams = [client.generate([1], PARAMS) for _ in range(5)]
        failures: list[BaseException] = []

        async def consume(stream) -> None:
            async with stream:
                try:
                    async for _ in stream:
                        pass
                except EngineDeadError as exc:
                    failures.append(exc)

        async with trio.open_nursery() as consumers:
            for stream in streams:
                consumers.start_soon(consume, stream)
            await trio.testing.wait_all_tasks_blocked(0.01)
            engine.die()
        assert len(failures) == 5
        assert "ENGINE_CORE_DEAD" in str(failures[0])
        assert client.state is ClientState.DEAD
        with pytest.raises(EngineDeadError):
            client.generate([1], PARAMS)
        with pytest.raises(EngineDeadError):
            await client.call_utility("is_sleeping")


async def test_engine_disconnect_is_death() -> None:
    async with linked() as (client, engine, _):
        async with client.generate([1], PARAMS) as stream:
            engine.disconnect()
            with trio.fail_after(5), pytest.raises(EngineDeadError, match="disconnected"):
                async for _ in stream:
                    pass


async def test_utility_call_result_and_failure() -> None:
    async with linked() as (client, engine, _):
        assert await client.call_utility("is_sleeping") is False
        with pytest.raises(UtilityCallError, match="no such method"):
            await client.call_utility("nope")
        _, call_id, method, args = engine.utilities[0]
        assert method == "is_sleeping" and args == [] and call_id >= 1


async def test_utility_timeout_and_silent_engine_is_declared_dead_by_the_ping() -> None:
    async with linked(answer_utilities=False, ping_interval=0.05, ping_timeout=0.2) as (client, engine, _):
        with pytest.raises(UtilityCallError, match="no answer"):
            await client.call_utility("is_sleeping", timeout=0.05)
        with trio.fail_after(3):
            while client.state is not ClientState.DEAD:
                await trio.sleep(0.02)
        assert "stopped answering" in str(client.error)


async def test_unsupported_engine_version_is_a_clear_startup_error() -> None:
    addr = free_addr()
    client = EngineClient(LinkConfig(addr, ping_interval=0))
    engine = ScriptedEngine(addr, vllm_version="0.40.1")
    with trio.fail_after(10), pytest.raises(Exception) as info:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.run)
            await client.run()
    error = info.value
    while isinstance(error, BaseExceptionGroup):
        (error,) = error.exceptions
    assert isinstance(error, wire.UnsupportedEngineVersion)
    assert "0.40.1" in str(error) and "0.32" in str(error)


async def test_version_mismatch_may_be_allowed() -> None:
    async with linked(vllm_version="0.33.0", allow_version_mismatch=True) as (client, _, _):
        assert client.state is ClientState.READY
