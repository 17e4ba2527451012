"""Beam search (``serving/beam_search.py``): vLLM's own algorithm as the oracle, the engine requests it
makes on the mock engine, and every exit path aborting what it started (one ABORT per step)."""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import msgspec
import pytest
import trio

from tests.vllm_oracle import run_in_engine_venv
from trio_front.engine import wire
from trio_front.engine.client import EngineClient, LinkConfig
from trio_front.engine.mock import MockEngine, MockEngineConfig, run_mock_engine
from trio_front.engine.mock.rules import logprob_row, mock_token
from trio_front.serving.beam_search import (
    BeamParams,
    BeamRun,
    BeamSearch,
    beam_score,
    check_beam_width,
    step_logprobs,
    step_params,
)
from trio_front.serving.generation import GenerationError
from trio_front.serving.params import ModelLimits, ParamError
from trio_front.text.tokenizer import Tokenizer

from .beam_oracle import fake_answer, fake_decode

ORACLE = Path(__file__).with_name("beam_oracle.py")
MODEL = Path(__file__).resolve().parents[2] / "models" / "tiny-llama"
LIMITS = ModelLimits(max_model_len=2048, vocab_size=4096, eos_token_id=2)

# ------------------------------------------------------------------------------------ vLLM as the oracle


def _cases() -> list[dict[str, Any]]:
    cases = []
    base = {
        "temperature": 1.0,
        "eos": 2,
        "ignore_eos": False,
        "length_penalty": 1.0,
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
    }
    seed = 0
    for width in (1, 2, 3, 4):
        for max_tokens in (1, 3, 6):
            for eos_rate in (0.0, 0.35):
                seed += 1
                cases.append(
                    {
                        **base,
                        "prompt": [5, 9, 11][: 1 + seed % 3],
                        "beam_width": width,
                        "max_tokens": max_tokens,
                        "eos_rate": eos_rate,
                        "seed": seed,
                    }
                )
    variants = [
        {"ignore_eos": True},
        {"include_stop_str_in_output": True},
        {"length_penalty": 0.0},
        {"length_penalty": 2.5},
        {"length_penalty": -1.0},
        {"skip_special_tokens": False},
        {"prompt": [2]},  # the prompt ends with EOS
    ]
    for i, variant in enumerate(variants):
        for width in (2, 3):
            cases.append(
                {
                    **base,
                    "prompt": [7, 3],
                    "beam_width": width,
                    "max_tokens": 5,
                    "eos_rate": 0.5,
                    "seed": 100 + 10 * i + width,
                    **variant,
                }
            )
    return cases


CASES = _cases()
SCORES = [
    [[5, 6, 7], -3.5, 2, 1.0],
    [[5, 6, 2], -3.5, 2, 1.0],
    [[2], -1.25, 2, 1.0],
    [[5, 6, 7, 8], -3.5, 2, 0.5],
    [[5, 6, 7, 8], -3.5, 2, 2.0],
    [[5, 2], -0.75, None, 1.0],
    [[5, 6, 7], -3.5, 2, 0.0],
    [[5, 6, 7], -3.5, 2, -1.5],
]


@pytest.fixture(scope="module")
def oracle() -> dict[str, Any]:
    payload = {"cases": CASES, "scores": SCORES}
    return run_in_engine_venv([str(ORACLE)], payload, env={"PYTHONPATH": str(ORACLE.parent)})


class FakeTokenizer:
    def __init__(self, eos: int) -> None:
        self.eos_token_id = eos

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return fake_decode(list(ids), skip_special_tokens)


def _ours(case: dict[str, Any]) -> dict[str, Any]:
    params = BeamParams(
        beam_width=case["beam_width"],
        max_tokens=case["max_tokens"],
        ignore_eos=case["ignore_eos"],
        temperature=case["temperature"],
        length_penalty=case["length_penalty"],
        include_stop_str_in_output=case["include_stop_str_in_output"],
        skip_special_tokens=case["skip_special_tokens"],
    )
    search = BeamSearch(case["prompt"], params, case["eos"])
    steps = []
    while not search.done:
        prompts = search.step_prompts()
        steps.append([list(p) for p in prompts])
        answers = []
        for prompt in prompts:
            row = fake_answer(
                prompt, 2 * params.beam_width, eos=case["eos"], eos_rate=case["eos_rate"], seed=case["seed"]
            )
            answers.append(step_logprobs([t for t, _ in row], [lp for _, lp in row]))
        search.advance(answers)
    result = search.result(FakeTokenizer(case["eos"]))  # type: ignore[arg-type]
    return {
        "outputs": [
            {
                "text": o.text,
                "token_ids": o.token_ids,
                "cumulative_logprob": o.cumulative_logprob,
                "logprobs": [[[tid, lp] for tid, lp in step.items()] for step in o.logprobs],
                "finish_reason": o.finish_reason,
                "stop_reason": o.stop_reason,
            }
            for o in result.outputs
        ],
        "steps": steps,
    }


def test_the_search_equals_vllms_on_the_same_answers(oracle: dict[str, Any]) -> None:
    """Every output field (text, ids, cumulative logprob, per-step logprobs, finish and stop reasons) and
    the engine requests of every step (count and prompts), for widths 1-4, EOS in and out of the
    candidates, ignore_eos, include_stop_str_in_output, length penalties, skip_special_tokens."""
    stopped = 0
    for case, theirs in zip(CASES, oracle["cases"], strict=True):
        ours = _ours(case)
        assert ours["steps"] == theirs["steps"], case
        assert ours["outputs"] == theirs["outputs"], case
        stopped += sum(o["finish_reason"] == "stop" for o in ours["outputs"])
    assert stopped >= 5, "the cases exercise EOS-completed beams"


def test_vllms_step_params(oracle: dict[str, Any]) -> None:
    for case, theirs in zip(CASES, oracle["cases"], strict=True):
        p = step_params(
            BeamParams(beam_width=case["beam_width"], max_tokens=case["max_tokens"], temperature=0.7),
            limits=LIMITS,
        )
        assert theirs["params"]["logprobs"] == p.logprobs == 2 * case["beam_width"]
        assert theirs["params"]["max_tokens"] == p.max_tokens == 1
        assert theirs["params"]["n"] == p.n == 1
        assert p.temperature == 0.7


def test_the_score_is_vllms(oracle: dict[str, Any]) -> None:
    for (tokens, cum, eos, penalty), expected in zip(SCORES, oracle["scores"], strict=True):
        assert beam_score(tokens, cum, eos, penalty) == expected


# ------------------------------------------------------------------------------------ limits and params


def test_width_limits_are_vllms() -> None:
    check_beam_width(10, 20, 4096)
    with pytest.raises(
        ParamError, match=r"^Requested sample logprobs of 22, which is greater than max allowed: 20$"
    ):
        check_beam_width(11, 20, 4096)
    check_beam_width(20, 40, 4096)
    step_params(BeamParams(beam_width=20, max_tokens=3), limits=attrs.evolve(LIMITS, max_logprobs=40))
    with pytest.raises(ParamError, match="of 22, which is greater than max allowed: 20"):
        step_params(BeamParams(beam_width=11, max_tokens=3), limits=LIMITS)
    check_beam_width(2000, -1, 4096)  # -1: the vocabulary
    with pytest.raises(ParamError, match="beam_width must be at least 1, got 0."):
        check_beam_width(0, 20, 4096)
    with pytest.raises(ParamError, match="VLLM_MAX_N_SEQUENCES"):
        check_beam_width(16385, -1, 1 << 20)


def test_step_params_ignore_the_generation_config_except_the_temperature() -> None:
    limits = ModelLimits(
        max_model_len=2048,
        vocab_size=4096,
        eos_token_id=2,
        generation_eos_ids=(2, 7),
        defaults={"temperature": 0.6, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.1},
    )
    p = step_params(BeamParams(beam_width=3, max_tokens=4, temperature=0.3), limits=limits)
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty) == (0.3, 1.0, 0, 1.0)
    assert (p.logprobs, p.max_tokens, p.n, p.seed, p.ignore_eos) == (6, 1, 1, None, False)
    # EOS as vLLM's update_from_generation_config sets it on every request
    assert p.eos_token_id == 2 and p.all_stop_token_ids == [2, 7] and p.stop_token_ids == [7]
    with pytest.raises(ParamError) as info:
        step_params(BeamParams(beam_width=2, max_tokens=4, temperature=2.5), limits=limits)
    assert info.value.param == "temperature"


def test_a_tie_keeps_the_earlier_candidate() -> None:
    search = BeamSearch([5], BeamParams(beam_width=2, max_tokens=1), eos_token_id=2)
    search.advance([{9: -1.0, 8: -1.0, 7: -1.0}])
    assert [b.tokens for b in search.live] == [[5, 9], [5, 8]]


# ------------------------------------------------------------------------------------ on the mock engine


@asynccontextmanager
async def mock_engine(**config: Any) -> AsyncIterator[tuple[EngineClient, MockEngine, list[list[str]]]]:
    """A client linked to a mock engine; the third item lists each ABORT message's ids, as sent."""
    addr = f"ipc:///tmp/trio-front-beam-{os.urandom(4).hex()}"
    client = EngineClient(LinkConfig(addr, ping_interval=0))
    aborts: list[list[str]] = []
    send = client._send

    def spy(frames: list[bytes]) -> None:
        if frames[1] == wire.RequestType.ABORT.value:
            aborts.append(msgspec.msgpack.decode(frames[2]))
        send(frames)

    client._send = spy  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        mock = await nursery.start(run_mock_engine, MockEngineConfig(addr, **{"step_ms": 2, **config}))
        with trio.fail_after(10):
            await client.wait_ready()
        yield client, mock, aborts
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_pretrained(MODEL)


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def mock_answer(prompt: list[int], k: int, vocab: int = 4096) -> dict[int, float]:
    """What the mock engine answers a step request (its rules, see ``mock/rules.py``)."""
    ids, lps = logprob_row(mock_token(prompt, 0, vocab), k, vocab)
    return step_logprobs(ids, [_f32(v) for v in lps])


def _run(
    client: EngineClient, tokenizer: Tokenizer, prompt: list[int], params: BeamParams, **kw: Any
) -> BeamRun:
    return BeamRun(
        client,
        tokenizer,
        prompt,
        params,
        step_params(params, limits=LIMITS),
        request_id=kw.pop("request_id", "cmpl-test"),
        **kw,
    )


async def test_on_the_mock_engine_steps_times_beams_requests(tokenizer: Tokenizer) -> None:
    prompt, params = [1, 15043, 3186], BeamParams(beam_width=3, max_tokens=4, temperature=0.0)
    # What the search must find, computed from the mock's rules without the engine.
    expected = BeamSearch(prompt, params, tokenizer.eos_token_id)
    while not expected.done:
        expected.advance([mock_answer(p, 6) for p in expected.step_prompts()])
    async with mock_engine() as (client, mock, aborts):
        run = _run(client, tokenizer, prompt, params, priority=0, cache_salt="salt-1")
        result = await run.run()
        adds = mock.log.named("add")
    want = expected.result(tokenizer)
    assert [(o.token_ids, o.cumulative_logprob, o.text) for o in result.outputs] == [
        (o.token_ids, o.cumulative_logprob, o.text) for o in want.outputs
    ]
    assert all(o.finish_reason == "length" and o.stop_reason is None for o in result.outputs)
    assert len(result.outputs) == 3 and all(len(o.token_ids) == 4 for o in result.outputs)
    # Step 1 has one beam, then three: 1 + 3 + 3 + 3 requests, all finished by the engine, none aborted.
    assert [e["request_id"] for e in adds] == run.submitted
    assert len(run.submitted) == 10
    steps = [rid.rsplit("-beam-", 1)[0] for rid in run.submitted]
    assert [steps.count(s) for s in dict.fromkeys(steps)] == [1, 3, 3, 3]
    for rid in run.submitted:
        head, tail = rid.rsplit("-beam-", 1)
        assert head.startswith("cmpl-test-") and len(head) == len("cmpl-test-") + 32
        assert tail.split("-", 1)[0] in "012"
    assert all(e["max_tokens"] == 1 for e in adds)
    assert [e["prompt_tokens"] for e in adds] == [3, 4, 4, 4, 5, 5, 5, 6, 6, 6]
    assert aborts == [] and not mock.live_request_ids and client.open_requests == 0


async def test_each_step_request_carries_the_requests_salt_lora_and_priority(tokenizer: Tokenizer) -> None:
    sent: list[wire.EngineCoreRequest] = []
    async with mock_engine() as (client, _mock, _aborts):
        generate = client.generate

        def spy(*args: Any, **kwargs: Any):
            stream = generate(*args, **kwargs)
            sent.append(stream.request)
            return stream

        client.generate = spy  # type: ignore[method-assign]
        params = BeamParams(beam_width=2, max_tokens=2, temperature=0.5)
        await _run(client, tokenizer, [1, 2, 3], params, cache_salt="s", priority=0).run()
    assert len(sent) == 3
    for request in sent:
        assert request.cache_salt == "s"
        assert request.sampling_params.logprobs == 4
        assert request.sampling_params.max_tokens == 1
        assert request.sampling_params.temperature == 0.5


async def test_cancelled_midway_every_step_request_is_aborted_in_one_abort(tokenizer: Tokenizer) -> None:
    async with mock_engine(step_ms=30) as (client, mock, aborts):
        run = _run(client, tokenizer, [1, 2, 3], BeamParams(beam_width=4, max_tokens=50))
        with trio.CancelScope() as scope:

            async def cancel_in_step_three() -> None:
                while len(run.submitted) < 1 + 4 + 4:
                    await trio.sleep(0.001)
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_in_step_three)
                await run.run()
        assert scope.cancelled_caught
        assert len(aborts) == 1, "one ABORT message for the step"
        assert sorted(aborts[0]) == sorted(run.submitted[-4:])
        # The mock gets the ABORT (a request that finished in the step then running is "abort_unknown").
        with trio.fail_after(5):
            while {
                e["request_id"] for kind in ("abort", "abort_unknown") for e in mock.log.named(kind)
            } != set(run.submitted[-4:]):
                await trio.sleep(0.01)
        assert client.open_requests == 0 and not mock.live_request_ids


async def test_abort_from_a_callback_aborts_the_steps_requests_at_once(tokenizer: Tokenizer) -> None:
    """What the disconnect callback does (synchronously, before the cancelled task unwinds)."""
    async with mock_engine(step_ms=30) as (client, mock, aborts):
        run = _run(client, tokenizer, [1, 2, 3], BeamParams(beam_width=3, max_tokens=50))
        with trio.CancelScope() as scope:

            async def disconnect() -> None:
                while len(run.submitted) < 4:
                    await trio.sleep(0.001)
                scope.cancel()
                run.abort("client disconnected")
                assert len(aborts) == 1 and sorted(aborts[0]) == sorted(run.submitted[1:4])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(disconnect)
                await run.run()
        assert len(aborts) == 1, "leaving the step sent no second ABORT"
        with trio.fail_after(5):
            while mock.live_request_ids:
                await trio.sleep(0.01)
        assert client.open_requests == 0


async def test_an_engine_error_fails_the_search_and_aborts_the_rest(tokenizer: Tokenizer) -> None:
    # The step after the first makes prompts of max_model_len tokens: the mock fails them (ERROR).
    async with mock_engine(max_model_len=8, hazards="log") as (client, mock, aborts):
        run = _run(client, tokenizer, [1, 2, 3, 4, 5, 6, 7], BeamParams(beam_width=2, max_tokens=3))
        with pytest.raises(GenerationError):
            await run.run()
        assert len(run.submitted) == 3
        assert client.open_requests == 0 and not mock.live_request_ids


async def test_an_engine_side_abort_ends_the_search_with_abort(tokenizer: Tokenizer) -> None:
    """A step request the engine aborts (e.g. ``pause_scheduler(mode="abort")``) ends the search: the
    live beams are returned as they are, finish_reason ``abort``."""
    # One sequence at a time, so the step's second request waits a whole step in the engine.
    async with mock_engine(step_ms=30, max_num_seqs=1) as (client, mock, _aborts):
        run = _run(client, tokenizer, [1, 2, 3], BeamParams(beam_width=2, max_tokens=50))
        result = None

        async def search() -> None:
            nonlocal result
            result = await run.run()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(search)
                # Once the second step's requests are live in the engine, it aborts everything it has.
                while len(run.submitted) < 3 or run.submitted[2] not in mock.live_request_ids:
                    await trio.sleep(0.001)
                mock.core._engine_abort_all()
    assert result is not None
    assert [o.finish_reason for o in result.outputs] == ["abort", "abort"]
    assert all(len(o.token_ids) == 1 for o in result.outputs)
    assert len(run.submitted) == 3
