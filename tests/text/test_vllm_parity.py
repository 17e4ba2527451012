"""Parity with vLLM 0.32 on outputs recorded by record_vllm_detok.py (vLLM's own OutputProcessor,
tokenizer and chat renderer on the tiny model): encode/decode ids, per-step delta texts, kept token ids,
stop reasons and aborts, and rendered chat prompts with their token ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trio_front.text.chat import ChatRenderer
from trio_front.text.chat_messages import normalize_tools
from trio_front.text.chat_template import ChatTemplateError
from trio_front.text.detokenizer import TextParams, TextStream
from trio_front.text.tokenizer import Tokenizer

DATA = json.loads((Path(__file__).parent / "data" / "vllm_detok_cases.json").read_text(encoding="utf-8"))
STOP, ABORT = 0, 2


def test_recorded_versions() -> None:
    assert DATA["versions"]["vllm"] == "0.32.0"


@pytest.mark.parametrize(
    "case", DATA["encode"], ids=lambda c: repr(c["text"][:20]) + str(c["add_special_tokens"])
)
def test_encode(tokenizer: Tokenizer, case: dict[str, Any]) -> None:
    assert tokenizer.encode(case["text"], case["add_special_tokens"]) == case["ids"]


async def test_encode_async_matches(tokenizer: Tokenizer) -> None:
    for case in DATA["encode"]:
        ids = await tokenizer.encode_async(case["text"], add_special_tokens=case["add_special_tokens"])
        assert ids == case["ids"]


def test_decode(tokenizer: Tokenizer) -> None:
    for case in DATA["decode"]:
        assert tokenizer.decode(case["ids"], case["skip_special_tokens"]) == case["text"], case


def replay(tokenizer: Tokenizer, case: dict[str, Any]) -> dict[str, Any]:
    """Drive a TextStream the way the serving layer does with engine outputs."""
    raw = case["params"]
    params = TextParams(
        stop=tuple(raw.get("stop", ())),
        min_tokens=raw.get("min_tokens", 0),
        include_stop_str_in_output=raw.get("include_stop_str_in_output", False),
        skip_special_tokens=raw.get("skip_special_tokens", True),
        spaces_between_special_tokens=raw.get("spaces_between_special_tokens", True),
        detokenize=raw.get("detokenize", True),
    )
    stream = TextStream(tokenizer, case["prompt_ids"], params)
    texts: list[str] = []
    token_ids: list[list[int]] = []
    final: dict[str, Any] = {"finish_reason": None, "stop_reason": None, "abort": False}
    steps = case["steps"]
    for i, step in enumerate(steps):
        finish = case["finish"] if i == len(steps) - 1 else None
        reason = None if finish is None else finish[0]
        update = stream.push(step, stop_terminated=reason == STOP, engine_finished=reason is not None)
        texts.append(update.text)
        token_ids.append(step[: update.num_kept])
        if update.stop_string is not None:
            final = {"finish_reason": "stop", "stop_reason": update.stop_string, "abort": update.abort_engine}
        elif reason is not None:
            names = {0: "stop", 1: "length", 2: "abort"}
            final = {"finish_reason": names[reason], "stop_reason": finish[1], "abort": False}
        if stream.finished:
            break
    # The serving layer's other view of the same data: all kept ids, all text.
    assert stream.token_ids == [t for ids in token_ids for t in ids]
    assert stream.output_text == "".join(texts) or not stream.finished
    return {"text": texts, "token_ids": token_ids, **final}


@pytest.mark.parametrize("case", DATA["detok"], ids=lambda c: c["name"])
def test_detokenizer(tokenizer: Tokenizer, case: dict[str, Any]) -> None:
    assert "vllm_error" not in case
    assert replay(tokenizer, case) == case["expected"]


def test_detok_coverage() -> None:
    """The recording exercises what it claims to: stop-string aborts, trimmed multi-token steps,
    skipped stop tokens and held-back text."""
    expected = [c["expected"] for c in DATA["detok"]]
    assert sum(e["abort"] for e in expected) >= 40
    trimmed = [
        c
        for c in DATA["detok"]
        if c["expected"]["abort"]
        and len(c["expected"]["token_ids"][-1]) < len(c["steps"][len(c["expected"]["token_ids"]) - 1])
    ]
    assert len(trimmed) >= 3
    held = [
        c for c in DATA["detok"] if c["params"].get("stop") and any(t == "" for t in c["expected"]["text"])
    ]
    assert held


@pytest.mark.parametrize("case", DATA["chat"], ids=lambda c: str(DATA["chat"].index(c)))
def test_chat(tokenizer: Tokenizer, case: dict[str, Any]) -> None:
    body = case["request"]
    renderer = ChatRenderer(tokenizer)
    tools = body.get("tools")
    if tools is not None:
        assert normalize_tools(tools) == case["tool_dicts"]

    def render() -> Any:
        return renderer.render(
            body["messages"],
            add_generation_prompt=body.get("add_generation_prompt", True),
            continue_final_message=body.get("continue_final_message", False),
            tools=tools,
            documents=body.get("documents"),
            reasoning_effort=body.get("reasoning_effort"),
            chat_template=body.get("chat_template"),
            chat_template_kwargs=body.get("chat_template_kwargs"),
        )

    if "error" in case:
        with pytest.raises(ChatTemplateError) as info:
            render()
        assert str(info.value) in case["error"]
        return
    rendered = render()
    assert rendered.prompt == case["prompt"]
    assert rendered.conversation == case["conversation"]
    ids = tokenizer.encode(rendered.prompt, add_special_tokens=body.get("add_special_tokens", False))
    assert ids == case["prompt_token_ids"]
