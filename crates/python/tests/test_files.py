"""Files from Python: listing, a download by regex, an upload, progress, and an interrupted
download that leaves no partial file under a final name."""

import os
import pathlib

import pytest

import quicswarm


@pytest.fixture
def served(tmp_path):
    logs = tmp_path / "logs"
    (logs / "sub").mkdir(parents=True)
    for i in range(30):
        (logs / "sub" / f"{i}.log").write_bytes(bytes([i]) * (1000 + i))
    (logs / "notes.txt").write_text("not a log")
    (logs / "big.bin").write_bytes(os.urandom(9 << 20))
    uploads = tmp_path / "uploads"
    gw = quicswarm.Gateway(
        listen="127.0.0.1:0",
        cert_dir=tmp_path / "certs",
        serve={"logs": logs},
        upload_dir=uploads,
    )
    gw.start()
    client = quicswarm.Controller(fingerprint=gw.fingerprint).get_client(gw.local_addr)
    yield client, logs, uploads
    client.close()
    gw.close()


def same_tree(a: pathlib.Path, b: pathlib.Path, names):
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_list_and_download_by_regex(served, tmp_path):
    client, logs, _ = served
    listed = client.list("logs", regex=r"\.log$")
    assert sorted(e["path"] for e in listed) == sorted(f"sub/{i}.log" for i in range(30))
    assert all(e["hash"] is None for e in listed)
    hashed = client.list("logs", paths=["notes.txt"], hash=True)
    assert len(hashed) == 1 and len(hashed[0]["hash"]) == 64
    dest = tmp_path / "backup"
    seen = []
    summary = client.download("logs", dest, regex=r"\.log$", swarm=2, progress=seen.append)
    assert summary["files"] == 30 and summary["skipped"] == 0
    same_tree(logs, dest, [f"sub/{i}.log" for i in range(30)])
    assert not (dest / "notes.txt").exists()
    assert seen and seen[-1]["files_done"] == 30
    # Again: everything is there and verified, nothing moves.
    again = client.download("logs", dest, regex=r"\.log$")
    assert again["files"] == 0 and again["skipped"] == 30


def test_upload_round_trip(served, tmp_path):
    client, logs, uploads = served
    summary = client.upload([logs], dest="robot1", swarm=3)
    assert summary["files"] == 32
    same_tree(logs, uploads / "robot1" / "logs", ["big.bin", "notes.txt", "sub/7.log"])


def test_a_folder_that_is_not_served_is_a_clear_error(served, tmp_path):
    client, _, _ = served
    with pytest.raises(quicswarm.Error) as e:
        client.download("var", tmp_path / "x")
    assert "var" in str(e.value) and e.value.code == 17


def test_an_interrupted_download_leaves_no_partial_file(served, tmp_path):
    client, logs, _ = served
    # Sparse: 64 MiB that cost no disk, and take long enough to move that the first progress
    # report (after 50 ms) comes well before the end.
    with open(logs / "huge.bin", "wb") as f:
        f.truncate(64 << 20)
    dest = tmp_path / "cut"

    class Stop(Exception):
        pass

    seen = []

    def stop_early(progress):
        seen.append(progress)
        raise Stop()

    with pytest.raises(Stop):
        client.download("logs", dest, paths=["huge.bin"], swarm=1, progress=stop_early)
    assert seen[0]["bytes_done"] < seen[0]["bytes_total"], "stopped mid-transfer"
    # Whatever arrived is under a temporary name: the final name holds nothing, or (if the
    # last range was already in when the stop came) the whole, verified file.
    target = dest / "huge.bin"
    assert not target.exists() or target.stat().st_size == 64 << 20
    finished = client.download("logs", dest, paths=["huge.bin"])
    assert finished["files"] + finished["skipped"] == 1, finished
    assert target.stat().st_size == 64 << 20
    with open(target, "rb") as f:
        assert not any(f.read()), "zeros, as served"
    assert [p.name for p in dest.iterdir()] == ["huge.bin"], "no temporary file left"
