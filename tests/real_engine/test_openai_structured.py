"""Structured outputs and forced tool calls on the real vLLM engine (random weights), through the
unmodified ``openai`` SDK: whatever the model samples, the grammar makes it valid.

A random model cannot be asked for meaning, only for form: each answer is checked against its
constraint (schema validation, regex, choice membership, a parseable call to a declared tool).
Schemas here bound every value (integer ranges, string patterns): an unbounded integer is a valid
answer of any length, and a random model writes digits until ``max_tokens``.
"""

from __future__ import annotations

import json
import re

import openai
import pydantic
import pytest

pytestmark = pytest.mark.real_engine
NAME = "tiny"


class City(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str = pydantic.Field(pattern="^[a-z]{1,8}$")
    population: int = pydantic.Field(ge=0, le=10**6)
    capital: bool


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "pattern": "^[A-Z][a-z]{0,8}$"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
            },
            "required": ["city", "days"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string", "pattern": "^[a-z ]{1,8}$"}},
            "required": ["q"],
        },
    },
}
MESSAGES = [{"role": "user", "content": "Answer in the requested form."}]


@pytest.fixture(scope="module")
def client(structured_stack: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=structured_stack, api_key="none", max_retries=0, timeout=120)


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=NAME, messages=MESSAGES, response_format=City, max_tokens=120, seed=1
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(choice.message.parsed, City)


def test_json_object(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=NAME, messages=MESSAGES, response_format={"type": "json_object"}, max_tokens=60, seed=2
    )
    text = result.choices[0].message.content
    if result.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # an open object may run to max_tokens; what came is still a JSON object's prefix
        assert text.lstrip().startswith("{")


@pytest.mark.parametrize("stream", [False, True])
def test_choice_regex_grammar(client: openai.OpenAI, stream: bool) -> None:
    def ask(extra: dict) -> str:
        if not stream:
            r = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=40, extra_body=extra)
            assert r.choices[0].finish_reason == "stop"
            return r.choices[0].message.content
        chunks = client.chat.completions.create(
            model=NAME, messages=MESSAGES, max_tokens=40, extra_body=extra, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    choices = ["yes", "no", 'it "depends"']
    for seed in range(3):
        assert ask({"structured_outputs": {"choice": choices}, "seed": seed}) in choices
    assert re.fullmatch(r"[a-z]{2,5}-\d{3}", ask({"structured_outputs": {"regex": r"[a-z]{2,5}-\d{3}"}}))
    grammar = 'root ::= "(" num ("+" num)* ")"\nnum ::= [1-9] [0-9]?'
    out = ask({"structured_outputs": {"grammar": grammar}, "seed": 3})
    assert re.fullmatch(r"\([1-9][0-9]?(\+[1-9][0-9]?)*\)", out), out


def _valid_call(name: str, arguments: str) -> None:
    args = json.loads(arguments)
    if name == "get_weather":
        assert (
            set(args) == {"city", "days"} and isinstance(args["city"], str) and isinstance(args["days"], int)
        )
    else:
        assert name == "search" and set(args) == {"q"}


@pytest.mark.parametrize("parallel", [True, False])
def test_required_tool_choice_gives_valid_calls(client: openai.OpenAI, parallel: bool) -> None:
    result = client.chat.completions.create(
        model=NAME,
        messages=MESSAGES,
        tools=[WEATHER, SEARCH],
        tool_choice="required",
        parallel_tool_calls=parallel,
        max_tokens=300,
        seed=4,
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and (parallel or len(calls) == 1)
    for call in calls:
        assert call.id.startswith("chatcmpl-tool-")
        _valid_call(call.function.name, call.function.arguments)


def test_named_tool_choice_streams_a_valid_call(client: openai.OpenAI) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    kwargs = dict(model=NAME, messages=MESSAGES, tools=[WEATHER, SEARCH], tool_choice=choice, max_tokens=200)
    result = client.chat.completions.create(**kwargs, seed=5)
    assert result.choices[0].finish_reason == "stop"
    [call] = result.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    _valid_call("get_weather", call.function.arguments)
    arguments, names = "", set()
    for chunk in client.chat.completions.create(**kwargs, seed=5, stream=True):
        for delta in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            names.add(delta.function.name) if delta.function.name else None
            arguments += delta.function.arguments or ""
    assert names == {"get_weather"} and arguments == call.function.arguments  # same seed, same sampling


def test_invalid_schema_is_400_and_the_next_request_works(client: openai.OpenAI) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": 5}}}
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=NAME, messages=MESSAGES, response_format=bad, max_tokens=10)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=NAME,
            messages=MESSAGES,
            max_tokens=10,
            extra_body={"structured_outputs": {"regex": "a\x00"}},
        )
    ok = client.chat.completions.create(
        model=NAME,
        messages=MESSAGES,
        max_tokens=10,
        extra_body={"structured_outputs": {"choice": ["a", "b"]}},
    )
    assert ok.choices[0].message.content in ("a", "b")


def test_completions_with_a_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": -50, "maximum": 50}},
        "required": ["n"],
        "additionalProperties": False,
    }
    result = client.completions.create(
        model=NAME,
        prompt="x = ",
        max_tokens=40,
        extra_body={
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
        },
    )
    assert result.choices[0].finish_reason == "stop"
    assert set(json.loads(result.choices[0].text)) == {"n"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_constraint_only_the_engine_rejects_is_a_400_and_it_keeps_serving(
    client: openai.OpenAI, stream: bool
) -> None:
    """xgrammar's own structural-tag format passes to the engine unvalidated (we validate with
    llguidance, which does not know it); a bogus one fails there (finish_reason error). That is the
    client's constraint, so: a 400 (in-band for a stream), never a 500, and the engine serves on."""
    bogus = {"type": "structural_tag", "format": {"type": "no_such_format", "x": 1}}
    if not stream:
        with pytest.raises(openai.BadRequestError, match="structured-output constraint"):
            client.chat.completions.create(
                model=NAME, messages=MESSAGES, response_format=bogus, max_tokens=10
            )
    else:
        with pytest.raises(openai.APIError, match="structured-output constraint"):
            for _ in client.chat.completions.create(
                model=NAME, messages=MESSAGES, response_format=bogus, max_tokens=10, stream=True
            ):
                pass
    ok = client.chat.completions.create(
        model=NAME,
        messages=MESSAGES,
        max_tokens=10,
        extra_body={"structured_outputs": {"choice": ["a", "b"]}},
    )
    assert ok.choices[0].message.content in ("a", "b")


def test_responses_required_tool_call_through_the_sdk(client: openai.OpenAI) -> None:
    """The Responses API on the real engine: a forced call arrives as a function_call item, its
    argument deltas add up to the done event, and the JSON form equals the streamed one."""
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}
    kwargs = dict(model=NAME, input="Weather?", tools=[tool], tool_choice="required", max_output_tokens=200)
    events = list(client.responses.create(**kwargs, stream=True, extra_body={"seed": 6}))
    final = events[-1].response
    assert final.status == "completed", final
    calls = [item for item in final.output if item.type == "function_call"]
    assert calls and all(c.name == "get_weather" for c in calls)
    for call in calls:
        _valid_call("get_weather", call.arguments)
        deltas = "".join(
            e.delta
            for e in events
            if e.type == "response.function_call_arguments.delta" and e.item_id == call.id
        )
        assert deltas == call.arguments
    plain = client.responses.create(**kwargs, extra_body={"seed": 6})
    assert [(i.name, i.arguments) for i in plain.output if i.type == "function_call"] == [
        (c.name, c.arguments) for c in calls
    ]
