"""What needs its own process: Ctrl-C, fork, and the Rust CLI on the other side."""

import json
import pathlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import quicswarm

SLOW_CALL = textwrap.dedent(
    """
    import sys, tempfile, time, quicswarm
    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tempfile.mkdtemp())
    gw.add_subroutine("slow", lambda: time.sleep(30) or b"late")
    gw.add_subroutine("ticks", lambda: ((i, b"t") for i in range(10**9) if not time.sleep(0.5)))
    def ticks():
        i = 0
        while True:
            time.sleep(0.5)
            yield i, b"t"
            i += 1
    gw.add_subroutine("ticks", ticks)
    gw.start()
    c = quicswarm.Controller(fingerprint=gw.fingerprint).get_client(gw.local_addr)
    print("ready", flush=True)
    try:
        if sys.argv[1] == "call":
            c.call("slow")
        else:
            for _ in c.stream("ticks"):
                pass
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(3)
    """
)


@pytest.mark.parametrize("what", ["call", "stream"])
def test_ctrl_c_interrupts_a_blocking_call_promptly(what):
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CALL, what], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "interrupted"
    assert time.monotonic() - sent < 1.0
    assert proc.wait(timeout=10) == 3


def test_start_blocking_stops_on_ctrl_c(tmp_path):
    script = textwrap.dedent(
        f"""
        import quicswarm
        gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir={str(tmp_path)!r})
        print("serving", flush=True)
        try:
            gw.start(blocking=True)
        except KeyboardInterrupt:
            print("stopped", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "serving"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "stopped"
    assert proc.wait(timeout=10) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_use_after_fork_is_a_clear_error_not_a_hang(client):
    script = textwrap.dedent(
        """
        import os, sys, tempfile, quicswarm
        gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tempfile.mkdtemp())
        gw.start()
        pid = os.fork()
        if pid == 0:
            try:
                quicswarm.Controller(fingerprint=gw.fingerprint).get_client(gw.local_addr)
                os._exit(1)
            except RuntimeError as e:
                os._exit(0 if "fork" in str(e) else 2)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "0", out.stderr


def test_python_client_and_rust_gateway(cli_gateway, tmp_path):
    addr, fingerprint = cli_gateway
    with quicswarm.Controller(fingerprint=fingerprint).get_client(addr) as c:
        assert c.call("echo", "from python") == b"from python"
        items = list(c.stream("counter", count=4, size=16))
        assert [i for i, _ in items] == [0, 1, 2, 3] and all(len(b) == 16 for _, b in items)
        assert c.send("byte_sum", bytes([1, 2, 3, 250])) == 256
        with pytest.raises(quicswarm.SubroutineFailed):
            c.call("fail")
        # Files from and to the Rust gateway.
        dest = tmp_path / "from-rust"
        summary = c.download("logs", dest, regex=r"\.log$")
        assert summary["files"] == 5
        assert (dest / "sub" / "3.log").read_bytes() == bytes([3]) * 5000
        summary = c.upload([dest / "sub"], dest="back")
        assert summary["files"] == 5
        assert (tmp_path / "uploads" / "back" / "sub" / "4.log").read_bytes() == bytes([4]) * 5000


def test_rust_cli_client_and_python_gateway(cli, gateway):
    def run(*args):
        out = subprocess.run(
            [cli, *args, "--fingerprint", gateway.fingerprint, "--timeout", "10", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    addr = gateway.local_addr
    assert run("call", addr, "echo", '"from rust"')["utf8"] == "from rust"
    streamed = run("stream", addr, "count", '{"n": 6, "size": 10}')
    assert streamed["items"] == 6 and streamed["bytes"] == 60
    sent = run("send", addr, "total", "--zeros", "1000")
    assert sent["result"] == 1000, sent


def test_rust_cli_client_and_python_gateway_files(cli, tmp_path):
    served = tmp_path / "served"
    (served / "sub").mkdir(parents=True)
    for i in range(6):
        (served / "sub" / f"{i}.log").write_bytes(bytes([i]) * (3000 + i))
    (served / "skip.txt").write_text("not a log")
    uploads = tmp_path / "uploads"
    with quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs",
                           serve={"logs": served}, upload_dir=uploads) as gw:

        def run(*args):
            out = subprocess.run(
                [cli, *args, "--fingerprint", gw.fingerprint, "--timeout", "10", "--json"],
                capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout.strip().splitlines()[-1])

        dest = tmp_path / "from-python"
        got = run("get", gw.local_addr, "logs", str(dest), "--regex", r"\.log$", "--swarm", "3")
        assert got["files"] == 6, got
        for i in range(6):
            assert (dest / "sub" / f"{i}.log").read_bytes() == bytes([i]) * (3000 + i)
        assert not (dest / "skip.txt").exists()
        put = run("put", gw.local_addr, "back", str(dest / "sub"), "--swarm", "2")
        assert put["files"] == 6, put
        assert (uploads / "back" / "sub" / "5.log").read_bytes() == bytes([5]) * 3005


def test_camera_viewer_example_receives_fresh_frames():
    example = pathlib.Path(__file__).resolve().parents[3] / "examples" / "python" / "camera_viewer.py"
    out = subprocess.run([sys.executable, str(example), "--demo", "--seconds", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    frames = int(out.stdout.split()[0])
    assert frames >= 10, out.stdout
