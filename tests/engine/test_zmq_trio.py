"""The trio adapter for pyzmq: bursts must not stall, and a send must not swallow a receiver's wake-up."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import trio
import trio.testing
import zmq

from trio_front.engine.zmq_trio import TrioSocket, last_endpoint, make_socket

BURST = 100_000

PUSHER = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.PUSH)
s.setsockopt(zmq.SNDHWM, 0)
s.connect(sys.argv[1])
n = int(sys.argv[2])
payload = b"x" * 64
for i in range(n):
    s.send_multipart([i.to_bytes(4, "little"), payload])
sys.stdin.read()  # stay alive until the receiver is done: a dying PUSH can lose queued messages
"""


async def test_burst_from_another_process_arrives_complete_and_in_order() -> None:
    ctx = zmq.Context.instance()
    with make_socket(ctx, zmq.PULL, bind="tcp://127.0.0.1:0") as pull:
        proc = subprocess.Popen(
            [sys.executable, "-c", PUSHER, last_endpoint(pull), str(BURST)], stdin=subprocess.PIPE
        )
        try:
            received = 0
            start = time.perf_counter()
            with trio.fail_after(60):  # a stall (the edge-trigger bug) shows up as a timeout here
                while received < BURST:
                    for frames in await pull.receive_batch():
                        assert int.from_bytes(frames[0], "little") == received
                        received += 1
            elapsed = time.perf_counter() - start
            print(f"\n{BURST} messages in {elapsed:.2f} s: {BURST / elapsed:,.0f} msg/s")
        finally:
            proc.communicate(b"", timeout=10)
    assert received == BURST


async def test_single_receive_after_each_wakeup_does_not_stall() -> None:
    ctx = zmq.Context.instance()
    with make_socket(ctx, zmq.PULL, bind="inproc://burst-single") as pull:
        push = ctx.socket(zmq.PUSH)
        push.connect("inproc://burst-single")
        for i in range(5000):
            push.send(i.to_bytes(4, "little"))
        with trio.fail_after(10):
            for i in range(5000):
                (frame,) = await pull.receive()
                assert int.from_bytes(frame, "little") == i
        push.close(linger=0)


async def test_send_on_the_same_socket_wakes_a_parked_receiver() -> None:
    """A send may process the FD's pending commands and swallow the edge the receiver sleeps on."""
    ctx = zmq.Context.instance()
    with make_socket(ctx, zmq.ROUTER, bind="tcp://127.0.0.1:0") as router:
        dealer = TrioSocket(ctx.socket(zmq.DEALER))
        dealer.sock.setsockopt(zmq.IDENTITY, b"\x00\x00")
        dealer.sock.connect(last_endpoint(router))
        try:
            got: list[list[bytes]] = []

            async def receive_many() -> None:
                for _ in range(200):
                    got.append(await router.receive())

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receive_many)
                    await dealer.send([b"hello"])
                    while not got:
                        await trio.sleep(0.001)
                    for i in range(199):
                        # interleave: the dealer sends, and the router sends back while its receiver waits
                        await dealer.send([str(i).encode()])
                        router.send_nowait([b"\x00\x00", b"pong"])
                        await trio.sleep(0)
            assert len(got) == 200
        finally:
            dealer.close()


async def test_close_wakes_a_parked_receiver_with_closed_resource_error() -> None:
    ctx = zmq.Context.instance()
    pull = make_socket(ctx, zmq.PULL, bind="inproc://close-wakes")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await pull.receive()

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            pull.close()


async def test_two_receivers_are_refused() -> None:
    ctx = zmq.Context.instance()
    with make_socket(ctx, zmq.PULL, bind="inproc://two-receivers") as pull:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pull.receive)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await pull.receive()
            nursery.cancel_scope.cancel()


async def test_cancelled_receive_loses_no_message() -> None:
    ctx = zmq.Context.instance()
    with make_socket(ctx, zmq.PULL, bind="inproc://cancel-keeps") as pull:
        push = ctx.socket(zmq.PUSH)
        push.connect("inproc://cancel-keeps")
        with trio.CancelScope() as scope:
            scope.cancel()
            push.send(b"one")
            with pytest.raises(trio.Cancelled):
                await pull.receive()
        with trio.fail_after(5):
            assert await pull.receive() == [b"one"]
        push.close(linger=0)
