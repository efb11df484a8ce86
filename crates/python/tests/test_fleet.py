"""Fleets from Python: one operation on several gateways, each with its own result."""

import socket

import pytest

import quicswarm


def start(tmp_path, name, **kwargs):
    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / f"certs-{name}", **kwargs)
    gw.add_subroutine("echo", lambda text: text)
    gw.add_sink("size", lambda buffer: len(buffer))
    gw.start()
    return gw


def dead_address():
    """A UDP port nobody listens on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    addr = "%s:%d" % s.getsockname()
    s.close()
    return addr


def test_fleet_file_ping_call_send_and_a_dead_gateway(tmp_path):
    gws = [start(tmp_path, "a"), start(tmp_path, "b")]
    fleet_file = tmp_path / "fleet.txt"
    lines = [f"r{i} {gw.local_addr} {gw.fingerprint}" for i, gw in enumerate(gws)]
    lines.append(f"off {dead_address()} {gws[0].fingerprint}")
    fleet_file.write_text("# test fleet\n" + "\n".join(lines) + "\n")
    fleet = quicswarm.Fleet(fleet_file, timeout=1.5)
    assert len(fleet) == 3
    assert [m[0] for m in fleet.members] == ["r0", "r1", "off"]

    results = {r.gateway: r for r in fleet.ping()}
    assert results["r0"].ok and results["r0"].value > 0
    assert results["r1"].ok
    off = results["off"]
    assert not off.ok and off.value is None
    assert isinstance(off.error, quicswarm.Timeout)
    assert "FleetResult(gateway=\"off\", ok=False" in repr(off)

    live = quicswarm.Fleet(members=[(f"r{i}", gw.local_addr, gw.fingerprint) for i, gw in enumerate(gws)])
    calls = {r.gateway: r.value for r in live.call("echo", "hi")}
    assert calls == {"r0": b"hi", "r1": b"hi"}
    sizes = {r.gateway: r.value for r in live.send("size", b"x" * 1000)}
    assert sizes == {"r0": 1000, "r1": 1000}
    missing = list(live.call("nope"))
    assert all(isinstance(r.error, quicswarm.UnknownSubroutine) for r in missing)
    for gw in gws:
        gw.close()


def test_fleet_download_into_a_folder_per_gateway(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.log").write_text("alpha")
    gws = [start(tmp_path, n, serve={"logs": str(data)}) for n in ("a", "b")]
    fleet = quicswarm.Fleet(members=[(n, gw.local_addr, gw.fingerprint) for n, gw in zip("ab", gws)])
    dest = tmp_path / "collected"
    first = {r.gateway: r.value for r in fleet.download("logs", dest)}
    assert first["a"]["files"] == 1 and first["b"]["files"] == 1
    assert (dest / "a" / "a.log").read_text() == "alpha"
    again = {r.gateway: r.value for r in fleet.download("logs", dest)}
    assert again["b"]["files"] == 0 and again["b"]["skipped"] == 1
    listed = {r.gateway: r.value for r in fleet.list("logs")}
    assert listed["a"][0]["path"] == "a.log"
    for gw in gws:
        gw.close()


def test_bad_members_are_refused():
    with pytest.raises(ValueError, match="bad name"):
        quicswarm.Fleet(members=[("../x", "127.0.0.1:1")])
    with pytest.raises(ValueError, match="twice"):
        quicswarm.Fleet(members=[("a", "127.0.0.1:1"), ("a", "127.0.0.1:2")])
    with pytest.raises(TypeError):
        quicswarm.Fleet()
