"""One generation's life, shared by every protocol (SSE, JSON, Realtime and Responses WebSockets).

A :class:`Generation` submits token ids to the engine, turns engine deltas into text with the text
layer's :class:`~trio_front.text.detokenizer.TextStream` (incremental detokenization, stop strings), and
counts usage. It is an async context manager around the engine's request stream::

    async with Generation(engine, tokenizer, prompt_ids, params, text_params, id_prefix="cmpl-x") as gen:
        while (chunk := await gen.next_chunk()) is not None:
            ...

Cancellation: leaving the block before the sequence finished (client disconnect, ``response.cancel``,
server shutdown, an exception) aborts the engine request at once. That abort is a synchronous send, so
it also happens when an *outer* scope is cancelled. A stop string aborts the engine request as soon as it
matches, and the chunk that carries it is the last one.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from trio_front.engine import wire
from trio_front.engine.client import EngineClient, RequestStream
from trio_front.text.detokenizer import TextParams, TextStream
from trio_front.text.tokenizer import Tokenizer


class GenerationError(Exception):
    """The engine failed this request (finish_reason ERROR). ``error`` is the reason a vLLM 0.33 engine
    sent with it (``engine_paused``: retry later; ``validation_error``: the request's fault), else None."""

    def __init__(self, message: str, error: wire.RequestError | None = None) -> None:
        super().__init__(message)
        self.error = error


@attrs.define(slots=True)
class Chunk:
    """What the client should see next: new text and the token ids (and logprobs) it came from."""

    text: str
    token_ids: list[int]
    logprobs: wire.Logprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@attrs.define
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int | None = None
    #: Set when a reasoning parser is configured (vLLM's ``completion_tokens_details``).
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, object]:
        usage: dict[str, object] = {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.total_tokens,
            "completion_tokens": self.completion_tokens,
        }
        # No prompt_tokens_details: vLLM shows them only with --enable-prompt-tokens-details (refused here);
        # cached_tokens still feeds the Responses and Realtime usage, which always carry them.
        if self.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage


class Generation:
    """Token ids in, text chunks out, for one sequence (see the module docstring)."""

    def __init__(
        self,
        engine: EngineClient,
        tokenizer: Tokenizer,
        prompt_ids: list[int],
        params: wire.SamplingParams,
        text_params: TextParams,
        *,
        id_prefix: str,
        request_id: str | None = None,
        external_id: str | None = None,
        lora_request: wire.LoRARequest | None = None,
        priority: int = 0,
        cache_salt: str | None = None,
        reasoning_ended: bool | None = None,
        reasoning_parser_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.prompt_ids = prompt_ids
        self.params = params
        self.text_params = text_params
        self.usage = Usage(prompt_tokens=len(prompt_ids))
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.created = int(time.time())
        self._text = TextStream(tokenizer, prompt_ids, text_params)
        self._id_prefix = id_prefix
        self._request_id = request_id
        self._external_id = external_id
        self.lora_request = lora_request
        #: The prompt's logprobs (``params.prompt_logprobs`` set), once the first output arrived.
        self.prompt_logprobs: wire.PromptLogprobs | None = None
        self._priority = priority
        self._cache_salt = cache_salt
        # For the engine's structured-output gate: the grammar applies once reasoning has ended.
        self._reasoning_ended = reasoning_ended
        self._reasoning_parser_kwargs = reasoning_parser_kwargs
        self._stream: RequestStream | None = None

    @property
    def request_id(self) -> str:
        assert self._stream is not None
        return self._stream.request_id

    @property
    def stream(self) -> RequestStream | None:
        """The engine request's stream once entered (for aborting several in one message)."""
        return self._stream

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def output_text(self) -> str:
        return self._text.output_text

    async def __aenter__(self) -> Generation:
        self._stream = self.engine.generate(
            self.prompt_ids,
            self.params,
            id_prefix=self._id_prefix,
            request_id=self._request_id,
            external_id=self._external_id,
            lora_request=self.lora_request,
            priority=self._priority,
            cache_salt=self._cache_salt,
            reasoning_ended=self._reasoning_ended,
            reasoning_parser_kwargs=self._reasoning_parser_kwargs,
        )
        # A stop string in the engine's last tokens makes its finish "stop" (vLLM's output processor
        # decides so in the same step): the metrics wait for this generation's verdict.
        self._stream.defer_finish = bool(self.text_params.stop)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._stream is not None
        await self._stream.__aexit__(*exc_info)
        if self.finish_reason is None:
            self.finish_reason = "abort"

    def abort(self, cause: str = "aborted") -> None:
        """Abort the engine request now if it is live (synchronous, idempotent; e.g. the moment a client
        disconnect is seen). A task waiting in :meth:`next_chunk` then gets the engine client's error."""
        if self._stream is not None:
            self._stream.abort(cause)

    async def next_chunk(self) -> Chunk | None:
        """The next chunk (possibly with empty text, e.g. while a stop string is held back), or ``None``
        once the sequence finished. Raises the engine's errors (``EngineDeadError``...) and
        :class:`GenerationError`. Cancelling this call loses nothing: the engine's outputs stay queued."""
        if self.finish_reason is not None:
            return None
        assert self._stream is not None
        delta = await self._stream.next_delta()
        reason = delta.finish_reason
        if reason is wire.FinishReason.ERROR:
            self.finish_reason = "error"
            error = delta.error
            message = error.message if error else "the engine failed to process this request"
            raise GenerationError(message, error)
        if delta.prompt_logprobs is not None:
            self.prompt_logprobs = delta.prompt_logprobs
        ids = delta.token_ids
        update = self._text.push(
            ids, stop_terminated=reason is wire.FinishReason.STOP, engine_finished=reason is not None
        )
        logprobs = delta.logprobs
        if update.stop_string is not None:
            if update.abort_engine:
                self._stream.abort("stop string")
            if update.num_kept < len(ids):
                ids = ids[: update.num_kept]
                if logprobs is not None:
                    logprobs = wire.Logprobs(
                        logprobs.token_ids[: update.num_kept],
                        logprobs.logprobs[: update.num_kept],
                        logprobs.ranks[: update.num_kept],
                    )
            self.finish_reason, self.stop_reason = "stop", update.stop_string
            if reason is not None:
                self._stream.settle_finish(True)
        elif reason is not None:
            self.finish_reason, self.stop_reason = str(reason), delta.stop_reason
            self._stream.settle_finish(False)
        self.usage.completion_tokens += len(ids)
        if delta.num_cached_tokens is not None:
            self.usage.cached_tokens = delta.num_cached_tokens
        return Chunk(update.text, ids, logprobs, self.finish_reason, self.stop_reason)

    async def collect(self) -> str:
        """Run to the end and return the whole text (non-streaming responses)."""
        while await self.next_chunk() is not None:
            pass
        return self.output_text
