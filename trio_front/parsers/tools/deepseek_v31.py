"""DeepSeek-V3.1 tool calls (``--tool-call-parser deepseek_v31``; vLLM 0.32 ``DeepSeekV31ToolParser``)::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>
    <｜tool▁calls▁end｜>

(one line in the model's output).

Contract: as ``deepseek_v3`` (content before ``<｜tool▁calls▁begin｜>``, verbatim name and arguments,
unmatched or cut-off calls dropped), with V3.1's shorter call: name up to the first
``<｜tool▁sep｜>``, arguments up to ``<｜tool▁call▁end｜>``, all on one line.
"""

from __future__ import annotations

import re

from .deepseek_v3 import DeepSeekV3ToolParser


class DeepSeekV31ToolParser(DeepSeekV3ToolParser):
    CALL = re.compile(r"<｜tool▁call▁begin｜>(?P<name>.*?)<｜tool▁sep｜>(?P<args>.*?)<｜tool▁call▁end｜>")
