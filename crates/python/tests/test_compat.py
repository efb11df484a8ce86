"""quicswarm.compat: pynetwork's names, and the seed's Tutorial 1 running on them."""

import os
import pathlib
import subprocess
import sys

import pytest

import quicswarm
from quicswarm.compat import Controller, Gateway
from quicswarm.compat.backend2 import bytes_to_int, int_to_bytes, safe_print, str_to_bytes

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "examples" / "python"


def sensor(pin, norm_factor=1, **kwargs):
    for i in range(3):
        yield i, int_to_bytes(pin * norm_factor + i)


def store(name, buffer=b"", **kwargs):
    return len(buffer)


@pytest.fixture
def pair(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("a")
    (logs / "b.txt").write_text("b")
    gw = Gateway(0, download_dir=str(tmp_path / "received"))
    gw.add_subroutine("sensor", sensor)
    gw.add_subroutine("echo", lambda text: str_to_bytes(text))
    gw.add_subroutine("store", store)
    gw.serve(str(logs))
    gw.start()
    port = int(gw.local_addr.rsplit(":", 1)[1])
    controller = Controller(port=port, download_dir=str(tmp_path / "downloads"),
                            fingerprint=gw.fingerprint)
    yield controller, logs, tmp_path
    gw.stop()


def test_pynetwork_calls(pair):
    controller, logs, tmp = pair
    with controller.get_client() as client:
        assert client.ping("hello") > 0
        assert client.get_subroutine_batch("echo", arguments=["hi"]) == b"hi"
        got, ended = [], []
        client.get_subroutine_stream("sensor", lambda n, i, b: got.append(bytes_to_int(b)),
                                     eos_callback=ended.append, arguments=[10], norm_factor=2)
        assert got == [20, 21, 22] and ended == ["sensor"]
        assert client.send_subroutine_batch("store", buffer=b"12345", arguments=["x"]) == 5
        client.get_files_from_gateway(folder=str(logs), regex=r".*\.log$")
        assert sorted(os.listdir(tmp / "downloads")) == ["a.log"]
        sent = tmp / "sent.txt"
        sent.write_text("up")
        client.send_files_to_gateway(dirname="robot", files=[str(sent)])
        assert (tmp / "received" / "robot" / "sent.txt").read_text() == "up"


def test_a_folder_that_is_not_served_names_the_fix(pair):
    controller, _, tmp = pair
    with controller.get_client() as client:
        with pytest.raises(quicswarm.Error, match=r"gw\.serve\('/etc'\)"):
            client.get_files_from_gateway(folder="/etc")


def test_helpers():
    assert bytes_to_int(int_to_bytes(-7)) == -7
    assert str_to_bytes("é") == "é".encode()
    safe_print("printed")


def test_tutorial_1_runs_on_the_compat_module():
    out = subprocess.run([sys.executable, str(EXAMPLES / "file_backup.py"), "demo"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "backed up 5 logs, removed 5 on the robot" in out.stdout
    assert "demo ok" in out.stdout
