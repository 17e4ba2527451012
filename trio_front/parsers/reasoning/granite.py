"""IBM Granite 3.x reasoning: plain-text headers ``Here is my thought process:`` … ``Here is my
response:`` (``Here's`` also accepted), as vLLM 0.32's ``GraniteReasoningParser`` (registered as
``granite``; the engine-based one is ``granite_thinking_parser``, not ported here).

Non-streamed answer, as vLLM's ``extract_reasoning`` when the output opens with the thought-process
header (optionally after whitespace): the text up to the first response header is reasoning (kept
verbatim, ``""`` when empty), the rest is content (``None`` when empty). Output without the header is
all content, verbatim (``""`` for an empty output). vLLM never counts reasoning tokens for this parser
(``0``) and never reports reasoning as ended in the prompt; nor do we.

Deliberate deviations (vLLM's non-streaming regex cannot be streamed without holding all reasoning):

* an output cut off after the thought-process header but before the response header (max_tokens) is
  reasoning here; vLLM's non-streaming answer makes it all content, header included. vLLM's own
  streaming treats it as reasoning, as we do.
* the thought-process header counts only at the start of the output, as in vLLM's streaming; vLLM's
  non-streaming regex finds it anywhere and discards the text before it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from trio_front.text.tokenizer import Tokenizer

from ..tools.base import partial_marker_len
from .base import Content, Reasoning, ReasoningEvent, ReasoningParser

THINK_STARTS = ("Here's my thought process:", "Here is my thought process:")
RESPONSE_STARTS = ("Here's my response:", "Here is my response:")


class _State(enum.Enum):
    START = "start"  # nothing but (maybe) whitespace and a prefix of a thought-process header yet
    REASONING = "reasoning"
    CONTENT = "content"


class GraniteReasoningParser(ReasoningParser):
    name = "granite"

    def __init__(self, tokenizer: Tokenizer, chat_template_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__(tokenizer, chat_template_kwargs)
        self._state = _State.START
        self._held = ""
        self._saw_header = False

    def reasoning_ended_in_prompt(self) -> bool:
        return False

    def count_reasoning_tokens(self, output_ids: Sequence[int]) -> int:
        return 0

    def feed(self, text: str) -> list[ReasoningEvent]:
        out: list[ReasoningEvent] = []
        if not self._held and self._state is not _State.START and "H" not in text:
            # No header can start in this delta: the common case, kept cheap.
            if text:
                out.append(Reasoning(text) if self._state is _State.REASONING else Content(text))
            return out
        buf = self._held + text
        self._held = ""
        if self._state is _State.START:
            body = buf.lstrip()
            header = next((h for h in THINK_STARTS if body.startswith(h)), None)
            if header is not None:
                self._state, self._saw_header = _State.REASONING, True
                buf = body[len(header) :]  # the whitespace before the header goes, as vLLM's regex does
            elif any(h.startswith(body) for h in THINK_STARTS):
                self._held = buf  # still may become the header
                return out
            else:
                self._state = _State.CONTENT
        if self._state is _State.REASONING:
            hits = [(at, h) for h in RESPONSE_STARTS if (at := buf.find(h)) >= 0]
            if hits:
                at, header = min(hits)
                if at:
                    out.append(Reasoning(buf[:at]))
                self._state = _State.CONTENT
                buf = buf[at + len(header) :]
            else:
                hold = max(partial_marker_len(buf, h) for h in RESPONSE_STARTS)
                self._held = buf[len(buf) - hold :] if hold else ""
                if len(buf) > hold:
                    out.append(Reasoning(buf[: len(buf) - hold]))
                return out
        if buf:
            out.append(Content(buf))
        return out

    def finish(self) -> list[ReasoningEvent]:
        held, self._held = self._held, ""
        if not held:
            return []
        return [Reasoning(held) if self._state is _State.REASONING else Content(held)]

    def parse(self, text: str) -> tuple[str | None, str | None]:
        reasoning, content = super().parse(text)
        # vLLM: a header pair gives (reasoning as matched, content or None); else the output verbatim.
        return (reasoning or "", content) if self._saw_header else (None, text)
