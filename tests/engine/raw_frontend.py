"""A bare handshake owner for mock-engine tests: raw sockets, so a test sees every message boundary
(which EngineClient hides) and can send what a careful frontend never would."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import zmq

from trio_front.engine import wire
from trio_front.engine.zmq_trio import TrioSocket, last_endpoint, make_socket

IDENTITY = b"\x00\x00"


def unique_ipc_addr() -> str:
    """A fresh IPC endpoint. In-process tests use these rather than TCP ports: another process on the
    machine (a benchmark, a real engine with the same identity b"\\x00\\x00") can grab or connect to a
    "free" TCP port between our probe and our bind, and a foreign HELLO then derails the handshake."""
    return f"ipc:///tmp/tf-mock-{uuid.uuid4().hex[:16]}"


def free_tcp_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@attrs.define(eq=False)
class RawFrontend:
    addr: str
    handshake: TrioSocket
    inputs: list[TrioSocket]
    outputs: list[TrioSocket]
    hello: dict[str, Any] | None = None
    ready: dict[str, Any] | None = None
    registrations: list[dict[str, Any]] = attrs.Factory(list)

    async def attach(self, timeout: float = 10.0) -> None:
        """HELLO → INIT, then wait for READY and one registration per input (either order)."""
        with trio.fail_after(timeout):
            identity, payload = await self.handshake.receive()
            assert identity == IDENTITY
            self.hello = wire.decode_any(payload)
            init = wire.HandshakeInit(
                addresses=wire.EngineAddresses(
                    inputs=[last_endpoint(s) for s in self.inputs],
                    outputs=[last_endpoint(s) for s in self.outputs],
                )
            )
            self.handshake.send_nowait([identity, wire.encode(init)])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._wait_ready)
                for sock in self.inputs:
                    nursery.start_soon(self._wait_registration, sock)

    async def _wait_ready(self) -> None:
        _, payload = await self.handshake.receive()
        self.ready = wire.decode_any(payload)

    async def _wait_registration(self, sock: TrioSocket) -> None:
        identity, payload = await sock.receive()
        assert identity == IDENTITY
        self.registrations.append(wire.decode_any(payload))

    def send(self, client: int, kind: bytes, payload: bytes) -> None:
        self.inputs[client].send_nowait([IDENTITY, kind, payload])

    def add(self, request: wire.EngineCoreRequest, *, via: int = 0) -> None:
        self.inputs[via].send_nowait(wire.add_frames(IDENTITY, request))

    def abort(self, ids: list[str], *, via: int = 0) -> None:
        self.inputs[via].send_nowait(wire.abort_frames(IDENTITY, ids))

    def utility(self, method: str, *args: Any, call_id: int = 7, client: int = 0) -> None:
        self.inputs[client].send_nowait(wire.utility_frames(IDENTITY, client, call_id, method, args))

    async def receive(self, client: int = 0, timeout: float = 5.0) -> wire.EngineCoreOutputs | bytes:
        """The next output message for *client* (``ENGINE_CORE_DEAD`` is returned as bytes)."""
        with trio.fail_after(timeout):
            frames = await self.outputs[client].receive()
        if frames[0] == wire.ENGINE_CORE_DEAD:
            return wire.ENGINE_CORE_DEAD
        return wire.decode_outputs(frames[0])

    async def nothing_within(self, seconds: float, client: int = 0) -> bool:
        with trio.move_on_after(seconds):
            await self.outputs[client].receive()
            return False
        return True


def request(rid: str, prompt: list[int], *, client_index: int = 0, **params: Any) -> wire.EngineCoreRequest:
    return wire.EngineCoreRequest(
        request_id=rid,
        prompt_token_ids=prompt,
        sampling_params=wire.SamplingParams(**params),
        arrival_time=0.0,
        client_index=client_index,
    )


@asynccontextmanager
async def open_raw_frontend(clients: int = 1, addr: str | None = None) -> AsyncIterator[RawFrontend]:
    ctx = zmq.Context.instance()
    addr = addr or unique_ipc_addr()
    socks: list[TrioSocket] = []
    try:
        handshake = make_socket(ctx, zmq.ROUTER, bind=addr)
        socks.append(handshake)
        inputs = [make_socket(ctx, zmq.ROUTER, bind=f"{addr}-input-{i}") for i in range(clients)]
        outputs = [make_socket(ctx, zmq.PULL, bind=f"{addr}-output-{i}") for i in range(clients)]
        socks += inputs + outputs
        yield RawFrontend(addr, handshake, inputs, outputs)
    finally:
        for sock in socks:
            sock.close()
