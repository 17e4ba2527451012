"""``--tool-call-parser`` names → parser classes, imported lazily (a server loads only its own)."""

from __future__ import annotations

from ..registry import load
from .base import ToolParser

#: name → "module:Class" within this package. One line per family (aliases share a class).
TOOL_PARSERS: dict[str, str] = {
    "hermes": "hermes:HermesToolParser",
    "qwen3_json": "hermes:HermesToolParser",
    "llama3_json": "llama_json:Llama3JsonToolParser",
    "llama4_json": "llama_json:Llama4JsonToolParser",
    "mistral": "mistral:MistralToolParser",
    "pythonic": "pythonic:PythonicToolParser",
    "llama4_pythonic": "pythonic:Llama4PythonicToolParser",
    "qwen3_coder": "qwen3_coder:Qwen3CoderToolParser",
    "qwen3_xml": "qwen3_xml:Qwen3XmlToolParser",
    "deepseek_v3": "deepseek_v3:DeepSeekV3ToolParser",
    "deepseek_v31": "deepseek_v31:DeepSeekV31ToolParser",
    "kimi_k2": "kimi_k2:KimiK2ToolParser",
    "glm45": "glm45:Glm45ToolParser",
}


def tool_parser_class(name: str) -> type[ToolParser]:
    """The class for *name*; an unknown name (``UnknownParserError``) lists the known ones."""
    return load(TOOL_PARSERS, name, package=__package__, base=ToolParser, what="tool call parser")
