"""``--tool-call-parser qwen3_xml``: in vLLM 0.32 the same parser class as ``qwen3_coder``
(``Qwen3EngineToolParser``), so the same format and behaviour (see ``qwen3_coder.py``)."""

from __future__ import annotations

from .qwen3_coder import Qwen3CoderToolParser


class Qwen3XmlToolParser(Qwen3CoderToolParser):
    pass
