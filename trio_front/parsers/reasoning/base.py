"""The reasoning parser contract (one per request, inside its scope; no I/O).

A reasoning parser splits a generation's text, fed in arbitrary pieces, into :class:`Reasoning` and
:class:`Content` events, in order. As with tool parsers, merging the events of any chunking gives the
same ``(reasoning, content)`` pair as the non-streamed :meth:`ReasoningParser.parse`; that pair follows
vLLM 0.32's **non-streaming** ``extract_reasoning`` for the family (vLLM's own streaming differs from it
in places; we do not copy that). Text that may still become a marker (``"</thi"``) is held back, and
released by :meth:`finish`.

Markers are matched in text, so a tokenizer that splits ``<think>`` into pieces still works. Where vLLM
decides from token ids (does the *prompt* already close the reasoning block? how many output tokens are
reasoning?), :meth:`start` and :meth:`count_reasoning_tokens` use the marker token ids when the marker is
a single token, as vLLM does.

Adding a family: one module in this package with a :class:`ReasoningParser` subclass, one line in
``registry.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from trio_front.text.tokenizer import Tokenizer


@attrs.frozen
class Reasoning:
    text: str


@attrs.frozen
class Content:
    text: str


ReasoningEvent = Reasoning | Content


class ReasoningParser(abc.ABC):
    """Base class of a model family's reasoning format.

    Life of one request: ``parser = Cls(tokenizer, chat_template_kwargs)``; ``parser.start(prompt_ids)``
    once; then :meth:`feed` per text delta and :meth:`finish` at the end.
    """

    name: ClassVar[str] = ""
    #: The reasoning markers are special tokens: decode with ``skip_special_tokens=False``.
    needs_special_tokens: ClassVar[bool] = False

    def __init__(self, tokenizer: Tokenizer, chat_template_kwargs: Mapping[str, Any] | None = None) -> None:
        self.tokenizer = tokenizer
        self.chat_template_kwargs: dict[str, Any] = dict(chat_template_kwargs or {})

    def start(self, prompt_ids: Sequence[int]) -> None:  # noqa: B027 - optional hook
        """Called once with the rendered prompt, before any output (e.g. a template that already closed
        ``<think>`` means the output starts as content). Default: nothing."""

    @abc.abstractmethod
    def reasoning_ended_in_prompt(self) -> bool:
        """vLLM's ``is_reasoning_end(prompt_token_ids)``: sent to the engine as ``reasoning_ended``, so a
        structured-output grammar applies from the first token instead of after reasoning."""

    @abc.abstractmethod
    def feed(self, text: str) -> list[ReasoningEvent]:
        """Consume the next piece of output text; return the events it completes."""

    @abc.abstractmethod
    def finish(self) -> list[ReasoningEvent]:
        """The output ended: release what is held back."""

    @abc.abstractmethod
    def count_reasoning_tokens(self, output_ids: Sequence[int]) -> int:
        """``completion_tokens_details.reasoning_tokens`` for the whole output, as vLLM counts it."""

    def parse(self, text: str) -> tuple[str | None, str | None]:
        """The non-streamed ``(reasoning, content)``; ``None`` for an empty side (vLLM's convention)."""
        return merge([*self.feed(text), *self.finish()])


def merge(events: Sequence[ReasoningEvent]) -> tuple[str | None, str | None]:
    reasoning = "".join(e.text for e in events if isinstance(e, Reasoning))
    content = "".join(e.text for e in events if isinstance(e, Content))
    return reasoning or None, content or None
