"""Kimi-K2 tool calls (``--tool-call-parser kimi_k2``; vLLM 0.32 ``KimiK2Parser``)::

    <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>
    {"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>

Contract (vLLM 0.32's engine grammar, see ``_engine.py`` for content and streaming): the header
before ``<|tool_call_argument_begin|>`` is the call id (``functions.<name>:<idx>``, kept as
:attr:`ToolCall.id`); the name is its part before ``:`` without ``functions.``; a header without
``:<digits>`` gives no call. Arguments are the body verbatim (stripped; ``{}`` when empty), re-serialised
only when the tool's parameter schema changes a value's type (``_schema.py``). Once the tool-calls
section opens, no text is content any more (vLLM suppresses text after the section); a call left open
when the output ends is emitted with its body so far, as vLLM does.
"""

from __future__ import annotations

import re

from ._engine import ARGS, BETWEEN, CONTENT, END, NAME, PREAMBLE, START, EngineToolParser
from ._schema import fix_arg_types
from .base import ToolCall

_ID = re.compile(r".+:\d+")


class KimiK2ToolParser(EngineToolParser):
    needs_special_tokens = True
    STRIP_WITH_TOOLS = False
    MARKERS = {
        "<think>": "THINK_START",
        "</think>": "THINK_END",
        "<|tool_calls_section_begin|>": "SECTION_START",
        "<|tool_calls_section_end|>": "SECTION_END",
        "<|tool_call_begin|>": "TOOL_START",
        "<|tool_call_end|>": "TOOL_END",
        "<|tool_call_argument_begin|>": "ARG_START",
    }
    TRANSITIONS = {
        (CONTENT, "THINK_END"): (CONTENT, ()),  # a duplicate reasoning end: dropped, as vLLM does
        (CONTENT, "SECTION_START"): (PREAMBLE, ()),
        (PREAMBLE, "TOOL_START"): (NAME, (START,)),
        (NAME, "ARG_START"): (ARGS, ()),
        (ARGS, "TOOL_END"): (BETWEEN, (END,)),
        (ARGS, "SECTION_END"): (PREAMBLE, (END,)),
        (BETWEEN, "TOOL_START"): (NAME, (START,)),
        (PREAMBLE, "SECTION_END"): (PREAMBLE, ()),
        (BETWEEN, "SECTION_END"): (PREAMBLE, ()),
    }

    def build_call(self, name: str, body: str) -> ToolCall | None:
        m = _ID.match(name.strip())
        if m is None:
            return None
        call_id = m.group().strip()
        fn = call_id.split(":")[0].removeprefix("functions.")
        if not fn:
            return None
        return ToolCall(fn, fix_arg_types(body.strip() or "{}", self.tool_schema(fn)), id=call_id)
