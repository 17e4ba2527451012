"""Mistral (Magistral) reasoning: ``[THINK]…[/THINK]`` special tokens, as vLLM 0.32 registers
``mistral`` (``MistralParserReasoningAdapter`` over the ``MistralParser`` engine grammar,
``vllm/parser/mistral.py``).

vLLM picks the encoding from the tokenizer: ``[THINK]`` in the vocabulary → special-token markers;
otherwise (a Hugging Face tokenizer without it) no reasoning at all: the whole output is content. (Its
third mode, plain-text ``<think>`` for mistral-common v11 tokenizers, needs a ``MistralTokenizer``, which
this frontend does not load.)

Non-streamed answer, as vLLM's ``extract_reasoning`` (tool parsing skipped):

* the output starts in *content*; ``[THINK]`` opens reasoning (again, after an earlier block), ``[/THINK]``
  closes it; an unclosed block (max_tokens cut) is reasoning to the end;
* ``[THINK]`` inside reasoning and ``[/THINK]`` inside content are removed; ``[TOOL_CALLS]`` inside
  reasoning ends it and stays in the content;
* the tokenizer's other special tokens are removed; the joined reasoning loses trailing whitespace.

Empty sides are ``None``, except that without reasoning support the content is the output even when
empty. :meth:`start`: a prompt that already closed reasoning makes the output all content, as vLLM's
streaming path does (its non-streaming path ignores the prompt; deliberate deviation).
"""

from __future__ import annotations

from collections.abc import Sequence

from ._think import Grammar, MarkerReasoningParser, Rule, State, engine_reasoning_end, special_token_texts

START, END, TOOL_CALLS, ARGS = "[THINK]", "[/THINK]", "[TOOL_CALLS]", "[ARGS]"


class MistralReasoningParser(MarkerReasoningParser):
    name = "mistral"
    needs_special_tokens = True

    def thinking_disabled(self) -> bool:
        return self.tokenizer.token_to_id(START) is None

    def grammar(self) -> Grammar:
        return Grammar(
            initial=State.CONTENT,
            rules={
                (State.CONTENT, START): Rule(State.REASONING),
                (State.CONTENT, END): Rule(State.CONTENT),
                (State.REASONING, START): Rule(State.REASONING),
                (State.REASONING, END): Rule(State.CONTENT),
                (State.REASONING, TOOL_CALLS): Rule(State.CONTENT, keep=True),
            },
            drop=special_token_texts(self.tokenizer, (START, END, TOOL_CALLS, ARGS)),
            rstrip_reasoning=True,
        )

    def reasoning_end_in(self, ids: Sequence[int]) -> bool:
        if self.thinking_disabled():
            return True  # no reasoning grammar: never waits for reasoning
        return engine_reasoning_end(
            self.tokenizer,
            ids,
            end_markers=(END, TOOL_CALLS),
            start_marker=START,
            start_opens=True,
            wait_for_reasoning=True,
        )
