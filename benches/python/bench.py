"""quicswarm's Python API against pynetwork 2.4 itself, on the same workloads, in one run.

    pip install ./crates/python                # a release build: what users get
    python benches/python/bench.py             # full sizes
    python benches/python/bench.py --quick     # smaller counts, a smoke run

pynetwork is installed from the package index into a throwaway venv and its gateway bound to
127.0.0.1. Each side runs its gateway and its client in two processes of their own. Rows:
ping p50, 64 B batch calls, streams of 1 KiB and 64 KiB items, a 4 MiB send, 1,000 files of
4 KiB and one 256 MiB file (downloads, content checked). A third column runs the Rust API on
the same workloads (``cargo bench -p quicswarm-benches --bench python_ref``): the Python layer
is meant to stay within 2x of it. Prints one table and, with ``--json FILE``, the rows.
"""

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve()

# Workload sizes: (pynetwork count, quicswarm count); pynetwork waits on Nagle's algorithm
# and an acknowledgement per item, so it gets fewer repetitions to stay within minutes.
FULL = {"ping": (50, 2000), "call": (50, 2000), "stream1k": (2000, 200_000),
        "stream64k": (300, 5000), "send": (5, 50), "files": 1000, "big_mib": 256}
QUICK = {"ping": (10, 200), "call": (10, 200), "stream1k": (200, 20_000),
         "stream64k": (30, 500), "send": (2, 5), "files": 100, "big_mib": 16}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """Whether a TCP socket listens on 127.0.0.1:``port`` or all addresses (Linux)."""
    try:
        table = pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in table:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return True
    return False


def make_data(root, sizes):
    small = root / "small"
    small.mkdir(parents=True)
    for i in range(sizes["files"]):
        (small / f"f{i:05}.bin").write_bytes(os.urandom(4096))
    big = root / "big"
    big.mkdir()
    with open(big / "big.bin", "wb") as f:
        for _ in range(sizes["big_mib"]):
            f.write(os.urandom(1 << 20))


def same_files(a, b):
    names = sorted(os.listdir(a))
    return names == sorted(os.listdir(b)) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


# --- the subroutines both gateways serve ---------------------------------------------------

def echo64(**kwargs):
    return b"x" * 64


def items(n, size, **kwargs):
    chunk = b"y" * size
    for i in range(n):
        yield i, chunk


def sink(buffer=b"", **kwargs):
    return len(buffer)


# --- pynetwork's side (run with the throwaway venv's interpreter) ---------------------------

def pyn_gateway(port):
    import pynetwork.backend2 as backend
    from pynetwork.Gateway import Gateway

    init = backend.Listener.__init__

    def loopback_only(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.ip = "127.0.0.1"

    backend.Listener.__init__ = loopback_only
    gw = Gateway(port, max_poolsize=5)
    for name, fn in (("echo64", echo64), ("items", items), ("sink", sink)):
        gw.add_subroutine(name, fn)
    gw.start(blocking=True)


def pyn_client(port, data, sizes):
    from pynetwork.Controller import Controller

    dest = pathlib.Path(tempfile.mkdtemp())
    controller = Controller(gateway_ip="127.0.0.1", port=port, download_dir=str(dest))
    with controller.get_client() as c:

        class Pynetwork:
            ping = staticmethod(lambda: c.ping("p"))
            call = staticmethod(lambda: c.get_subroutine_batch("echo64"))
            send = staticmethod(lambda buf: c.send_subroutine_batch("sink", buffer=buf))

            @staticmethod
            def stream(n, size):
                got = []
                c.get_subroutine_stream("items", lambda name, i, b: got.append(len(b)),
                                        arguments=[n, size])
                assert set(got) <= {size}
                return len(got)

            @staticmethod
            def download(root, target):
                target.mkdir()
                c.download_dir = str(target)
                c.get_files_from_gateway(folder=str(data / root))

        return measure(Pynetwork, {k: v[0] if isinstance(v, tuple) else v for k, v in sizes.items()},
                       data, dest)


def measure(api, counts, data, dest):
    """The workloads, timed the same way whatever the API."""
    out = {}
    samples = []
    for _ in range(counts["ping"]):
        t = time.perf_counter()
        api.ping()
        samples.append(time.perf_counter() - t)
    out["ping_p50_us"] = statistics.median(samples) * 1e6
    t = time.perf_counter()
    for _ in range(counts["call"]):
        assert len(api.call()) == 64
    out["call_per_s"] = counts["call"] / (time.perf_counter() - t)
    for key, size in (("stream1k", 1024), ("stream64k", 65536)):
        t = time.perf_counter()
        assert api.stream(counts[key], size) == counts[key]
        out[f"{key}_items_per_s"] = counts[key] / (time.perf_counter() - t)
    buf = os.urandom(4 << 20)
    t = time.perf_counter()
    for _ in range(counts["send"]):
        assert api.send(buf) == len(buf)
    out["send_mb_per_s"] = counts["send"] * len(buf) / (time.perf_counter() - t) / 1e6
    for key, root in (("files", "small"), ("big", "big")):
        target = dest / key
        # quicswarm makes what it writes durable with one syncfs: flush what others left
        # dirty (the data just made, the previous side's downloads) so it pays for its own.
        os.sync()
        t = time.perf_counter()
        api.download(root, target)
        out[f"{key}_s"] = time.perf_counter() - t
        assert same_files(data / root, target), key
    return out


# --- quicswarm's side ----------------------------------------------------------------------

def qs_gateway(data):
    import quicswarm

    gw = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tempfile.mkdtemp(),
                           serve={"small": data / "small", "big": data / "big"})
    gw.add_subroutine("echo64", echo64)
    gw.add_subroutine("items", items)
    gw.add_sink("sink", sink)
    gw.start()
    print(gw.local_addr, gw.fingerprint, flush=True)
    gw.start(blocking=True)


def qs_client(addr, fingerprint, data, sizes):
    import quicswarm

    dest = pathlib.Path(tempfile.mkdtemp())
    with quicswarm.Controller(fingerprint=fingerprint).get_client(addr) as c:

        class Quicswarm:
            ping = staticmethod(c.ping)
            call = staticmethod(lambda: c.call("echo64"))
            send = staticmethod(lambda buf: c.send("sink", buf))
            stream = staticmethod(lambda n, size: sum(1 for _ in c.stream("items", n, size)))
            download = staticmethod(lambda root, target: c.download(root, target, swarm=4))

        return measure(Quicswarm, {k: v[1] if isinstance(v, tuple) else v for k, v in sizes.items()},
                       data, dest)


# --- the run -------------------------------------------------------------------------------

def rows(sizes):
    return [
        ("ping p50 (us)", "ping_p50_us", "lower", None),
        ("64 B batch calls/s", "call_per_s", "higher", 100),
        ("stream 1 KiB items/s", "stream1k_items_per_s", "higher", 20),
        ("stream 64 KiB items/s", "stream64k_items_per_s", "higher", 20),
        ("4 MiB send (MB/s)", "send_mb_per_s", "higher", None),
        (f"{sizes['files']:,} x 4 KiB files (s)", "files_s", "lower", 5),
        (f"one {sizes['big_mib']} MiB file (s)", "big_s", "lower", None),
    ]


def run_side(cmd_gateway, cmd_client, parse_gateway, cwd=None, quiet=False):
    gateway = subprocess.Popen(cmd_gateway, stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, cwd=cwd)
    try:
        extra = parse_gateway(gateway)
        out = subprocess.run(cmd_client + extra, capture_output=True, text=True, cwd=cwd, timeout=3600)
        if out.returncode != 0:
            raise SystemExit(f"{cmd_client[0]} failed:\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        gateway.kill()
        gateway.wait()


def rust_reference(data, quick):
    """The Rust API's figures on the same workloads (benches/benches/python_ref.rs), or
    nothing without cargo."""
    repo = HERE.parents[2]
    cmd = ["cargo", "bench", "-q", "-p", "quicswarm-benches", "--bench", "python_ref", "--",
           "--data", str(data)] + (["--quick"] if quick else [])
    try:
        out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        print("no cargo: the Rust column is left out")
        return {}
    if out.returncode != 0:
        print(f"the Rust reference failed:\n{out.stderr[-2000:]}")
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("role", nargs="*")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    role = args.role
    if role:
        data = pathlib.Path(role[-1])
        if role[0] == "pyn-gateway":
            return pyn_gateway(int(role[1]))
        if role[0] == "pyn-client":
            print(json.dumps(pyn_client(int(role[1]), data, sizes)))
            return
        if role[0] == "qs-gateway":
            return qs_gateway(data)
        if role[0] == "qs-client":
            print(json.dumps(qs_client(role[1], role[2], data, sizes)))
            return
        raise SystemExit(f"unknown role {role[0]}")

    work = pathlib.Path(tempfile.mkdtemp(prefix="qs-python-bench-"))
    data = work / "data"
    make_data(data, sizes)
    venv = work / "pynetwork-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["pynetwork==2.4", "tqdm"], check=True)
    pyn_python = str(venv / "bin" / "python")
    flag = ["--quick"] if args.quick else []
    port = free_port()

    def wait_port(_gateway):
        # Not by connecting: pynetwork would give that connection a handler of its pool.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if listening(port):
                return [str(data)]
            time.sleep(0.1)
        raise SystemExit("pynetwork's gateway did not start")

    # pynetwork's gateway writes into 'Downloads' of its working folder.
    pyn = run_side([pyn_python, str(HERE), *flag, "pyn-gateway", str(port), str(data)],
                   [pyn_python, str(HERE), *flag, "pyn-client", str(port)], wait_port,
                   cwd=work, quiet=True)

    def addr_and_fingerprint(gateway):
        line = gateway.stdout.readline().split()
        return line[:2] + [str(data)]

    qs = run_side([sys.executable, str(HERE), *flag, "qs-gateway", str(data)],
                  [sys.executable, str(HERE), *flag, "qs-client"], addr_and_fingerprint)

    rust = rust_reference(data, args.quick)

    print(f"\n{'workload':28} {'pynetwork':>12} {'quicswarm':>12} {'Rust API':>12} {'vs pyn':>8} "
          f"{'vs Rust':>8}  targets")
    table = []
    for label, key, better, target in rows(sizes):
        a, b = pyn[key], qs[key]
        ratio = b / a if better == "higher" else a / b
        r = rust.get(key)
        # How much slower the Python API is than the Rust one (1.0 = as fast).
        behind = None if r is None else (r / b if better == "higher" else b / r)
        met = [] if target is None else [f">= {target}x pynetwork: " + ("met" if ratio >= target else "NOT met")]
        if behind is not None:
            met.append("within 2x of Rust: " + ("met" if behind <= 2 else "NOT met"))
        rust_text = f"{r:12.1f}" if r is not None else f"{'-':>12}"
        behind_text = f"{behind:7.2f}x" if behind is not None else f"{'-':>8}"
        print(f"{label:28} {a:12.1f} {b:12.1f} {rust_text} {ratio:7.1f}x {behind_text}  {'; '.join(met)}")
        table.append({"workload": label, "pynetwork": a, "quicswarm_python": b, "rust_api": r,
                      "ratio_vs_pynetwork": ratio, "python_behind_rust": behind, "target": target})
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
