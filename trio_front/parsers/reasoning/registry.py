"""``--reasoning-parser`` names → parser classes, imported lazily."""

from __future__ import annotations

from ..registry import load
from .base import ReasoningParser

REASONING_PARSERS: dict[str, str] = {
    "deepseek_r1": "deepseek_r1:DeepSeekR1ReasoningParser",
    "qwen3": "qwen3:Qwen3ReasoningParser",
    "glm45": "glm45:Glm45ReasoningParser",
    "mistral": "mistral:MistralReasoningParser",
    "granite": "granite:GraniteReasoningParser",
}


def reasoning_parser_class(name: str) -> type[ReasoningParser]:
    return load(REASONING_PARSERS, name, package=__package__, base=ReasoningParser, what="reasoning parser")
