"""Wire details of the Realtime API: the GA and beta event names, ids, error events.

The GA protocol (``client.realtime.connect``) is the default. A client that sends the header
``OpenAI-Beta: realtime=v1`` (``client.beta.realtime.connect``, older SDKs) gets the beta names:
``conversation.item.created`` instead of ``conversation.item.added``/``done``, ``response.text.delta``/
``done`` instead of ``response.output_text.*``, ``modalities`` and ``max_response_output_tokens`` in the
session, and assistant content of type ``text`` instead of ``output_text``.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

import attrs


@attrs.frozen
class Dialect:
    beta: bool
    item_added: str
    item_done: str | None
    text_delta: str
    text_done: str
    assistant_text: str
    modalities_key: str
    max_tokens_key: str


GA = Dialect(
    beta=False,
    item_added="conversation.item.added",
    item_done="conversation.item.done",
    text_delta="response.output_text.delta",
    text_done="response.output_text.done",
    assistant_text="output_text",
    modalities_key="output_modalities",
    max_tokens_key="max_output_tokens",
)
BETA = Dialect(
    beta=True,
    item_added="conversation.item.created",
    item_done=None,
    text_delta="response.text.delta",
    text_done="response.text.done",
    assistant_text="text",
    modalities_key="modalities",
    max_tokens_key="max_response_output_tokens",
)


def dialect_for(headers: list[tuple[bytes, bytes]]) -> Dialect:
    for name, value in headers:
        if name.lower() == b"openai-beta" and b"realtime=v1" in value.lower():
            return BETA
    return GA


class EventError(Exception):
    """A client event that cannot be honoured: becomes an ``error`` event; the socket stays open."""

    def __init__(
        self, message: str, code: str, *, param: str | None = None, type: str = "invalid_request_error"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.type = type


class Ids:
    """Ids for one socket: OpenAI-style prefixes; event ids are a counter (one per delta is common)."""

    def __init__(self) -> None:
        self._tag = secrets.token_hex(6)
        self._events = itertools.count()

    def event(self) -> str:
        return f"event_{self._tag}{next(self._events):x}"

    @staticmethod
    def new(prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(10)}"


def error_event(ids: Ids, error: EventError, client_event_id: str | None) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": ids.event(),
        "error": {
            "type": error.type,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": client_event_id,
        },
    }
