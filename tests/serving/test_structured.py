"""Structured outputs: the request → ``StructuredOutputsParams`` map, validation before the engine,
and the wire form as vLLM 0.32's own decoder reads it (engine venv, ``tests/engine/vllm_codec.py``)."""

from __future__ import annotations

import json

import msgspec
import pytest

from tests.engine.test_wire import sample_request, vllm
from trio_front.engine import wire
from trio_front.serving.params import ParamError
from trio_front.serving.structured import (
    StructuredConfig,
    choice_as_grammar,
    from_json_schema,
    from_request,
    from_text_format,
)

AUTO = StructuredConfig()
XGR = StructuredConfig(backend="xgrammar", disable_any_whitespace=True)
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
CHOICES = ["yes", 'say "no"', "back\\slash", "tab\there", "new\nline", "\x01ctl\x7f", "é"]


def fields(params: wire.StructuredOutputsParams) -> dict:
    return {k: v for k, v in msgspec.structs.asdict(params).items() if v not in (None, False)}


@pytest.mark.parametrize(
    ("response_format", "structured", "expected"),
    [
        ({"type": "json_object"}, None, {"json_object": True}),
        ({"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}}, None, {"json": SCHEMA}),
        (None, {"json": json.dumps(SCHEMA)}, {"json": json.dumps(SCHEMA)}),
        (None, {"regex": "[a-z]+"}, {"regex": "[a-z]+"}),
        (None, {"regex": ""}, {"regex": ""}),  # vLLM: "empty regex is indeed compiles to a valid grammar"
        (None, {"regex": "\n"}, {"regex": "\n"}),
        (None, {"choice": ["a", "b"]}, {"choice": ["a", "b"]}),
        (None, {"grammar": 'root ::= "a"'}, {"grammar": 'root ::= "a"'}),
        (None, {"grammar": 'start: "a" | "b"'}, {"grammar": 'start: "a" | "b"'}),  # Lark
        (None, {"json_object": True}, {"json_object": True}),
        ({"type": "text"}, {"regex": "x"}, {"regex": "x"}),
        ({"type": "json_object"}, {"json_object": True}, {"json_object": True}),
    ],
)
def test_mapping_with_the_auto_backend(response_format, structured, expected) -> None:
    params = from_request(response_format, structured, config=AUTO)
    assert fields(params) == {**expected, "backend": "guidance", "backend_was_auto": True}


def test_text_means_no_constraint() -> None:
    assert from_request({"type": "text"}, None, config=AUTO) is None
    assert from_request(None, None, config=AUTO) is None
    assert from_text_format({"type": "text"}, config=AUTO) is None


def test_xgrammar_rewrites_choice_and_carries_the_engine_config() -> None:
    params = from_request(None, {"choice": CHOICES}, config=XGR)
    assert params.choice is None and params.grammar == choice_as_grammar(CHOICES)
    assert params.backend == "xgrammar" and params.disable_any_whitespace and not params.backend_was_auto


def test_responses_text_format() -> None:
    fmt = {"type": "json_schema", "name": "n", "schema": SCHEMA, "strict": True}
    assert from_text_format(fmt, config=AUTO).json == SCHEMA
    assert from_text_format({"type": "json_object"}, config=AUTO).json_object is True
    with pytest.raises(ParamError, match="text.format.schema"):
        from_text_format({"type": "json_schema", "name": "n"}, config=AUTO)


DEEP: dict = {"type": "object"}
for _ in range(70):
    DEEP = {"type": "array", "items": DEEP}


@pytest.mark.parametrize(
    ("response_format", "structured", "message"),
    [
        (None, {"regex": "a", "choice": ["b"]}, "only use one kind"),
        ({"type": "json_object"}, {"regex": "a"}, "only use one kind"),
        (None, {}, "none are specified"),
        (None, {"choice": []}, "non-empty list"),
        (None, {"grammar": "  "}, "non-empty string"),
        (None, {"json": " "}, "must not be empty"),
        (None, {"json": "{"}, "not valid JSON"),
        (None, {"json_object": False}, "json_object must be true"),
        (None, {"regex": "a\x00b"}, "NUL"),
        (None, {"regex": "(a"}, "Invalid regex"),
        (None, {"regex": "a(?=b)"}, "Invalid regex"),  # look-around: neither llguidance nor xgrammar
        (None, {"regex": 5}, "must be a string"),
        (None, {"grammar": "root ::= ("}, "Invalid grammar"),
        (None, {"json": {"type": "object", "properties": 5}}, "Invalid json schema"),
        (None, {"json": DEEP}, "nested too deeply"),
        (None, {"regex": "a", "disable_any_whitespace": True}, "--structured-outputs-config"),
        (None, {"regex": "a", "whitespace_pattern": " "}, "--structured-outputs-config"),
        (None, {"regex": "a", "_backend": "outlines"}, "differs from the server's backend"),
        (None, {"regex": "a", "made_up": 1}, "unknown fields"),
        ({"type": "json_schema"}, None, "'json_schema' field must be provided"),
        ({"type": "xml"}, None, "response_format.type"),
        ({"type": "structural_tag", "structures": [], "triggers": []}, None, "structures"),
        ({"type": "structural_tag", "format": {"type": "const_string", "value": "x"}}, None, "xgrammar"),
    ],
)
def test_bad_constraints_are_400s(response_format, structured, message) -> None:
    with pytest.raises(ParamError, match=message):
        from_request(response_format, structured, config=AUTO)


def test_legacy_structural_tag_is_validated_with_llguidance() -> None:
    tag = {
        "type": "structural_tag",
        "structures": [{"begin": "<f=a>", "schema": SCHEMA, "end": "</f>"}],
        "triggers": ["<f="],
    }
    params = from_request(tag, None, config=AUTO)
    assert json.loads(params.structural_tag) == tag
    bad = {**tag, "triggers": ["<g"]}
    with pytest.raises(ParamError, match="not found in triggers"):
        from_request(bad, None, config=AUTO)


def test_tool_schemas_are_validated_too() -> None:
    assert from_json_schema(SCHEMA, config=AUTO).json == SCHEMA
    with pytest.raises(ParamError, match="Invalid json schema") as err:
        from_json_schema({"type": "object", "properties": {"a": {"type": "frobnicate"}}}, config=AUTO)
    assert err.value.param == "tools"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"backend": "outlines"}', "not supported by trio-front"),
        ('{"backend": "nope"}', "unknown backend"),
        ('{"disable_any_whitespace": true}', "needs backend"),
        ('{"backend": "xgrammar", "disable_additional_properties": true}', "needs backend 'guidance'"),
        ('{"backend": "xgrammar", "whitespace": 1}', "unsupported keys"),
        ('{"reasoning_parser": "qwen3"}', "--reasoning-parser"),
        ("[1]", "JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_config_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StructuredConfig.from_json(text)


def test_config_backends() -> None:
    assert StructuredConfig.from_json(
        '{"backend": "guidance", "disable_any_whitespace": true}'
    ).wire_backend == ("guidance")
    assert StructuredConfig.from_json('{"backend": "xgrammar"}').wire_backend == "xgrammar"
    assert StructuredConfig.from_json("{}").wire_backend == "guidance"


# ------------------------------------------------------------------------------ against vLLM itself


@pytest.mark.real_engine
def test_parity_with_vllms_own_mapping() -> None:
    bodies = [
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}}},
        {"structured_outputs": {"regex": "[a-z]+"}},
        {"structured_outputs": {"choice": ["a", "b"]}},
        {"structured_outputs": {"grammar": 'root ::= "a"'}},
        {"response_format": {"type": "text"}, "structured_outputs": {"json": SCHEMA}},
        {"response_format": {"type": "json_object"}, "structured_outputs": {"json_object": True}},
    ]
    seen = vllm({"op": "structured", "choices": [CHOICES, ["a"]], "requests": bodies})
    assert seen["grammars"] == [choice_as_grammar(CHOICES), choice_as_grammar(["a"])]
    for body, theirs in zip(bodies, seen["mapped"], strict=True):
        ours = from_request(body.get("response_format"), body.get("structured_outputs"), config=AUTO)
        constraint = {k: v for k, v in theirs.items() if not k.startswith("_") and v not in (None, False)}
        assert {k: v for k, v in fields(ours).items() if not k.startswith("backend")} == constraint, body


@pytest.mark.real_engine
@pytest.mark.parametrize("config", [AUTO, XGR], ids=["auto", "xgrammar"])
def test_vllms_decoder_accepts_our_constraint(config: StructuredConfig) -> None:
    """The engine runs ``__post_init__`` while decoding: a bad map kills its input thread."""
    request = sample_request()
    request.sampling_params.structured_outputs = from_request(None, {"choice": ["a", "b"]}, config=config)
    request.reasoning_ended = True
    request.reasoning_parser_kwargs = {"chat_template_kwargs": {"enable_thinking": False}}
    seen = vllm({"op": "decode_request", "payload": wire.encode(request).hex()})
    so = seen["sampling_params"]["structured_outputs"]
    assert so["_backend"] == config.wire_backend and so["_backend_was_auto"] == (config.backend == "auto")
    if config.wire_backend == "xgrammar":
        assert so["choice"] is None and so["grammar"] == 'root ::= "a" | "b"'
    else:
        assert so["choice"] == ["a", "b"] and so["grammar"] is None
    assert so["disable_any_whitespace"] is config.disable_any_whitespace
    assert seen["reasoning_ended"] is True
    assert seen["reasoning_parser_kwargs"] == {"chat_template_kwargs": {"enable_thinking": False}}
