"""The README's asyncio example runs as printed, against a gateway with what it names."""

import asyncio
import pathlib
import re

import quicswarm

README = pathlib.Path(__file__).resolve().parents[3] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_asyncio_example_runs(tmp_path, monkeypatch):
    [example] = [b for b in python_blocks() if "quicswarm.aio" in b]
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("one")
    (logs / "b.txt").write_text("not picked")
    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tmp_path / "certs", serve={"logs": logs})
    gw.add_subroutine("echo", lambda text: text)
    gw.add_subroutine("camera", lambda: ((i, b"frame") for i in range(5)), kind="stream")
    gw.start()
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(example, "README.md", "exec"), scope)
    asyncio.run(asyncio.wait_for(scope["main"](gw.local_addr, gw.fingerprint), 30))
    assert (tmp_path / "backup" / "a.log").read_text() == "one"
    assert not (tmp_path / "backup" / "b.txt").exists()
    gw.close()
