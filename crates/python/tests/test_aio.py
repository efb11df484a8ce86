"""quicswarm.aio: concurrent calls from one event loop, async for, cancellation, feeds, files
with progress on the loop, sessions, and a gateway served from a coroutine."""

import asyncio
import threading
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


@pytest.mark.parametrize("delivery", ["reliable", "latest", "datagram"])
def test_subscriptions_in_each_delivery_mode(gateway, delivery):
    async def main():
        async with await quicswarm.aio.connect(gateway.local_addr,
                                               fingerprint=gateway.fingerprint) as client:
            got = []
            async for ident, data in await client.subscribe("count", 20, size=8,
                                                            delivery=delivery):
                got.append((ident, data))
            assert client.stats()["rtt"] > 0
            return got

    got = run(main())
    if delivery == "reliable":
        assert got == [(i, bytes([i]) * 8) for i in range(20)]
    else:
        # Newer items may replace older ones; what comes is in order and intact.
        idents = [i for i, _ in got]
        assert idents == sorted(set(idents)) and idents
        assert all(data == bytes([i]) * 8 for i, data in got)


def files_gateway(tmp_path):
    served = tmp_path / "served"
    (served / "sub").mkdir(parents=True)
    for i in range(40):
        (served / "sub" / f"{i}.log").write_bytes(bytes([i]) * (2000 + i))
    (served / "notes.txt").write_text("not a log")
    gw = quicswarm.aio.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs",
                               serve={"logs": served}, upload_dir=tmp_path / "uploads")
    return gw, served


def test_files_list_download_and_upload_with_progress_on_the_loop(tmp_path):
    gw, served = files_gateway(tmp_path)

    async def main():
        async with gw:
            client = await quicswarm.aio.connect(gw.local_addr, fingerprint=gw.fingerprint)
            listed = await client.list("logs", regex=r"\.log$")
            assert len(listed) == 40
            loop_thread = threading.get_ident()
            seen = []

            def progress(p):
                seen.append((threading.get_ident(), p["files_done"]))

            dest = tmp_path / "backup"
            summary = await client.download("logs", dest, regex=r"\.log$", swarm=3,
                                            progress=progress)
            assert summary["files"] == 40
            assert seen and all(t == loop_thread for t, _ in seen), "on the loop's thread"
            assert seen[-1][1] == 40, "the last report comes before the result"
            up = await client.upload([dest / "sub"], dest="back", swarm=2)
            assert up["files"] == 40
            await client.close()

    run(main())
    for i in (0, 39):
        assert (tmp_path / "backup" / "sub" / f"{i}.log").read_bytes() == bytes([i]) * (2000 + i)
        assert (tmp_path / "uploads" / "back" / "sub" / f"{i}.log").read_bytes() == \
            bytes([i]) * (2000 + i)
    assert not (tmp_path / "backup" / "notes.txt").exists()


def test_a_progress_callback_that_raises_cancels_the_download(tmp_path):
    gw, served = files_gateway(tmp_path)
    with open(served / "huge.bin", "wb") as f:
        f.truncate(64 << 20)

    class Stop(Exception):
        pass

    def stop(p):
        raise Stop()

    async def main():
        async with gw:
            async with await quicswarm.aio.connect(gw.local_addr,
                                                   fingerprint=gw.fingerprint) as client:
                with pytest.raises(Stop):
                    await client.download("logs", tmp_path / "cut", paths=["huge.bin"],
                                          swarm=1, progress=stop)
                # The connection still serves.
                assert len(await client.list("logs", paths=["huge.bin"])) == 1

    run(main())
    target = tmp_path / "cut" / "huge.bin"
    assert not target.exists() or target.stat().st_size == 64 << 20


def test_a_session_reconnects_and_resumes_under_asyncio(tmp_path):
    def serve(listen):
        gw = quicswarm.Gateway(listen=listen, cert_dir=tmp_path / "certs")
        gw.add_subroutine("echo", lambda text: text)
        gw.add_subroutine("count", lambda n: ((i, bytes([i % 256])) for i in range(n)),
                          kind="stream")
        gw.start()
        return gw

    gw = serve("127.0.0.1:0")
    addr = gw.local_addr

    async def main():
        nonlocal gw
        async with await quicswarm.aio.open_session(addr, fingerprint=gw.fingerprint,
                                                    timeout=10) as session:
            assert session.state == "connected"
            items = [item async for item in await session.subscribe("count", 300)]
            assert items == [(i, bytes([i % 256])) for i in range(300)]
            assert await session.call("echo", "before") == b"before"
            await asyncio.get_running_loop().run_in_executor(None, gw.close)
            assert await session.wait_state_change(10) == "reconnecting"
            gw = serve(addr)
            assert await session.wait_for("connected", 10)
            assert await session.call("echo", "after") == b"after"
            assert session.reconnects >= 1
        assert session.state == "closed"

    run(main())
    gw.close()


def test_an_asyncio_gateway_serves_until_its_task_is_cancelled(tmp_path):
    gw = quicswarm.aio.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs")
    gw.add_subroutine("echo", lambda text: text)

    async def main():
        # Started first to know its address; serve() then waits on it.
        await asyncio.get_running_loop().run_in_executor(None, gw.start)
        addr = gw.local_addr
        serving = asyncio.ensure_future(gw.serve())
        client = await quicswarm.aio.connect(addr, fingerprint=gw.fingerprint, timeout=2)
        assert await client.call("echo", "served") == b"served"
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        with pytest.raises(RuntimeError, match="not started"):
            gw.local_addr

    run(main())


def test_aclose_while_waiting_for_an_item_aborts_the_stream(tmp_path):
    gate, closed = threading.Event(), threading.Event()

    def gated():
        try:
            yield 0, b"first"
            gate.wait(10)
            i = 1
            while True:
                yield i, b"more"
                i += 1
        finally:
            closed.set()

    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs")
    gw.add_subroutine("gated", gated)
    gw.start()

    async def main():
        async with await quicswarm.aio.connect(gw.local_addr, fingerprint=gw.fingerprint) as c:
            items = await c.stream("gated")
            assert await items.__anext__() == (0, b"first")
            waiting = asyncio.ensure_future(items.__anext__())
            # No event tells that the runtime's fetch is waiting on the gateway: give it time,
            # so that the abort meets a fetch in flight (an abort before it is the easy case).
            await asyncio.sleep(0.2)
            await items.aclose()
            gate.set()
            # The iterator is still referenced: only the abort can stop the producer.
            stopped = await asyncio.get_running_loop().run_in_executor(None, closed.wait, 10)
            waiting.cancel()
            return stopped, items

    stopped, _ = run(main())
    assert stopped, "the gateway closed the generator"
    gw.close()
