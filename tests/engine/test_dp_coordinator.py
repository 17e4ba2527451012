"""The link to vLLM's DP coordinator: a stand-in coordinator (an XPUB, as ``coordinator.py`` binds its front
end) publishes counts and wave state to a client with two mock ranks. Published counts steer the balancer,
requests carry the published ``current_wave``, a request while the ranks are paused is announced upstream
as ``[engine identity, wave]`` (vLLM 0.32's FIRST_REQ), once per pause, and ``wave_complete`` pauses again.
"""

from __future__ import annotations

import msgspec
import trio
import zmq

from trio_front.engine import wire
from trio_front.engine.client import EngineClient, LinkConfig
from trio_front.engine.mock import MockEngine, MockEngineConfig
from trio_front.engine.zmq_trio import make_socket

from .test_dp import SHORT, ipc_addr, run_one


async def published(client: EngineClient, messages: int) -> None:
    with trio.fail_after(5):
        while client.coordinator is None or client.coordinator.messages < messages:
            await trio.sleep(0.01)


async def test_counts_and_waves_follow_the_coordinator() -> None:
    addr, coord_addr = ipc_addr(), ipc_addr()
    xpub = make_socket(zmq.Context.instance(), zmq.XPUB, bind=coord_addr)
    xpub.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
    client = EngineClient(LinkConfig(addr, engine_count=2, ping_interval=0, coordinator_addr=coord_addr))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            for rank in (0, 1):
                await nursery.start(MockEngine(MockEngineConfig(addr, step_ms=2, rank=rank)).run)
            with trio.fail_after(10):
                await client.wait_ready()
                assert (await xpub.receive()) == [b"\x01"]  # the subscription
            assert client.coordinator is not None

            # Rank 0 looks busy to the coordinator: new requests go to rank 1.
            xpub.send_nowait([msgspec.msgpack.encode([[[6, 6, 0.1], [0, 0, 0.0]], 4, True])])
            await published(client, 1)
            assert client.coordinator.has_counts and client.coordinator.current_wave == 4
            first = client.generate([1, 2], SHORT)
            second = client.generate([1, 2], SHORT)
            assert (first.engine, second.engine) == (1, 1)
            assert first.request.current_wave == 4
            for stream in (first, second):
                async with stream:
                    async for _ in stream:
                        pass

            # The ranks paused (wave 5): the next request wakes them, announced once upstream.
            xpub.send_nowait([msgspec.msgpack.encode([None, 5, False])])
            await published(client, 2)
            rid, rank, _ = await run_one(client)
            with trio.fail_after(5):
                announced = msgspec.msgpack.decode((await xpub.receive())[0])
            assert announced == [wire.engine_identity(rank), 5]
            assert client.coordinator.engines_running
            await run_one(client)
            with trio.move_on_after(0.2) as quiet:
                await xpub.receive()
            assert quiet.cancelled_caught, "only the first request of a pause is announced"

            client.coordinator.wave_complete(5)  # what an output's wave_complete does
            assert not client.coordinator.engines_running
            nursery.cancel_scope.cancel()
    finally:
        xpub.close()
