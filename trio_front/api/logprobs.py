"""Logprobs in OpenAI's two response shapes, from the engine's per-token arrays.

Token strings are each id decoded on its own (special tokens kept), which is what vLLM's frontend shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trio_front.serving.generation import Chunk
from trio_front.text.tokenizer import Tokenizer


def _token(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def completion_logprobs(
    tokenizer: Tokenizer, chunks: Sequence[Chunk], top: int, *, offset: int
) -> dict[str, Any]:
    """``/v1/completions``: ``{"text_offset", "token_logprobs", "tokens", "top_logprobs"}``."""
    tokens: list[str] = []
    token_logprobs: list[float] = []
    top_logprobs: list[dict[str, float]] = []
    text_offset: list[int] = []
    for chunk in chunks:
        lp = chunk.logprobs
        if lp is None:
            continue
        for row_ids, row_lps in zip(lp.token_ids, lp.logprobs, strict=False):
            text = _token(tokenizer, row_ids[0])
            text_offset.append(offset)
            offset += len(text)
            tokens.append(text)
            token_logprobs.append(max(row_lps[0], -9999.0))
            alternatives = {text: max(row_lps[0], -9999.0)}
            for tid, value in zip(row_ids[1 : top + 1], row_lps[1 : top + 1], strict=False):
                alternatives.setdefault(_token(tokenizer, tid), max(value, -9999.0))
            top_logprobs.append(alternatives)
    return {
        "text_offset": text_offset,
        "token_logprobs": token_logprobs,
        "tokens": tokens,
        "top_logprobs": top_logprobs,
    }


def chat_logprobs(tokenizer: Tokenizer, chunks: Sequence[Chunk], top: int) -> dict[str, Any]:
    """``/v1/chat/completions``: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``."""
    content: list[dict[str, Any]] = []
    for chunk in chunks:
        lp = chunk.logprobs
        if lp is None:
            continue
        for row_ids, row_lps in zip(lp.token_ids, lp.logprobs, strict=False):
            text = _token(tokenizer, row_ids[0])
            alternatives = []
            for tid, value in zip(row_ids[1 : top + 1], row_lps[1 : top + 1], strict=False):
                alt = _token(tokenizer, tid)
                alternatives.append(
                    {"token": alt, "logprob": max(value, -9999.0), "bytes": list(alt.encode())}
                )
            content.append(
                {
                    "token": text,
                    "logprob": max(row_lps[0], -9999.0),
                    "bytes": list(text.encode()),
                    "top_logprobs": alternatives,
                }
            )
    return {"content": content}
