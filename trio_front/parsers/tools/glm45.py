"""GLM-4.5/4.7 tool calls (``--tool-call-parser glm45``; vLLM 0.32 maps it to ``Glm47MoeModelToolParser``)::

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    </tool_call>

Contract (vLLM 0.32's engine grammar, see ``_engine.py`` for content and streaming): the name is the
text from ``<tool_call>`` to the first ``<arg_key>`` (or ``</tool_call>``), stripped; when the request
declares tools, a call to an undeclared name is dropped. Arguments are the complete
``<arg_key>K</arg_key><arg_value>V</arg_value>`` pairs (key stripped, value verbatim) as strings,
typed by the tool's parameter schema (``_schema.py``). A call left open when the output ends is
emitted with the pairs completed so far, as vLLM does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from ._engine import ARG, ARGS, CONTENT, END, NAME, REASONING, START, EngineToolParser
from ._schema import fix_arg_types
from .base import ToolCall

_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


class Glm45ToolParser(EngineToolParser):
    needs_special_tokens = True
    MARKERS = {
        "<think>": "THINK_START",
        "</think>": "THINK_END",
        "<tool_call>": "TOOL_START",
        "</tool_call>": "TOOL_END",
        "<arg_key>": "ARG_KEY_START",
        "</arg_key>": "ARG_KEY_END",
        "<arg_value>": "ARG_VALUE_START",
        "</arg_value>": "ARG_VALUE_END",
    }
    TRANSITIONS = {
        # vLLM's grammar: <think> in content opens reasoning again (dropped from content) up to
        # </think> or a call; a duplicate </think> is dropped.
        (CONTENT, "THINK_START"): (REASONING, ()),
        (CONTENT, "THINK_END"): (CONTENT, ()),
        (REASONING, "THINK_START"): (REASONING, ()),
        (REASONING, "THINK_END"): (CONTENT, ()),
        (REASONING, "TOOL_START"): (NAME, (START,)),
        (CONTENT, "TOOL_START"): (NAME, (START,)),
        (NAME, "ARG_KEY_START"): (ARGS, (ARG,)),
        (NAME, "TOOL_END"): (CONTENT, (END,)),
        (ARGS, "TOOL_END"): (CONTENT, (END,)),
        **{(ARGS, m): (ARGS, (ARG,)) for m in ("ARG_KEY_START", "ARG_KEY_END", "ARG_VALUE_START")},
        (ARGS, "ARG_VALUE_END"): (ARGS, (ARG,)),
    }

    def build_call(self, name: str, body: str) -> ToolCall | None:
        name = name.strip()
        if not name or (self.tools and not self._declared(name)):
            return None
        args = (
            json.dumps({m[1].strip(): m[2] for m in _PAIR.finditer(body)}, ensure_ascii=False)
            if body.strip()
            else "{}"
        )
        return ToolCall(name, fix_arg_types(args, self.tool_schema(name)))

    def _declared(self, name: str) -> bool:
        for tool in self.tools:
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if isinstance(function, Mapping) and function.get("name") == name:
                return True
        return False
