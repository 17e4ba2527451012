"""Client events of one Realtime socket: session, conversation items, responses.

Every client event is handled in the socket's reader task, in order. Nothing here waits for the
network: replies go to the outbox with ``put`` (which waits only while the outbox is full, i.e. while
the client is not reading), and a response runs as its own task (:mod:`.response`). An event that cannot
be honoured — malformed JSON, an unknown type, audio, a second ``response.create`` while one runs, a
conversation that does not fit the context with ``truncation: "disabled"``, tools or a tool choice that
vLLM would refuse — gets an ``error`` event that names the client's ``event_id``, nothing reaches the
engine, and the socket stays open.

``response.create`` plans the response as chat completions does: ``plan_tools`` → ``AssistantSetup`` →
the prompt rendered with the plan's tools → engine params with the setup's constraint → a generation
told where reasoning ends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from trio_front.assistant.setup import AssistantSetup
from trio_front.serving.params import ParamError

from ..assistant_request import assistant_generation, assistant_params
from ..errors import APIError
from ..prompt import build_prompt
from ..state import ServerState
from ..ws import Socket
from .conversation import Conversation, Item, chat_messages, parse_item
from .protocol import Dialect, EventError, Ids, error_event
from .response import RealtimeResponse, ResponseRunner
from .session import Session, apply, sampling_fields

log = logging.getLogger("trio_front.api.realtime")

AUDIO_EVENTS = (
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "transcription_session.update",
)


class RealtimeHandler:
    def __init__(self, sock: Socket, state: ServerState, dialect: Dialect) -> None:
        self.sock = sock
        self.state = state
        self.dialect = dialect
        self.ids = Ids()
        self.session = Session(self.ids.new("sess"), state.served_model_name, dialect)
        options = sock.options
        self.conversation = Conversation(
            self.ids.new("conv"),
            max_items=options.max_conversation_items,
            max_chars=options.max_conversation_chars,
        )
        self.active: RealtimeResponse | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "session.update": self._session_update,
            "conversation.item.create": self._item_create,
            "conversation.item.delete": self._item_delete,
            "conversation.item.truncate": self._item_truncate,
            "conversation.item.retrieve": self._item_retrieve,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    async def _reply(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.ids.event())
        await self.sock.outbox.put(event)

    async def opened(self) -> None:
        await self._reply({"type": "session.created", "session": self.session.wire()})
        if self.dialect.beta:
            conversation = {"id": self.conversation.id, "object": "realtime.conversation"}
            await self._reply({"type": "conversation.created", "conversation": conversation})

    async def message(self, data: str | bytes) -> None:
        client_event_id: str | None = None
        try:
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise EventError(f"the message is not valid JSON: {exc}", "invalid_json") from None
            if not isinstance(event, dict):
                raise EventError("a client event must be a JSON object", "invalid_event")
            if isinstance(event.get("event_id"), str):
                client_event_id = event["event_id"]
            kind = event.get("type")
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                if kind in AUDIO_EVENTS:
                    raise EventError(f"{kind} is not supported: this server serves text models (no audio)",
                                     "unsupported_event", param="type")  # fmt: skip
                raise EventError(f"Invalid value: {kind!r}. Supported values are: {sorted(self._handlers)}.",
                                 "invalid_value", param="type")  # fmt: skip
            await handler(event)
        except EventError as exc:
            await self._reply(error_event(self.ids, exc, client_event_id))
        except Exception:
            log.exception("error while handling a realtime client event")
            error = EventError("internal server error", "server_error", type="server_error")
            await self._reply(error_event(self.ids, error, client_event_id))

    # ------------------------------------------------------------------ session and conversation

    async def _session_update(self, event: dict[str, Any]) -> None:
        self.session.update(event.get("session"), self.state)
        await self._reply({"type": "session.updated", "session": self.session.wire()})

    async def _item_create(self, event: dict[str, Any]) -> None:
        item = parse_item(event.get("item"), self.ids, self.dialect)
        previous = event.get("previous_item_id")
        if previous is not None and not isinstance(previous, str):
            raise EventError("previous_item_id must be a string", "invalid_value", param="previous_item_id")
        previous = self.conversation.insert(item, previous)
        await self._reply(
            {"type": self.dialect.item_added, "previous_item_id": previous, "item": item.wire()}
        )
        if self.dialect.item_done is not None:
            await self._reply(
                {"type": self.dialect.item_done, "previous_item_id": previous, "item": item.wire()}
            )

    async def _item_delete(self, event: dict[str, Any]) -> None:
        item = self.conversation.get(event.get("item_id"))
        self._refuse_if_generating(item)
        self.conversation.delete(item.id)
        await self._reply({"type": "conversation.item.deleted", "item_id": item.id})

    async def _item_truncate(self, event: dict[str, Any]) -> None:
        """Truncation is defined on audio: ``audio_end_ms`` is how much of the assistant's audio the user
        heard, and the server drops the transcript past it. Text-only items have no audio, so the only
        point within them is 0 ms: their text is cleared (the user heard none of it). Anything later is
        past the end of the audio, which OpenAI answers with an error too."""
        item = self.conversation.get(event.get("item_id"))
        if item.type != "message" or item.role != "assistant":
            raise EventError(
                "only assistant message items can be truncated", "invalid_value", param="item_id"
            )
        self._refuse_if_generating(item)
        index, end = event.get("content_index", 0), event.get("audio_end_ms")
        if type(index) is not int or not 0 <= index < len(item.parts):
            raise EventError(
                f"content_index {index!r} is out of range", "invalid_value", param="content_index"
            )
        if type(end) is not int or end < 0:
            raise EventError(
                "audio_end_ms must be a non-negative integer", "invalid_value", param="audio_end_ms"
            )
        if end > 0:
            raise EventError(
                f"audio_end_ms {end} is beyond the item's audio (0 ms: this server produces text only)",
                "invalid_value",
                param="audio_end_ms",
            )
        self.conversation.set_text(item, index, "")
        await self._reply({"type": "conversation.item.truncated", "item_id": item.id, "content_index": index,
                           "audio_end_ms": 0})  # fmt: skip

    async def _item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.conversation.get(event.get("item_id"))
        await self._reply({"type": "conversation.item.retrieved", "item": item.wire()})

    def _refuse_if_generating(self, item: Item) -> None:
        if self.active is not None and item in self.active.items and item.status == "in_progress":
            raise EventError(
                "the item is still being generated; cancel the response first",
                "item_in_progress",
                param="item_id",
            )

    # ------------------------------------------------------------------ responses

    async def _response_create(self, event: dict[str, Any]) -> None:
        if self.sock.draining:  # the server drains: responses in flight finish, no new ones start
            raise EventError("the server is shutting down", "server_shutting_down", type="server_error")
        if self.active is not None:
            raise EventError(
                f"Conversation already has an active response in progress: {self.active.id}. Wait until the "
                "response is finished before creating a new one.",
                "conversation_already_has_active_response",
            )
        overrides = event.get("response") or {}
        if not isinstance(overrides, dict):
            raise EventError("response must be an object", "invalid_value", param="response")
        settings = self.session.settings.copy()
        apply(settings, overrides, self.dialect, self.state, where="response")
        mode = overrides.get("conversation", "auto")
        if mode not in ("auto", "none", None):
            raise EventError("response.conversation must be 'auto' or 'none'", "invalid_value",
                             param="response.conversation")  # fmt: skip
        metadata = overrides.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise EventError(
                "response.metadata must be an object", "invalid_value", param="response.metadata"
            )
        if "input" in overrides and overrides["input"] is not None:
            messages = self._input_messages(overrides["input"])
        else:
            messages = self.conversation.messages()
        plan = settings.plan(self.state, "response")
        state = self.state
        try:
            # Reasoning is parsed (never shown as text) but has no Realtime event: include_reasoning stays
            # on so that the engine applies a tool grammar only after the model's reasoning ends.
            setup = AssistantSetup.build(
                plan,
                None,
                config=state.assistant,
                structured_config=state.structured,
                tokenizer=state.tokenizer,
                chat_template_kwargs=state.chat_template_kwargs(None),  # --default-chat-template-kwargs
            )
            state.check_engine()
            prompt = await build_prompt(
                state,
                settings.instructions,
                messages,
                max_tokens=settings.max_output_tokens,
                truncate=settings.truncation == "auto",
                tools=plan.render_tools,
            )
            fields = sampling_fields(settings.sampling, state, where="response")
            params, text_params = assistant_params(
                setup, fields, limits=state.limits, max_tokens=prompt.max_tokens, stream=True
            )
        except APIError as exc:
            code = "context_length_exceeded" if exc.param == "input_tokens" else "invalid_request"
            if exc.status == 503:
                raise EventError(exc.message, "engine_unavailable", type="server_error") from None
            raise EventError(exc.message, code, param=exc.param) from None
        except ParamError as exc:
            raise EventError(str(exc), "invalid_value", param=exc.param) from None
        response_id = self.ids.new("resp")
        generation = assistant_generation(
            state, setup, prompt.ids, params, text_params, id_prefix=response_id
        )
        response = self.active = RealtimeResponse(
            response_id,
            generation,
            self.conversation if mode != "none" else None,
            settings.max_output_tokens,
            metadata,
            settings.sampling,
            setup,
        )
        runner = ResponseRunner(self.sock, self.ids, self.dialect, response)
        runner.announce()
        self.sock.start_soon(runner.run, self._response_done)

    def _input_messages(self, items: Any) -> list[dict[str, Any]]:
        """``response.input``: items for this response only (full items or ``item_reference``s)."""
        if not isinstance(items, list):
            raise EventError(
                "response.input must be a list of items", "invalid_value", param="response.input"
            )
        chosen: list[Item] = []
        for data in items:
            if isinstance(data, dict) and data.get("type") == "item_reference":
                chosen.append(self.conversation.get(data.get("id")))
            else:
                chosen.append(parse_item(data, self.ids, self.dialect))
        return chat_messages(chosen)

    def _response_done(self, response: RealtimeResponse) -> None:
        if self.active is response:
            self.active = None

    async def _response_cancel(self, event: dict[str, Any]) -> None:
        response = self.active
        wanted = event.get("response_id")
        if response is None or (wanted is not None and wanted != response.id):
            raise EventError(
                "Cancellation failed: no active response found" if response is None
                else f"Cancellation failed: response {wanted!r} is not the active response ({response.id})",
                "response_cancel_not_active",
            )  # fmt: skip
        response.cancel()
