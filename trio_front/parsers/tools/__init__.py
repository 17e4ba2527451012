"""Tool-call parsers: one module per model family, registered in ``registry.py``."""

from ..registry import UnknownParserError
from .base import Content, Parsed, ToolCall, ToolEvent, ToolParser
from .registry import TOOL_PARSERS, tool_parser_class

__all__ = [
    "TOOL_PARSERS", "Content", "Parsed", "ToolCall", "ToolEvent", "ToolParser", "UnknownParserError",
    "tool_parser_class",
]  # fmt: skip
