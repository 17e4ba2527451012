"""The Responses API's flat tool shapes ↔ the chat form the assistant layer and templates take.

* ``tools``: ``{"type": "function", "name", "description"?, "parameters"?, "strict"?}`` →
  ``{"type": "function", "function": {...}}``; any other tool type (``web_search``, ``file_search``,
  ``mcp``, ``custom``...) is a 400 naming it. An empty list means no tools (OpenAI accepts it).
* ``tool_choice``: ``"auto"`` | ``"none"`` | ``"required"`` | ``{"type": "function", "name"}``; ``auto``
  and ``none`` without tools mean nothing (the default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import APIError

FUNCTION_KEYS = ("name", "description", "parameters", "strict")


def chat_tools(tools: Any, param: str = "tools") -> list[dict[str, Any]] | None:
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise APIError(400, "tools must be a list", param=param)
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise APIError(400, f"{param}[{i}] must be an object", param=param)
        kind = tool.get("type")
        if kind != "function":
            raise APIError(
                400, f"tools of type {kind!r} are not supported (only 'function' tools)", param=param
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise APIError(400, f"{param}[{i}].name must be a non-empty string", param=param)
        out.append({"type": "function", "function": {k: tool[k] for k in FUNCTION_KEYS if k in tool}})
    return out


def echo_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The Response object's ``tools`` (OpenAI's FunctionTool fields)."""
    return [
        {
            "type": "function",
            "name": t["function"]["name"],
            "description": t["function"].get("description"),
            "parameters": t["function"].get("parameters"),
            "strict": t["function"].get("strict"),
        }
        for t in tools or ()
    ]


def chat_tool_choice(choice: Any, has_tools: bool, param: str = "tool_choice") -> Any:
    if choice in (None, "auto", "none"):
        return choice if has_tools else None
    if choice == "required":
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise APIError(400, f"{param}.name must be a non-empty string", param=param)
        return {"type": "function", "function": {"name": choice["name"]}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise APIError(
        400,
        f"tool_choice {kind!r} is not supported: use 'auto', 'none', 'required' or "
        '{"type": "function", "name": ...}',
        param=param,
    )
