"""One generation's text → assistant events, for every API (chat, Responses, Realtime, ...).

``tools.py`` validates a request's ``tools`` / ``tool_choice`` and plans how calls are obtained (a
model-family parser, or a grammar for ``required`` / named choice); ``output.py`` drives the reasoning
and tool parsers over the text deltas and yields :mod:`events`. A protocol module consumes the events and
speaks its own wire shape; it never parses model output itself.
"""

from .config import AssistantConfig
from .events import (
    AssistantEvent,
    ContentDelta,
    ReasoningDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
)
from .output import AssistantOutput, AssistantResult
from .tools import ToolPlan, plan_tools

__all__ = [
    "AssistantConfig", "AssistantEvent", "AssistantOutput", "AssistantResult", "ContentDelta",
    "ReasoningDelta", "ToolCallArgumentsDelta", "ToolCallDone", "ToolCallStarted", "ToolPlan", "plan_tools",
]  # fmt: skip
