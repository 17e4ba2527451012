"""The mock engine: handshake, token rules, scheduling, aborts, utilities and hazards, in-process."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from trio_front.engine import wire
from trio_front.engine.client import ClientState, EngineClient, EngineDeadError, LinkConfig
from trio_front.engine.mock import (
    EOS_SEED_BASE,
    MockEngine,
    MockEngineConfig,
    eos_seed,
    expected_output,
    logprob_row,
    mock_token,
    run_mock_engine,
)

from .raw_frontend import open_raw_frontend, request, unique_ipc_addr

PROMPT = [1, 17, 300, 42]

REGISTRATION_KEYS_0_32 = {
    "max_model_len", "num_gpu_blocks", "block_size", "dp_stats_address", "dtype", "vllm_version",
    "world_size", "data_parallel_size", "tensor_parallel_size", "pipeline_parallel_size",
    "decode_context_parallel_size", "data_parallel_rank", "max_num_seqs", "max_num_batched_tokens",
    "instance_id", "supports_lora", "max_loras", "mamba_block_size", "kv_cache_size_tokens",
    "kv_cache_max_concurrency", "kv_events_config", "weight_transfer_backend", "enable_sleep_mode",
    "supports_draft_weight_updates", "effective_attention_block_size",
}  # fmt: skip


@asynccontextmanager
async def linked(**config) -> AsyncIterator[tuple[MockEngine, EngineClient]]:
    """A mock engine and the lead's EngineClient attached to it."""
    addr = unique_ipc_addr()
    config.setdefault("step_ms", 1)
    async with trio.open_nursery() as nursery:
        engine = await nursery.start(run_mock_engine, MockEngineConfig(addr, **config))
        client = EngineClient(LinkConfig(addr, ping_interval=0))
        await nursery.start(client.run)
        with trio.fail_after(10):
            await client.wait_ready()
        yield engine, client
        nursery.cancel_scope.cancel()


async def collect(client: EngineClient, prompt: list[int], params: wire.SamplingParams):
    tokens: list[int] = []
    last = None
    with trio.fail_after(10):
        async with client.generate(prompt, params, id_prefix="t") as stream:
            async for delta in stream:
                tokens += delta.token_ids
                last = delta
    assert last is not None
    return tokens, last


# ---------------------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("engine_first", [True, False])
async def test_handshake_in_either_order(engine_first: bool) -> None:
    addr = unique_ipc_addr()
    async with trio.open_nursery() as nursery:
        client = EngineClient(LinkConfig(addr, ping_interval=0))
        if engine_first:
            engine = await nursery.start(run_mock_engine, MockEngineConfig(addr, step_ms=1))
            await trio.sleep(0.2)  # the HELLO waits in libzmq until the frontend binds
            await nursery.start(client.run)
        else:
            await nursery.start(client.run)
            await trio.sleep(0.2)
            engine = await nursery.start(run_mock_engine, MockEngineConfig(addr, step_ms=1))
        with trio.fail_after(10):
            await client.wait_ready()
            await engine.ready.wait()
        assert client.registration is not None and client.registration.max_model_len == 2048
        tokens, _ = await collect(client, PROMPT, wire.SamplingParams(max_tokens=3))
        assert tokens == [mock_token(PROMPT, i, 4096) for i in range(3)]
        nursery.cancel_scope.cancel()


async def test_registration_on_every_input_with_all_keys() -> None:
    async with open_raw_frontend(clients=2) as fe, trio.open_nursery() as nursery:
        engine = await nursery.start(
            run_mock_engine, MockEngineConfig(fe.addr, max_model_len=512, vllm_version="0.32.1", step_ms=1)
        )
        await fe.attach()
        assert fe.hello == {"status": "HELLO", "local": False, "headless": True}
        assert fe.ready == {"status": "READY", "local": False, "headless": True}
        assert len(fe.registrations) == 2
        for reg in fe.registrations:
            assert set(reg) == REGISTRATION_KEYS_0_32
            assert reg["max_model_len"] == 512 and reg["vllm_version"] == "0.32.1"
        # Client 1's requests come back on output 1 only.
        fe.add(request("r1", PROMPT, client_index=1, max_tokens=2), via=1)
        out = await fe.receive(client=1)
        assert isinstance(out, wire.EngineCoreOutputs) and out.outputs[0].request_id == "r1"
        assert out.weight_version == "default" and out.timestamp > 0
        assert await fe.nothing_within(0.05, client=0)
        assert engine.events[0]["event"] == "ready"
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- token rules


async def test_tokens_follow_the_rule_and_max_tokens_gives_length() -> None:
    async with linked() as (engine, client):
        tokens, last = await collect(client, PROMPT, wire.SamplingParams(max_tokens=8))
        assert tokens == [mock_token(PROMPT, i, 4096) for i in range(8)]
        assert all(4 <= t < 4096 for t in tokens)
        assert last.finish_reason is wire.FinishReason.LENGTH and last.stop_reason is None
        (finish,) = engine.log.named("finish")
        assert finish["reason"] == "length" and finish["tokens"] == 8


async def test_eos_seed_rule() -> None:
    params = wire.SamplingParams(max_tokens=20, eos_token_id=2, seed=eos_seed(5))
    async with linked() as (_, client):
        tokens, last = await collect(client, PROMPT, params)
    assert tokens == [mock_token(PROMPT, i, 4096) for i in range(5)] + [2]
    assert last.finish_reason is wire.FinishReason.STOP and last.stop_reason is None
    assert expected_output(PROMPT, params).token_ids == tokens
    assert eos_seed(0) == EOS_SEED_BASE


async def test_stop_token_id_min_tokens_and_ignore_eos() -> None:
    stop = mock_token(PROMPT, 3, 4096)
    async with linked() as (engine, client):
        tokens, last = await collect(
            client, PROMPT, wire.SamplingParams(max_tokens=20, stop_token_ids=[stop])
        )
        assert tokens == [mock_token(PROMPT, i, 4096) for i in range(4)]
        assert last.finish_reason is wire.FinishReason.STOP and last.stop_reason == stop

        # min_tokens masks the stop id (replaced by the next id up) and delays EOS.
        params = wire.SamplingParams(
            max_tokens=20, stop_token_ids=[stop], min_tokens=6, eos_token_id=2, seed=eos_seed(2)
        )
        tokens, last = await collect(client, PROMPT, params)
        assert len(tokens) == 7 and tokens[-1] == 2 and stop not in tokens
        assert tokens[3] == stop + 1
        assert last.finish_reason is wire.FinishReason.STOP and last.stop_reason is None

        # ignore_eos: no EOS, and a warning because the real engine would still stop at _eos_token_id.
        params = wire.SamplingParams(max_tokens=6, eos_token_id=2, seed=eos_seed(1), ignore_eos=True)
        tokens, last = await collect(client, PROMPT, params)
        assert tokens == [mock_token(PROMPT, i, 4096) for i in range(6)]
        assert last.finish_reason is wire.FinishReason.LENGTH
        assert engine.log.named("warning")[0]["kind"] == "ignore_eos_with_eos_token_id"


async def test_max_model_len_caps_prompt_plus_output() -> None:
    async with linked(max_model_len=10) as (_, client):
        tokens, last = await collect(client, PROMPT, wire.SamplingParams(max_tokens=100))
    assert len(tokens) == 10 - len(PROMPT)
    assert last.finish_reason is wire.FinishReason.LENGTH


async def test_logprobs_arrays_decode() -> None:
    async with linked() as (_, client):
        params = wire.SamplingParams(max_tokens=3, logprobs=2)
        deltas = []
        with trio.fail_after(10):
            async with client.generate(PROMPT, params) as stream:
                deltas = [d async for d in stream]
    rows = [row for d in deltas for row in d.logprobs.token_ids]
    lps = [row for d in deltas for row in d.logprobs.logprobs]
    tokens = [t for d in deltas for t in d.token_ids]
    assert len(rows) == 3
    for token, row, lp in zip(tokens, rows, lps, strict=True):
        expected_ids, expected_lps = logprob_row(token, 2, 4096)
        assert row == expected_ids and row[0] == token and len(row) == 3
        assert lp == pytest.approx(expected_lps)
    assert all(r == 1 for d in deltas for r in d.logprobs.ranks)


async def test_raw_logprob_and_prefill_fields() -> None:
    async with open_raw_frontend() as fe, trio.open_nursery() as nursery:
        await nursery.start(run_mock_engine, MockEngineConfig(fe.addr, step_ms=1))
        await fe.attach()
        fe.add(request("p", PROMPT, max_tokens=2, logprobs=0, prompt_logprobs=1))
        first = await fe.receive()
        assert isinstance(first, wire.EngineCoreOutputs)
        (out,) = first.outputs
        assert out.prefill_stats["num_prompt_tokens"] == len(PROMPT)
        logprobs = wire.decode_logprobs(out.new_logprobs)
        assert logprobs.token_ids == [[out.new_token_ids[0]]]
        ids = wire.WireArray.from_wire(out.new_prompt_logprobs_tensors[0])
        assert ids.dtype == "int32" and ids.shape == [len(PROMPT) - 1, 2]
        assert [row[0] for row in ids.tolist()] == PROMPT[1:]
        second = await fe.receive()
        assert (
            second.outputs[0].prefill_stats is None and second.outputs[0].new_prompt_logprobs_tensors is None
        )
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- scheduling


async def test_one_message_per_client_per_step_with_all_requests() -> None:
    async with open_raw_frontend(clients=2) as fe, trio.open_nursery() as nursery:
        engine = await nursery.start(run_mock_engine, MockEngineConfig(fe.addr, step_ms=5))
        await fe.attach()
        engine.wedge()  # let every ADD queue up so they land in the same step
        for i in range(3):
            fe.add(request(f"a{i}", [*PROMPT, i], max_tokens=4))
        for i in range(2):
            fe.add(request(f"b{i}", [*PROMPT, i], client_index=1, max_tokens=4), via=1)
        with trio.fail_after(5):
            while engine.queued_inputs < 5:
                await trio.sleep(0.005)
        engine.unwedge()
        for client, ids in ((0, ["a0", "a1", "a2"]), (1, ["b0", "b1"])):
            for step in range(4):
                message = await fe.receive(client)
                assert [o.request_id for o in message.outputs] == ids
                assert all(len(o.new_token_ids) == 1 for o in message.outputs)
                finished = [o.finish_reason for o in message.outputs]
                assert finished == [wire.FinishReason.LENGTH if step == 3 else None] * len(ids)
        assert engine.core.stats["steps"] == 4
        nursery.cancel_scope.cancel()


async def test_max_num_seqs_keeps_extra_requests_waiting_fifo() -> None:
    async with open_raw_frontend() as fe, trio.open_nursery() as nursery:
        engine = await nursery.start(run_mock_engine, MockEngineConfig(fe.addr, step_ms=2, max_num_seqs=2))
        await fe.attach()
        engine.wedge()
        for i in range(4):
            fe.add(request(f"r{i}", PROMPT, max_tokens=2))
        with trio.fail_after(5):
            while engine.queued_inputs < 4:
                await trio.sleep(0.005)
        engine.unwedge()
        seen = []
        for _ in range(4):
            message = await fe.receive()
            seen.append([o.request_id for o in message.outputs])
        assert seen == [["r0", "r1"], ["r0", "r1"], ["r2", "r3"], ["r2", "r3"]]
        nursery.cancel_scope.cancel()


async def test_max_tokens_unset_is_a_request_scoped_error() -> None:
    async with open_raw_frontend() as fe, trio.open_nursery() as nursery:
        await nursery.start(run_mock_engine, MockEngineConfig(fe.addr, step_ms=1))
        await fe.attach()
        fe.add(request("e", PROMPT, max_tokens=None))
        message = await fe.receive()
        assert message.finished_requests == ["e"]
        assert message.outputs[0].finish_reason == wire.FinishReason.ERROR
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- aborts


async def test_client_abort_is_logged_once_and_produces_no_output() -> None:
    async with linked(step_ms=2) as (engine, client):
        with trio.fail_after(10):
            async with client.generate(PROMPT, wire.SamplingParams(max_tokens=1000)) as stream:
                rid = stream.request_id
                await stream.next_delta()
            # Leaving the block aborted it; the engine logs the abort with its receive time.
            (abort,) = await engine.log.wait_for("abort", request_id=rid)
        assert abort["state"] == "running" and abort["tokens"] >= 1
        assert rid not in engine.live_request_ids
        await trio.sleep(0.05)
        assert not [e for e in engine.log.named("finish") if e["request_id"] == rid]
        assert len(engine.log.named("abort")) == 1


async def test_abort_sends_nothing_and_unknown_ids_are_logged() -> None:
    async with open_raw_frontend() as fe, trio.open_nursery() as nursery:
        engine = await nursery.start(run_mock_engine, MockEngineConfig(fe.addr, step_ms=20))
        await fe.attach()
        fe.add(request("x", PROMPT, max_tokens=1000))
        await fe.receive()
        fe.abort(["x", "never-added"])
        with trio.fail_after(5):
            await engine.log.wait_for("abort_unknown", request_id="never-added")
        # At most one late output (a step already computed), and never a finish for "x".
        late = 0
        while not await fe.nothing_within(0.1):
            late += 1
        assert late <= 1
        assert [e["request_id"] for e in engine.log.named("abort")] == ["x"]
        assert not engine.log.named("finish")
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- utilities


async def test_utilities() -> None:
    async with linked() as (engine, client):
        call = client.call_utility
        assert await call("is_sleeping") is False
        assert await call("get_supported_tasks") == ["generate"]
        assert await call("reset_prefix_cache", False, False) is True
        assert await call("reset_mm_cache") is None
        assert await call("reset_encoder_cache") is None
        assert await call("is_scheduler_paused") is False
        assert await call("get_weight_version") == "default"
        with pytest.raises(Exception, match=r"^Call to frobnicate method failed: "):
            await call("frobnicate", 1)
        assert await call("pause_scheduler", "keep", False) is None
        assert await call("is_scheduler_paused") is True
        assert await call("resume_scheduler") is None
        assert len(engine.log.named("utility")) == 11


async def test_pause_abort_finishes_requests_engine_side() -> None:
    async with open_raw_frontend() as fe, trio.open_nursery() as nursery:
        await nursery.start(run_mock_engine, MockEngineConfig(fe.addr, step_ms=5))
        await fe.attach()
        fe.add(request("r", PROMPT, max_tokens=1000))
        await fe.receive()
        fe.utility("pause_scheduler", "abort", True, call_id=99)
        while True:
            message = await fe.receive()
            if message.finished_requests:
                break
        assert message.finished_requests == ["r"]
        assert message.outputs[0].finish_reason == wire.FinishReason.ABORT
        reply = await fe.receive()
        assert reply.utility_output == [99, None, [None, None]]
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- hazards


@pytest.mark.parametrize("mode", ["faithful", "log"])
async def test_duplicate_live_id(mode: str) -> None:
    async with open_raw_frontend() as fe, trio.open_nursery() as nursery:
        engine = await nursery.start(run_mock_engine, MockEngineConfig(fe.addr, step_ms=5, hazards=mode))
        await fe.attach()
        fe.add(request("d", PROMPT, max_tokens=1000))
        await fe.receive()
        fe.add(request("d", PROMPT, max_tokens=1000))
        (hazard,) = await engine.log.wait_for("hazard")
        assert hazard["kind"] == "duplicate_request_id" and hazard["request_id"] == "d"
        if mode == "faithful":
            while await fe.receive() != wire.ENGINE_CORE_DEAD:
                pass
            assert engine.state == "dead" and hazard["action"] == "die"
        else:
            assert hazard["action"] == "logged" and engine.state == "ready"
            assert isinstance(await fe.receive(), wire.EngineCoreOutputs)
        nursery.cancel_scope.cancel()


async def test_prompt_too_long_kills_the_engine_and_the_client_sees_it() -> None:
    async with linked(max_model_len=8) as (engine, client):
        with pytest.raises(EngineDeadError):
            await collect(client, list(range(4, 12)), wire.SamplingParams(max_tokens=2))
        assert engine.log.named("hazard")[0]["kind"] == "prompt_length"
        assert engine.log.named("dead")[0]["sentinel"] is True
        assert client.state is ClientState.DEAD


@pytest.mark.parametrize("mode", ["faithful", "log"])
@pytest.mark.parametrize("bad", ["temperature", "type_byte", "garbage"])
async def test_input_hazards_stop_reading_input(mode: str, bad: str) -> None:
    async with open_raw_frontend() as fe, trio.open_nursery() as nursery:
        engine = await nursery.start(run_mock_engine, MockEngineConfig(fe.addr, step_ms=1, hazards=mode))
        await fe.attach()
        if bad == "temperature":
            fe.add(request("bad", PROMPT, max_tokens=4, temperature=5.0))
        elif bad == "type_byte":
            fe.send(0, b"\x09", wire.encode(["x"]))
        else:
            fe.send(0, b"\x00", b"\xc1")
        (hazard,) = await engine.log.wait_for("hazard")
        assert hazard["kind"] == ("unknown_request_type" if bad == "type_byte" else "decode_failure")
        fe.add(request("good", PROMPT, max_tokens=1))
        if mode == "faithful":
            assert await fe.nothing_within(0.2)  # silently ignored, like the real engine's dead input thread
            assert engine.core.input_dead and engine.core.stats["ignored_inputs"] == 1
        else:
            message = await fe.receive()
            assert message.outputs[0].request_id == "good"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("mode", ["faithful", "log"])
async def test_client_index_out_of_range(mode: str) -> None:
    async with open_raw_frontend() as fe, trio.open_nursery() as nursery:
        engine = await nursery.start(run_mock_engine, MockEngineConfig(fe.addr, step_ms=1, hazards=mode))
        await fe.attach()
        fe.add(request("oob", PROMPT, client_index=3, max_tokens=2))
        (hazard,) = await engine.log.wait_for("hazard")
        assert hazard["kind"] == "client_index_out_of_range"
        fe.add(request("good", PROMPT, max_tokens=1))
        if mode == "faithful":
            assert await fe.nothing_within(0.2) and engine.core.output_dead
        else:
            assert (await fe.receive()).outputs[0].request_id == "good"
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- controls


async def test_die_sends_engine_core_dead() -> None:
    async with linked() as (engine, client):
        engine.die("test")
        with trio.fail_after(5):
            while client.state is not ClientState.DEAD:
                await trio.sleep(0.01)
        assert "ENGINE_CORE_DEAD" in str(client.error)


async def test_wedge_is_silence_that_a_liveness_ping_detects() -> None:
    addr = unique_ipc_addr()
    async with trio.open_nursery() as nursery:
        engine = await nursery.start(run_mock_engine, MockEngineConfig(addr, step_ms=1))
        client = EngineClient(LinkConfig(addr, ping_interval=0.05, ping_timeout=0.2))
        await nursery.start(client.run)
        with trio.fail_after(10):
            await client.wait_ready()
            await trio.sleep(0.2)
            assert client.state is ClientState.READY
            engine.wedge()
            while client.state is not ClientState.DEAD:
                await trio.sleep(0.02)
        assert "stopped answering" in str(client.error)
        nursery.cancel_scope.cancel()


async def test_event_log_file(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    async with linked(event_log=str(path)) as (_, client):
        await collect(client, PROMPT, wire.SamplingParams(max_tokens=2))
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["ready", "add", "finish"]
    assert all({"t", "wall", "event"} <= set(e) for e in events)


async def test_cli_subprocess_serves_and_stops_on_sigterm(tmp_path) -> None:
    addr = unique_ipc_addr()
    log = tmp_path / "ev.jsonl"
    cmd = [sys.executable, "-m", "trio_front.cli", "mock-engine", "--engine-addr", addr, "--step-ms", "1"]
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(
            partial(trio.run_process, [*cmd, "--event-log", str(log)], check=False, start_new_session=True)
        )
        try:
            async with trio.open_nursery() as inner:
                client = EngineClient(LinkConfig(addr, ping_interval=0))
                await inner.start(client.run)
                with trio.fail_after(20):
                    await client.wait_ready()
                tokens, _ = await collect(client, PROMPT, wire.SamplingParams(max_tokens=3))
                assert tokens == [mock_token(PROMPT, i, 4096) for i in range(3)]
                inner.cancel_scope.cancel()
            os.killpg(proc.pid, signal.SIGTERM)
            with trio.fail_after(10):
                assert await proc.wait() == 0
            assert "finish" in log.read_text()
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
