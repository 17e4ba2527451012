"""DeepSeek-R1 reasoning: ``<think>…</think>``, the model starting inside ``<think>`` (its template
opens the block), as vLLM 0.32's ``DeepSeekR1ReasoningParser`` (``BaseThinkingReasoningParser``).

Non-streamed answer, as vLLM's ``extract_reasoning``: the first ``</think>`` splits reasoning from
content; with none, everything is reasoning (a max_tokens cut mid-thought). A first ``<think>`` before
the end marker is removed; later markers are text. Reasoning is a string even when empty (``""``),
content is ``None`` when empty.

Deliberate deviations (vLLM's non-streaming answer cannot be streamed without taking text back):

* vLLM partitions on the *first* ``<think>`` anywhere and throws away what precedes it: ``"a<think>b"``
  → reasoning ``"b"``, and ``"r</think>c<think>d"`` → reasoning ``"d"``, content ``None``. We keep text
  before ``<think>`` as reasoning, and a ``<think>`` after ``</think>`` is content text.
* ``count_reasoning_tokens``: vLLM counts only tokens *between* ``<think>`` and ``</think>`` ids, so the
  usual R1 output (no ``<think>``, the template opened it) counts 0 although ``extract_reasoning``
  reports reasoning. We count the tokens our split calls reasoning.
* :meth:`start`: a prompt that already closed the block (``</think>`` after the last ``<think>``) makes
  the output all content, as vLLM's *streaming* path does (its non-streaming path ignores the prompt).
"""

from __future__ import annotations

from collections.abc import Sequence

from ._think import Grammar, MarkerReasoningParser, Rule, State

START, END = "<think>", "</think>"


class DeepSeekR1ReasoningParser(MarkerReasoningParser):
    name = "deepseek_r1"

    def grammar(self) -> Grammar:
        return Grammar(
            initial=State.REASONING,
            rules={
                (State.REASONING, START): Rule(State.REASONING, once=True),
                (State.REASONING, END): Rule(State.CONTENT),
            },
        )

    def reasoning_end_in(self, ids: Sequence[int]) -> bool:
        # BaseThinkingReasoningParser.is_reasoning_end: the last of the two markers decides.
        start, end = self.tokenizer.token_to_id(START), self.tokenizer.token_to_id(END)
        for token in reversed(ids):
            if token == start:
                return False
            if token == end:
                return True
        return False

    def parse(self, text: str) -> tuple[str | None, str | None]:
        reasoning, content = super().parse(text)
        if self.passthrough:
            return reasoning, content
        return reasoning or "", content
