"""pyzmq sockets under trio, from the rules of libzmq's edge-triggered ``ZMQ_FD``.

pyzmq has no trio backend. ``sock.FD`` is libzmq's internal mailbox signaller: it becomes readable when
the socket has *commands* to process, and any call into the socket (``recv``, ``send``, even
``getsockopt(EVENTS)``) may process them and swallow the edge. So:

1. readiness is decided only by ``zmq.EVENTS``, never by the FD;
2. before sleeping on the FD we must just have seen ``EVENTS`` say "not ready";
3. after waking we drain with ``NOBLOCK`` until ``zmq.Again``;
4. one task owns the waiting; a send on the same socket (which may swallow the edge) wakes that task so
   it re-checks ``EVENTS`` (the classic "recv once per wake-up" bug stalls after one message);
5. ``trio.lowlevel.notify_closing`` runs before the socket is closed so a parked waiter gets
   ``ClosedResourceError`` instead of sleeping on a dead descriptor.

Sends never await here: vLLM's sockets use ``SNDHWM=0`` on ROUTER/PUSH (ROUTER drops rather than blocks)
so :meth:`TrioSocket.send_nowait` is synchronous and therefore usable from cleanup code that must not be
skipped by a cancellation.
"""

from __future__ import annotations

import contextlib
import os
import socket

import trio
import zmq

#: Batch cap for :meth:`TrioSocket.receive_batch`, so a flood cannot starve other tasks indefinitely.
MAX_BATCH = 1024


class TrioSocket:
    """A pyzmq socket used from trio tasks.

    Receiving is for one task at a time (a second concurrent receiver gets ``trio.BusyResourceError``).
    Sending is synchronous and may be called from any task, including from ``finally`` blocks while a
    cancellation is in flight. :meth:`close` may be called while a receiver is parked; the receiver then
    raises ``trio.ClosedResourceError``.
    """

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self._fd = sock.getsockopt(zmq.FD)
        self._closed = False
        self._receiving = False
        self._waiter: trio.CancelScope | None = None
        #: ipc:// files this socket bound; libzmq leaves them behind, so close() removes them
        self.ipc_files: list[str] = []

    # ---------------------------------------------------------------- sending

    def send_nowait(self, frames: list[bytes]) -> None:
        """Send a multipart message without waiting.

        Raises ``trio.WouldBlock`` if the socket cannot take it now (only possible on socket types
        with a finite HWM; vLLM's ROUTER/PUSH sockets have none) and ``trio.ClosedResourceError``
        after :meth:`close`.
        """
        if self._closed:
            raise trio.ClosedResourceError("socket is closed")
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=len(frames[-1]) < 65536)
        except zmq.Again:
            raise trio.WouldBlock from None
        finally:
            # The send may have consumed the FD edge a parked receiver relies on: wake it to recheck.
            if self._waiter is not None:
                self._waiter.cancel()

    async def send(self, frames: list[bytes]) -> None:
        """Send, waiting for ``POLLOUT`` if the peer applies back-pressure (PUSH/DEALER with HWM)."""
        while True:
            try:
                self.send_nowait(frames)
            except trio.WouldBlock:
                await self._wait_for(zmq.POLLOUT)
            else:
                await trio.lowlevel.checkpoint()
                return

    # ---------------------------------------------------------------- receiving

    async def receive(self) -> list[bytes]:
        """Receive one multipart message (frames as ``bytes``)."""
        # trio's channel pattern: honour a pending cancel *before* taking a message, then yield
        # without cancellation, so a cancelled receive never loses a message it already took.
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                frames = self._recv_nowait()
            except zmq.Again:
                await self._wait_for(zmq.POLLIN)
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return frames

    async def receive_batch(self, max_messages: int = MAX_BATCH) -> list[list[bytes]]:
        """Receive every message already queued (at least one, at most *max_messages*).

        Draining in one go amortises the wake-up over a burst; it is what the engine output reader uses.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            batch: list[list[bytes]] = []
            try:
                while len(batch) < max_messages:
                    batch.append(self._recv_nowait())
            except zmq.Again:
                pass
            if batch:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return batch
            await self._wait_for(zmq.POLLIN)

    def _recv_nowait(self) -> list[bytes]:
        if self._closed:
            raise trio.ClosedResourceError("socket is closed")
        return self.sock.recv_multipart(flags=zmq.NOBLOCK)

    async def _wait_for(self, event: int) -> None:
        """Return when ``EVENTS`` has *event*, or when a sender asks us to look again."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already waiting on this zmq socket")
        self._receiving = True
        try:
            while not self._closed and not (self.sock.getsockopt(zmq.EVENTS) & event):
                # EVENTS just said "not ready", so sleeping on the edge-triggered FD is safe now.
                with trio.CancelScope() as waiter:
                    self._waiter = waiter
                    try:
                        await trio.lowlevel.wait_readable(self._fd)
                    finally:
                        self._waiter = None
            if self._closed:
                raise trio.ClosedResourceError("socket was closed while waiting")
        finally:
            self._receiving = False

    # ---------------------------------------------------------------- lifetime

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, linger: int = 0) -> None:
        """Close the socket; a parked receiver wakes with ``ClosedResourceError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self._fd)
        self.sock.close(linger=linger)
        for path in self.ipc_files:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def __enter__(self) -> TrioSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_socket(
    ctx: zmq.Context,
    kind: int,
    *,
    bind: str | None = None,
    connect: str | None = None,
    identity: bytes | None = None,
    linger: int = 0,
) -> TrioSocket:
    """Create a socket with vLLM's settings (HWM 0: unbounded, so the engine never blocks on us)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, linger)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if any(addr is not None and addr.startswith("tcp://[") for addr in (bind, connect)):
        sock.setsockopt(zmq.IPV6, 1)  # as vLLM's make_zmq_socket: libzmq is IPv4-only without it
    if bind is not None:
        sock.bind(bind)
    if connect is not None:
        sock.connect(connect)
    wrapped = TrioSocket(sock)
    if bind is not None and bind.startswith("ipc://"):
        wrapped.ipc_files.append(bind[len("ipc://") :])
    return wrapped


#: vLLM's libzmq buffer policy (``network_utils._get_zmq_socket_buffer_size``): 512 MiB on a host with more
#: than 32 GiB of RAM of which more than 16 GiB is available, else the OS default (-1).
_LARGE_BUFFER = 512 * 1024**2
_LARGE_BUFFER_MIN_TOTAL = 32 * 1024**3
_LARGE_BUFFER_MIN_AVAILABLE = 16 * 1024**3


def vllm_buffer_size() -> int:
    """The ``SO_RCVBUF``/``SO_SNDBUF`` vLLM gives its engine sockets (-1: leave the OS default)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, ValueError, KeyError):  # not Linux: psutil's answer is not worth a dependency
        return -1
    return (
        _LARGE_BUFFER if total > _LARGE_BUFFER_MIN_TOTAL and available > _LARGE_BUFFER_MIN_AVAILABLE else -1
    )


def listener_endpoint(fd: int) -> str:
    """The ZMQ endpoint of an inherited, listening stream socket: ``ipc://PATH`` for AF_UNIX,
    ``tcp://IP:PORT`` (``tcp://[IP]:PORT`` for IPv6) for INET.

    Raises ``ValueError`` naming *fd* if it is not a listening stream socket of those families (a
    wrong fd number would otherwise make libzmq fail obscurely, or adopt an unrelated socket). The fd
    stays open and owned by the caller.
    """
    try:
        probe = socket.socket(fileno=fd)
    except OSError as exc:
        raise ValueError(f"fd {fd} is not a socket: {exc}") from None
    try:
        if probe.type != socket.SOCK_STREAM:
            raise ValueError(f"fd {fd} is not a stream socket")
        if not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError(f"fd {fd} is not listening (vLLM hands over listening sockets)")
        name = probe.getsockname()
        if probe.family == socket.AF_UNIX:
            if isinstance(name, bytes):  # Linux's abstract namespace: libzmq spells it ipc://@NAME
                if len(name) < 2 or not name.startswith(b"\0"):
                    raise ValueError(f"fd {fd} is an unnamed Unix socket; ZMQ needs an address")
                return f"ipc://@{name[1:].decode()}"
            if not name:
                raise ValueError(f"fd {fd} is an unnamed Unix socket; ZMQ needs an address")
            return f"ipc://{name}"
        if probe.family == socket.AF_INET:
            return f"tcp://{name[0]}:{name[1]}"
        if probe.family == socket.AF_INET6:
            return f"tcp://[{name[0]}]:{name[1]}"
        raise ValueError(
            f"fd {fd} has address family {probe.family!r}; expected AF_UNIX, AF_INET or AF_INET6"
        )
    finally:
        probe.detach()  # the fd is not ours to close: libzmq adopts it next


def adopt_listener(ctx: zmq.Context, kind: int, fd: int, *, linger: int = 0) -> TrioSocket:
    """A ZMQ socket of *kind* (ROUTER or PULL) that takes over the listening socket *fd* (``ZMQ_USE_FD``)
    and binds to the endpoint it already has, with vLLM's options (``make_zmq_socket(listener=...)``):
    HWM 0, and vLLM's buffer sizes.

    libzmq owns *fd* from here on (closing the socket closes it). An adopted ipc:// file is *not*
    removed on close: the process that bound it (vLLM's supervisor) cleans its listeners up, and
    libzmq itself never unlinks a path it did not bind. Raises ``ValueError`` if *fd* is unusable.
    """
    endpoint = listener_endpoint(fd)
    sock = ctx.socket(kind)
    try:
        buf_size = vllm_buffer_size()
        sock.setsockopt(zmq.LINGER, linger)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.RCVBUF, buf_size)
        if kind == zmq.ROUTER:  # ROUTER silently drops at the HWM; PULL does not send
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.SNDBUF, buf_size)
        sock.setsockopt(zmq.USE_FD, fd)
        if endpoint.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        sock.bind(endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return TrioSocket(sock)


def last_endpoint(sock: TrioSocket) -> str:
    """The address a socket actually bound (resolves ``tcp://host:0`` to the kernel's port)."""
    value = sock.sock.getsockopt(zmq.LAST_ENDPOINT)
    return value.decode() if isinstance(value, bytes) else str(value)
