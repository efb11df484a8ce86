"""quicswarm.aio: concurrent calls from one event loop, async for, cancellation."""

import asyncio
import time

import pytest

import quicswarm
import quicswarm.aio


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_concurrent_calls_from_one_loop(gateway):
    async def main():
        client = await quicswarm.aio.connect(gateway.local_addr, fingerprint=gateway.fingerprint)
        assert await client.ping() > 0
        replies = await asyncio.gather(*(client.call("echo", f"n{i}") for i in range(50)))
        assert replies == [f"n{i}".encode() for i in range(50)]
        # Slow calls overlap instead of queueing: four 0.3 s calls in well under 1.2 s.
        start = time.monotonic()
        await asyncio.gather(*(client.call("slow", 0.3) for _ in range(4)))
        overlapped = time.monotonic() - start
        assert await client.send("total", b"abc", scale=3) == 9
        with pytest.raises(quicswarm.UnknownSubroutine):
            await client.call("nope")
        await client.close()
        return overlapped

    assert run(main()) < 1.0


def test_async_for_over_a_stream(gateway):
    async def main():
        client = await quicswarm.aio.connect(gateway.local_addr, fingerprint=gateway.fingerprint)
        items = [item async for item in await client.stream("count", 6, size=2)]
        await client.close()
        return items

    assert run(main()) == [(i, bytes([i]) * 2) for i in range(6)]


def test_cancelling_the_task_cancels_the_stream_on_the_gateway(gateway, aborts):
    async def main():
        client = await quicswarm.aio.connect(gateway.local_addr, fingerprint=gateway.fingerprint)
        got = []

        async def consume():
            async for ident, _ in await client.stream("forever"):
                got.append(ident)

        task = asyncio.ensure_future(consume())
        while len(got) < 5:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        closed = await asyncio.get_running_loop().run_in_executor(None, aborts.closed.wait, 10)
        # The connection still serves.
        assert await client.call("echo", "after") == b"after"
        await client.close()
        return closed

    assert run(main()), "the gateway closed the generator"
