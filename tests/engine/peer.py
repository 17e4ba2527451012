"""A scripted engine peer for client tests: it speaks the engine side of the handshake, records every
frame the client sends, and emits exactly the outputs a test tells it to (unlike the mock engine,
which schedules on its own)."""

from __future__ import annotations

import attrs
import trio
import zmq

from trio_front.engine import wire
from trio_front.engine.zmq_trio import TrioSocket, make_socket

IDENTITY = b"\x00\x00"


@attrs.define(eq=False)
class ScriptedEngine:
    handshake_addr: str
    vllm_version: str = "0.32.0"
    max_model_len: int = 256
    answer_utilities: bool = True
    adds: list[wire.EngineCoreRequest] = attrs.Factory(list)
    aborts: list[list[str]] = attrs.Factory(list)
    utilities: list[list] = attrs.Factory(list)
    received: trio.Event = attrs.Factory(trio.Event)
    inp: TrioSocket | None = None
    out: TrioSocket | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        ctx = zmq.Context.instance()
        hs = make_socket(ctx, zmq.DEALER, connect=self.handshake_addr, identity=IDENTITY)
        try:
            hs.send_nowait([wire.encode({"status": "HELLO", "local": False, "headless": True})])
            (payload,) = await hs.receive()
            init = wire.decode_any(payload)
            self.inp = make_socket(ctx, zmq.DEALER, connect=init["addresses"]["inputs"][0], identity=IDENTITY)
            self.out = make_socket(ctx, zmq.PUSH, connect=init["addresses"]["outputs"][0])
            registration = {
                "max_model_len": self.max_model_len,
                "vllm_version": self.vllm_version,
                "num_gpu_blocks": 100,
                "block_size": 16,
            }
            self.inp.send_nowait([wire.encode(registration)])
            hs.send_nowait([wire.encode({"status": "READY", "local": False, "headless": True})])
            task_status.started()
            while True:
                try:
                    frames = await self.inp.receive()
                except trio.ClosedResourceError:  # disconnect() closed our sockets: the engine is gone
                    return
                kind, payload = frames[0], frames[1]
                if kind == wire.RequestType.ADD.value:
                    self.adds.append(wire.decode_request(payload))
                elif kind == wire.RequestType.ABORT.value:
                    self.aborts.append(wire.decode_any(payload))
                elif kind == wire.RequestType.UTILITY.value:
                    call = wire.decode_any(payload)
                    self.utilities.append(call)
                    if self.answer_utilities:
                        _, call_id, method, _args = call
                        reply = (
                            [call_id, None, [None, False]]
                            if method == "is_sleeping"
                            else [call_id, f"Call to {method} method failed: no such method", None]
                        )
                        self.emit_outputs(wire.EngineCoreOutputs(utility_output=reply))
                self.received.set()
                self.received = trio.Event()
        finally:
            hs.close()
            for sock in (self.inp, self.out):
                if sock is not None:
                    sock.close()

    def emit(self, *outputs: wire.EngineCoreOutput) -> None:
        self.emit_outputs(wire.EngineCoreOutputs(outputs=list(outputs)))

    def emit_outputs(self, outputs: wire.EngineCoreOutputs) -> None:
        assert self.out is not None
        self.out.send_nowait([wire.encode(outputs)])

    def die(self) -> None:
        assert self.out is not None
        self.out.send_nowait([wire.ENGINE_CORE_DEAD])

    def disconnect(self) -> None:
        for sock in (self.inp, self.out):
            if sock is not None:
                sock.close()

    @property
    def aborted_ids(self) -> list[str]:
        return [rid for message in self.aborts for rid in message]

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self.received.wait()
