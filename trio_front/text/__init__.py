"""Tokens <-> text, identical to vLLM 0.32's frontend: tokenizer, chat templates, incremental
detokenization and stop strings. Knows nothing of sockets, HTTP or the engine; imports only
``tokenizers``, ``jinja2``, ``attrs`` and ``trio`` (never torch, vllm or transformers)."""

from trio_front.text.chat import ChatRenderer, RenderedChat
from trio_front.text.chat_template import ChatTemplateError
from trio_front.text.detokenizer import TextParams, TextStream, Update
from trio_front.text.model_files import ModelFiles, ModelFilesError, load_model_files
from trio_front.text.tokenizer import Tokenizer

__all__ = [
    "ChatRenderer",
    "ChatTemplateError",
    "ModelFiles",
    "ModelFilesError",
    "RenderedChat",
    "TextParams",
    "TextStream",
    "Tokenizer",
    "Update",
    "load_model_files",
]
