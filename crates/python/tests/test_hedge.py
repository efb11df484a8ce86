"""Hedged calls: `call(..., hedge_after=s)` sends a replay-safe call again when it is slow."""

import asyncio
import threading

import pytest

import quicswarm
import quicswarm.aio


class StuckOnce:
    """Its first call waits until released; later calls answer at once."""

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()
        self.release = threading.Event()

    def __call__(self):
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.release.wait(30)
            return b"first"
        return b"later"


@pytest.fixture
def gateway(tmp_path):
    stuck = StuckOnce()
    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs")
    gw.add_subroutine("stuck_once", stuck, kind="batch", replay_safe=True)
    gw.add_subroutine("command", lambda: b"done")
    gw.start()
    yield gw, stuck
    stuck.release.set()
    gw.close()


@pytest.fixture
def hedged(gateway):
    gw, stuck = gateway
    controller = quicswarm.Controller(fingerprint=gw.fingerprint, timeout=10)
    with controller.get_client(gw.local_addr) as client:
        yield client, stuck


def test_a_stuck_call_is_answered_by_its_hedge(hedged):
    client, stuck = hedged
    assert client.call("stuck_once", hedge_after=0.05) == b"later"
    assert stuck.calls == 2


def test_only_replay_safe_subroutines_are_hedged(hedged):
    client, stuck = hedged
    with pytest.raises(quicswarm.BadArgs, match="replay-safe"):
        client.call("command", hedge_after=0.05)
    with pytest.raises(TypeError, match="hedge_after"):
        client.call("stuck_once", hedge_after=-1.0)
    assert stuck.calls == 0
    assert client.call("command") == b"done"


def test_an_async_call_is_hedged_too(hedged):
    client, stuck = hedged

    async def go():
        return await quicswarm.aio.AsyncClient(client).call("stuck_once", hedge_after=0.05)

    assert asyncio.run(go()) == b"later"
    assert stuck.calls == 2


def test_a_session_call_is_hedged_too(gateway):
    gw, stuck = gateway
    controller = quicswarm.Controller(fingerprint=gw.fingerprint, timeout=10)
    with quicswarm.Session(controller, gw.local_addr) as session:
        assert session.call("stuck_once", hedge_after=0.05) == b"later"
        with pytest.raises(quicswarm.BadArgs):
            session.call("command", hedge_after=0.05)
    assert stuck.calls == 2
