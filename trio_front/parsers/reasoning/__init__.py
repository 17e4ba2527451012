"""Reasoning parsers: one module per model family, registered in ``registry.py``."""

from .base import Content, Reasoning, ReasoningEvent, ReasoningParser
from .registry import REASONING_PARSERS, reasoning_parser_class

__all__ = [
    "REASONING_PARSERS", "Content", "Reasoning", "ReasoningEvent", "ReasoningParser",
    "reasoning_parser_class",
]  # fmt: skip
