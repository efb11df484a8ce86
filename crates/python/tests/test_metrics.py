"""The gateway's Prometheus metrics, from Python: scraped over HTTP and read in process."""

import urllib.request

import pytest

import quicswarm


def series(text, name):
    """The value of the series printed exactly as `name`, or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def test_metrics_endpoint_counts_calls(tmp_path):
    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs", metrics="127.0.0.1:0")
    gw.add_subroutine("echo", lambda text: text)
    with gw:
        controller = quicswarm.Controller(fingerprint=gw.fingerprint, timeout=10)
        with controller.get_client(gw.local_addr) as client:
            for _ in range(3):
                assert client.call("echo", "hi") == b"hi"
            with pytest.raises(quicswarm.UnknownSubroutine):
                client.call("missing")
            url = f"http://{gw.metrics_addr}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                assert reply.status == 200
                text = reply.read().decode()
        assert series(text, 'quicswarm_operations_total{kind="call",result="ok"}') == 3
        assert series(text, 'quicswarm_operations_total{kind="call",result="UnknownSubroutine"}') == 1
        assert series(text, "quicswarm_handlers") == 1
        # In process, without HTTP: the same counters.
        assert series(gw.metrics(), 'quicswarm_operations_total{kind="call",result="ok"}') == 3


def test_metrics_address_is_checked_and_optional(tmp_path):
    with pytest.raises(ValueError):
        quicswarm.Gateway(listen="127.0.0.1:0", metrics="not an address")
    with quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs") as gw:
        assert gw.metrics_addr is None
        assert "quicswarm_pool_size 5" in gw.metrics()
