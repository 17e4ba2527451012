"""Incremental detokenization and stop strings for one sequence, producing exactly vLLM 0.32's text.

Mirrors ``vllm/v1/engine/detokenizer.py`` (``FastIncrementalDetokenizer`` + ``BaseIncrementalDetokenizer``)
and the parts of ``OutputProcessor.process_outputs`` that use it. The serving layer makes one `TextStream`
per sequence (per child request when ``n > 1``) and, for every engine output of that sequence, calls::

    update = stream.push(output.new_token_ids,
                         stop_terminated=output.finish_reason == STOP,
                         engine_finished=output.finish_reason is not None)

* ``update.stop_string`` set: a stop string matched. The sequence is finished with finish_reason STOP and
  ``stop_reason = update.stop_string`` (this overrides an engine LENGTH/STOP finish in the same step). When
  ``update.abort_engine`` (the engine had not finished it), the caller must ABORT the request in the
  engine. Only ``new_token_ids[:update.num_kept]`` (and their logprobs) belong to the output; later
  tokens of the same step are dropped.
* ``update.text`` is the new text to send now (delta mode). While the sequence runs, the last
  ``max(len(stop)) - 1`` characters are held back (when stop strings are set and excluded from the
  output) so a partial stop string is never sent; everything is flushed once the sequence finishes.
  Callers that send less often (``stream_interval``, non-streaming) concatenate the texts: the result is
  what vLLM would send at that point. `flush` ends a sequence that the engine never finished (client gone).
* Engine-side STOP (EOS or a stop token id): the last token is not detokenized unless
  ``include_stop_str_in_output`` -- it still counts as an output token.

All of this is synchronous and cheap (one ``DecodeStream.step`` per token, no thread hop); there is no
cancellation to think about. A `TextStream` is not thread-safe and belongs to one task.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Final

import attrs
import tokenizers
from tokenizers.decoders import DecodeStream

from trio_front.text.stop import find_stop
from trio_front.text.tokenizer import Tokenizer

# Error text from tokenizers' DecodeStream when a token changes already-decoded text (vLLM issue 17448).
_INVALID_PREFIX: Final = "Invalid prefix encountered"


@attrs.frozen
class TextParams:
    """The sampling parameters that only the frontend uses (see docs/engine_protocol.md §6).

    ``stop`` strings must be non-empty (vLLM rejects ``""``), and cannot be used with
    ``detokenize=False``; `TextStream` raises ``ValueError`` otherwise.
    """

    stop: tuple[str, ...] = ()
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    detokenize: bool = True

    @property
    def holdback(self) -> int:
        """Characters held back while streaming (vLLM's ``stop_buffer_length``)."""
        if self.stop and not self.include_stop_str_in_output:
            return max(map(len, self.stop)) - 1
        return 0


@attrs.define(slots=True)
class Update:
    """What one `TextStream.push` produced. ``text``: new output text to send (already holdback-limited
    or flushed); ``stop_string``: the stop string that matched, or ``None``; ``num_kept``: how many of the
    pushed token ids belong to the output (all of them unless a stop string matched); ``abort_engine``: a
    stop string finished a sequence the engine is still generating, so send it an ABORT.

    Read-only by convention; not frozen because a frozen attrs class costs ~0.2 µs more to build and one
    is built per token.
    """

    text: str
    stop_string: str | None
    num_kept: int
    abort_engine: bool = False


class TextStream:
    """Detokenizes one sequence incrementally (see the module docstring for the calling contract).

    ``prompt_ids`` prime the decoder exactly as vLLM does (``DecodeStream(ids=prompt_ids)``), so the first
    generated token decodes in the prompt's context (e.g. the space of ``"Ġworld"`` after text).
    """

    __slots__ = (
        "_added_tokens",
        "_backend",
        "_decode",
        "_emitted_len",
        "_finished",
        "_holdback",
        "_last_special",
        "_parts",
        "_pending",
        "_recent",
        "_simple",
        "_skip_special",
        "_stop",
        "_stop_context",
        "_text_len",
        "params",
        "token_ids",
    )

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int], params: TextParams) -> None:
        if any(not s for s in params.stop):
            raise ValueError("stop cannot contain an empty string")
        if params.stop and not params.detokenize:
            raise ValueError("stop strings are only supported when detokenize is true")
        self.params = params
        #: Output token ids so far (including an undetokenized stop token; trimmed after a stop string).
        self.token_ids: list[int] = []
        self._backend = tokenizer.backend
        self._skip_special = params.skip_special_tokens
        self._decode: DecodeStream | None = None
        if params.detokenize:
            prefix = _prompt_suffix(self._backend, prompt_ids)
            self._decode = DecodeStream(ids=prefix, skip_special_tokens=params.skip_special_tokens)
        # spaces_between_special_tokens=False: consecutive added tokens are emitted as their raw content
        # (without the space the decoder may put before them), as vLLM emulates it.
        self._added_tokens: dict[int, str] | None = None
        if (
            not (params.skip_special_tokens or params.spaces_between_special_tokens)
            and tokenizer.added_tokens
        ):
            self._added_tokens = tokenizer.added_tokens
        self._last_special = False
        self._simple = self._decode is not None and not params.stop and self._added_tokens is None
        self._stop = params.stop
        self._holdback = params.holdback
        # Stop strings are searched in `_recent` (the last max(len(stop)) - 1 characters before this step)
        # plus the new text, so no full copy of the output is made per token.
        self._stop_context = max(map(len, params.stop), default=1) - 1
        self._recent = ""
        self._parts: list[str] = []  # text already returned, in order
        self._pending = ""  # produced but not yet returned text (the holdback), a suffix of the output
        self._text_len = 0  # length of the whole output text
        self._emitted_len = 0
        self._finished = False

    # ------------------------------------------------------------------------------------ public API

    @property
    def output_text(self) -> str:
        """All output text so far, including text still held back."""
        return "".join(self._parts) + self._pending

    @property
    def finished(self) -> bool:
        """True after a stop string matched or `push`/`flush` was told the sequence finished."""
        return self._finished

    def push(
        self, new_token_ids: Sequence[int], *, stop_terminated: bool = False, engine_finished: bool = False
    ) -> Update:
        """Add one engine step's token ids; return the text to send and any stop-string match.

        ``stop_terminated``: the engine finished this step with finish_reason STOP (EOS or a stop token id),
        so the last token id is not detokenized (unless ``include_stop_str_in_output``).
        ``engine_finished``: the engine finished the sequence (any reason) with this step; the returned
        text then includes everything held back. A push after the sequence finished returns nothing.
        """
        if self._finished:
            return Update("", None, 0)
        if self._simple and len(new_token_ids) == 1 and not stop_terminated:
            # The per-token path of most requests (no stop strings, one token per step): no holdback,
            # no offsets, the piece is the delta.
            token_id = new_token_ids[0]
            self.token_ids.append(token_id)
            try:
                piece = self._decode.step(self._backend, token_id) or ""  # type: ignore[union-attr]
            except Exception as exc:
                piece = self._recover(token_id, exc)
            if piece:
                self._text_len += len(piece)
                self._emitted_len = self._text_len
                self._parts.append(piece)
            if engine_finished:
                self._finished = True
            return Update(piece, None, 1)
        stop_string = None
        num_kept = len(new_token_ids)
        if new_token_ids:
            stop_string, num_kept = self._add_tokens(new_token_ids, stop_terminated)
        if stop_string is not None or engine_finished:
            self._finished = True
        abort = stop_string is not None and not engine_finished
        return Update(self._take(self._finished), stop_string, num_kept, abort)

    def flush(self) -> str:
        """Finish the sequence (e.g. ABORT or a client disconnect) and return the held-back text."""
        self._finished = True
        return self._take(True)

    # ------------------------------------------------------------------------------------ internals

    def _take(self, finished: bool) -> str:
        limit = self._text_len if finished else self._text_len - self._holdback
        if limit <= self._emitted_len:
            return ""
        cut = limit - self._emitted_len
        out = self._pending[:cut]
        self._pending = self._pending[cut:]
        self._emitted_len = limit
        self._parts.append(out)
        return out

    def _add_tokens(self, new_token_ids: Sequence[int], stop_terminated: bool) -> tuple[str | None, int]:
        token_ids = self.token_ids
        num_prev = len(token_ids)
        to_decode = new_token_ids
        skipped = stop_terminated and not self.params.include_stop_str_in_output
        if skipped:
            to_decode = new_token_ids[:-1]
        stop = self._stop
        if self._decode is None:  # detokenize=False: no text, and no stop strings
            token_ids.extend(new_token_ids)
            return None, len(new_token_ids)

        # 1) Detokenize. Offsets (text length after each new token) are only needed for stop strings.
        offsets: list[int] | None = [0] if stop else None
        if len(to_decode) == 1:  # the common per-token path: no pieces list, no join
            token_ids.append(to_decode[0])
            step_text = self._decode_next(to_decode[0])
            if offsets is not None:
                offsets.append(len(step_text))
        else:
            pieces = []
            length = 0
            for token_id in to_decode:
                token_ids.append(token_id)
                piece = self._decode_next(token_id)
                pieces.append(piece)
                if offsets is not None:
                    length += len(piece)
                    offsets.append(length)
            step_text = "".join(pieces)
        if skipped:
            token_ids.append(new_token_ids[-1])
            if offsets is not None:
                offsets.append(offsets[-1])

        len_before = self._text_len
        self._text_len += len(step_text)
        self._pending += step_text
        if offsets is None:
            return None, len(new_token_ids)

        # 2) Stop strings: only in text added by tokens past min_tokens (vLLM PR 22014).
        recent = self._recent
        window = recent + step_text
        self._recent = window[-self._stop_context :] if self._stop_context else ""
        min_tokens = self.params.min_tokens
        if len(token_ids) <= min_tokens:
            return None, len(new_token_ids)
        check_from = offsets[max(min_tokens - num_prev, 0)]
        match = find_stop(window, len(step_text) - check_from, stop, self.params.include_stop_str_in_output)
        if match is None:
            return None, len(new_token_ids)
        stop_string, truncate_to, match_end = match
        window_start = len_before - len(recent)
        # Drop tokens after the one completing the stop string (several tokens in one step).
        num_kept = bisect.bisect_left(offsets, window_start + match_end - len_before, lo=1)
        del token_ids[num_prev + num_kept :]
        new_len = window_start + truncate_to
        if new_len < self._text_len:
            # The truncation never reaches text already returned: the holdback covers it.
            self._pending = self._pending[: new_len - self._emitted_len]
            self._text_len = new_len
        return stop_string, num_kept

    def _decode_next(self, token_id: int) -> str:
        decode = self._decode
        assert decode is not None
        try:
            piece = decode.step(self._backend, token_id)
        except Exception as exc:
            piece = self._recover(token_id, exc)
        added = self._added_tokens
        if added is not None:
            content = added.get(token_id)
            if content is not None and self._last_special:
                piece = content
            self._last_special = content is not None
        return piece or ""

    def _recover(self, token_id: int, exc: Exception) -> str:
        """vLLM's handling of DecodeStream errors; re-raises anything else."""
        if isinstance(exc, (OverflowError, TypeError)):
            # Ids that are not u32 (vLLM issue 21951): vLLM logs and emits nothing for the token.
            return ""
        if not str(exc).startswith(_INVALID_PREFIX):
            raise exc
        # A token rewrote already-decoded text (non-monotonic, invalid UTF-8 output); restart the stream
        # without context, as vLLM does.
        self._decode = DecodeStream(skip_special_tokens=self._skip_special)
        return self._decode.step(self._backend, token_id) or ""


def _prompt_suffix(backend: tokenizers.Tokenizer, prompt_ids: Sequence[int]) -> list[int]:
    """The end of the prompt that primes the decode stream, chosen as vLLM's FastIncrementalDetokenizer
    does: the shortest suffix of 4 to 23 tokens that decodes without a replacement character (so it does
    not start inside a multi-byte character), else the whole prompt. Priming with the whole prompt would
    make the first step decode all of it (a 1024-token prompt cost ~20% of a W1 request's CPU)."""
    n = len(prompt_ids)
    if n > 4:
        for i in range(4, min(n + 1, 24)):
            suffix = list(prompt_ids[-i:])
            if "\ufffd" not in backend.decode(suffix, skip_special_tokens=False):
                return suffix
    return list(prompt_ids)
