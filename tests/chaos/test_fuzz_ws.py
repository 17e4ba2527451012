"""Hostile and malformed WebSocket messages (hypothesis) for the Realtime API (``/v1/realtime``) and the
Responses API over a WebSocket (``/v1/responses``).

Each example opens a socket and sends a valid conversation's messages with one or more of them mutated by
``fuzz_support`` (wrong types, huge/non-finite numbers, lone surrogates, deep nesting, huge strings,
duplicate keys; bodies that are not UTF-8 go as binary frames). The socket must answer every hostile
message with an ``error`` event that is not a server error, or accept it (a mutation can leave it valid),
or close with a protocol close code (1007/1008/1009), never 1011; then a probe message must still be
answered on it (the socket kept reading), every response it started must end, the engine must record no
hazard and the server log no ERROR; and a valid exchange on a fresh socket must complete. One server for
the module; examples are derandomized.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .fuzz_support import (
    FUZZ,
    TIMEOUT,
    ThreadedServer,
    describe,
    encoded,
    examples,
    fuzz_server,
    mutated_tree,
)

MODEL = "tiny-llama"
EXAMPLES = {"realtime": 80, "responses_ws": 80}
#: close codes a server may use for a message it refuses to read (invalid payload, policy, too big)
PROTOCOL_CLOSES = {1003, 1007, 1008, 1009}

TOOL_RT = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
REALTIME_BASES: list[list[dict[str, Any]]] = [
    [
        {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                                               "max_output_tokens": 4, "instructions": "be brief"}},
        {"type": "conversation.item.create", "item": ITEM},
        {"type": "response.create", "response": {"max_output_tokens": 2, "temperature": 0.5}},
    ],
    [
        {"type": "conversation.item.create", "item": ITEM, "event_id": "e1"},
        {"type": "session.update", "session": {"tools": [TOOL_RT], "tool_choice": "auto", "top_p": 0.9}},
        {"type": "response.create", "response": {"max_output_tokens": 2, "instructions": "x"}},
        {"type": "response.cancel"},
    ],
    [
        {"type": "conversation.item.create", "item": {**ITEM, "id": "item_x"}},
        {"type": "conversation.item.retrieve", "item_id": "item_x"},
        {"type": "conversation.item.create", "item": {"id": "item_a", "type": "message", "role": "assistant",
                                                     "content": [{"type": "output_text", "text": "Hello"}]}},
        {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0, "audio_end_ms": 0},
        {"type": "conversation.item.delete", "item_id": "item_x"},
        {"type": "response.create", "response": {"max_output_tokens": 2, "conversation": "none",
                                                 "input": [ITEM]}},
    ],
]  # fmt: skip
REALTIME_FIELDS = ["type", "event_id", "session", "item", "response", "previous_item_id", "item_id"]

RESPONSES_BASES: list[list[dict[str, Any]]] = [
    [{"type": "response.create", "model": MODEL, "input": "Hi", "max_output_tokens": 2, "store": False}],
    [
        {"type": "response.create", "input": [ITEM], "max_output_tokens": 2, "stream_id": "a",
         "tools": [TOOL_RT], "temperature": 0.5},
        {"type": "response.create", "input": "Hi", "max_output_tokens": 3, "stream_id": "b",
         "instructions": "x", "text": {"format": {"type": "json_object"}}},
    ],
    [{"type": "response.create", "input": [{"role": "user", "content": "Hi"}], "max_output_tokens": 2,
      "tool_choice": "none", "top_p": 0.5, "store": True}],
]  # fmt: skip
RESPONSES_FIELDS = [
    "type", "stream_id", "input", "instructions", "max_output_tokens", "tools", "tool_choice", "text",
    "temperature", "top_p", "previous_response_id", "store", "model", "stream", "event_id", "reasoning",
]  # fmt: skip


@pytest.fixture(scope="module")
def fuzz() -> Iterator[ThreadedServer]:
    with fuzz_server({"enable_auto_tool_choice": True, "tool_call_parser": "hermes"}) as server:
        yield server


@st.composite
def hostile_messages(draw: st.DrawFn, bases: list[list[dict[str, Any]]], fields: list[str]) -> list[bytes]:
    """One base conversation, each message mutated with probability 1/2 (at least one is)."""
    base = draw(st.sampled_from(bases))
    hit = draw(st.lists(st.booleans(), min_size=len(base), max_size=len(base)))
    if not any(hit):
        hit[draw(st.integers(0, len(base) - 1))] = True
    out = []
    for message, mutate in zip(base, hit, strict=True):
        if mutate:
            out.append(draw(encoded(draw(mutated_tree(message, fields)), fields)))
        else:
            out.append(json.dumps(message).encode())
    return out


def send_frame(ws: ClientConnection, data: bytes) -> None:
    """Text frame when *data* is UTF-8, else binary (a text frame cannot carry invalid UTF-8)."""
    try:
        ws.send(data.decode("utf-8"))
    except UnicodeDecodeError:
        ws.send(data)


def check_event(event: dict[str, Any], what: str) -> None:
    assert isinstance(event, dict) and isinstance(event.get("type"), str), f"{what}: {event!r}"[:500]
    if event["type"] == "error":
        error = event["error"]
        assert error.get("type") != "server_error", f"{what}: {event}"
        assert event.get("status", 400) < 500, f"{what}: {event}"
        assert isinstance(error.get("message"), str), f"{what}: {event}"


class Watcher:
    """Reads a socket's events, checks each, and tracks which responses are still running."""

    def __init__(self, ws: ClientConnection, what: str, *, realtime: bool) -> None:
        self.ws, self.what, self.realtime = ws, what, realtime
        self.running: set[str] = set()
        self.errors: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        event = json.loads(self.ws.recv(timeout=TIMEOUT))
        check_event(event, self.what)
        kind = event["type"]
        if kind == "error":
            self.errors.append(event)
        elif kind == "response.created":
            self.running.add(event["response"]["id"])
        elif kind in ("response.done", "response.completed", "response.incomplete", "response.failed"):
            self.running.discard(event["response"]["id"])
        return event

    def until(self, done) -> dict[str, Any]:
        while True:
            event = self.next()
            if done(event):
                return event

    def drain(self) -> None:
        """Wait until every response this socket started has ended."""
        while self.running:
            self.next()


def probe(watcher: Watcher) -> None:
    """A message the socket must answer (an unknown event type → an error naming it): it is still reading."""
    if watcher.realtime:
        watcher.ws.send(json.dumps({"type": "fuzz.probe", "event_id": "probe"}))
        watcher.until(lambda e: e["type"] == "error" and e["error"].get("event_id") == "probe")
    else:
        watcher.ws.send(json.dumps({"type": "fuzz.probe", "stream_id": "probe"}))
        watcher.until(lambda e: e["type"] == "error" and e.get("stream_id") == "probe")


def is_probe(event: dict[str, Any]) -> bool:
    return "probe" in (event["error"].get("event_id"), event.get("stream_id"))


def valid_exchange(fuzz: ThreadedServer, path: str, what: str) -> None:
    realtime = path.startswith("/v1/realtime")
    with connect(fuzz.ws_url + path, open_timeout=TIMEOUT, close_timeout=5, max_size=None) as ws:
        watcher = Watcher(ws, f"the valid exchange after {what}", realtime=realtime)
        if realtime:
            watcher.until(lambda e: e["type"] == "session.created")
            ws.send(json.dumps({"type": "conversation.item.create", "item": ITEM}))
            ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 2}}))
            done = watcher.until(lambda e: e["type"] == "response.done")
            assert done["response"]["status"] in ("completed", "incomplete"), f"after {what}: {done}"
        else:
            ws.send(json.dumps(RESPONSES_BASES[0][0]))
            done = watcher.until(
                lambda e: e["type"] in ("response.completed", "response.incomplete", "error")
            )
            assert done["type"] != "error", f"after {what}: {done}"


def run_example(fuzz: ThreadedServer, path: str, messages: list[bytes]) -> None:
    realtime = path.startswith("/v1/realtime")
    what = f"WS {path} messages=" + " | ".join(describe(m) for m in messages)
    fuzz.begin()
    with connect(fuzz.ws_url + path, open_timeout=TIMEOUT, close_timeout=5, max_size=None) as ws:
        watcher = Watcher(ws, what, realtime=realtime)
        try:
            if realtime:
                watcher.until(lambda e: e["type"] == "session.created")
            for message in messages:
                send_frame(ws, message)
            probe(watcher)
            watcher.drain()
            codes = sorted(
                {str(e["error"].get("code")) for e in watcher.errors if not is_probe(e)} or {"none"}
            )
            fuzz.tally[path.split("?")[0]]["errors " + ",".join(codes)] += 1
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            assert code in PROTOCOL_CLOSES, f"{what}: the server closed the socket with {code} ({exc})"
            fuzz.tally[path.split("?")[0]][f"closed {code}"] += 1
    fuzz.settle()
    fuzz.check_engine(what)
    valid_exchange(fuzz, path, what)
    fuzz.settle()
    fuzz.check_engine(f"the valid exchange after {what}")


@settings(FUZZ, max_examples=examples(EXAMPLES["realtime"]))
@given(messages=hostile_messages(REALTIME_BASES, REALTIME_FIELDS))
def test_fuzz_realtime(fuzz: ThreadedServer, messages: list[bytes]) -> None:
    """Hostile Realtime client events: error events (never a server error), the socket still reading."""
    run_example(fuzz, f"/v1/realtime?model={MODEL}", messages)


@settings(FUZZ, max_examples=examples(EXAMPLES["responses_ws"]))
@given(messages=hostile_messages(RESPONSES_BASES, RESPONSES_FIELDS))
def test_fuzz_responses_websocket(fuzz: ThreadedServer, messages: list[bytes]) -> None:
    """Hostile Responses WebSocket events: error events (never a server error), the socket still reading."""
    run_example(fuzz, "/v1/responses", messages)


def test_the_valid_conversations_are_valid(fuzz: ThreadedServer) -> None:
    """Every unmutated base conversation gets no error event but the probe's."""
    for path, bases in ((f"/v1/realtime?model={MODEL}", REALTIME_BASES), ("/v1/responses", RESPONSES_BASES)):
        for base in bases:
            with connect(fuzz.ws_url + path, open_timeout=TIMEOUT, close_timeout=5, max_size=None) as ws:
                watcher = Watcher(ws, f"{path} {base}", realtime=path != "/v1/responses")
                if watcher.realtime:
                    watcher.until(lambda e: e["type"] == "session.created")
                for message in base:
                    ws.send(json.dumps(message))
                probe(watcher)
                watcher.drain()
                errors = [e for e in watcher.errors if not is_probe(e)]
                assert not errors, f"{path} {base}: {errors}"
    fuzz.settle()
    fuzz.check_engine("the valid conversations")
