"""The tool-call parser contract (one per request, inside its scope; no I/O).

A parser is fed the *content* text of a generation (after any reasoning was split off) in arbitrary
pieces and returns ordered events:

* :class:`Content` — text for the assistant message's ``content``;
* :class:`ToolCall` — one **complete** call: its function name and its arguments as a JSON string.

A call is emitted only once it is complete (its closing marker was seen, or the output ended with a
well-formed call), so nothing that was streamed is ever taken back: the concatenation of every
``Content`` and the list of every ``ToolCall`` are the same whatever the chunking, and equal the
non-streamed answer (:meth:`ToolParser.parse`). The price is that one call's arguments arrive in one
piece rather than token by token. A parser holds back only text that may still turn into a marker
(e.g. ``"<tool"`` while waiting for ``"<tool_call>"``); at :meth:`finish` anything held back that did not
become a call is released as ``Content``, as vLLM's non-streaming parsers return unparsable output.

Arguments are normalised the way vLLM's non-streaming parsers write them (``json.dumps(obj,
ensure_ascii=False)`` for the JSON families), so ours and vLLM's compare as strings.

Adding a family: one module in this package with a :class:`ToolParser` subclass, and one line in
``registry.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs


@attrs.frozen
class Content:
    text: str


@attrs.frozen
class ToolCall:
    name: str
    arguments: str  # a JSON object, serialised
    #: A call id the format dictates (kimi_k2's ``functions.<name>:<i>``); ``None``: the assistant layer
    #: makes one (``chatcmpl-tool-<hex>``).
    id: str | None = None


ToolEvent = Content | ToolCall


@attrs.frozen
class Parsed:
    """The non-streamed result: ``content`` is ``None`` when there was none (vLLM's convention)."""

    content: str | None
    calls: tuple[ToolCall, ...]


class ToolParser(abc.ABC):
    """Base class of a model family's tool-call format. Subclasses implement :meth:`feed` and
    :meth:`finish`; they may read the request's ``tools`` (OpenAI shape, ``{"type": "function",
    "function": {"name", "parameters", ...}}``) to type parameters, as vLLM's XML-style parsers do."""

    #: The name(s) ``--tool-call-parser`` accepts; set by the registry.
    name: ClassVar[str] = ""
    #: The format's markers are special tokens: the request must decode with
    #: ``skip_special_tokens=False`` (vLLM's ``adjust_request`` does the same for these families).
    needs_special_tokens: ClassVar[bool] = False

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None) -> None:
        self.tools: list[Mapping[str, Any]] = list(tools or [])

    @abc.abstractmethod
    def feed(self, text: str) -> list[ToolEvent]:
        """Consume the next piece of content text; return the events it completes (maybe none)."""

    @abc.abstractmethod
    def finish(self) -> list[ToolEvent]:
        """The output ended: release what is held back (a final call, or text as ``Content``)."""

    def parse(self, text: str) -> Parsed:
        """The non-streamed answer for a whole output (feed everything, then finish)."""
        return merge([*self.feed(text), *self.finish()])

    # Helpers for subclasses -------------------------------------------------------------------------

    def tool_schema(self, name: str) -> Mapping[str, Any] | None:
        """The ``parameters`` JSON schema of the request's tool *name*, if the request declared it."""
        for tool in self.tools:
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if isinstance(function, Mapping) and function.get("name") == name:
                params = function.get("parameters")
                return params if isinstance(params, Mapping) else None
        return None


def merge(events: Sequence[ToolEvent]) -> Parsed:
    """Assemble events as a client assembles a stream."""
    text = "".join(e.text for e in events if isinstance(e, Content))
    calls = tuple(e for e in events if isinstance(e, ToolCall))
    return Parsed(text or None, calls)


def partial_marker_len(text: str, marker: str) -> int:
    """Length of the longest suffix of *text* that is a proper prefix of *marker* (what to hold back)."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
