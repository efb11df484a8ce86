"""quicswarm.Session: survives a gateway restart, with its state visible from Python."""

import quicswarm


def serve(listen, cert_dir):
    gw = quicswarm.Gateway(listen=listen, cert_dir=cert_dir)
    gw.add_subroutine("echo", lambda text: text)
    gw.start()
    return gw


def test_a_session_reconnects_after_a_gateway_restart(tmp_path):
    gw = serve("127.0.0.1:0", tmp_path)
    addr = gw.local_addr
    controller = quicswarm.Controller(fingerprint=gw.fingerprint, timeout=10)
    with quicswarm.Session(controller, addr) as session:
        assert session.state == "connected"
        assert session.call("echo", "before") == b"before"
        gw.close()
        assert session.wait_state_change(10) == "reconnecting"
        # The same port and certificate folder: the same gateway, back.
        gw = serve(addr, tmp_path)
        assert session.wait_for("connected", 10)
        assert session.call("echo", "after") == b"after"
        assert session.reconnects >= 1
    assert session.state == "closed"
    gw.close()


def test_a_session_subscription_yields_every_item(tmp_path):
    gw = serve("127.0.0.1:0", tmp_path)

    def count(n):
        for i in range(n):
            yield i, bytes([i % 256])

    gw.add_subroutine("count", count)
    controller = quicswarm.Controller(fingerprint=gw.fingerprint, timeout=10)
    with quicswarm.Session(controller, gw.local_addr) as session:
        items = list(session.subscribe("count", 300))
    assert items == [(i, bytes([i % 256])) for i in range(300)]
    gw.close()
