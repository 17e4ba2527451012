"""Realtime ``tools`` / ``tool_choice`` → the chat form the assistant layer and chat templates take.

* ``tools``: ``[{"type": "function", "name", "description"?, "parameters"?}]`` →
  ``[{"type": "function", "function": {...}}]``. Another tool type (``mcp``...) is refused naming it;
  an empty list means no tools (OpenAI accepts it; vLLM's chat API would refuse ``[]``).
* ``tool_choice``: ``"auto"`` | ``"none"`` | ``"required"`` | ``{"type": "function", "name"}``;
  ``auto`` / ``none`` without tools mean nothing.

:func:`tool_plan` validates the pair with the assistant layer (``plan_tools``: vLLM's checks), so a bad
combination is an ``error`` event at ``session.update`` / ``response.create``, before any engine request.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from trio_front.assistant import AssistantConfig, ToolPlan, plan_tools
from trio_front.serving.params import ParamError

from .protocol import EventError

FUNCTION_KEYS = ("name", "description", "parameters", "strict")


def check_tools(tools: Any, where: str) -> list[dict[str, Any]]:
    """The client's ``tools`` (Realtime form), checked; ``None`` / ``[]`` → ``[]``."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise EventError("tools must be a list", "invalid_value", param=f"{where}.tools")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise EventError(f"tools[{i}] must be an object", "invalid_value", param=f"{where}.tools")
        if tool.get("type") != "function":
            raise EventError(
                f"tools of type {tool.get('type')!r} are not supported (only 'function' tools)",
                "unsupported_tool_type",
                param=f"{where}.tools[{i}].type",
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise EventError(f"tools[{i}].name must be a non-empty string", "invalid_value",
                             param=f"{where}.tools[{i}].name")  # fmt: skip
    return [dict(t) for t in tools]


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    return [{"type": "function", "function": {k: t[k] for k in FUNCTION_KEYS if k in t}} for t in tools]


def chat_tool_choice(choice: Any, has_tools: bool, where: str) -> Any:
    if choice in (None, "auto", "none"):
        return choice if has_tools else None
    if choice == "required":
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise EventError("tool_choice.name must be a non-empty string", "invalid_value",
                             param=f"{where}.tool_choice.name")  # fmt: skip
        return {"type": "function", "function": {"name": choice["name"]}}
    raise EventError(
        f"tool_choice {choice!r} is not supported: use 'auto', 'none', 'required' or "
        '{"type": "function", "name": ...}',
        "invalid_value",
        param=f"{where}.tool_choice",
    )


def tool_plan(tools: list[dict[str, Any]], choice: Any, config: AssistantConfig, where: str) -> ToolPlan:
    """Plan the pair as chat completions would; raises :class:`EventError` with vLLM's message."""
    chat = chat_tools(tools)
    try:
        return plan_tools(chat, chat_tool_choice(choice, chat is not None, where), None, config)
    except ParamError as exc:
        param = exc.param or "tools"
        raise EventError(str(exc), "invalid_value", param=f"{where}.{param}") from None
