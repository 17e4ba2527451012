"""The outgoing queue of one WebSocket: bounded for replies, coalescing for deltas.

Producers never wait on the network. A response task calls :meth:`Outbox.push` (a few events per
response) and :meth:`Outbox.push_delta` (one per chunk of text); both are synchronous, so they also work
from a cancelled scope (the final ``response.done`` of a cancelled response). A delta whose key matches
the *last* queued entry is appended to it instead of queued, so while the client lags its deltas merge
into one bigger event: a response holds at most a handful of entries, whatever the client's speed, and
the merged text is at most the response's own output. The socket's reader task calls
:meth:`wait_writable` before it handles each client event and :meth:`put` for its replies; both wait
while ``limit`` entries are queued, so a client that sends much and reads nothing stops being read
(hypercorn's receive queue then fills and TCP pushes back on the client).

One writer task calls :meth:`get`. :meth:`close` drops everything queued and makes every later push a
no-op (the socket is gone). :meth:`finish` is the graceful end (server shutdown): later pushes are dropped
too, but what is queued is still handed out before :meth:`get` reports the end.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
import trio

Event = dict[str, Any]


@attrs.define(eq=False, slots=True)
class _Delta:
    key: object
    event: Event
    field: str
    parts: list[str]


class Outbox:
    """See the module docstring. Not thread-safe; one trio loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.coalesced = 0  # deltas merged into a queued one (for tests and metrics)
        self.high_water = 0  # most entries ever queued at once
        self.closed = False
        #: :meth:`finish` was called: nothing more is queued, what is queued still goes out
        self.finishing = False
        self._queue: deque[Event | _Delta] = deque()
        self._readable = trio.lowlevel.ParkingLot()
        self._writable = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_chars(self) -> int:
        """Characters of delta text waiting (a bound for tests: it never exceeds the responses' output)."""
        return sum(sum(map(len, e.parts)) for e in self._queue if isinstance(e, _Delta))

    # ------------------------------------------------------------------ producers

    def push(self, event: Event) -> None:
        """Queue *event* (synchronous, never blocks; dropped once closed or finishing)."""
        if self.closed or self.finishing:
            return
        self._queue.append(event)
        self.high_water = max(self.high_water, len(self._queue))
        self._readable.unpark()

    def push_delta(self, key: object, event: Event, field: str, text: str) -> bool:
        """Queue *event* with ``event[field] = text``, or add *text* to the last queued entry if that is
        a delta with the same *key* (then *event* is dropped: the first one's other fields stand).
        Returns whether it merged (dropped once closed or finishing: True)."""
        if self.closed or self.finishing:
            return True
        last = self._queue[-1] if self._queue else None
        if isinstance(last, _Delta) and last.key == key:
            last.parts.append(text)
            self.coalesced += 1
            return True
        self._queue.append(_Delta(key, event, field, [text]))
        self.high_water = max(self.high_water, len(self._queue))
        self._readable.unpark()
        return False

    async def wait_writable(self) -> None:
        """Wait until fewer than ``limit`` entries are queued (or the outbox is closed or finishing)."""
        while len(self._queue) >= self.limit and not (self.closed or self.finishing):
            await self._writable.park()

    async def put(self, event: Event) -> None:
        """:meth:`wait_writable`, then :meth:`push`."""
        await self.wait_writable()
        self.push(event)

    # ------------------------------------------------------------------ writer

    async def get(self) -> Event:
        """The next event to send (deltas materialized); raises ``trio.EndOfChannel`` once closed, or once
        finishing and empty."""
        while not self._queue:
            if self.closed or self.finishing:
                raise trio.EndOfChannel
            await self._readable.park()
        entry = self._queue.popleft()
        if len(self._queue) < self.limit:
            self._writable.unpark_all()
        if isinstance(entry, _Delta):
            entry.event[entry.field] = entry.parts[0] if len(entry.parts) == 1 else "".join(entry.parts)
            return entry.event
        return entry

    def finish(self) -> None:
        """The graceful end: drop later pushes, let the writer send what is queued, then end it."""
        self.finishing = True
        self._readable.unpark_all()
        self._writable.unpark_all()

    def close(self) -> None:
        """The abrupt end (the socket is gone): drop what is queued and every later push."""
        self.closed = True
        self._queue.clear()
        self._readable.unpark_all()
        self._writable.unpark_all()
