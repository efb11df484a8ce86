"""Reloading a running gateway's certificate from Python."""

import shutil

import pytest

import quicswarm


def make_certificate(cert_dir):
    """A fresh self-signed pair in `cert_dir` (a gateway generates one on first start)."""
    with quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=cert_dir) as gw:
        return gw.fingerprint


def test_reload_serves_the_new_certificate_and_a_bad_file_keeps_the_old(tmp_path):
    certs = tmp_path / "certs"
    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=certs)
    gw.add_subroutine("echo", lambda text: text)
    with gw:
        old = gw.fingerprint
        new = make_certificate(tmp_path / "fresh")
        assert new != old
        for name in ("gateway.pem", "gateway.key"):
            shutil.copy(tmp_path / "fresh" / name, certs / name)
        assert gw.reload() == new
        assert gw.fingerprint == new
        controller = quicswarm.Controller(fingerprint=new, timeout=10)
        with controller.get_client(gw.local_addr) as client:
            assert client.call("echo", "hi") == b"hi"

        (certs / "gateway.pem").write_text("not a certificate")
        with pytest.raises(quicswarm.Error):
            gw.reload()
        assert gw.fingerprint == new
        with controller.get_client(gw.local_addr) as client:
            assert client.call("echo", "still") == b"still"
