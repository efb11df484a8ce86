"""Python gateway and Python client: every subroutine kind, arguments, errors, the GIL."""

import threading
import time

import pytest

import quicswarm


def test_batch_stream_and_sink(client):
    assert client.ping() > 0
    assert client.call("echo", "hello gateway") == b"hello gateway"
    items = list(client.stream("count", 5, size=3))
    assert items == [(i, bytes([i]) * 3) for i in range(5)]
    assert client.send("total", b"abcd", scale=2) == 8
    assert client.send("total", bytearray(b"xyz")) == 3
    assert client.send("total", memoryview(b"0123456789")[2:5]) == 3
    # A sink that returns nothing gives 0, as in pynetwork.
    assert client.send("nothing", b"ignored") == 0


def test_arguments_reach_the_function_as_python_values(client):
    assert client.call("args") == repr(((), [])).encode()
    assert client.call("args", 1, "two", 3.5) == repr(((1, "two", 3.5), [])).encode()
    assert client.call("args", x=1, y=[2]) == repr(((), [("x", 1), ("y", [2])])).encode()
    assert client.call("args", [1, 2]) == repr((([1, 2],), [])).encode()
    assert client.call("args", {"a": None}) == repr((({"a": None},), [])).encode()
    assert client.call("args", 1, k="v") == repr(((1,), [("k", "v")])).encode()


def test_failures_are_typed_and_the_gateway_keeps_serving(client):
    with pytest.raises(quicswarm.UnknownSubroutine) as e:
        client.call("nope")
    assert e.value.code == 4
    with pytest.raises(quicswarm.SubroutineFailed) as e:
        client.call("wrong_type")
    assert "TypeError" in str(e.value) and e.value.code == 6
    # Arguments that do not fit the function: its TypeError, with the remote message.
    with pytest.raises(quicswarm.SubroutineFailed, match="TypeError"):
        client.call("echo", "a", "b", "c")
    received = []
    with pytest.raises(quicswarm.SubroutineFailed, match="RuntimeError: sensor unplugged"):
        for item in client.stream("failing", 5):
            received.append(item)
    assert [i for i, _ in received] == [0, 1]
    with pytest.raises(quicswarm.WrongKind):
        client.call("count", 1)
    assert isinstance(quicswarm.WrongKind("x"), quicswarm.Error)
    assert client.call("echo", "still here") == b"still here"


def test_leaving_a_stream_early_aborts_it_on_the_gateway(aborts, client):
    for ident, _ in client.stream("forever"):
        if ident == 10:
            break
    # The iterator is dropped with the loop: the gateway closes the generator.
    assert aborts.closed.wait(10), "the generator was closed"
    assert client.call("echo", "after") == b"after"


def test_a_waiting_call_releases_the_gil(client):
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.01)

    counter = threading.Thread(target=count)
    counter.start()
    start = time.monotonic()
    assert client.call("slow", 0.5) == b"done"
    stop.set()
    counter.join()
    assert time.monotonic() - start >= 0.5
    # About 50 ticks while the call waited; none if the GIL had been held.
    assert len(ticks) >= 20, len(ticks)


def test_a_slow_stream_does_not_hold_back_other_clients(gateway, client):
    other = quicswarm.Controller(fingerprint=gateway.fingerprint).get_client(gateway.local_addr)
    items = client.stream("forever")
    next(items)
    start = time.monotonic()
    for _ in range(20):
        assert other.call("echo", "quick") == b"quick"
    assert time.monotonic() - start < 5
    items.close()
    other.close()


def test_context_managers_close(tmp_path):
    with quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path) as gw:
        gw.add_subroutine("echo", lambda t: t)
        controller = quicswarm.Controller(fingerprint=gw.fingerprint)
        with controller.get_client(gw.local_addr) as c:
            assert c.call("echo", "x") == b"x"
        with pytest.raises(RuntimeError, match="closed"):
            c.ping()


def test_pynetwork_style_callbacks(client):
    got, ended = [], []

    def on_item(name, ident, data):
        got.append((name, ident, data))
        return ident < 4  # False aborts

    assert client.stream("count", 3, callback=on_item, eos_callback=ended.append) == 3
    assert [i for _, i, _ in got] == [0, 1, 2] and ended == ["count"]
    got.clear()
    ended.clear()
    assert client.stream("forever", callback=on_item, eos_callback=ended.append) == 5
    assert ended == [], "an aborted stream has no end of stream"
    stats = client.stats()
    assert stats["rtt"] > 0 and stats["bytes_received"] > 0


@pytest.mark.parametrize(
    "delivery", ["reliable", "latest", "datagram", "unordered", "redundant", "fec"]
)
def test_subscriptions_in_each_delivery_mode(client, delivery):
    items = list(client.subscribe("count", 20, size=100, delivery=delivery, priority=1))
    idents = [i for i, _ in items]
    # Reliable: all, in order. Unordered: all, in any order. Latest, fec and datagram may
    # drop, never reorder past a newer one.
    if delivery == "reliable":
        assert idents == list(range(20))
    elif delivery in ("unordered", "redundant"):
        assert sorted(idents) == list(range(20))
    else:
        assert idents and idents == sorted(set(idents)) and idents[-1] <= 19
    assert all(len(b) == 100 for _, b in items)
    with pytest.raises(TypeError):
        client.subscribe("count", 1, delivery="carrier pigeon")


def test_latest_with_late_items_handed_out(client):
    # deliver_late hands out an item arriving after a newer one (its ident is lower): each
    # item still comes at most once.
    items = list(client.subscribe("count", 20, size=100, delivery="latest", deliver_late=True))
    idents = [i for i, _ in items]
    assert idents and len(idents) == len(set(idents)) and set(idents) <= set(range(20))
    with pytest.raises(TypeError):
        client.subscribe("count", 1, delivery="latest", deliver_late="yes")


def test_arguments_over_the_python_limit_are_refused_before_decoding(client):
    with pytest.raises(quicswarm.BadArgs, match="at most 1048576"):
        client.call("echo", "x" * (2 << 20))
    assert client.call("echo", "y" * (1 << 19)) == b"y" * (1 << 19)


def test_fec_takes_its_recovery_share(client):
    # Loopback loses nothing: every item arrives whatever the share, in order.
    items = list(client.subscribe("count", 20, size=5_000, delivery="fec", fec_percent=50))
    idents = [i for i, _ in items]
    assert idents and idents == sorted(set(idents)) and idents[-1] <= 19
    assert all(len(b) == 5_000 for _, b in items)
    with pytest.raises((TypeError, OverflowError)):
        client.subscribe("count", 1, delivery="fec", fec_percent=300)
