"""Closing and dropping from awkward places: a client closed from inside its own stream
callback, a gateway closed from inside one of its subroutines, and an interpreter that exits
with everything still running. None of them may deadlock."""

import subprocess
import sys
import textwrap
import threading

import pytest

import quicswarm


def bounded(fn, seconds=15):
    """Runs ``fn`` on a thread; its result or exception, or a failure if it hangs."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test as it came
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s: a deadlock"
    return out


def test_closing_the_client_from_inside_its_own_stream_callback(gateway, aborts):
    client = quicswarm.Controller(fingerprint=gateway.fingerprint).get_client(gateway.local_addr)
    seen = []

    def callback(name, ident, data):
        seen.append(ident)
        if ident == 3:
            client.close()

    out = bounded(lambda: client.stream("forever", callback=callback))
    # The items already handed over may still come; then the closed connection ends it.
    assert seen[:4] == [0, 1, 2, 3]
    assert "value" in out or isinstance(out["error"], quicswarm.Error), out
    assert aborts.closed.wait(10), "the gateway stopped the producer"
    with pytest.raises(RuntimeError, match="closed"):
        client.call("echo", "x")


def test_closing_the_gateway_from_inside_a_subroutine(tmp_path):
    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs")
    closed = threading.Event()

    def stop():
        gw.close()
        closed.set()
        return b"bye"

    gw.add_subroutine("stop", stop)
    gw.add_subroutine("echo", lambda text: text)
    gw.start()
    # Short: the last connect goes to a port nobody answers on.
    controller = quicswarm.Controller(fingerprint=gw.fingerprint, timeout=1)
    addr = gw.local_addr
    client = controller.get_client(addr)
    assert client.call("echo", "up") == b"up"
    out = bounded(lambda: client.call("stop"))
    # The gateway waited out its grace period for this very call, then closed.
    assert closed.wait(10)
    assert out.get("value") == b"bye" or isinstance(out.get("error"), quicswarm.Error), out
    with pytest.raises(quicswarm.Error):
        controller.get_client(addr)


def test_a_progress_callback_that_closes_the_client(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    for i in range(200):
        (served / f"{i}.bin").write_bytes(bytes([i % 256]) * 4096)
    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs",
                           serve={"data": served})
    gw.start()
    client = quicswarm.Controller(fingerprint=gw.fingerprint).get_client(gw.local_addr)
    dest = tmp_path / "dest"
    out = bounded(lambda: client.download("data", dest, swarm=2,
                                          progress=lambda p: client.close()))
    # The swarm's other connection may finish the job, or the download fails cleanly.
    assert "value" in out or isinstance(out["error"], quicswarm.Error), out
    for f in dest.glob("*.bin") if dest.exists() else []:
        assert f.read_bytes() == (served / f.name).read_bytes(), "whole files only"
    gw.close()


EXIT_WITH_EVERYTHING_RUNNING = textwrap.dedent(
    """
    import asyncio, tempfile, threading, time, quicswarm, quicswarm.aio

    def ticks():
        i = 0
        while True:
            yield i, b"t" * 1000
            i += 1

    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tempfile.mkdtemp())
    started = threading.Semaphore(0)

    def slow():
        started.release()
        time.sleep(60)
        return b"late"

    gw.add_subroutine("slow", slow)
    gw.add_subroutine("ticks", ticks)
    gw.start()
    c = quicswarm.Controller(fingerprint=gw.fingerprint).get_client(gw.local_addr)
    # A call blocked in the runtime on another thread, a stream half read (its producer
    # waiting on a full queue), and an asyncio call left pending when its loop ended.
    threading.Thread(target=c.call, args=("slow",), daemon=True).start()
    items = c.stream("ticks")
    next(items)

    async def start_call():
        # The asyncio future of the call, not awaited: the loop stops with it pending.
        return quicswarm.aio.AsyncClient(c).call("slow")

    loop = asyncio.new_event_loop()
    pending = loop.run_until_complete(start_call())
    # Both slow calls are running on the gateway.
    assert started.acquire(timeout=10) and started.acquire(timeout=10)
    print("exiting", flush=True)
    """
)


def test_the_interpreter_exits_with_everything_still_running():
    out = subprocess.run([sys.executable, "-c", EXIT_WITH_EVERYTHING_RUNNING],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "exiting", out.stderr
    assert out.returncode == 0, out.stderr
