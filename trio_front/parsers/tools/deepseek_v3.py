"""DeepSeek-V3 / R1 tool calls (``--tool-call-parser deepseek_v3``; vLLM 0.32 ``DeepSeekV3ToolParser``)::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
    ```json
    {"city": "Paris"}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>

Contract (vLLM's non-streaming regex parser): content is the text before the first
``<｜tool▁calls▁begin｜>``, verbatim (the whole output when there is none); everything after it is tool
markup and never content. Each ``<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>`` that matches :attr:`CALL`
(one line each for type, name and arguments — the regex has no DOTALL) is a call; name and
arguments are taken verbatim, unparsed. A call that does not match, or is cut off by the end of the
output, is dropped, as vLLM drops it.

Streaming: content is released as it comes, holding back only a possible start of the
``<｜tool▁calls▁begin｜>`` marker; after it, each call is matched as its end marker arrives. (vLLM
matches over the whole output, so a call could in principle span a failed call's end marker; no
realistic output does that.)
"""

from __future__ import annotations

import re
from typing import ClassVar

from .base import Content, ToolCall, ToolEvent, ToolParser, partial_marker_len

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"


class DeepSeekV3ToolParser(ToolParser):
    CALL: ClassVar[re.Pattern[str]] = re.compile(
        r"<｜tool▁call▁begin｜>(?P<type>.*)<｜tool▁sep｜>(?P<name>.*)\n```json\n(?P<args>.*)\n```<｜tool▁call▁end｜>"
    )

    def __init__(self, tools=None) -> None:
        super().__init__(tools)
        self._buf = ""
        self._in_calls = False

    def feed(self, text: str) -> list[ToolEvent]:
        self._buf += text
        if not self._in_calls:
            at = self._buf.find(CALLS_BEGIN)
            if at < 0:
                keep = partial_marker_len(self._buf, CALLS_BEGIN)
                head, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep :]
                return [Content(head)] if head else []
            head, self._buf = self._buf[:at], self._buf[at + len(CALLS_BEGIN) :]
            self._in_calls = True
            out: list[ToolEvent] = [Content(head)] if head else []
            return out + self._calls()
        return self._calls()

    def _calls(self) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        while (at := self._buf.find(CALL_END)) >= 0:
            segment, self._buf = self._buf[: at + len(CALL_END)], self._buf[at + len(CALL_END) :]
            m = self.CALL.search(segment)
            if m is not None:
                out.append(ToolCall(m["name"], m["args"]))
        return out

    def finish(self) -> list[ToolEvent]:
        rest, self._buf = self._buf, ""
        # Before the calls marker, held text is content; after it, an unfinished call is dropped.
        return [Content(rest)] if rest and not self._in_calls else []
