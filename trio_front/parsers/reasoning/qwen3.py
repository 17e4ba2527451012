"""Qwen3 reasoning: ``<think>…</think>``, as vLLM 0.32 registers ``qwen3`` (``Qwen3ParserReasoningAdapter``
over the ``Qwen3Parser`` engine grammar, ``vllm/parser/qwen3.py``).

Non-streamed answer, as vLLM's ``extract_reasoning`` (tool parsing skipped):

* the output starts in reasoning; ``</think>`` switches to content; with no ``</think>`` everything is
  reasoning (Qwen3's template may open ``<think>`` in the prompt);
* ``<think>`` inside reasoning and any ``</think>`` inside content are removed; ``<tool_call>`` inside
  reasoning ends it implicitly and stays in the content (for the tool parser);
* the tokenizer's other special tokens (``<|im_end|>``…) are removed; whitespace is kept;
* ``chat_template_kwargs.enable_thinking = False``: the whole output, untouched, is content.

Empty sides are ``None``, except that with thinking disabled the content is the output even when empty.

:meth:`start`: a prompt already past reasoning (the ``enable_thinking=False`` template renders
``<think>\\n\\n</think>\\n\\n``) makes the output all content, as vLLM's streaming path does; vLLM's
non-streaming path ignores the prompt (deliberate deviation, same answer whenever the kwargs say so).
"""

from __future__ import annotations

from collections.abc import Sequence

from ._think import Grammar, MarkerReasoningParser, Rule, State, engine_reasoning_end, special_token_texts

START, END, TOOL_START = "<think>", "</think>", "<tool_call>"
BOUNDARIES = ("<|im_start|>", "<|im_end|>")
# Every terminal of vLLM's qwen3 grammar: special tokens among these are not dropped.
TERMINALS = (
    START,
    END,
    TOOL_START,
    "</tool_call>",
    "<function=",
    "</function>",
    "<parameter=",
    "</parameter>",
)


class Qwen3ReasoningParser(MarkerReasoningParser):
    name = "qwen3"
    needs_special_tokens = True

    def thinking_disabled(self) -> bool:
        # vLLM: ``thinking_enabled = chat_template_kwargs.get("enable_thinking", True)``, used as a bool.
        return not self.chat_template_kwargs.get("enable_thinking", True)

    def grammar(self) -> Grammar:
        return Grammar(
            initial=State.REASONING,
            rules={
                (State.REASONING, START): Rule(State.REASONING),
                (State.REASONING, END): Rule(State.CONTENT),
                (State.REASONING, TOOL_START): Rule(State.CONTENT, keep=True),
                (State.CONTENT, END): Rule(State.CONTENT),
            },
            drop=special_token_texts(self.tokenizer, TERMINALS),
        )

    def reasoning_end_in(self, ids: Sequence[int]) -> bool:
        thinking = not self.thinking_disabled()
        return engine_reasoning_end(
            self.tokenizer,
            ids,
            end_markers=(END, TOOL_START),
            start_marker=START,
            # With thinking on the grammar starts in reasoning, where <think> keeps it open; with it off
            # it starts in content, where <think> has no rule, so the scan just stops there.
            start_opens=thinking,
            boundaries=BOUNDARIES,
            wait_for_reasoning=thinking,
        )
