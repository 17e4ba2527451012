"""Pythonic tool calls (``pythonic``, ``llama4_pythonic``): the whole output is a Python list of calls,
``[get_weather(city="Paris"), get_time(tz="CET")]``.

The answer follows vLLM 0.32's non-streaming ``PythonicToolParser.extract_tool_calls``: the output
must match vLLM's shape regex at its start *and* ``ast.parse`` to a list of calls whose keyword
arguments are literals (``null``/``true``/``false`` names, ``-1``, tuples and sets as lists, constant
f-strings); positional arguments are ignored; arguments are ``json.dumps(..., ensure_ascii=False)``.
Anything else — text around the list, a truncated list — is content, the whole output.

``llama4_pythonic`` first strips a leading ``<|python_start|>`` and, if it was there, every
``<|python_end|>`` (content then is the stripped text, as in vLLM).

Streaming: an output that does not start with ``[name(`` (or ``<|python_start|>``) is content as soon
as that is clear, passed straight through; one that does is held whole until :meth:`finish`, since
text after the list would still turn it back into content.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from .base import Content, ToolCall, ToolEvent, ToolParser

# vLLM's TOOL_CALL_REGEX (matched at the start of the output). Its nested ``.*`` groups backtrack
# exponentially (3.5 s for one call with eight arguments), so :func:`has_call_shape` decides the same
# language in one pass; a test checks the two agree on many short strings.
VLLM_SHAPE = (
    r"\[([a-zA-Z]+\w*\(([a-zA-Z]+\w*=.*,\s*)*([a-zA-Z]+\w*=.*\s)?\),\s*)*"
    r"([a-zA-Z]+\w*\(([a-zA-Z]+\w*=.*,\s*)*([a-zA-Z]+\w*=.*\s*)?\)\s*)+\]"
)
_CALL = re.compile(r"[a-zA-Z]\w*\(")
_KEYWORD = re.compile(r"[a-zA-Z]\w*=")
_CLOSE = re.compile(r"\)\s*\]")
_END = re.compile(r"\s*\]")
_SPACE = re.compile(r"\s*")
_OPENING = re.compile(r"\[([a-zA-Z]\w*)?")


def has_call_shape(text: str) -> bool:
    """Whether ``re.match(VLLM_SHAPE, text, re.DOTALL)`` succeeds. Reading the regex: after ``[``,
    calls ``name(`` follow; once one starts with ``kw=``, its ``.*`` can absorb anything, so a later
    ``)`` + whitespace + ``]`` decides; an empty call ``name()`` is followed by ``]``, or by ``,`` or
    whitespace and the next call (all ``,`` ones before the first whitespace-separated one)."""
    if not text.startswith("["):
        return False
    i, spaced = 1, False
    while True:
        call = _CALL.match(text, i)
        if call is None:
            return False
        keyword = _KEYWORD.match(text, call.end())
        if keyword is not None:
            return _CLOSE.search(text, keyword.end()) is not None
        if not text.startswith(")", call.end()):
            return False
        i = call.end() + 1
        if _END.match(text, i):
            return True
        if text.startswith(",", i):
            if spaced:
                return False  # the regex has comma-separated calls first, then space-separated ones
            i += 1
        else:
            spaced = True
        i = _SPACE.match(text, i).end()  # type: ignore[union-attr]  # always matches


_NAME_LITERALS = {"null": None, "true": True, "false": False}


class _NotLiteral(Exception):
    pass


def literal(node: ast.expr) -> Any:
    """The JSON value of an argument expression (vLLM's ``get_parameter_value``)."""
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, str | int | float):
            return node.value
        raise _NotLiteral
    if isinstance(node, ast.Dict):
        if not all(isinstance(k, ast.Constant) for k in node.keys):
            raise _NotLiteral
        return {k.value: literal(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[union-attr]
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [literal(v) for v in node.elts]
    if isinstance(node, ast.JoinedStr) and all(isinstance(p, ast.Constant) for p in node.values):
        return "".join(str(p.value) for p in node.values)  # type: ignore[attr-defined]
    if isinstance(node, ast.Name) and node.id in _NAME_LITERALS:
        return _NAME_LITERALS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = literal(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise _NotLiteral


def dotted_name(node: ast.expr) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise _NotLiteral
    parts.append(node.id)
    return ".".join(reversed(parts))


def pythonic_calls(text: str) -> list[ToolCall] | None:
    """The calls of a whole output, or ``None`` where vLLM answers with content."""
    try:
        with warnings.catch_warnings():  # "invalid escape sequence" in model output is not our warning
            warnings.simplefilter("ignore")
            module = ast.parse(text)
    except (SyntaxError, ValueError):  # ValueError: a NUL byte
        return None
    value = getattr(module.body[0], "value", None) if module.body else None
    if not isinstance(value, ast.List) or not all(isinstance(e, ast.Call) for e in value.elts):
        return None
    if not has_call_shape(text):
        return None
    calls = []
    try:
        for call in value.elts:
            assert isinstance(call, ast.Call)
            args = {kw.arg: literal(kw.value) for kw in call.keywords}
            calls.append(ToolCall(dotted_name(call.func), json.dumps(args, ensure_ascii=False)))
    except (_NotLiteral, TypeError, ValueError):  # TypeError: json.dumps of an odd key (``**kw``)
        return None
    return calls


class PythonicToolParser(ToolParser):
    #: Prefixes that make the output a candidate call list.
    starts: ClassVar[tuple[str, ...]] = ("[",)

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(tools)
        self._buf = ""
        self._mode: Literal["undecided", "content", "held"] = "undecided"

    def feed(self, text: str) -> list[ToolEvent]:
        if self._mode == "content":
            return [Content(text)] if text else []
        self._buf += text
        if self._mode == "undecided":
            self._mode = self._decide(self._buf)
            if self._mode == "content":
                out, self._buf = self._buf, ""
                return [Content(out)]
        return []

    def _decide(self, text: str) -> Literal["undecided", "content", "held"]:
        """A call list must open with ``[name(`` (vLLM's regex), so ``[1] See ...`` streams as content
        as soon as its second character arrives."""
        if text.startswith("["):
            m = _OPENING.match(text)
            assert m is not None
            if m.end() == len(text):
                return "undecided"
            return "held" if m.group(1) and text[m.end()] == "(" else "content"
        if any(text.startswith(s) for s in self.starts):
            return "held"
        return "undecided" if any(s.startswith(text) for s in self.starts) else "content"

    def finish(self) -> list[ToolEvent]:
        text, self._buf = self._prepare(self._buf), ""
        if not text:
            return []
        calls = pythonic_calls(text) if self._mode == "held" else None
        return list(calls) if calls else [Content(text)]

    def _prepare(self, text: str) -> str:
        return text


class Llama4PythonicToolParser(PythonicToolParser):
    starts = ("[", "<|python_start|>")

    def _prepare(self, text: str) -> str:
        if text.startswith("<|python_start|>"):
            return text.removeprefix("<|python_start|>").replace("<|python_end|>", "")
        return text
