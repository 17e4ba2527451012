"""What an assistant turn is made of, as it streams (the vocabulary every API translates)."""

from __future__ import annotations

import attrs


@attrs.frozen
class ReasoningDelta:
    text: str


@attrs.frozen
class ContentDelta:
    text: str


@attrs.frozen
class ToolCallStarted:
    index: int  # 0-based, in the order calls appear
    id: str
    name: str


@attrs.frozen
class ToolCallArgumentsDelta:
    index: int
    delta: str


@attrs.frozen
class ToolCallDone:
    index: int
    id: str
    name: str
    arguments: str  # the whole JSON arguments string


AssistantEvent = ReasoningDelta | ContentDelta | ToolCallStarted | ToolCallArgumentsDelta | ToolCallDone
