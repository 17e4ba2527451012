"""``system_fingerprint`` as vLLM's ``--fingerprint-mode`` sets it: on non-streamed answers, and on a
stream's terminal chunks (or on the usage chunk after them); never on the other chunks."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import trio

from trio_front.engine import wire
from trio_front.serving.fingerprint import system_fingerprint

from .conftest import MODEL, start_server

FULL = re.compile(r"^vllm-0\.32\.0-[0-9a-f]{8}$")


def test_modes() -> None:
    reg = wire.EngineRegistration(max_model_len=2048, vllm_version="0.32.1", dtype="bfloat16")
    full = system_fingerprint("full", None, reg, MODEL)
    assert re.fullmatch(r"vllm-0\.32\.1-[0-9a-f]{8}", full or ""), full
    assert system_fingerprint("hash", None, reg, MODEL) == full  # no parallelism to show
    tp = wire.EngineRegistration(max_model_len=2048, vllm_version="0.32.1", dtype="bfloat16",
                                 tensor_parallel_size=4, data_parallel_size=2)  # fmt: skip
    assert system_fingerprint("full", None, tp, MODEL) == full.replace("0.32.1-", "0.32.1-tp4-dp2-")
    assert system_fingerprint("hash", None, tp, MODEL) == full
    assert system_fingerprint("custom", "fp-7", reg, MODEL) == "fp-7"
    assert system_fingerprint("none", None, reg, MODEL) is None
    # it follows what it hashes
    other = wire.EngineRegistration(max_model_len=1024, vllm_version="0.32.1", dtype="bfloat16")
    assert system_fingerprint("full", None, other, MODEL) != full


async def _events(client: httpx.AsyncClient, path: str, body: dict) -> list[dict]:
    events = []
    async with client.stream("POST", path, json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


@pytest.mark.parametrize("mode", ["full", "custom", "none"])
async def test_answers_carry_it_where_vllm_puts_it(mode: str) -> None:
    frontend = {"fingerprint_mode": mode, "fingerprint_value": "fp-custom" if mode == "custom" else None}
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, frontend=frontend)
        expected = server.app.state.system_fingerprint
        assert {"full": bool(expected and FULL.match(expected)), "custom": expected == "fp-custom",
                "none": expected is None}[mode]  # fmt: skip
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        comp = {"prompt": "hi", "max_tokens": 4}
        async with httpx.AsyncClient(base_url=server.url) as client:
            for path, body in (("/v1/chat/completions", chat), ("/v1/completions", comp)):
                answer = (await client.post(path, json=body)).json()
                assert answer["system_fingerprint"] == expected, answer
                for usage in (False, True):
                    streamed = {**body, "stream": True, "stream_options": {"include_usage": usage}}
                    events = await _events(client, path, streamed)
                    stamped = [i for i, e in enumerate(events) if "system_fingerprint" in e]
                    if expected is None:
                        assert stamped == [], events
                        continue
                    assert all(events[i]["system_fingerprint"] == expected for i in stamped)
                    if usage:  # only the trailing usage chunk
                        assert stamped == [len(events) - 1] and events[-1]["choices"] == [], events
                    else:  # only the chunk that finishes the choice
                        assert stamped == [len(events) - 1], events
                        assert events[-1]["choices"][0]["finish_reason"] is not None
        nursery.cancel_scope.cancel()
