"""GLM-4.5/4.6/4.7 reasoning: ``<think>…</think>``, as vLLM 0.32 registers ``glm45``
(``Glm47MoeParserReasoningAdapter`` over the ``Glm47MoeParser`` engine grammar, ``vllm/parser/glm47_moe.py``).

Non-streamed answer, as vLLM's ``extract_reasoning`` (tool parsing skipped):

* the output starts in reasoning; ``</think>`` switches to content; with none, everything is reasoning;
* ``<think>`` inside reasoning and ``</think>`` inside content are removed, and ``<think>`` inside
  content *re-opens* reasoning (the reasoning side is all reasoning spans joined);
* ``<tool_call>`` inside reasoning ends it implicitly and stays in the content;
* the tokenizer's other special tokens are removed; the joined reasoning loses its trailing whitespace;
* thinking off (``chat_template_kwargs`` ``thinking`` or ``enable_thinking`` given and neither truthy):
  the whole output, untouched, is content. (vLLM ignores the switch for GLM-5.3's always-thinking
  template; we do not detect that template.)

Empty sides are ``None``, except that with thinking off the content is the output even when empty.
:meth:`start`: a prompt already past reasoning makes the output all content, as vLLM's streaming path
does (its non-streaming path ignores the prompt; deliberate deviation).
"""

from __future__ import annotations

from collections.abc import Sequence

from ._think import Grammar, MarkerReasoningParser, Rule, State, engine_reasoning_end, special_token_texts

START, END, TOOL_START = "<think>", "</think>", "<tool_call>"
BOUNDARIES = ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
TERMINALS = (START, END, TOOL_START, "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")


class Glm45ReasoningParser(MarkerReasoningParser):
    name = "glm45"
    needs_special_tokens = True

    def thinking_disabled(self) -> bool:
        thinking = self.chat_template_kwargs.get("thinking")
        enable = self.chat_template_kwargs.get("enable_thinking")
        return not (thinking is None and enable is None) and not (bool(thinking) or bool(enable))

    def grammar(self) -> Grammar:
        return Grammar(
            initial=State.REASONING,
            rules={
                (State.REASONING, START): Rule(State.REASONING),
                (State.REASONING, END): Rule(State.CONTENT),
                (State.REASONING, TOOL_START): Rule(State.CONTENT, keep=True),
                (State.CONTENT, START): Rule(State.REASONING),
                (State.CONTENT, END): Rule(State.CONTENT),
            },
            drop=special_token_texts(self.tokenizer, TERMINALS),
            rstrip_reasoning=True,
        )

    def reasoning_end_in(self, ids: Sequence[int]) -> bool:
        thinking = not self.thinking_disabled()
        return engine_reasoning_end(
            self.tokenizer,
            ids,
            end_markers=(END, TOOL_START),
            # Thinking off: the grammar has no think markers at all.
            start_marker=START if thinking else None,
            start_opens=True,
            boundaries=BOUNDARIES,
            wait_for_reasoning=thinking,
        )
