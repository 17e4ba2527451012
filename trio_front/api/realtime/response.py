"""One Realtime response: a task in the socket's nursery, with its own cancel scope.

Events, in order (GA names; :mod:`.protocol` has the beta ones)::

    response.created
    response.output_item.added, conversation.item.added, response.content_part.added   (first text)
    response.output_text.delta ...                                   (coalesced while the client lags)
    response.output_text.done, response.content_part.done, response.output_item.done,
    conversation.item.done
    response.done            status completed | incomplete (max_output_tokens) | cancelled | failed

The assistant item is announced when its first text arrives (as OpenAI does: ``conversation.item.added``
comes when the model starts the item) and is inserted into the conversation then, with status
``in_progress`` and no text yet. When the response ends, the item gets its text: all of it when the
response completes; when it is cancelled, the partial text generated so far, with status
``incomplete`` (OpenAI also keeps the truncated item). A response cancelled before any text has no
item, and nothing is added to the conversation. ``conversation: "none"`` responses never touch it.

Cancellation: ``response.cancel`` cancels the response's scope; the generation's context exits and
aborts the engine request at once (one synchronous send), then the closing events go out with the
usage generated so far. Closing the socket cancels the same way (its events are then dropped).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio

from trio_front.engine.client import EngineError
from trio_front.serving.generation import Generation, GenerationError

from ..ws import Socket
from .conversation import Conversation, Item
from .protocol import Dialect, Ids

log = logging.getLogger("trio_front.api.realtime")


@attrs.define(eq=False)
class RealtimeResponse:
    id: str
    generation: Generation
    conversation: Conversation | None  # None: conversation "none" (out of band)
    max_output_tokens: int | None
    metadata: dict[str, Any] | None
    sampling: dict[str, Any]
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    item: Item | None = None
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    cancel_requested: bool = False

    def cancel(self) -> None:
        self.cancel_requested = True
        self.scope.cancel(reason="response.cancel")


class ResponseRunner:
    """Runs one :class:`RealtimeResponse` on a socket and writes its events."""

    def __init__(self, sock: Socket, ids: Ids, dialect: Dialect, response: RealtimeResponse) -> None:
        self.sock = sock
        self.ids = ids
        self.dialect = dialect
        self.r = response

    def announce(self) -> None:
        """Push ``response.created`` (from the reader task, so it precedes any later reply)."""
        self.sock.stats.running_responses += 1
        self.sock.stats.responses_total += 1
        self.sock.push({"type": "response.created", "event_id": self.ids.event(), "response": self._wire()})

    async def run(self, on_done: Callable[[RealtimeResponse], None]) -> None:
        """The response's task (after :meth:`announce`); always ends with ``response.done``."""
        stats = self.sock.stats
        gen = self.r.generation
        ended = False
        error: BaseException | None = None
        try:
            with self.r.scope:
                if not self.r.scope.cancel_called:  # cancelled before it started: no engine request
                    try:
                        async with gen:
                            while (chunk := await gen.next_chunk()) is not None:
                                if chunk.text:
                                    self._delta(chunk.text)
                    except (GenerationError, EngineError) as exc:
                        error = exc
                    except Exception as exc:
                        log.exception("realtime response %s failed", self.r.id)
                        error = exc
            ended = True
        finally:
            # Also on the socket's cancellation (then the outbox is closed and these pushes are no-ops).
            self._finish(ended and not self.r.cancel_requested, error)
            stats.running_responses -= 1
            if self.r.status == "cancelled":
                stats.cancelled_total += 1
            on_done(self.r)

    # ------------------------------------------------------------------ events

    def _start_item(self) -> None:
        d, r = self.dialect, self.r
        item = r.item = Item(
            self.ids.new("item"), "assistant", [(d.assistant_text, "")], status="in_progress"
        )
        previous = r.conversation.insert(item, admit=True) if r.conversation is not None else None
        push = self.sock.push
        push({"type": "response.output_item.added", "event_id": self.ids.event(), "response_id": r.id,
              "output_index": 0, "item": item.wire()})  # fmt: skip
        if r.conversation is not None:
            push({"type": d.item_added, "event_id": self.ids.event(), "previous_item_id": previous,
                  "item": item.wire()})  # fmt: skip
        push({"type": "response.content_part.added", "event_id": self.ids.event(), "response_id": r.id,
              "item_id": item.id, "output_index": 0, "content_index": 0,
              "part": {"type": "text", "text": ""}})  # fmt: skip

    def _delta(self, text: str) -> None:
        if self.r.item is None:
            self._start_item()
        item = self.r.item
        assert item is not None
        event = {
            "type": self.dialect.text_delta,
            "event_id": self.ids.event(),
            "response_id": self.r.id,
            "item_id": item.id,
            "output_index": 0,
            "content_index": 0,
        }
        self.sock.outbox.push_delta(item.id, event, "delta", text)

    def _finish(self, ended: bool, error: BaseException | None) -> None:
        r, d, push = self.r, self.dialect, self.sock.push
        reason = r.generation.finish_reason
        if error is not None:
            r.status = "failed"
            r.status_details = _failed("engine_error", str(error) or type(error).__name__)
        elif not ended or reason is None:
            r.status = "cancelled"
            r.status_details = {"type": "cancelled", "reason": "client_cancelled"}
        elif reason == "length":
            r.status = "incomplete"
            r.status_details = {"type": "incomplete", "reason": "max_output_tokens"}
        elif reason == "abort":
            r.status = "failed"
            r.status_details = _failed("engine_abort", "the engine aborted the request")
        else:
            r.status = "completed"
        if r.item is None and r.status in ("completed", "incomplete"):
            self._start_item()  # an empty answer is still an answer
        if r.item is not None:
            item, text = r.item, r.generation.output_text
            if r.conversation is not None:
                r.conversation.set_text(item, 0, text)
            else:
                item.parts[0] = (item.parts[0][0], text)
            item.status = "completed" if r.status == "completed" else "incomplete"
            base = {"response_id": r.id, "item_id": item.id, "output_index": 0, "content_index": 0}
            push({"type": d.text_done, "event_id": self.ids.event(), **base, "text": text})
            push({"type": "response.content_part.done", "event_id": self.ids.event(), **base,
                  "part": {"type": "text", "text": text}})  # fmt: skip
            push({"type": "response.output_item.done", "event_id": self.ids.event(), "response_id": r.id,
                  "output_index": 0, "item": item.wire()})  # fmt: skip
            if r.conversation is not None and d.item_done is not None:
                push({"type": d.item_done, "event_id": self.ids.event(), "item": item.wire()})
        push({"type": "response.done", "event_id": self.ids.event(), "response": self._wire(usage=True)})

    def _wire(self, *, usage: bool = False) -> dict[str, Any]:
        r, d = self.r, self.dialect
        response: dict[str, Any] = {
            "id": r.id,
            "object": "realtime.response",
            "status": r.status,
            "status_details": r.status_details,
            "output": [r.item.wire()] if r.item is not None and r.status != "in_progress" else [],
            "conversation_id": r.conversation.id if r.conversation is not None else None,
            d.modalities_key: ["text"],
            d.max_tokens_key: "inf" if r.max_output_tokens is None else r.max_output_tokens,
            "metadata": r.metadata,
            "usage": _usage(r.generation) if usage else None,
        }
        response.update(r.sampling)
        return response


def _failed(code: str, message: str) -> dict[str, Any]:
    return {"type": "failed", "error": {"type": "server_error", "code": code, "message": message}}


def _usage(gen: Generation) -> dict[str, Any]:
    u = gen.usage
    cached = u.cached_tokens or 0
    return {
        "total_tokens": u.total_tokens,
        "input_tokens": u.prompt_tokens,
        "output_tokens": u.completion_tokens,
        "input_token_details": {
            "text_tokens": u.prompt_tokens,
            "audio_tokens": 0,
            "image_tokens": 0,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": u.completion_tokens, "audio_tokens": 0},
    }
