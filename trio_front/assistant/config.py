"""Server-wide assistant options: vLLM's ``--enable-auto-tool-choice``, ``--tool-call-parser``,
``--reasoning-parser`` and ``--exclude-tools-when-tool-choice-none``, checked once at start-up."""

from __future__ import annotations

import attrs

from trio_front.parsers.reasoning import ReasoningParser, reasoning_parser_class
from trio_front.parsers.tools import ToolParser, tool_parser_class


@attrs.frozen
class AssistantConfig:
    enable_auto_tool_choice: bool = False
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    exclude_tools_when_tool_choice_none: bool = False
    tool_parser_cls: type[ToolParser] | None = attrs.field(init=False, default=None)
    reasoning_parser_cls: type[ReasoningParser] | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        """Resolve the parser names now: an unknown name is a start-up error listing the known ones."""
        if self.enable_auto_tool_choice and not self.tool_call_parser:
            raise ValueError("--enable-auto-tool-choice requires --tool-call-parser")
        if self.tool_call_parser:
            object.__setattr__(self, "tool_parser_cls", tool_parser_class(self.tool_call_parser))
        if self.reasoning_parser:
            object.__setattr__(self, "reasoning_parser_cls", reasoning_parser_class(self.reasoning_parser))
