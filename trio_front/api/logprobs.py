"""Logprobs in vLLM 0.32's response shapes, from the engine's per-token arrays.

Contract (each point is what vLLM 0.32's frontend does, so answers are byte-for-byte vLLM's):

* Every position becomes vLLM's ``{token_id: Logprob}`` dict: the sampled (or actual prompt) token first,
  with the engine's rank, then the top-k in order with ranks 1..k. A top-k id equal to the first one keeps
  the first key's place but overwrites its value (``vllm/logprobs.py::append_logprobs_for_next_position``).
* Token strings are ``convert_ids_list_to_tokens`` (each id decoded alone with special tokens kept,
  SentencePiece leading spaces restored) followed by the UTF-8 byte-fallback correction: a string ending
  in U+FFFD is re-decoded after up to 4 preceding sampled (or prompt) ids and becomes the text those bytes
  complete, or ``""`` (``vllm/v1/engine/logprobs.py::_verify_tokens``). That context spans the whole
  request, so a streaming caller passes the same ``context`` list to every call for one choice. A
  position without logprobs (echo's first prompt token) is ``tokenizer.decode(id)`` alone, spaces not
  restored.
* ``return_as_ids`` (``return_tokens_as_token_ids``) shows ``"token_id:<id>"`` instead of token strings;
  chat's ``bytes`` for the chosen token stay those of the decoded string, as in vLLM.
* Values below ``-9999.0`` are shown as ``-9999.0`` in the OpenAI shapes; the raw ``prompt_logprobs``
  field only replaces ``-inf`` (``clamp_prompt_logprobs``).

Pure functions over plain data (no I/O, no checkpoints): cancellation cannot interrupt them. Decoded
strings of single ids are cached per tokenizer (`_TokenText`), so per-token streaming stays cheap.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Final, cast

from trio_front.engine import wire
from trio_front.serving.generation import Chunk
from trio_front.text.tokenizer import Tokenizer

#: OpenAI's stand-in for ``-inf`` (and anything below it) in the logprobs shapes.
FLOOR: Final = -9999.0
_REPLACEMENT: Final = "\ufffd"
#: vLLM's ``_get_sampled_context_ids(max_context=4)``: enough for any UTF-8 sequence.
_MAX_CONTEXT: Final = 4

#: One position: token id -> (logprob, rank, decoded token), in vLLM's key order.
Position = dict[int, tuple[float, int, str]]


def _leading_space_marker(tokenizer: Tokenizer) -> str | None:
    """vLLM's ``get_leading_space_marker``: the Metaspace replacement character, if the pre-tokenizer
    (or one in a Sequence) is Metaspace; only then does ``decode`` strip a leading space."""
    try:
        config = json.loads(tokenizer.backend.to_str())
    except Exception:  # as vLLM: an unreadable config means no marker
        return None
    pre = config.get("pre_tokenizer") or {}
    if pre.get("type") == "Metaspace":
        return pre.get("replacement", "\u2581")
    if pre.get("type") == "Sequence":
        for sub in pre.get("pretokenizers", []):
            if sub.get("type") == "Metaspace":
                return sub.get("replacement", "\u2581")
    return None


def _restore_leading_spaces(raw: str, text: str, marker: str) -> str:
    markers = len(raw) - len(raw.lstrip(marker))
    if markers == 0:
        return text
    missing = markers - (len(text) - len(text.lstrip(" ")))
    return " " * missing + text if missing > 0 else text


class _TokenText:
    """vLLM's token strings for one tokenizer, with the per-id results cached (ids are few, calls many)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        # A proxy: this object is the value of a WeakKeyDictionary keyed by the tokenizer, and must not
        # keep its own key alive.
        self._tokenizer = cast(Tokenizer, weakref.proxy(tokenizer))
        self._marker = _leading_space_marker(tokenizer)
        self._alone: dict[int, str] = {}
        self._listed: dict[int, str] = {}
        #: Ids whose `listed` string ends in U+FFFD (vLLM re-decodes those with context).
        self._partial: set[int] = set()

    def decode(self, ids: list[int]) -> str:
        # transformers' ``decode`` default, which vLLM uses throughout: special tokens kept.
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def alone(self, token_id: int) -> str:
        """``tokenizer.decode(token_id)``: vLLM's string for a position without logprobs."""
        text = self._alone.get(token_id)
        if text is None:
            text = self._alone[token_id] = self.decode([token_id])
        return text

    def listed(self, token_id: int) -> str:
        """One element of ``convert_ids_list_to_tokens``."""
        text = self._listed.get(token_id)
        if text is None:
            text = self.alone(token_id)
            if self._marker is not None:
                raw = self._tokenizer.backend.id_to_token(token_id)
                if raw is not None:  # vLLM would fail on an id outside the vocabulary; keep the decode
                    text = _restore_leading_spaces(raw, text, self._marker)
            self._listed[token_id] = text
            if text.endswith(_REPLACEMENT):
                self._partial.add(token_id)
        return text

    def row(self, ids: Sequence[int], context: Sequence[int]) -> list[str]:
        """``convert_ids_list_to_tokens`` + ``_verify_tokens`` for one position's ids."""
        cache = self._listed
        out = [cache[i] if i in cache else self.listed(i) for i in ids]
        if self._partial.isdisjoint(ids):  # the common case: no incomplete UTF-8 to correct
            return out
        for k, text in enumerate(out):
            if text.endswith(_REPLACEMENT):
                out[k] = self._correct(ids[k], context)
        return out

    def _correct(self, token_id: int, context: Sequence[int]) -> str:
        """``LogprobsProcessor._correct_decoded_token``, step for step."""
        for num in range(1, min(len(context), _MAX_CONTEXT) + 1):
            ctx = list(context[-num:])
            full = self.decode([*ctx, token_id])
            if full.endswith(_REPLACEMENT):
                continue
            # Context ids that were themselves incomplete bytes showed as "", so their text belongs here.
            clean_end = len(ctx)
            for j in range(len(ctx) - 1, -1, -1):
                if self.alone(ctx[j]).endswith(_REPLACEMENT):
                    clean_end = j
                else:
                    break
            prefix = self.decode(ctx[:clean_end]) if clean_end > 0 else ""
            if full.startswith(prefix):
                return full[len(prefix) :]
            common = 0
            for a, b in zip(prefix, full, strict=False):
                if a != b:
                    break
                common += 1
            return full[common:]
        return ""


_TEXTS: weakref.WeakKeyDictionary[Tokenizer, _TokenText] = weakref.WeakKeyDictionary()


def _texts(tokenizer: Tokenizer) -> _TokenText:
    texts = _TEXTS.get(tokenizer)
    if texts is None:
        texts = _TEXTS[tokenizer] = _TokenText(tokenizer)
    return texts


def token_strings(tokenizer: Tokenizer, token_ids: Sequence[int]) -> list[str]:
    """vLLM's ``convert_ids_list_to_tokens(tokenizer, token_ids)`` (no byte-fallback correction)."""
    texts = _texts(tokenizer)
    return [texts.listed(i) for i in token_ids]


def _position(
    texts: _TokenText, ids: Sequence[int], values: Sequence[float], rank: int, context: Sequence[int]
) -> Position:
    decoded = texts.row(ids, context)
    # Column 0 has the engine's rank, column j >= 1 rank j; a repeated id keeps its first key's place and
    # takes the later value, and the shortest of ids/values wins, all as vLLM's dict comprehension.
    position: Position = {ids[0]: (values[0], rank, decoded[0])}
    for j in range(1, min(len(ids), len(values))):
        position[ids[j]] = (values[j], j, decoded[j])
    return position


def _remember(context: list[int], token_id: int) -> None:
    context.append(token_id)
    if len(context) > _MAX_CONTEXT:
        del context[0]


def sample_positions(
    tokenizer: Tokenizer, chunks: Iterable[Chunk], *, context: list[int] | None = None
) -> list[tuple[int, Position]]:
    """``(sampled id, position)`` for every generated token with logprobs in *chunks*. *context* holds
    the last sampled ids before these chunks (updated in place); ``None`` starts a fresh request."""
    texts = _texts(tokenizer)
    ctx: list[int] = [] if context is None else context
    out: list[tuple[int, Position]] = []
    for chunk in chunks:
        lp = chunk.logprobs
        if lp is None:
            continue
        for ids, values, rank in zip(lp.token_ids, lp.logprobs, lp.ranks, strict=False):
            out.append((ids[0], _position(texts, ids, values, rank, ctx)))
            _remember(ctx, ids[0])
    return out


def prompt_positions(tokenizer: Tokenizer, prompt_logprobs: wire.PromptLogprobs | None) -> list[Position]:
    """One position per prompt token after the first (vLLM's ``prompt_logprobs[1:]``); the byte-fallback
    context is the preceding prompt tokens, excluding the first (it has no entry in vLLM's list)."""
    if prompt_logprobs is None:
        return []
    texts = _texts(tokenizer)
    ctx: list[int] = []
    out: list[Position] = []
    for ids, values, rank in zip(
        prompt_logprobs.token_ids, prompt_logprobs.logprobs, prompt_logprobs.ranks, strict=False
    ):
        out.append(_position(texts, ids, values, rank, ctx))
        _remember(ctx, ids[0])
    return out


def prompt_logprobs_field(
    tokenizer: Tokenizer, prompt_ids: Sequence[int], prompt_logprobs: wire.PromptLogprobs | None
) -> list[dict[str, dict[str, Any]] | None]:
    """vLLM's raw per-choice ``prompt_logprobs``: ``[None, {"<id>": {"logprob", "rank", "decoded_token"}},
    ...]``, one entry per prompt token; ``-inf`` becomes ``-9999.0``. Call it only when the request asked
    for prompt logprobs; *prompt_logprobs* ``None`` (a one-token prompt has no rows) gives ``[None]``.
    ``return_tokens_as_token_ids`` does not change this field in vLLM."""
    positions = prompt_positions(tokenizer, prompt_logprobs)
    if prompt_logprobs is not None and len(positions) != max(len(prompt_ids) - 1, 0):
        raise ValueError(f"{len(positions)} prompt logprob rows for {len(prompt_ids)} prompt tokens")
    field: list[dict[str, dict[str, Any]] | None] = [None]
    for position in positions:
        field.append(
            {
                str(tid): {
                    "logprob": FLOOR if value == float("-inf") else value,
                    "rank": rank,
                    "decoded_token": text,
                }
                for tid, (value, rank, text) in position.items()
            }
        )
    return field


# ------------------------------------------------------------------------------------- /v1/completions


def _completion_shape(
    texts: _TokenText,
    steps: Iterable[tuple[int, Position | None]],
    top: int,
    offset: int,
    return_as_ids: bool,
) -> dict[str, Any]:
    """vLLM's ``_create_completion_logprobs``."""
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []
    for token_id, position in steps:
        if position is None:
            token = f"token_id:{token_id}" if return_as_ids else texts.alone(token_id)
            token_logprobs.append(None)
            top_logprobs.append(None)
        else:
            value, _rank, text = position[token_id]
            token = f"token_id:{token_id}" if return_as_ids else text
            token_logprobs.append(max(value, FLOOR))
            # The chosen token plus up to `top` more; entries whose strings collide share one key (the
            # first one's place, the last one's value), as vLLM's dict comprehension does.
            top_logprobs.append(
                {
                    (f"token_id:{tid}" if return_as_ids else entry[2]): max(entry[0], FLOOR)
                    for i, (tid, entry) in enumerate(position.items())
                    if top == -1 or top >= i
                }
            )
        tokens.append(token)
        text_offset.append(offset)
        offset += len(token)
    return {
        "text_offset": text_offset,
        "token_logprobs": token_logprobs,
        "tokens": tokens,
        "top_logprobs": top_logprobs,
    }


def completion_logprobs(
    tokenizer: Tokenizer,
    chunks: Sequence[Chunk],
    top: int,
    *,
    offset: int,
    return_as_ids: bool = False,
    context: list[int] | None = None,
) -> dict[str, Any]:
    """``/v1/completions`` ``logprobs`` for generated tokens: ``{"text_offset", "token_logprobs",
    "tokens", "top_logprobs"}``; *top* is the request's ``logprobs``, *offset* the first token's text
    offset (see `end_offset`), *context* as in `sample_positions` (pass one list per choice when
    streaming)."""
    steps = sample_positions(tokenizer, chunks, context=context)
    return _completion_shape(_texts(tokenizer), steps, top, offset, return_as_ids)


def echo_completion_logprobs(
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    prompt_logprobs: wire.PromptLogprobs | None,
    chunks: Sequence[Chunk],
    top: int,
    *,
    with_generated: bool,
    offset: int = 0,
    return_as_ids: bool = False,
    context: list[int] | None = None,
) -> dict[str, Any]:
    """``/v1/completions`` ``logprobs`` with ``echo``: the prompt's tokens (the first with ``None``
    logprob and top_logprobs) followed, if *with_generated*, by the generated ones from *chunks*;
    text_offset runs on over both. ``max_tokens=0`` is ``with_generated=False``: vLLM ran the engine for
    one token and drops it. A streaming caller uses this for the first chunk of a choice only."""
    texts = _texts(tokenizer)
    positions = prompt_positions(tokenizer, prompt_logprobs)
    steps: list[tuple[int, Position | None]] = []
    for k, token_id in enumerate(prompt_ids):
        steps.append((token_id, None if k == 0 else positions[k - 1]))
    if with_generated:
        steps.extend(sample_positions(tokenizer, chunks, context=context))
    return _completion_shape(texts, steps, top, offset, return_as_ids)


def end_offset(logprobs: dict[str, Any], offset: int) -> int:
    """The text offset after a `completion_logprobs` result (vLLM advances by the tokens reported, not
    by the text sent); *offset* if it has no tokens."""
    tokens: list[str] = logprobs["tokens"]
    if not tokens:
        return offset
    return int(logprobs["text_offset"][-1]) + len(tokens[-1])


# ------------------------------------------------------------------------------------- /v1/chat/completions


def chat_logprobs(
    tokenizer: Tokenizer,
    chunks: Sequence[Chunk],
    top: int | None,
    *,
    return_as_ids: bool = False,
    context: list[int] | None = None,
) -> dict[str, Any]:
    """``/v1/chat/completions``: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``
    (vLLM's ``_create_chat_logprobs``). *top* is the request's ``top_logprobs``: the first *top* entries
    of each position, the chosen token first (so a chosen token outside the top-k pushes out the last)."""
    content: list[dict[str, Any]] = []
    for token_id, position in sample_positions(tokenizer, chunks, context=context):
        value, _rank, text = position[token_id]
        alternatives = []
        for i, (tid, entry) in enumerate(position.items()):
            if not (top == -1 or (top is not None and i < top)):
                break
            alt = f"token_id:{tid}" if return_as_ids else entry[2]
            alternatives.append(
                {"token": alt, "logprob": max(entry[0], FLOOR), "bytes": list(alt.encode("utf-8", "replace"))}
            )
        content.append(
            {
                "token": f"token_id:{token_id}" if return_as_ids else text,
                "logprob": max(value, FLOOR),
                "bytes": list(text.encode("utf-8", "replace")),
                "top_logprobs": alternatives,
            }
        )
    return {"content": content}
