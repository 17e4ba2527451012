"""Qwen3-Coder XML tool calls (``--tool-call-parser qwen3_coder``; vLLM 0.32 ``Qwen3Parser``)::

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

Contract (vLLM 0.32's engine grammar, see ``_engine.py`` for content and streaming): a call starts at
``<tool_call>`` or at a bare ``<function=`` in content; the name runs to the first ``>``; the body to
``</function>`` (several ``<function=`` blocks may share one ``<tool_call>``). Parameters are
``<parameter=NAME>VALUE</parameter>`` (a value may also end at the next ``<parameter=``); one
leading and one trailing newline are trimmed; a parameter left unclosed at ``</function>`` is dropped.
Values are strings typed by the tool's declared parameter schema (``_schema.py``), serialised with
``json.dumps(ensure_ascii=False)``. A call left open when the output ends (``max_tokens``) is
emitted with the parameters completed so far, as vLLM does. Text inside ``<tool_call>`` but outside
``<function=…>`` is dropped.
"""

from __future__ import annotations

import json
import re

from ._engine import ARG, ARGS, BETWEEN, CONTENT, END, NAME, PREAMBLE, START, EngineToolParser
from ._schema import fix_arg_types
from .base import ToolCall

_PARAM = re.compile(
    r"<\s*parameter\s*=\s*([^>]*)>(.*?)(?:<\s*/\s*parameter\s*>|(?=<\s*parameter\s*=))", re.DOTALL
)


def _trim_newline(value: str) -> str:
    # The chat template puts the value on its own line.
    return value.removeprefix("\n").removesuffix("\n")


def parameters_json(body: str) -> str:
    """The raw ``<parameter=…>`` body as a JSON object of strings (later duplicates win)."""
    return json.dumps({m[1]: _trim_newline(m[2]) for m in _PARAM.finditer(body)}, ensure_ascii=False)


class Qwen3CoderToolParser(EngineToolParser):
    needs_special_tokens = True
    MARKERS = {
        "<think>": "THINK_START",
        "</think>": "THINK_END",
        "<tool_call>": "TOOL_START",
        "</tool_call>": "TOOL_END",
        "<function=": "FUNC_PREFIX",
        "</function>": "FUNC_END",
        "<parameter=": "PARAM_START",
        "</parameter>": "PARAM_END",
        ">": "CLOSE_ANGLE",
    }
    TRANSITIONS = {
        (CONTENT, "THINK_END"): (CONTENT, ()),  # a duplicate reasoning end: dropped, as vLLM does
        (CONTENT, "TOOL_START"): (PREAMBLE, (START,)),
        (CONTENT, "FUNC_PREFIX"): (NAME, (START,)),  # a call without its <tool_call> wrapper
        (PREAMBLE, "TOOL_END"): (CONTENT, (END,)),
        (PREAMBLE, "FUNC_PREFIX"): (NAME, ()),
        (NAME, "CLOSE_ANGLE"): (ARGS, ()),
        (NAME, "FUNC_END"): (BETWEEN, (END,)),
        (ARGS, "FUNC_END"): (BETWEEN, (END,)),
        (ARGS, "PARAM_START"): (ARGS, (ARG,)),
        (ARGS, "PARAM_END"): (ARGS, (ARG,)),
        (BETWEEN, "TOOL_END"): (CONTENT, ()),
        (BETWEEN, "TOOL_START"): (PREAMBLE, (START,)),
        (BETWEEN, "FUNC_PREFIX"): (NAME, (START,)),
    }

    def build_call(self, name: str, body: str) -> ToolCall | None:
        name = name.strip()
        if not name:
            return None
        args = parameters_json(body) if body.strip() else "{}"
        return ToolCall(name, fix_arg_types(args, self.tool_schema(name)))
