"""Structured outputs on the real vLLM 0.32 engine through :meth:`EngineClient.generate`, with trio-front's
default backend: ``{"backend": "guidance", "disable_any_whitespace": true}`` on the engine, so ``_backend``
is ``"guidance"`` and the engine compiles with the llguidance we validated with.

A random-weights model cannot be asked for meaning, only for form: each answer is checked against its
constraint (schema validation, regex fullmatch, choice membership). Without ``disable_any_whitespace`` on
the engine a random model pads JSON with whitespace until ``max_tokens`` (the per-request option is
ignored by the engine), and schemas bound every value for the same reason (digits forever otherwise).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pydantic
import pytest
from tokenizers import Tokenizer

from trio_front.engine import wire
from trio_front.engine.client import EngineClient
from trio_front.engine.launch import EngineProcess, pick_free_port
from trio_front.serving.params import ParamError
from trio_front.serving.structured import StructuredConfig, from_json_schema, from_request

from .conftest import MODEL, Portal, open_client, require_engine, start_engine, wait_ready

pytestmark = pytest.mark.real_engine

#: The engine's flag and our config: the same JSON, as ``trio-front serve`` passes it on.
ENGINE_CONFIG = '{"backend": "guidance", "disable_any_whitespace": true}'
CONFIG = StructuredConfig.from_json(ENGINE_CONFIG)
EOS = 2  # models/tiny-llama generation_config.json
PROMPT = [1, 755, 3001, 40, 1200, 17]


class Point(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    x: int = pydantic.Field(ge=-9, le=9)
    tag: str = pydantic.Field(pattern="^[a-z]{1,5}$")
    ok: bool


POINT_SCHEMA = {
    "type": "object",
    "properties": {
        "x": {"type": "integer", "minimum": -9, "maximum": 9},
        "tag": {"type": "string", "pattern": "^[a-z]{1,5}$"},
        "ok": {"type": "boolean"},
    },
    "required": ["x", "tag", "ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine(portal: Portal) -> Iterator[tuple[EngineClient, EngineProcess]]:
    require_engine()
    port = pick_free_port()
    proc = start_engine(port, extra_args=("--structured-outputs-config", ENGINE_CONFIG))
    try:
        client = open_client(portal, port)
        wait_ready(portal, client, proc)
        yield client, proc
    finally:
        proc.terminate()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(MODEL / "tokenizer.json"))


def run(portal: Portal, client: EngineClient, so: wire.StructuredOutputsParams, max_tokens: int = 60):
    params = wire.SamplingParams(
        temperature=1.0,
        seed=7,
        max_tokens=max_tokens,
        output_kind=wire.OutputKind.DELTA,
        eos_token_id=EOS,
        all_stop_token_ids=[EOS],
        structured_outputs=so,
    )

    async def go() -> tuple[list[int], wire.FinishReason | None]:
        tokens: list[int] = []
        finish = None
        async with client.generate(PROMPT, params, id_prefix="so") as stream:
            async for delta in stream:
                tokens.extend(delta.token_ids)
                finish = delta.finish_reason
        return tokens, finish

    return portal.run(go)


def text_of(tokenizer: Tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode([t for t in tokens if t != EOS], skip_special_tokens=True)


def test_the_config_sends_guidance(engine) -> None:
    so = from_request(None, {"choice": ["a"]}, config=CONFIG)
    assert so.backend == "guidance" and not so.backend_was_auto and so.disable_any_whitespace


def test_json_schema(portal: Portal, engine, tokenizer: Tokenizer) -> None:
    client, _ = engine
    fmt = {"type": "json_schema", "json_schema": {"name": "point", "schema": POINT_SCHEMA}}
    tokens, finish = run(portal, client, from_request(fmt, None, config=CONFIG))
    assert finish is wire.FinishReason.STOP, text_of(tokenizer, tokens)
    text = text_of(tokenizer, tokens)
    Point.model_validate(json.loads(text))
    # disable_any_whitespace reached the engine: the answer is compact JSON.
    assert text == json.dumps(json.loads(text), separators=(",", ":"))


def test_json_schema_as_a_string_and_from_a_tool_schema(portal: Portal, engine, tokenizer) -> None:
    client, _ = engine
    for so in (
        from_request(None, {"json": json.dumps(POINT_SCHEMA)}, config=CONFIG),
        from_json_schema(POINT_SCHEMA, config=CONFIG),
    ):
        tokens, finish = run(portal, client, so)
        assert finish is wire.FinishReason.STOP
        Point.model_validate(json.loads(text_of(tokenizer, tokens)))


def test_json_object(portal: Portal, engine, tokenizer: Tokenizer) -> None:
    client, _ = engine
    # "Any object" is unbounded: a random model may never close it, so only check what it wrote when it
    # did, and that the prefix is an object's start either way.
    tokens, finish = run(portal, client, from_request({"type": "json_object"}, None, config=CONFIG), 40)
    text = text_of(tokenizer, tokens)
    assert text.startswith("{"), text
    if finish is wire.FinishReason.STOP:
        assert isinstance(json.loads(text), dict)
    else:
        assert finish is wire.FinishReason.LENGTH


def test_choice(portal: Portal, engine, tokenizer: Tokenizer) -> None:
    client, _ = engine
    choices = ["yes", "no", 'say "maybe"', "new\nline"]
    for seed_offset in range(3):
        so = from_request(None, {"choice": choices}, config=CONFIG)
        tokens, finish = run(portal, client, so, 20 + seed_offset)
        assert finish is wire.FinishReason.STOP
        assert text_of(tokenizer, tokens) in choices


def test_regex(portal: Portal, engine, tokenizer: Tokenizer) -> None:
    client, _ = engine
    pattern = r"[a-f]{2,4}-\d{1,3}"
    tokens, finish = run(portal, client, from_request(None, {"regex": pattern}, config=CONFIG))
    assert finish is wire.FinishReason.STOP
    assert re.fullmatch(pattern, text_of(tokenizer, tokens))  # our own trusted pattern: `re` is fine


@pytest.mark.parametrize(
    ("grammar", "pattern"),
    [
        ('root ::= "x=" [0-9] [0-9]? ";"', r"x=\d\d?;"),  # GBNF
        ('start: "v" NUM\nNUM: /[1-7]{1,2}/', r"v[1-7]{1,2}"),  # Lark
    ],
    ids=["gbnf", "lark"],
)
def test_grammar(portal: Portal, engine, tokenizer: Tokenizer, grammar: str, pattern: str) -> None:
    client, _ = engine
    tokens, finish = run(portal, client, from_request(None, {"grammar": grammar}, config=CONFIG))
    assert finish is wire.FinishReason.STOP
    assert re.fullmatch(pattern, text_of(tokenizer, tokens))


def test_legacy_structural_tag(portal: Portal, engine, tokenizer: Tokenizer) -> None:
    """Free text until a trigger, then the tag's schema: a random model may never trigger, so the check
    is only that whatever tag it opened is followed by a valid body."""
    client, _ = engine
    tag = {
        "type": "structural_tag",
        "structures": [{"begin": "<p>", "schema": POINT_SCHEMA, "end": "</p>"}],
        "triggers": ["<p>"],
    }
    tokens, finish = run(portal, client, from_request(tag, None, config=CONFIG), 30)
    assert finish in (wire.FinishReason.STOP, wire.FinishReason.LENGTH)
    text = text_of(tokenizer, tokens)
    for body in re.findall(r"<p>(.*?)</p>", text, flags=re.S):
        Point.model_validate(json.loads(body))


def test_an_engine_rejected_constraint_errors_the_request_only(portal: Portal, engine, tokenizer) -> None:
    """The new-style structural tag is xgrammar's format; the guidance backend reads ``triggers`` /
    ``structures`` only and its compile raises (``KeyError``) in the engine: finish ERROR, engine fine.

    We refuse it before the engine (so the test builds the wire params by hand), which is the point:
    vLLM validates structural tags with xgrammar even when the server's backend is guidance, and so
    lets this request through to fail as a 500.
    """
    client, _ = engine
    tag = {"type": "structural_tag", "format": {"type": "const_string", "value": "hi"}}
    with pytest.raises(ParamError, match="xgrammar"):
        from_request(tag, None, config=CONFIG)
    bypass = wire.StructuredOutputsParams(
        structural_tag=json.dumps(tag), disable_any_whitespace=True, backend="guidance"
    )
    tokens, finish = run(portal, client, bypass)
    assert finish is wire.FinishReason.ERROR and tokens == []
    # The engine carries on, structured and not.
    tokens, finish = run(portal, client, from_request(None, {"choice": ["ok"]}, config=CONFIG))
    assert finish is wire.FinishReason.STOP and text_of(tokenizer, tokens) == "ok"
    tokens, finish = run(portal, client, None, 5)
    assert len(tokens) == 5 and finish is wire.FinishReason.LENGTH
