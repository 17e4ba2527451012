"""Tool-call parsers, batch A (hermes/qwen3_json, llama3_json/llama4_json, mistral, pythonic,
llama4_pythonic): our non-streamed answer against vLLM 0.32's non-streaming ``extract_tool_calls``, and
every chunking of the same output against our non-streamed answer.

vLLM runs twice per module (one oracle process per marker vocabulary: mistral picks its format by
whether ``[ARGS]`` is in the vocabulary). Deliberate deviations are asserted on their own, each with
vLLM's differing answer checked too, so the claim stays true.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from tests.parsers.harness import chunkings, marker_model, token_chunkings, vllm_results
from trio_front.parsers.tools.base import Parsed, ToolCall, merge
from trio_front.parsers.tools.pythonic import VLLM_SHAPE, has_call_shape
from trio_front.parsers.tools.registry import tool_parser_class

TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|python_tag|>",
    "<|python_start|>",
    "<|python_end|>",
    "[TOOL_CALLS]",
]
TOKENS_V11 = [*TOKENS, "[ARGS]"]  # Mistral v11+ vocabularies have [ARGS]

TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
    for n in ("get_weather", "get_time", "send_message", "create_event", "search")
]

W = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
T = '{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}'
UNI = (
    '{"name": "send_message", "arguments": {"text": "Grüße, \\"Jürgen\\" — 東京 \\u00e9 😀\\n", '
    '"to": "j@x.de"}}'
)
NEST = (
    '{"name": "create_event", "arguments": {"event": {"title": "Standup", "attendees": [{"name": "Ana", '
    '"optional": false}, {"name": "Bo", "optional": true}], "reminders": [5, 15]}, "tags": []}}'
)
NUM = (
    '{"name": "search", "arguments": {"limit": 10, "ratio": 0.25, "exp": 1e-3, "big": 12345678901234567890, '
    '"neg": -3, "active": true, "cursor": null}}'
)
EMPTY = '{"name": "get_time", "arguments": {}}'


def tc(body: str) -> str:
    return f"<tool_call>\n{body}\n</tool_call>"


HERMES = {
    "plain": "The weather in Paris is sunny today, around 21 °C.",
    "one": tc(W),
    "text_before": "Let me check that for you.\n" + tc(W),
    "parallel": tc(W) + "\n" + tc(T),
    "unicode_escapes": tc(UNI),
    "nested": tc(NEST),
    "numbers_bools_null": tc(NUM),
    "empty_args": tc(EMPTY),
    "truncated": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',
    "malformed": tc('{"name": "get_weather", "arguments": {"city": "Paris",}}'),
    "text_after": tc(W) + "\nI have asked for the weather.",
    "text_between": "Sure.\n" + tc(W) + "\nand also\n" + tc(T) + "\n",
    "no_closing_tag": "<tool_call>\n" + W + "\n",
    "missing_arguments": '<tool_call>{"name": "get_time"}</tool_call>',
    "string_arguments": tc('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'),
    "lookalike_markers": "Use <tool> or <tool_ or <tool_call without closing > in prose.",
    "first_malformed_second_ok": tc('{"name": "get_weather", "arguments": }') + "\n" + tc(T),
    "partial_closing_at_end": "<tool_call>\n" + W + "\n</tool_",
    "garbage_after_object": tc(W + " extra"),
    "surrogate_pair_escape": tc(
        '{"name": "send_message", "arguments": {"text": "\\ud83d\\ude00 \\u00e9\\t"}}'
    ),
    "non_object_body": tc('["get_weather", {"city": "Paris"}]'),
}


def params(body: str) -> str:
    return body.replace('"arguments"', '"parameters"')


LLAMA = {
    "plain": "The weather in Paris is sunny today.",
    "one_parameters": params(W),
    "one_arguments": W,
    "python_tag": "<|python_tag|>" + params(W),
    "semicolons": params(W) + "; " + params(T),
    "newlines": params(W) + "\n" + params(T) + "\n",
    "unicode_escapes": UNI,
    "nested": params(NEST),
    "numbers_bools_null": NUM,
    "empty_args": params(EMPTY),
    "truncated": '{"name": "get_weather", "parameters": {"city": "Pa',
    "malformed": '{"name": "get_weather", "parameters": {"city": "Paris"]}',
    "text_after": params(W) + "\n\nThis fetches the current weather.",
    "prose_braces": 'In Python, {} is a dict and {"a": 1} a literal; {x for x in y} a set.',
    "json_not_a_call": '{"answer": 42, "unit": "km"}',
    "leading_whitespace": "\n\n  " + params(W),
    "python_tag_then_prose": "<|python_tag|>I cannot call a tool for that.",
    "name_not_string": '{"name": 7, "parameters": {}}',
    "arguments_win_over_parameters": '{"name": "get_time", "arguments": {"a": 1}, "parameters": {"b": 2}}',
    "surrogate_pair_escape": '{"name": "send_message", "parameters": {"text": "\\ud83d\\ude00"}}',
}


PYTHONIC = {
    "plain": "The weather in Paris is sunny today.",
    "one": '[get_weather(city="Paris", unit="celsius")]',
    "parallel": '[get_weather(city="Paris"), get_time(timezone="Europe/Paris")]',
    "unicode_escapes": '[send_message(text="Grüße \\"Jürgen\\" 東京\\n", to=\'j@x.de\')]',
    "nested": '[create_event(event={"title": "x", "attendees": [{"name": "A", "ok": True}]}, '
    "size=(800, 600))]",
    "numbers_bools_null": "[search(limit=10, ratio=0.25, neg=-3, exp=1e-3, active=True, strict=false, "
    "cursor=None, other=null)]",
    "empty_args": "[get_time()]",
    "truncated": '[get_weather(city="Par',
    "malformed": "[get_weather(city=)]",
    "text_before": 'Sure! [get_weather(city="Paris")]',
    "text_after": '[get_weather(city="Paris")]\nHope this helps!',
    "citation": "[1] Smith et al. (2020) found the opposite.",
    "positional": '[get_weather("Paris")]',
    "trailing_newline": '[get_weather(city="Paris")]\n',
    "dotted_name": '[weather.get(city="Paris")]',
    "set_and_fstring": '[search(tags={"a", "b"}, label=f"hi", q="x")]',
    "variable_argument": "[search(q=query)]",
}

LLAMA4_PYTHONIC = {
    **{k: PYTHONIC[k] for k in ("plain", "one", "parallel", "truncated", "text_after", "empty_args")},
    "python_start": '<|python_start|>[get_weather(city="Paris")]<|python_end|>',
    "python_start_parallel": "<|python_start|>[get_time(), search(q='x')]<|python_end|>",
    "python_start_no_end": '<|python_start|>[get_weather(city="Paris")]',
    "python_start_malformed": "<|python_start|>[get_weather(city=]<|python_end|>",
    "python_end_only": '[get_weather(city="Paris")]<|python_end|>',
    "python_start_prose": "<|python_start|>I am not sure.<|python_end|>",
}

B = "[TOOL_CALLS]"
MISTRAL_PRE = {
    "plain": "The weather in Paris is sunny today.",
    "one": B + "[" + W + "]",
    "text_before": "Let me check. " + B + "[" + W + "]",
    "parallel": B + "[" + W + ", " + T + "]",
    "unicode_escapes": B + "[" + UNI + "]",
    "nested": B + " [" + NEST + "]",
    "numbers_bools_null": B + "[" + NUM + "]",
    "empty_and_missing_args": B + '[{"name": "get_time", "arguments": {}}, {"name": "get_time"}]',
    "truncated": B + '[{"name": "get_weather", "arguments": {"city": "Pa',
    "malformed": B + '[{"name": "get_weather", "arguments": {"city": "Paris",}}]',
    "bare_object": B + W,
    "text_after": B + "[" + W + "]\nDone.",
    "string_arguments": B + '[{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}]',
    "whitespace_before": " \n" + B + "[" + W + "]",
    "not_calls": B + "[1, 2, 3]",
    "later_marker_ignored": B + "[" + W + "]" + B + "[" + T + "]",
    "repeated_marker": B + B + "[" + W + "]",
    "fallback_regex": B + '[[{"name": "get_time", "arguments": {}}]',
    "non_string_name": B + '[{"name": 5, "arguments": {"a": 1}}, {"x": 1}]',
}

MISTRAL_V11 = {
    "plain": "The weather in Paris is sunny today.",
    "one": B + 'get_weather[ARGS]{"city": "Paris", "unit": "celsius"}',
    "text_before": "Let me check.\n\n" + B + 'get_weather[ARGS]{"city": "Paris"}',
    "parallel": B + 'get_weather[ARGS]{"city": "Paris"}' + B + 'get_time[ARGS]{"timezone": "UTC"}',
    "unicode_escapes": B + 'send_message[ARGS]{"text": "Grüße \\"J\\" 東京 \\u00e9", "to": "j@x.de"}',
    "nested": B + 'create_event[ARGS]{"event": {"a": [1, {"b": null}]}, "t": []}',
    "numbers_raw": B + 'search[ARGS]{"limit": 10, "exp": 1.0e2, "ok": true, "c": null}',
    "empty_args": B + "get_time[ARGS]{}",
    "no_args": B + "get_time",
    "truncated": B + 'get_weather[ARGS]{"city": "Pa',
    "malformed": B + 'get_weather[ARGS]{"city": "Paris",}',
    "brace_separator": B + 'get_weather{"city": "Paris"}' + B + "get_time{}",
    "text_after": B + 'get_weather[ARGS]{"city": "Paris"} I will wait for the result.',
    "whitespace_before": "\n" + B + 'get_weather[ARGS]{"city": "Paris"}',
    "spaces_around": B + ' get_weather [ARGS] {"city": "Paris"} \n',
    "scalar_args": B + "search[ARGS]12",
    "between_calls_malformed": B + 'get_time[ARGS]{"x": 1}\n\n' + B + "search[ARGS]{bad}",
}

SUITES: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "hermes": ("hermes", HERMES, TOKENS),
    "qwen3_json": ("qwen3_json", {k: HERMES[k] for k in ("one", "parallel", "truncated")}, TOKENS),
    "llama3_json": ("llama3_json", LLAMA, TOKENS),
    "llama4_json": ("llama4_json", {k: LLAMA[k] for k in ("python_tag", "semicolons", "malformed")}, TOKENS),
    "pythonic": ("pythonic", PYTHONIC, TOKENS),
    "llama4_pythonic": ("llama4_pythonic", LLAMA4_PYTHONIC, TOKENS),
    "mistral_pre_v11": ("mistral", MISTRAL_PRE, TOKENS),
    "mistral_v11": ("mistral", MISTRAL_V11, TOKENS_V11),
}

ALL = [(suite, key) for suite, (_, cases, _) in SUITES.items() for key in cases]

# Deliberate deviations: (suite, text, our answer, vLLM's answer). Each is explained in the parser's
# module docstring; vLLM's side is checked against the oracle so the list stays honest.
DEVIATIONS: list[tuple[str, str, tuple[Any, ...], tuple[Any, ...]]] = [
    # A later malformed call: vLLM returns everything as content and drops the good call; ours keeps
    # the call already streamed and releases the malformed region raw.
    (
        "hermes",
        tc(T) + "\n" + tc('{"name": "get_weather", "arguments": {"city": }'),
        (
            "<tool_call>\n" + '{"name": "get_weather", "arguments": {"city": }' + "\n</tool_call>",
            [("get_time", '{"timezone": "Europe/Paris"}')],
        ),
        (tc(T) + "\n" + tc('{"name": "get_weather", "arguments": {"city": }'), []),
    ),
    # Text before a call is streamed before the call shows up; vLLM drops it.
    (
        "llama3_json",
        "Here you go: " + params(W),
        ("Here you go:", [("get_weather", '{"city": "Paris", "unit": "celsius"}')]),
        (None, [("get_weather", '{"city": "Paris", "unit": "celsius"}')]),
    ),
    # A call, then a truncated one: vLLM answers all content; ours keeps the complete call.
    (
        "llama3_json",
        params(W) + '; {"name": "get_time", "parameters": {"timez',
        (
            '{"name": "get_time", "parameters": {"timez',
            [("get_weather", '{"city": "Paris", "unit": "celsius"}')],
        ),
        (params(W) + '; {"name": "get_time", "parameters": {"timez', []),
    ),
    # Prose braces after a call are text between calls (dropped); vLLM fails on them: all content.
    (
        "llama3_json",
        params(EMPTY) + "\nUse {tz} as a placeholder.",
        (None, [("get_time", "{}")]),
        (params(EMPTY) + "\nUse {tz} as a placeholder.", []),
    ),
    # vLLM off-by-one: a "{" right at the previous object's end is skipped, then its inner object fails.
    (
        "llama3_json",
        params(W) + params(EMPTY),
        (None, [("get_weather", '{"city": "Paris", "unit": "celsius"}'), ("get_time", "{}")]),
        (params(W) + params(EMPTY), []),
    ),
    # v11 content: vLLM strips it at both ends; the leading whitespace was already streamed.
    (
        "mistral_v11",
        "  Sure.  " + B + "get_time[ARGS]{}",
        ("  Sure.", [("get_time", "{}")]),
        ("Sure.", [("get_time", "{}")]),
    ),
    # pre-v11 failure after text: vLLM's content is only the text after the marker.
    (
        "mistral_pre_v11",
        "Checking. " + B + '[{"name": "get_weather", "arguments": {"ci',
        ('Checking. [{"name": "get_weather", "arguments": {"ci', []),
        ('[{"name": "get_weather", "arguments": {"ci', []),
    ),
    # A marker followed by whitespace only: vLLM (v11) makes a call named "".
    ("mistral_v11", "Hi " + B + "  ", ("Hi ", []), ("Hi", [("", "{}")])),
    # The pre-v11 JSON format with a v11 vocabulary: vLLM takes "[" for the tool name.
    (
        "mistral_v11",
        B + "[" + W + "]",
        (None, [("get_weather", '{"city": "Paris", "unit": "celsius"}')]),
        (None, [("[", W)]),
    ),
    # Prose between the marker and a pre-v11 list: we read the v11 format; vLLM's fallback regex finds
    # the list.
    (
        "mistral_pre_v11",
        B + ' here: [{"name": "get_time", "arguments": {}}]',
        (None, [("here: [", '{"name": "get_time", "arguments": {}}')]),
        (None, [("get_time", "{}")]),
    ),
    # The v11 format with a pre-v11 vocabulary: vLLM cannot decode it and returns it as content.
    (
        "mistral_pre_v11",
        B + 'get_weather[ARGS]{"city": "Paris"}',
        (None, [("get_weather", '{"city": "Paris"}')]),
        ('get_weather[ARGS]{"city": "Paris"}', []),
    ),
]


def ours(suite: str, text: str) -> Parsed:
    return tool_parser_class(SUITES[suite][0])(TOOLS).parse(text)


def as_pair(p: Parsed) -> tuple[str | None, list[tuple[str, str]]]:
    return p.content, [(c.name, c.arguments) for c in p.calls]


@pytest.fixture(scope="module")
def vllm() -> dict[tuple[str, str], Any]:
    """vLLM's answer per (suite, text): one oracle run per marker vocabulary."""
    wanted = [(s, SUITES[s][1][k]) for s, k in ALL] + [(s, text) for s, text, _, _ in DEVIATIONS]
    answers: dict[tuple[str, str], Any] = {}
    for tokens in (TOKENS, TOKENS_V11):
        batch = [(s, t) for s, t in wanted if SUITES[s][2] == tokens]
        cases = [{"op": "tool", "parser": SUITES[s][0], "text": t, "tools": TOOLS} for s, t in batch]
        answers.update(zip(batch, vllm_results(cases, tokens), strict=True))
    return answers


def vllm_pair(answer: dict[str, Any]) -> tuple[str | None, list[tuple[str, str]]]:
    assert "error" not in answer, answer
    return answer["content"], [(c["name"], c["arguments"]) for c in answer["calls"]]


@pytest.mark.real_engine
@pytest.mark.parametrize(("suite", "key"), ALL)
def test_equals_vllm(vllm: dict[tuple[str, str], Any], suite: str, key: str) -> None:
    text = SUITES[suite][1][key]
    assert as_pair(ours(suite, text)) == vllm_pair(vllm[(suite, text)])


@pytest.mark.real_engine
@pytest.mark.parametrize("case", DEVIATIONS, ids=lambda c: c[0])
def test_deviation_vllm_side(vllm: dict[tuple[str, str], Any], case: tuple[Any, ...]) -> None:
    suite, text, mine, theirs = case
    assert vllm_pair(vllm[(suite, text)]) == (theirs[0], list(theirs[1]))
    assert as_pair(ours(suite, text)) != vllm_pair(vllm[(suite, text)])


@pytest.mark.parametrize("case", DEVIATIONS, ids=lambda c: c[0])
def test_deviation_ours(case: tuple[Any, ...]) -> None:
    """Deliberate deviation from vLLM (see the parser module's docstring): our answer."""
    suite, text, mine, _ = case
    assert as_pair(ours(suite, text)) == (mine[0], list(mine[1]))


def streamed(suite: str, pieces: list[str]) -> Parsed:
    parser = tool_parser_class(SUITES[suite][0])(TOOLS)
    events = [e for piece in pieces for e in parser.feed(piece)]
    return merge([*events, *parser.finish()])


@pytest.mark.parametrize(("suite", "key"), ALL + [(s, f"dev{i}") for i, (s, *_) in enumerate(DEVIATIONS)])
def test_any_chunking_equals_whole(suite: str, key: str) -> None:
    text = SUITES[suite][1][key] if not key.startswith("dev") else DEVIATIONS[int(key[3:])][1]
    whole = ours(suite, text)
    splits = [*chunkings(text), token_chunkings(marker_model(SUITES[suite][2]), text)]
    assert "".join(splits[-1]) == text
    for pieces in splits:
        assert streamed(suite, pieces) == whole, pieces


@pytest.mark.parametrize(
    ("name", "special"),
    [
        ("hermes", True),
        ("qwen3_json", True),
        ("mistral", True),
        ("llama3_json", False),
        ("llama4_json", False),
        ("pythonic", False),
        ("llama4_pythonic", False),
    ],
)
def test_needs_special_tokens_as_vllm_adjust_request(name: str, special: bool) -> None:
    assert tool_parser_class(name).needs_special_tokens is special


@pytest.mark.parametrize(
    ("name", "piece", "released"),
    [
        ("hermes", "Hello <tool", "Hello "),  # "<tool" may still become <tool_call>
        ("llama3_json", "Sure thing, ", "Sure thing,"),  # trailing space may precede a call
        ("llama3_json", 'Use {"a": 1', "Use"),  # an open candidate is held
        ("mistral", "Hello wor", "Hello wor"),
        ("mistral", "Hello [TOOL_", "Hello"),
        ("pythonic", "Hello", "Hello"),
        ("pythonic", "[get_weather(", ""),  # a call list is held whole
        ("pythonic", "[get_weather", ""),  # may still become one
        ("pythonic", "[1] Smith et al.", "[1] Smith et al."),  # cannot: vLLM's regex needs "[name("
        ("llama4_pythonic", "<|python_st", ""),
    ],
)
def test_content_streams_and_holds_only_what_may_become_a_call(name: str, piece: str, released: str) -> None:
    parser = tool_parser_class(name)(TOOLS)
    assert merge(parser.feed(piece)).content == (released or None)


def test_a_call_is_emitted_as_soon_as_it_closes() -> None:
    for name, head, tail in [
        ("hermes", tc(W), "\nmore"),
        ("llama3_json", params(W), "; "),
        ("mistral", B + "[" + W + "]", " trailing"),
        ("mistral", B + "get_time[ARGS]{}", " x"),
    ]:
        parser = tool_parser_class(name)(TOOLS)
        events = parser.feed(head)
        assert [type(e) for e in events][-1:] == [ToolCall], name
        assert all(not isinstance(e, ToolCall) for e in parser.feed(tail) + parser.finish()), name


def test_call_shape_decides_vllms_regex() -> None:
    """Our one-pass shape check against vLLM's regex verbatim, on short strings (where the regex's
    backtracking is still cheap): same answer on every one."""
    regex = re.compile(VLLM_SHAPE, re.DOTALL)
    pieces = ["f(", "g1(", "x=", "_y=", "1", "'s'", ",", " ", ")", "]", "),", ")]", "(", "=", "\n", "é"]
    pieces += ["a", "[", "()", "\t", ", "]
    heads = ["f(", "g(", "f()", "é(", "", "_(", "f() ", "f(),"]
    tails = ["", ")]", ") ]", "]", ")", "),g()]", " g()]", "g()]"]
    rng = random.Random(7)
    answers = []
    for _ in range(20000):
        middle = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        text = "[" + rng.choice(heads) + middle + rng.choice(tails)
        expected = regex.match(text) is not None
        assert has_call_shape(text) is expected, text
        answers.append(expected)
    assert 1000 < sum(answers) < 19000  # both outcomes are exercised


FRAGMENTS = [
    *TOKENS_V11,
    W,
    params(EMPTY),
    '[get_weather(city="Paris")]',
    *'{}[]"\\ \n;,()',
    "{bad}",
    '{"a": 1}',
    "hello",
    "x=",
    "<tool",
    "[TOOL_",
    "<|py",
    "é😀",
]


@pytest.mark.parametrize("name", ["hermes", "llama3_json", "mistral", "pythonic", "llama4_pythonic"])
def test_random_outputs_stream_like_whole(name: str) -> None:
    """Outputs glued from markers, JSON and prose fragments: every chunking gives the whole answer."""
    rng = random.Random(name)
    for _ in range(400):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 8)))
        whole = tool_parser_class(name)(TOOLS).parse(text)
        for pieces in chunkings(text, seeds=range(2)):
            parser = tool_parser_class(name)(TOOLS)
            events = [e for piece in pieces for e in parser.feed(piece)]
            assert merge([*events, *parser.finish()]) == whole, (text, pieces)
