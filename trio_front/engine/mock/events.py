"""The mock engine's event log: what it received and decided, for tests and benchmarks.

Each event is a dict ``{"t": time.monotonic(), "wall": time.time(), "event": NAME, ...}``. Names:

* ``ready`` — handshake done (``inputs``, ``outputs``);
* ``add`` — an ADD was accepted (``request_id``, ``client_index``, ``prompt_tokens``, ``max_tokens``);
  ``t`` is when the message was *received*, not when the step loop got to it;
* ``finish`` — the engine finished a request (``reason``: ``stop|length|abort|error``, ``tokens``,
  ``stop_reason``); engine-side aborts (``pause_scheduler("abort")``) are finishes, not ``abort`` events;
* ``abort`` — one per request id named in a client ABORT that was live (``t`` = receive time,
  ``tokens`` generated so far, ``state``: ``running|waiting``); ``abort_unknown`` for ids that were not
  live (finished already, or never added);
* ``utility`` — ``method``, ``call_id``, ``ok`` (and ``failure``);
* ``hazard`` — something that crashes or wedges the real engine (``kind``, ``detail``, ``action``:
  ``die|input_dead|output_dead|logged``, ``request_id`` when known);
* ``warning`` — harmless to the engine but probably a frontend bug (``kind``, ``detail``);
* ``dead`` — the engine died (``reason``, ``sentinel``: whether ENGINE_CORE_DEAD was sent);
* ``step`` — only with ``log_steps``: ``running``, ``waiting``, ``outputs``.

With a path, every event is also written as one JSON line and flushed at once, so a benchmark can read the
file while the engine runs.
"""

from __future__ import annotations

import time
from typing import IO, Any

import msgspec
import trio

_json = msgspec.json.Encoder()


class EventLog:
    """Append-only event list (optionally also a JSON-lines file); :meth:`wait_for` lets a test wait."""

    def __init__(self, path: str | None = None, *, keep: bool = True) -> None:
        self.events: list[dict[str, Any]] = []
        self._keep = keep
        self._file: IO[bytes] | None = open(path, "ab") if path else None  # closed in close()
        self._changed = trio.Event()

    def record(self, event: str, *, t: float | None = None, **fields: Any) -> dict[str, Any]:
        now, wall = time.monotonic(), time.time()
        if t is None:
            t = now
        # ``t`` may be earlier than now (a receive time); keep ``wall`` on the same instant.
        entry = {"t": t, "wall": wall - (now - t), "event": event, **fields}
        if self._keep:
            self.events.append(entry)
        if self._file is not None:
            self._file.write(_json.encode(entry) + b"\n")
            self._file.flush()
        self._changed.set()
        self._changed = trio.Event()
        return entry

    def named(self, event: str) -> list[dict[str, Any]]:
        """Every kept event called *event*, oldest first."""
        return [e for e in self.events if e["event"] == event]

    async def wait_for(self, event: str, *, count: int = 1, **match: Any) -> list[dict[str, Any]]:
        """Wait until *count* kept events called *event* whose fields equal *match* exist; return them.

        Bound it with ``trio.fail_after``; cancellation just stops waiting.
        """
        while True:
            found = [e for e in self.named(event) if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= count:
                return found
            await self._changed.wait()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
