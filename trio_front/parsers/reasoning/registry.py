"""``--reasoning-parser`` names → parser classes, imported lazily."""

from __future__ import annotations

import importlib

from ..tools.registry import UnknownParserError
from .base import ReasoningParser

REASONING_PARSERS: dict[str, str] = {
    "deepseek_r1": "deepseek_r1:DeepSeekR1ReasoningParser",
    "qwen3": "qwen3:Qwen3ReasoningParser",
    "glm45": "glm45:Glm45ReasoningParser",
    "mistral": "mistral:MistralReasoningParser",
    "granite": "granite:GraniteReasoningParser",
}


def reasoning_parser_class(name: str) -> type[ReasoningParser]:
    target = REASONING_PARSERS.get(name)
    if target is None:
        raise UnknownParserError(
            f"unknown reasoning parser {name!r}; known: {', '.join(sorted(REASONING_PARSERS))}"
        )
    module, cls = target.split(":")
    parser = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
    assert issubclass(parser, ReasoningParser)
    return parser
