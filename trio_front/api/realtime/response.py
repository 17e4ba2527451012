"""One Realtime response: a task in the socket's nursery, with its own cancel scope.

The generation's text goes through the response's assistant output (``trio_front.assistant``: tool
and reasoning parsers); this module only turns its events into Realtime events and never parses model
output itself. Output items, in the order the model produces them (GA names; :mod:`.protocol` has the
beta ones)::

    response.created
    a message item (content text):
      response.output_item.added, conversation.item.added, response.content_part.added
      response.output_text.delta ...                               (coalesced while the client lags)
      response.output_text.done, response.content_part.done, response.output_item.done,
      conversation.item.done
    a function_call item (per call):
      response.output_item.added, conversation.item.added
      response.function_call_arguments.delta ...
      response.function_call_arguments.done, response.output_item.done, conversation.item.done
    response.done            status completed | incomplete (max_output_tokens) | cancelled | failed;
                             its output lists every item

An item is announced when the model starts it (as OpenAI does) and is inserted into the conversation
then, with status ``in_progress``; a call closes the message item before it, and text after a call opens
a new message item. Reasoning (with a ``--reasoning-parser``) is in no event: OpenAI's Realtime API has
none for it; it is split off and never shown as text. When the response ends, the open item gets its
final text: all of it when the response completes; when it is cancelled, what was generated so far,
with status ``incomplete`` (OpenAI also keeps the truncated item). A function call cut off that way gets
``response.output_item.done`` (status ``incomplete``) but no ``function_call_arguments.done``: its
arguments are not a call; so does a named call cut by ``max_output_tokens``. A response cancelled
before any output has no item, and nothing is added to the conversation. ``conversation: "none"``
responses never touch it.

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

from trio_front.assistant import (
    AssistantEvent,
    AssistantOutput,
    ContentDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
)
from trio_front.assistant.setup import AssistantSetup
from trio_front.engine.client import EngineError
from trio_front.serving.generation import Generation, GenerationError

from ..state import engine_failure
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
    setup: AssistantSetup
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: the output items, in order
    items: list[Item] = attrs.field(factory=list)
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
        self.out: AssistantOutput = response.setup.output()
        self._open: Item | None = None  # the item being generated
        self._buf: list[str] = []  # its text / arguments so far
        self._cut = False  # the output was cut inside a named call

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
                                self._events(self.out.push(chunk.text, chunk.token_ids))
                        # Only a generation that ended flushes the parsers: a cancelled one must not
                        # turn a half-written call into a finished one. A named call is the whole output:
                        # cut by max_output_tokens, its arguments are not a call either.
                        self._cut = gen.finish_reason == "length" and self.r.setup.plan.mode == "named"
                        self._events(self.out.finish())
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

    def _events(self, events: list[AssistantEvent]) -> None:
        for event in events:
            if isinstance(event, ContentDelta):
                self._text_delta(event.text)
            elif isinstance(event, ToolCallStarted):
                self._close("completed")
                self._start(Item.function_call(self.ids.new("item"), event.id, event.name,
                                               status="in_progress"))  # fmt: skip
            elif isinstance(event, ToolCallArgumentsDelta):
                self._arguments_delta(event.delta)
            elif isinstance(event, ToolCallDone):
                self._close("incomplete" if self._cut else "completed", arguments=event.arguments)
            # ReasoningDelta: OpenAI's Realtime API has no event for it.

    def _start(self, item: Item) -> None:
        d, r, push = self.dialect, self.r, self.sock.push
        self._open, self._buf = item, []
        index = len(r.items)
        r.items.append(item)
        previous = r.conversation.insert(item, admit=True) if r.conversation is not None else None
        push({"type": "response.output_item.added", "event_id": self.ids.event(), "response_id": r.id,
              "output_index": index, "item": item.wire()})  # fmt: skip
        if r.conversation is not None:
            push({"type": d.item_added, "event_id": self.ids.event(), "previous_item_id": previous,
                  "item": item.wire()})  # fmt: skip
        if item.type == "message":
            push({"type": "response.content_part.added", "event_id": self.ids.event(), "response_id": r.id,
                  "item_id": item.id, "output_index": index, "content_index": 0,
                  "part": {"type": "text", "text": ""}})  # fmt: skip

    def _start_message(self) -> None:
        text = self.dialect.assistant_text
        self._start(Item(self.ids.new("item"), "assistant", [(text, "")], status="in_progress"))

    def _head(self, item: Item) -> dict[str, Any]:
        head = {"response_id": self.r.id, "item_id": item.id, "output_index": self.r.items.index(item)}
        if item.type == "function_call":
            head["call_id"] = item.call_id
        else:
            head["content_index"] = 0
        return head

    def _text_delta(self, text: str) -> None:
        if self._open is None or self._open.type != "message":
            self._close("completed")
            self._start_message()
        item = self._open
        assert item is not None
        self._buf.append(text)
        event = {"type": self.dialect.text_delta, "event_id": self.ids.event(), **self._head(item)}
        self.sock.outbox.push_delta(item.id, event, "delta", text)

    def _arguments_delta(self, text: str) -> None:
        item = self._open
        assert item is not None and item.type == "function_call"  # the assistant layer started it
        self._buf.append(text)
        event = {"type": "response.function_call_arguments.delta", "event_id": self.ids.event(),
                 **self._head(item)}  # fmt: skip
        self.sock.outbox.push_delta(item.id, event, "delta", text)

    def _close(self, status: str, *, arguments: str | None = None) -> None:
        """Give the open item its final text / arguments and status, and say so."""
        item, r, d, push = self._open, self.r, self.dialect, self.sock.push
        if item is None:
            return
        self._open = None
        text = "".join(self._buf) if arguments is None else arguments
        head = self._head(item)
        if item.type == "function_call":
            if r.conversation is not None:
                r.conversation.set_arguments(item, text)
            else:
                item.arguments = text
            item.status = status
            if status == "completed":
                push({"type": "response.function_call_arguments.done", "event_id": self.ids.event(), **head,
                      "name": item.name, "arguments": text})  # fmt: skip
        else:
            if r.conversation is not None:
                r.conversation.set_text(item, 0, text)
            else:
                item.parts[0] = (item.parts[0][0], text)
            item.status = status
            push({"type": d.text_done, "event_id": self.ids.event(), **head, "text": text})
            push({"type": "response.content_part.done", "event_id": self.ids.event(), **head,
                  "part": {"type": "text", "text": text}})  # fmt: skip
        push({"type": "response.output_item.done", "event_id": self.ids.event(), "response_id": r.id,
              "output_index": head["output_index"], "item": item.wire()})  # fmt: skip
        if r.conversation is not None and d.item_done is not None:
            push({"type": d.item_done, "event_id": self.ids.event(), "item": item.wire()})

    def _finish(self, ended: bool, error: BaseException | None) -> None:
        r = self.r
        reason = r.generation.finish_reason
        if error is not None:
            r.status = "failed"
            message = str(error) or type(error).__name__
            if isinstance(error, GenerationError):
                message = engine_failure(r.setup.constraint, param="tool_choice", error=error.error).message
            r.status_details = _failed("engine_error", message)
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
        if not r.items and r.status in ("completed", "incomplete"):
            self._start_message()  # an empty answer is still an answer
        self._close("completed" if r.status == "completed" else "incomplete")
        self.sock.push({"type": "response.done", "event_id": self.ids.event(),
                        "response": self._wire(usage=True)})  # fmt: skip

    def _wire(self, *, usage: bool = False) -> dict[str, Any]:
        r, d = self.r, self.dialect
        response: dict[str, Any] = {
            "id": r.id,
            "object": "realtime.response",
            "status": r.status,
            "status_details": r.status_details,
            "output": [item.wire() for item in r.items] if r.status != "in_progress" else [],
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
