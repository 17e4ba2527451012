"""A request's ``tools`` / ``tool_choice`` / ``parallel_tool_calls``: validated as vLLM 0.32 does
(``ChatCompletionRequest.check_tool_usage``, the renderer's parser checks), and planned.

Modes:

* ``none`` — no tools, or ``tool_choice: "none"``: the output is plain content. The tools still reach the
  chat template unless ``--exclude-tools-when-tool-choice-none``.
* ``auto`` — the server's ``--tool-call-parser`` extracts calls from the model's own format. Needs
  ``--enable-auto-tool-choice`` (vLLM's 400 otherwise).
* ``required`` — the output is constrained by a JSON schema admitting exactly a list of
  ``{"name": <one of the tools>, "arguments": <its parameters>}`` objects and nothing else
  (``additionalProperties: false`` on the wrapper, and on argument objects whose schema leaves it open),
  ``maxItems: 1`` without parallel calls; even a model with random weights then yields parseable calls.
  vLLM's own schema (``{name, parameters}``, open wrapper) lets such a model run to ``max_tokens``.
* ``named`` — ``{"type": "function", "function": {"name": N}}``: the output is constrained to N's
  parameters schema (closed the same way) and is the call's arguments.

Deliberate difference from vLLM: ``required`` and named choice work without ``--tool-call-parser`` (they
do not use the model's format at all); vLLM refuses them then.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from trio_front.parsers.tools import ToolParser
from trio_front.serving.params import ParamError

from .config import AssistantConfig

Mode = Literal["none", "auto", "required", "named"]
_USAGE = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'


@attrs.frozen
class ToolPlan:
    mode: Mode
    #: What the chat template sees (``None``: no tools are rendered).
    render_tools: list[dict[str, Any]] | None = None
    #: The named function (mode ``named``).
    name: str | None = None
    parallel: bool = True
    #: The JSON schema the output is constrained to (modes ``required`` and ``named``).
    schema: dict[str, Any] | None = None
    parser_cls: type[ToolParser] | None = None
    tools: list[dict[str, Any]] = attrs.field(factory=list)

    @property
    def needs_special_tokens(self) -> bool:
        return self.mode == "auto" and self.parser_cls is not None and self.parser_cls.needs_special_tokens

    def finish_reason(self, engine_reason: str | None, called: bool) -> str | None:
        """OpenAI's rule: ``tool_calls`` when auto or required produced calls; named keeps ``stop``."""
        if engine_reason == "stop" and called and self.mode in ("auto", "required"):
            return "tool_calls"
        return engine_reason


NO_TOOLS = ToolPlan("none")


def _function(tool: Any, i: int) -> Mapping[str, Any]:
    if not isinstance(tool, Mapping):
        raise ParamError(f"tools[{i}] must be an object", "tools")
    if tool.get("type", "function") != "function":
        raise ParamError(f"tools[{i}].type must be 'function', got {tool.get('type')!r}", "tools")
    function = tool.get("function")
    if not isinstance(function, Mapping):
        raise ParamError(f"tools[{i}].function must be an object", "tools")
    if not isinstance(function.get("name"), str) or not function["name"]:
        raise ParamError(f"tools[{i}].function.name must be a non-empty string", "tools")
    params = function.get("parameters")
    if params is not None and not isinstance(params, Mapping):
        raise ParamError(f"tools[{i}].function.parameters must be a JSON schema object", "tools")
    if "description" in function and not isinstance(function["description"], (str, type(None))):
        raise ParamError(f"tools[{i}].function.description must be a string", "tools")
    return function


def plan_tools(
    tools: Any, tool_choice: Any, parallel_tool_calls: bool | None, config: AssistantConfig
) -> ToolPlan:
    """Validate and plan; raises :class:`ParamError` (a 400) with vLLM's messages."""
    if tools == []:
        raise ParamError(
            "`tools` must not be an empty array. "
            "Either provide at least one tool or omit the field entirely.",
            "tools",
        )
    if tools is not None and not isinstance(tools, list):
        raise ParamError("tools must be a list", "tools")
    functions = [_function(t, i) for i, t in enumerate(tools or [])]
    if tool_choice is None and tools:
        tool_choice = "auto"
    parallel = parallel_tool_calls is not False
    render = [dict(t) for t in tools] if tools else None
    if tool_choice is None or tool_choice == "none":
        if tool_choice == "none" and config.exclude_tools_when_tool_choice_none:
            render = None
        return ToolPlan("none", render, parallel=parallel)
    if not tools:
        raise ParamError("When using `tool_choice`, `tools` must be set.", "tool_choice")
    names = [f["name"] for f in functions]
    if tool_choice == "auto":
        if not config.enable_auto_tool_choice or config.tool_parser_cls is None:
            raise ParamError(
                '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
                "tool_choice",
            )
        return ToolPlan("auto", render, parallel=parallel, parser_cls=config.tool_parser_cls, tools=render)
    if tool_choice == "required":
        schema = _required_schema(functions, parallel)
        return ToolPlan("required", render, parallel=parallel, schema=schema, tools=render)
    if not isinstance(tool_choice, Mapping):
        raise ParamError(
            f"Invalid value for `tool_choice`: {tool_choice}! "
            'Only named tools, "none", "auto" or "required" are supported.',
            "tool_choice",
        )
    function = tool_choice.get("function")
    if tool_choice.get("type", "function") != "function":
        raise ParamError(f"tool_choice.type must be 'function'. {_USAGE}", "tool_choice")
    if not isinstance(function, Mapping):
        raise ParamError(
            f"Invalid value for `function`: `{function}` in `tool_choice`! {_USAGE}", "tool_choice.function"
        )
    if "name" not in function:
        raise ParamError(
            f"Expected field `name` in `function` in `tool_choice`! {_USAGE}", "tool_choice.function.name"
        )
    name = function["name"]
    if not isinstance(name, str) or not name:
        raise ParamError(
            f"Invalid `name` in `function`: `{name}` in `tool_choice`! {_USAGE}", "tool_choice.function.name"
        )
    if name not in names:
        raise ParamError(
            "The tool specified in `tool_choice` does not match any of the specified `tools`", "tool_choice"
        )
    chosen = functions[names.index(name)]
    schema, defs = _arguments_schema(chosen.get("parameters"))
    if defs:
        schema = {**schema, "$defs": defs}
    return ToolPlan("named", render, name=name, parallel=parallel, schema=schema, tools=render)


def _close(schema: dict[str, Any]) -> dict[str, Any]:
    """An object schema that leaves extra keys open gets ``additionalProperties: false``."""
    if schema.get("type") == "object" and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


def _arguments_schema(params: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the arguments schema, its ``$defs``, hoisted so a list of calls can share them)."""
    schema = copy.deepcopy(dict(params)) if params else {"type": "object", "properties": {}}
    defs = schema.pop("$defs", None) or {}
    if not isinstance(defs, dict):
        raise ParamError("`$defs` in a tool's parameters must be an object", "tools")
    return _close(schema), defs


def _required_schema(functions: list[Mapping[str, Any]], parallel: bool) -> dict[str, Any]:
    variants, all_defs = [], {}
    for function in functions:
        arguments, defs = _arguments_schema(function.get("parameters"))
        for key, value in defs.items():
            if key in all_defs and all_defs[key] != value:
                raise ParamError(
                    f"Tool definition '{key}' has multiple schemas, which is not supported.", "tools"
                )
            all_defs[key] = value
        variants.append(
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": [function["name"]]},
                    "arguments": arguments,
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": variants}}
    if not parallel:
        schema["maxItems"] = 1
    if all_defs:
        schema["$defs"] = all_defs
    return schema
