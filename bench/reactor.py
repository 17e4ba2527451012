"""The load generator's hot path: many streaming HTTP/1.1 requests driven from one epoll set.

A trio task per connection costs several scheduler passes per received SSE event (~20 µs of client CPU
per token here), more than the fastest frontend spends producing it. So W1–W3 use this reactor instead:
non-blocking stdlib sockets in one ``epoll`` object, polled with a blocking ``epoll_wait`` (nothing else
runs in the load-generator process during a phase); each wake-up drains every ready socket synchronously
(``recv``, chunked decode, SSE split, timestamps). The loop wakes at least every ``tick`` seconds to
enforce per-request and phase timeouts, and yields to trio now and then.

``concurrency`` connection slots each run requests one after another from a shared queue (closed-loop
load, like ``vllm bench serve --max-concurrency``), reusing the connection while the server keeps it
alive. A request whose reused connection turns out to be closed before any response byte is retried
once on a new connection (counted in ``retries``).
"""

from __future__ import annotations

import errno
import json
import re
import select
import socket
import time
from typing import Any

import trio

from bench.httpclient import RECV_BYTES, ProtocolError, Response, SSEParser, parse_head

_ID_RE = re.compile(rb'"id"\s*:\s*"([^"]+)"')
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT


class Rec:
    """Timings of one request (``time.monotonic()`` seconds) and what came back."""

    __slots__ = (
        "chunk_id", "close_t", "done", "end", "error", "head", "last", "n_events", "start", "tokens",
        "ttft", "xid",
    )  # fmt: skip

    def __init__(self, xid: str) -> None:
        self.xid = xid
        self.reset()

    def reset(self) -> None:
        self.start: float | None = None
        self.ttft: float | None = None
        self.last: float | None = None
        self.end: float | None = None
        self.close_t: float | None = None
        self.head = self.done = False
        self.n_events = 0
        self.tokens: int | None = None
        self.error: str | None = None
        self.chunk_id: str | None = None


def _is_error(p: bytes) -> bool:
    return p.startswith(b'{"error"') or b'"object":"error"' in p[:64] or b'"object": "error"' in p[:64]


def _is_empty(p: bytes) -> bool:
    """No text in the chunk: ``"text":""`` (completions), or a chat delta without content or with ``""``
    (the role chunk, a bare finish chunk)."""
    if b'"text":""' in p or b'"text": ""' in p or b'"content":""' in p or b'"content": ""' in p:
        return True
    return (b'"delta":{' in p or b'"delta": {' in p) and b'"content"' not in p


def _has_finish(p: bytes) -> bool:
    return b'"finish_reason":"' in p or b'"finish_reason": "' in p


def consume(rec: Rec, payloads: list[bytes], now: float, gaps: list[float], close_after: int) -> bool:
    """Account SSE payloads received at *now*; True once *close_after* token events were seen.

    A token event is a chunk with a non-empty ``choices`` and non-empty ``text`` (chat: ``delta.content``;
    the role-only first chunk is not one) (or, before any token
    event, an empty-text chunk with a ``finish_reason``: a 1-token output whose text is held back
    by the detokenizer, e.g. half of a UTF-8 character); the usage-only chunk
    gives ``completion_tokens``; ``[DONE]`` marks a complete stream; error objects are recorded.
    """
    for p in payloads:
        if p == b"[DONE]":
            rec.done = True
            continue
        if _is_error(p):
            rec.error = p[:300].decode(errors="replace")
            continue
        if b'"usage":{' in p or b'"usage": {' in p:
            rec.tokens = (json.loads(p).get("usage") or {}).get("completion_tokens")
        if b'"choices":[]' in p or b'"choices": []' in p:
            continue  # usage-only
        if _is_empty(p) and (rec.ttft is not None or not _has_finish(p)):
            continue  # empty text (e.g. a separate finish chunk), unless it is the only, final chunk
        if rec.ttft is None:
            rec.ttft = now - rec.start  # type: ignore[operator]
            m = _ID_RE.search(p)
            rec.chunk_id = m.group(1).decode() if m else None
        else:
            gaps.append(now - rec.last)  # type: ignore[operator]
        rec.last = now
        rec.n_events += 1
        if close_after and rec.n_events >= close_after:
            return True
    return False


class _Slot:
    """One connection slot: its socket, buffers, and the request in flight (if any)."""

    __slots__ = ("buf", "connecting", "err_body", "idx", "out", "requests", "resp", "retried", "sock", "sse")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.connecting = False
        self.buf = bytearray()
        self.out = b""
        self.idx: int | None = None
        self.resp: Response | None = None
        self.sse = SSEParser()
        self.requests = 0
        self.retried = False
        self.err_body = b""


class Reactor:
    """Runs ``payloads`` (complete HTTP requests) with ``concurrency`` connections; fills ``recs``."""

    def __init__(
        self,
        host: str,
        port: int,
        payloads: list[bytes],
        recs: list[Rec],
        *,
        close_after: list[int] | None = None,
        request_timeout: float = 300.0,
        connect_parallel: int = 64,
        tick: float = 0.25,
    ) -> None:
        self.addr = (host, port)
        self.payloads, self.recs = payloads, recs
        self.close_after = close_after
        self.request_timeout = request_timeout
        self.connect_parallel = connect_parallel
        self.tick = tick
        self.ep = select.epoll()
        self.by_fd: dict[int, _Slot] = {}
        self.slots: list[_Slot] = []
        self.next = 0
        self.active = 0
        self.gaps: list[float] = []
        self.retries = 0
        self.connect_failures = 0
        self.deadlines: dict[int, float] = {}  # request index -> deadline

    # ----------------------------------------------------------------------------------- sockets

    def _open(self, slot: _Slot) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
        slot.sock, slot.connecting, slot.requests = sock, True, 0
        slot.buf.clear()
        self.by_fd[sock.fileno()] = slot
        self.ep.register(sock.fileno(), _OUT)

    def _close(self, slot: _Slot) -> None:
        if slot.sock is not None:
            fd = slot.sock.fileno()
            self.by_fd.pop(fd, None)
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass
            slot.sock.close()
            slot.sock = None
        slot.connecting = False
        slot.out = b""

    async def preconnect(self, n: int, timeout: float = 60.0) -> int:
        """Open *n* idle connections, ``connect_parallel`` handshakes at a time; how many succeeded."""
        self.slots = [_Slot() for _ in range(n)]
        pending: set[int] = set()
        todo = list(range(n))
        ok = 0
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):
            while todo and len(pending) < self.connect_parallel:
                slot = self.slots[todo.pop()]
                try:
                    self._open(slot)
                    pending.add(slot.sock.fileno())  # type: ignore[union-attr]
                except OSError:
                    self.connect_failures += 1
            if not pending or time.monotonic() > deadline:
                break
            with trio.move_on_after(self.tick):
                await trio.lowlevel.wait_readable(self.ep.fileno())
            for fd, _ev in self.ep.poll(0):
                slot = self.by_fd[fd]
                if fd not in pending:  # an idle connection the server closed
                    self._readable(slot)
                    continue
                pending.discard(fd)
                if slot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):  # type: ignore[union-attr]
                    self.connect_failures += 1
                    self._close(slot)
                else:
                    slot.connecting = False
                    self.ep.modify(fd, _IN)
                    ok += 1
        for fd in list(pending):
            self._close(self.by_fd[fd])
        return ok

    # ----------------------------------------------------------------------------------- requests

    def _start_next(self, slot: _Slot) -> None:
        """Begin the next queued request on *slot*, or retire the slot when the queue is empty."""
        for _ in range(len(self.payloads) + 1):  # requests that fail synchronously are skipped
            if self.next >= len(self.payloads):
                slot.idx = None
                self._close(slot)
                self.active -= 1
                return
            i = self.next
            self.next += 1
            if self._begin(slot, i):
                return

    def _begin(self, slot: _Slot, i: int) -> bool:
        """Send request *i* on *slot* (connecting first if needed); False if it failed at once."""
        slot.idx, slot.resp, slot.sse, slot.err_body = i, None, SSEParser(), b""
        self.deadlines[i] = time.monotonic() + self.request_timeout
        if slot.sock is None:
            try:
                self._open(slot)
            except OSError as exc:
                self.connect_failures += 1
                rec = self.recs[i]
                rec.error, rec.end = f"connect: {exc}", time.monotonic()
                self.deadlines.pop(i, None)
                slot.idx = None
                return False
            return True  # sent once writable
        self._send(slot)
        return True

    def _send(self, slot: _Slot) -> None:
        """Write the request; a send error surfaces later as an epoll error event (no recursion here)."""
        assert slot.idx is not None and slot.sock is not None
        rec = self.recs[slot.idx]
        data = self.payloads[slot.idx]
        slot.requests += 1
        rec.start = time.monotonic()
        try:
            n = slot.sock.send(data)
        except OSError:  # BlockingIOError, EPIPE, ECONNRESET...: retried from the event loop
            n = 0
        slot.out = data[n:]
        self.ep.modify(slot.sock.fileno(), _IN | _OUT if slot.out else _IN)

    def _finish(self, slot: _Slot, reusable: bool) -> None:
        i = slot.idx
        if i is not None:
            self.deadlines.pop(i, None)
            rec = self.recs[i]
            if rec.end is None:
                rec.end = time.monotonic()
            if rec.error is None and rec.close_t is None and not rec.done:
                rec.error = "stream ended without [DONE]"
        if not reusable:
            self._close(slot)
        self._start_next(slot)

    def _fail(self, slot: _Slot, error: str) -> None:
        if slot.idx is not None:
            self.recs[slot.idx].error = error
        self._finish(slot, reusable=False)

    def _broken(self, slot: _Slot, exc: BaseException | str) -> None:
        """The connection failed; retry once if it was a reused one that never answered."""
        assert slot.idx is not None
        rec = self.recs[slot.idx]
        if not rec.head and slot.requests > 1 and not slot.retried:
            self.retries += 1
            slot.retried = True
            self._close(slot)
            rec.reset()
            if not self._begin(slot, slot.idx):
                self._finish(slot, reusable=False)
            return
        self._fail(slot, exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}")

    def _on_event(self, slot: _Slot, ev: int) -> None:
        sock = slot.sock
        assert sock is not None
        if slot.connecting:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.connect_failures += 1
                self._fail(slot, f"connect: {errno.errorcode.get(err, err)}")
                return
            slot.connecting = False
            if slot.idx is not None:
                self._send(slot)
            else:
                self.ep.modify(sock.fileno(), _IN)
            return
        if ev & _OUT and slot.out:
            try:
                n = sock.send(slot.out)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._broken(slot, exc)
                return
            slot.out = slot.out[n:]
            if not slot.out:
                self.ep.modify(sock.fileno(), _IN)
        if ev & ~_OUT:
            self._readable(slot)

    def _readable(self, slot: _Slot) -> None:
        sock = slot.sock
        assert sock is not None
        try:
            data = sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            if slot.idx is None:
                self._close(slot)
            else:
                self._broken(slot, exc)
            return
        now = time.monotonic()
        if slot.idx is None:  # an idle connection: only EOF (server closed it) is expected
            if not data:
                self._close(slot)
            return
        rec = self.recs[slot.idx]
        if not data:
            resp = slot.resp
            if resp is not None and not resp.chunked and resp.length_left is None:
                resp.done = True
                self._complete(slot, rec, resp, now, reusable=False)
            else:
                self._broken(slot, "connection closed mid-response" if rec.head else "connection closed")
            return
        slot.buf += data
        try:
            if slot.resp is None:
                slot.resp = parse_head(slot.buf)
                if slot.resp is None:
                    return
                rec.head = True
            resp = slot.resp
            body = resp.decode(slot.buf)
        except (ProtocolError, ValueError) as exc:
            self._fail(slot, f"protocol: {exc}")
            return
        if resp.status != 200:
            slot.err_body = (slot.err_body + body)[:400]
            if resp.done:
                rec.error = f"HTTP {resp.status}: {slot.err_body[:200].decode(errors='replace')}"
                self._finish(slot, resp.keep_alive)
            return
        close_after = self.close_after[slot.idx] if self.close_after else 0
        if body and consume(rec, slot.sse.feed(body), now, self.gaps, close_after):
            rec.close_t = time.monotonic()
            rec.end = rec.close_t
            self._close(slot)  # the client goes away mid-stream
            self._finish(slot, reusable=False)
            return
        if resp.done:
            self._complete(slot, rec, resp, now, reusable=resp.keep_alive)

    def _complete(self, slot: _Slot, rec: Rec, resp: Response, now: float, reusable: bool) -> None:
        rec.end = now
        self._finish(slot, reusable)

    # ----------------------------------------------------------------------------------- the loop

    def _expire(self, now: float) -> None:
        for slot in list(self.slots):
            i = slot.idx
            if i is not None and self.deadlines.get(i, now + 1) < now:
                self._fail(slot, "timeout")

    async def run(self, concurrency: int, phase_timeout: float) -> bool:
        """Run every payload; False if the phase timed out (unfinished requests get ``error``)."""
        n = min(concurrency, len(self.payloads))
        if len(self.slots) < n:
            self.slots += [_Slot() for _ in range(n - len(self.slots))]
        self.slots = self.slots[:n]
        self.active = n
        for slot in self.slots:
            self._start_next(slot)
        deadline = time.monotonic() + phase_timeout
        next_expire = time.monotonic() + self.tick
        loops = 0
        for _ in range(100_000_000):
            if self.active <= 0:
                break
            now = time.monotonic()
            if now > deadline:
                for slot in self.slots:
                    if slot.idx is not None:
                        self._fail(slot, "phase timeout")
                return False
            if now >= next_expire:
                self._expire(now)
                next_expire = now + self.tick
            # Blocking here is deliberate: nothing else runs in this process during a phase, and a
            # trio wake-up per socket event would cost more client CPU than the event itself.
            for fd, ev in self.ep.poll(self.tick):
                slot = self.by_fd.get(fd)
                if slot is not None and slot.sock is not None:
                    self._on_event(slot, ev)
            loops += 1
            if loops % 1024 == 0:
                await trio.lowlevel.checkpoint()
        return True

    def close(self) -> None:
        for slot in self.slots:
            self._close(slot)
        self.ep.close()

    def stats(self) -> dict[str, Any]:
        return {"retries": self.retries, "connect_failures": self.connect_failures}
