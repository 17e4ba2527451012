"""Reasoning parsers (deepseek_r1, qwen3, glm45, mistral, granite): our non-streamed answer against vLLM
0.32's non-streaming ``extract_reasoning``; ``start``/``reasoning_ended_in_prompt`` against
``is_reasoning_end``; ``count_reasoning_tokens`` against vLLM's; and every chunking of each output
against our own non-streamed answer.

vLLM runs once for the module (one oracle process over every case). Deliberate deviations are listed
with the answer we give, and vLLM's differing answer is asserted too, so each claim stays true.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.parsers.harness import chunkings, marker_model, token_chunkings, vllm_results
from trio_front.parsers.reasoning import reasoning_parser_class
from trio_front.parsers.reasoning.base import merge
from trio_front.text.tokenizer import Tokenizer

TOKENS = [
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<|im_start|>",
    "<|im_end|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "[THINK]",
    "[/THINK]",
    "[TOOL_CALLS]",
    "[ARGS]",
]
MODEL = marker_model(TOKENS)
TOK = Tokenizer.from_pretrained(MODEL)

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
UNI = 'Grüße, “Jürgen” — 東京 \\"quoted\\" 😀'

# Outputs in the <think> format (deepseek_r1, qwen3, glm45 all see these).
THINK = {
    "empty": "",
    "plain": "The answer is 42.",
    "full": "<think>\nLet me add 40 and 2.\n</think>\n\nThe answer is 42.",
    "template_opened": "Let me add 40 and 2.\n</think>\n\nThe answer is 42.",
    "truncated": "<think>\nStep 1: compute 2+2 = 4. Step 2: multiply by",
    "truncated_open": "Step 1: compute 2+2 = 4. Step 2",
    "unicode": f"<think>{UNI}\n</think>答案：42 ✓",
    "no_content": "<think>only reasoning\n</think>",
    "no_content_ws": "<think>only reasoning</think>\n\n",
    "no_reasoning": "</think>content only",
    "duplicate_end": "<think>a</think>b</think>c",
    "nested_start": "<think>a<think>b</think>c",
    "reopen": "a</think>b<think>c</think>d",
    "tool_after": "<think>I need the weather.\n</think>\n\n" + CALL,
    "tool_in_reasoning": "<think>I need the weather.\n" + CALL,
    "trailing_ws": "<think>reasoning  \n\n</think>\n\nanswer",
    "ws_between_spans": "a \n</think>b<think>c</think>d",
    "special_token": "<think>r</s>easoning</think>answer</s>",
    "partial_end_marker": "<think>still thinking </thi",
    "lookalikes": "<think>x < y, <b>bold</b>, </thinker> and <thinking></think>ok <think",
    "text_before_think": "Hello <think>r</think>c",
    "think_after_end": "r</think>c<think>d",
}

MISTRAL = {
    "empty": "",
    "plain": "The answer is 42.",
    "full": "[THINK]Let me add 40 and 2.\n[/THINK]The answer is 42.",
    "truncated": "[THINK]Step 1: compute 2+2 = 4. Step 2",
    "no_content": "[THINK]only reasoning[/THINK]",
    "stray_end": "no reasoning[/THINK] here",
    "nested_start": "[THINK]a[THINK]b[/THINK]c",
    "reopen": "[THINK]r1 [/THINK]c1[THINK]r2[/THINK]c2",
    "tool_in_reasoning": '[THINK]need weather [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
    "tool_after": '[THINK]need weather[/THINK][TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
    "unicode": f"[THINK]{UNI}[/THINK]答案 ✓",
    "trailing_ws": "[THINK]r  \n\n[/THINK]\n\nanswer",
    "special_token": "[THINK]r</s>[/THINK]c</s>",
    "partial_end_marker": "[THINK]thinking [/THI",
    "text_then_think": "Intro. [THINK]r[/THINK]c",
}

GRANITE = {
    "empty": "",
    "plain": "The answer is 42.",
    "full": "Here is my thought process: add 40 and 2. Here is my response: The answer is 42.",
    "contracted": "Here's my thought process:\nadd 40 and 2\nHere's my response:\n42",
    "mixed_forms": "Here's my thought process: a Here is my response: b",
    "empty_reasoning": "Here is my thought process:Here is my response: only content",
    "empty_content": "Here is my thought process: only reasoning Here is my response:",
    "leading_ws": "\n  Here is my thought process: a Here is my response: b",
    "second_response_header": "Here is my thought process: a Here is my response: b Here's my response: c",
    "unicode": f"Here is my thought process: {UNI} Here is my response: 答案 ✓",
    "near_miss": "Here is my thoughts: not a header. Here is my response: x",
    "colon_rich": "Here is my thought process: a: b: c. Here: is my response: no. Here is my response: yes",
    # deviations (see DEVIATIONS)
    "truncated": "Here is my thought process: step one, step two",
    "truncated_partial_header": "Here is my thought process: a Here is my resp",
    "header_mid_text": "Intro. Here is my thought process: a Here is my response: b",
}

# (parser, case name, output, chat_template_kwargs)
CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    *((p, n, t, {}) for p in ("deepseek_r1", "qwen3", "glm45") for n, t in THINK.items()),
    *(("mistral", n, t, {}) for n, t in MISTRAL.items()),
    *(("granite", n, t, {}) for n, t in GRANITE.items()),
    ("qwen3", "thinking_off", "<think>a</think>b", {"enable_thinking": False}),
    ("qwen3", "thinking_off_empty", "", {"enable_thinking": False}),
    ("qwen3", "thinking_on", "<think>a</think>b", {"enable_thinking": True}),
    ("glm45", "thinking_off", "<think>a</think>b</s>", {"thinking": False}),
    ("glm45", "enable_thinking_off", "a</think>b", {"enable_thinking": False}),
    ("glm45", "thinking_either_on", "a</think>b", {"thinking": False, "enable_thinking": True}),
]

# Our answers where vLLM's non-streaming answer cannot be streamed (it would take back streamed text).
DEVIATIONS: dict[tuple[str, str], tuple[str | None, str | None]] = {
    # vLLM drops everything before the first <think>, wherever it is.
    ("deepseek_r1", "text_before_think"): ("Hello r", "c"),
    ("deepseek_r1", "think_after_end"): ("r", "c<think>d"),
    ("deepseek_r1", "reopen"): ("a", "b<think>c</think>d"),
    ("deepseek_r1", "ws_between_spans"): ("a \n", "b<think>c</think>d"),
    # vLLM: no response header → all content, thought-process header included (its streaming disagrees).
    ("granite", "truncated"): (" step one, step two", None),
    ("granite", "truncated_partial_header"): (" a Here is my resp", None),
    # vLLM's regex finds the header anywhere and drops the text before it; its streaming does not.
    ("granite", "header_mid_text"): (None, GRANITE["header_mid_text"]),
}

PROMPTS = {
    "qwen_open": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n",
    "qwen_closed": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "qwen_bare": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "qwen_history": (
        "<|im_start|>assistant\n<think>x</think>y<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "qwen_tool_history": "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<tool_call>",
    "glm_open": "[gMASK]<sop><|user|>\nhi<|assistant|>\n<think>",
    "glm_closed": "[gMASK]<sop><|user|>\nhi<|assistant|>\n<think></think>",
    "glm_bare": "[gMASK]<sop><|user|>\nhi<|assistant|>",
    "mistral_plain": "<s>[INST]hi[/INST]",
    "mistral_closed": "<s>[INST]hi[/INST][THINK]x[/THINK]",
    "mistral_open": "<s>[INST]hi[/INST][THINK]",
    "empty": "",
}
PROMPT_CASES: list[tuple[str, str, dict[str, Any]]] = [
    *((p, n, {}) for p in ("deepseek_r1", "qwen3", "glm45", "mistral", "granite") for n in PROMPTS),
    *(("qwen3", n, {"enable_thinking": False}) for n in PROMPTS),
    *(("glm45", n, {"thinking": False}) for n in PROMPTS),
]


def ids(text: str) -> list[int]:
    return TOK.encode(text, add_special_tokens=False)


def make(parser: str, kwargs: dict[str, Any]):
    return reasoning_parser_class(parser)(TOK, kwargs)


def case_id(case: tuple[Any, ...]) -> str:
    return f"{case[0]}-{case[1]}" + (
        "-" + ",".join(f"{k}={v}" for k, v in case[3].items()) if case[3] else ""
    )


def _kw(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"chat_template_kwargs": kwargs} if kwargs else {}


@pytest.fixture(scope="module")
def vllm() -> dict[str, Any]:
    """Every vLLM answer the module needs, from one oracle run."""
    parse_cases = [{"op": "reasoning", "parser": p, "text": t, **_kw(k)} for p, _, t, k in CASES]
    count_cases = [{"op": "count_reasoning", "parser": p, "ids": ids(t), **_kw(k)} for p, _, t, k in CASES]
    end_cases = [
        {"op": "reasoning_end", "parser": p, "ids": ids(PROMPTS[n]), **_kw(k)} for p, n, k in PROMPT_CASES
    ]
    answers = vllm_results([*parse_cases, *count_cases, *end_cases], TOKENS)
    for a in answers:
        assert not (isinstance(a, dict) and "error" in a), a
    n = len(CASES)
    return {
        "parse": {(*c[:2], repr(c[3])): a for c, a in zip(CASES, answers[:n], strict=True)},
        "count": {(*c[:2], repr(c[3])): a for c, a in zip(CASES, answers[n : 2 * n], strict=True)},
        "end": {(p, nm, repr(k)): a for (p, nm, k), a in zip(PROMPT_CASES, answers[2 * n :], strict=True)},
    }


# -- vLLM parity -----------------------------------------------------------------------------------------


@pytest.mark.real_engine
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_parse_equals_vllm(case: tuple[str, str, str, dict[str, Any]], vllm: dict[str, Any]) -> None:
    parser, name, text, kwargs = case
    theirs = vllm["parse"][(parser, name, repr(kwargs))]
    ours = make(parser, kwargs).parse(text)
    if (parser, name) in DEVIATIONS:
        assert ours == DEVIATIONS[(parser, name)]
        assert (theirs["reasoning"], theirs["content"]) != ours  # still a deviation
    else:
        assert ours == (theirs["reasoning"], theirs["content"])


@pytest.mark.real_engine
def test_deviation_vllm_answers_are_as_documented(vllm: dict[str, Any]) -> None:
    """What vLLM says on the deviation cases (the claims in the module docstrings)."""
    got = {k: vllm["parse"][(*k, "{}")] for k in DEVIATIONS}
    assert got[("deepseek_r1", "text_before_think")] == {"reasoning": "r", "content": "c"}
    assert got[("deepseek_r1", "think_after_end")] == {"reasoning": "d", "content": None}
    assert got[("granite", "truncated")] == {"reasoning": None, "content": GRANITE["truncated"]}
    assert got[("granite", "header_mid_text")] == {"reasoning": " a ", "content": " b"}


@pytest.mark.real_engine
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_count_reasoning_tokens_equals_vllm(
    case: tuple[str, str, str, dict[str, Any]], vllm: dict[str, Any]
) -> None:
    parser, name, text, kwargs = case
    theirs = vllm["count"][(parser, name, repr(kwargs))]
    out = ids(text)
    ours = make(parser, kwargs).count_reasoning_tokens(out)
    think, end = TOK.token_to_id("<think>"), TOK.token_to_id("</think>")
    if parser == "deepseek_r1" and not (out and out[0] == think):
        # Deliberate deviation: vLLM counts only tokens after a <think> id, so R1's usual output (the
        # template opened <think>) counts 0. We count what parse() calls reasoning: up to the first
        # </think> (minus a first <think>), or everything when there is none.
        stop = out.index(end) if end in out else len(out)
        assert ours == stop - (think in out[:stop])
        if name == "template_opened":
            assert theirs == 0 < ours
    else:
        assert ours == theirs


@pytest.mark.real_engine
@pytest.mark.parametrize("case", PROMPT_CASES, ids=lambda c: f"{c[0]}-{c[1]}" + ("-off" if c[2] else ""))
def test_reasoning_ended_in_prompt_equals_vllm(
    case: tuple[str, str, dict[str, Any]], vllm: dict[str, Any]
) -> None:
    parser, name, kwargs = case
    p = make(parser, kwargs)
    p.start(ids(PROMPTS[name]))
    assert p.reasoning_ended_in_prompt() is vllm["end"][(parser, name, repr(kwargs))]


# -- our own behaviour (no engine needed) ----------------------------------------------------------------


def _norm(pair: tuple[str | None, str | None]) -> tuple[str | None, str | None]:
    # merge() cannot tell "" from None (an empty side sends no event); parse() follows vLLM there.
    return pair[0] or None, pair[1] or None


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_chunking_merges_to_parse(case: tuple[str, str, str, dict[str, Any]]) -> None:
    parser, _, text, kwargs = case
    want = _norm(make(parser, kwargs).parse(text))
    for pieces in [*chunkings(text), token_chunkings(MODEL, text)]:
        p = make(parser, kwargs)
        events = [e for piece in pieces for e in p.feed(piece)] + p.finish()
        assert all(e.text for e in events), pieces
        assert merge(events) == want, pieces


def test_prompt_that_closed_reasoning_makes_everything_content() -> None:
    # Deliberate deviation from vLLM's non-streaming path (which ignores the prompt; its streaming path
    # does this): the template closed <think>, so markers in the output are content too.
    for parser, prompt in (("deepseek_r1", "qwen_closed"), ("qwen3", "qwen_closed"), ("glm45", "glm_closed")):
        p = make(parser, {})
        p.start(ids(PROMPTS[prompt]))
        assert p.reasoning_ended_in_prompt()
        out = "plain</think>answer"
        assert p.parse(out) == (None, out)
        assert p.count_reasoning_tokens(ids(out)) == 0
    p = make("qwen3", {})
    p.start(ids(PROMPTS["qwen_open"]))
    assert not p.reasoning_ended_in_prompt()
    assert p.parse("r</think>c") == ("r", "c")


def test_reasoning_streams_before_the_end_marker() -> None:
    """Held back is only what may still become a marker; the rest streams at once."""
    p = make("qwen3", {})
    assert merge(p.feed("abc </th")) == ("abc ", None)
    assert merge(p.feed("ink>x")) == (None, "x")
    g = make("glm45", {})
    assert merge(g.feed("abc  ")) == ("abc", None)  # trailing whitespace waits (vLLM strips it)
    assert merge(g.feed(" d")) == ("   d", None)
    r = make("granite", {})
    assert merge(r.feed("Here is my thought process: ab Here is")) == (" ab ", None)
    assert merge(r.feed(" my response: c")) == (None, " c")


def test_mistral_without_think_token_is_all_content(tmp_path: Any) -> None:
    model = marker_model(["[TOOL_CALLS]", "[ARGS]"], dst=tmp_path / "m")
    p = reasoning_parser_class("mistral")(Tokenizer.from_pretrained(model), None)
    assert p.reasoning_ended_in_prompt()
    assert p.parse("[THINK]a[/THINK]b") == (None, "[THINK]a[/THINK]b")
    assert p.parse("") == (None, "")


# -- markers as special tokens (as in real Qwen/GLM/Mistral vocabularies) ---------------------------------

SPECIAL_MODEL = marker_model(TOKENS, special=True)
SPECIAL_TOK = Tokenizer.from_pretrained(SPECIAL_MODEL)
SPECIAL_TEXTS = {
    "turn_tokens": "<think>a<|user|>b</think>c<|im_end|>d</s>",
    "mistral": "[THINK]a<|user|>[/THINK]c</s>",
    "tool_in_reasoning": "<think>r " + CALL,
    "reopen": "a</think>b<think>c</think>d",
}
SPECIAL_CASES = [(p, n) for p in ("deepseek_r1", "qwen3", "glm45", "mistral") for n in SPECIAL_TEXTS]


@pytest.fixture(scope="module")
def vllm_special() -> list[Any]:
    out = [SPECIAL_TOK.encode(SPECIAL_TEXTS[n], add_special_tokens=False) for _, n in SPECIAL_CASES]
    cases = [{"op": "reasoning", "parser": p, "text": SPECIAL_TEXTS[n]} for p, n in SPECIAL_CASES]
    cases += [
        {"op": "count_reasoning", "parser": p, "ids": i} for (p, _), i in zip(SPECIAL_CASES, out, strict=True)
    ]
    answers = vllm_results(cases, TOKENS, special=True)
    n = len(SPECIAL_CASES)
    return list(zip(answers[:n], answers[n:], strict=True))


@pytest.mark.real_engine
def test_special_token_markers_equal_vllm(vllm_special: list[Any]) -> None:
    for (parser, name), (theirs, their_count) in zip(SPECIAL_CASES, vllm_special, strict=True):
        p = reasoning_parser_class(parser)(SPECIAL_TOK, None)
        if (parser, name) in DEVIATIONS:  # deepseek_r1 "reopen": see DEVIATIONS
            continue
        assert p.parse(SPECIAL_TEXTS[name]) == (theirs["reasoning"], theirs["content"]), (parser, name)
        out = SPECIAL_TOK.encode(SPECIAL_TEXTS[name], add_special_tokens=False)
        if parser != "deepseek_r1" or out[0] == SPECIAL_TOK.token_to_id("<think>"):
            assert p.count_reasoning_tokens(out) == their_count, (parser, name)
