"""Fixtures: a Python gateway on 127.0.0.1 with throwaway certificates, clients pinned to it,
and the Rust CLI binary for the interop tests."""

import os
import pathlib
import shutil
import subprocess
import threading
import time

import pytest

import quicswarm

ROOT = pathlib.Path(__file__).resolve().parents[3]


def counting(n, size=4):
    for i in range(n):
        yield i, bytes([i % 256]) * size


def total(buffer, scale=1):
    return len(buffer) * scale


def failing_midway(n):
    for i in range(n):
        if i == 2:
            raise RuntimeError("sensor unplugged")
        yield i, b"x"


def wrong_type():
    return 42


def slow(seconds):
    time.sleep(seconds)
    return b"done"


class Aborts:
    """A never-ending stream that records when its generator was closed."""

    def __init__(self):
        self.closed = threading.Event()

    def __call__(self):
        try:
            i = 0
            while True:
                yield i, b"y" * 100
                i += 1
        finally:
            self.closed.set()


@pytest.fixture
def aborts():
    return Aborts()


@pytest.fixture
def gateway(tmp_path, aborts):
    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs")
    gw.add_subroutine("echo", lambda text: text)
    gw.add_subroutine("args", lambda *a, **k: repr((a, sorted(k.items()))))
    gw.add_subroutine("count", counting)
    gw.add_subroutine("failing", failing_midway)
    gw.add_subroutine("wrong_type", wrong_type)
    gw.add_subroutine("slow", slow)
    gw.add_subroutine("forever", aborts)
    gw.add_sink("total", total)
    gw.add_sink("nothing", lambda buffer: None)
    gw.start()
    yield gw
    gw.close()


@pytest.fixture
def client(gateway):
    controller = quicswarm.Controller(fingerprint=gateway.fingerprint, timeout=10)
    with controller.get_client(gateway.local_addr) as c:
        yield c


@pytest.fixture
def cli():
    """The `quicswarm` binary built by `cargo test` (or named by QUICSWARM_BIN)."""
    path = os.environ.get("QUICSWARM_BIN") or shutil.which("quicswarm")
    if not path:
        candidate = ROOT / "target" / "debug" / "quicswarm"
        path = str(candidate) if candidate.exists() else None
    if not path:
        if os.environ.get("CI"):
            pytest.fail("the quicswarm binary is missing: run cargo build -p quicswarm-cli first")
        pytest.skip("no quicswarm binary: cargo build -p quicswarm-cli")
    return path


@pytest.fixture
def cli_gateway(cli, tmp_path):
    """`quicswarm gateway --demo` in its own process."""
    served = tmp_path / "served"
    (served / "sub").mkdir(parents=True)
    for i in range(5):
        (served / "sub" / f"{i}.log").write_bytes(bytes([i]) * 5000)
    proc = subprocess.Popen(
        [cli, "gateway", "--listen", "127.0.0.1:0", "--demo", "--cert-dir", str(tmp_path / "certs"),
         "--serve", f"logs={served}", "--upload-dir", str(tmp_path / "uploads")],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    addr = fingerprint = None
    deadline = time.monotonic() + 30
    while (addr is None or fingerprint is None) and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith("quicswarm gateway on "):
            addr = line.split()[3]
        if line.startswith("certificate fingerprint "):
            fingerprint = line.split()[2]
    assert addr and fingerprint, "the gateway printed its address"
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    yield addr, fingerprint
    proc.kill()
    proc.wait(timeout=10)
