"""vLLM's engine start-up handshake, from the handshake owner's side.

The frontend binds and the engine connects. A headless engine (``vllm serve DIR --headless
--data-parallel-address HOST --data-parallel-rpc-port PORT``) connects a DEALER to our ROUTER at
``tcp://HOST:PORT`` and says HELLO; we answer INIT naming the input ROUTER / output PULL pairs it must
connect to (one pair per frontend process); after loading the model it says READY here, and separately
sends a *registration* frame on each input socket (see ``client.py``). The two arrive in either order.

Either side may start first: libzmq queues the engine's HELLO until our ROUTER is bound. The engine
waits 5 minutes for INIT, then gives up; there is no re-handshake, so a restarted frontend needs a
restarted engine.
"""

from __future__ import annotations

import logging

import trio

from . import wire
from .zmq_trio import TrioSocket

log = logging.getLogger("trio_front.engine")

#: How often to repeat "still waiting" log lines while the engine starts (model loads take minutes).
WAIT_LOG_INTERVAL = 15.0


class HandshakeError(Exception):
    """The engine said something we do not understand during start-up."""


async def serve_handshake(
    sock: TrioSocket, init: wire.HandshakeInit, *, engine_count: int = 1, address: str = ""
) -> dict[bytes, wire.HandshakeStatus]:
    """Answer each engine's HELLO with *init* and return once all *engine_count* engines said READY.

    Returns the READY maps by engine identity. Logs what it is waiting for every
    :data:`WAIT_LOG_INTERVAL` seconds. Cancellation simply stops waiting; nothing needs undoing, but the
    engine cannot handshake again, so the caller should treat a cancelled handshake as final.
    """
    greeted: set[bytes] = set()
    ready: dict[bytes, wire.HandshakeStatus] = {}
    payload = wire.encode(init)
    log.info("waiting for %d engine(s) to connect to %s", engine_count, address or "the handshake socket")
    while len(ready) < engine_count:
        with trio.move_on_after(WAIT_LOG_INTERVAL) as idle:
            identity, message = await _receive_pair(sock)
        if idle.cancelled_caught:
            if greeted:
                log.info("engine connected; still waiting for READY (the engine loads the model)")
            else:
                log.info("still waiting for an engine HELLO on %s", address or "the handshake socket")
            continue
        status = wire.decode_status(message)
        if status.status == "HELLO":
            if not status.headless:
                log.warning("engine %r is not headless; continuing anyway", identity)
            sock.send_nowait([identity, payload])
            greeted.add(identity)
            log.info(
                "engine %d said HELLO; sent INIT (inputs=%s outputs=%s); engine is loading",
                int.from_bytes(identity, "little"),
                init.addresses.inputs,
                init.addresses.outputs,
            )
        elif status.status == "READY":
            if identity not in greeted:
                raise HandshakeError(f"engine {identity!r} said READY without HELLO")
            ready[identity] = status
            log.info("engine %d is READY", int.from_bytes(identity, "little"))
        else:
            raise HandshakeError(f"unexpected handshake status {status.status!r} from {identity!r}")
    return ready


async def wait_registration(sock: TrioSocket, *, address: str = "") -> tuple[bytes, wire.EngineRegistration]:
    """Wait for an engine's registration frame on an input ROUTER; return ``(identity, registration)``.

    Until it arrives the ROUTER does not know the engine and would silently drop anything we send.
    """
    while True:
        with trio.move_on_after(WAIT_LOG_INTERVAL) as idle:
            identity, message = await _receive_pair(sock)
        if idle.cancelled_caught:
            log.info("waiting for the engine to register on %s", address or "the input socket")
            continue
        registration = wire.decode_registration(message)
        log.info(
            "engine %d registered: vLLM %s, max_model_len=%d",
            int.from_bytes(identity, "little"),
            registration.vllm_version,
            registration.max_model_len,
        )
        return identity, registration


async def _receive_pair(sock: TrioSocket) -> tuple[bytes, bytes]:
    frames = await sock.receive()
    if len(frames) != 2:
        raise HandshakeError(f"expected [identity, payload], got {len(frames)} frames")
    return frames[0], frames[1]
