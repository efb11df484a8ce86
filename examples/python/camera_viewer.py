"""Receive the pi_camera example's frames in Python, freshest first, into numpy arrays.

Frames come with ``latest`` delivery: each on its own QUIC stream, and a frame still on its
way when a newer one is ready is cancelled, so a slow or lossy link shows fewer but fresh
frames instead of an ever older backlog. A frame is the capture time (microseconds since the
Unix epoch, u64 little-endian), the frame number (u64 LE), then the JPEG bytes.

    pi_camera serve --listen 0.0.0.0:1857 --source test       # the robot (Rust example)
    python examples/python/camera_viewer.py ROBOT:1857 --fingerprint SHA256 --seconds 10
    python examples/python/camera_viewer.py --demo --seconds 3  # a fake camera in-process
"""

import argparse
import struct
import tempfile
import time

import quicswarm

try:  # numpy is optional: frames are handed over as arrays when it is there
    import numpy
except ImportError:  # pragma: no cover
    numpy = None

HEADER = struct.Struct("<QQ")


def fake_camera(fps=30, size=40_000):
    """A test source in pi_camera's frame format."""
    number = 0
    while True:
        now_us = int(time.time() * 1e6)
        yield number, HEADER.pack(now_us, number) + bytes([number % 256]) * size
        number += 1
        time.sleep(1 / fps)


def view(client, seconds):
    frames, ages, last = 0, [], None
    deadline = time.monotonic() + seconds
    feed = client.subscribe("camera", delivery="latest", max_age=0.1, priority=1)
    for ident, data in feed:
        captured_us, number = HEADER.unpack_from(data)
        image = numpy.frombuffer(data, dtype=numpy.uint8, offset=HEADER.size) if numpy else data[HEADER.size:]
        ages.append(time.time() - captured_us / 1e6)
        frames += 1
        last = (number, len(image))
        if time.monotonic() > deadline:
            break
    feed.close()
    ages.sort()
    p99 = ages[int(len(ages) * 0.99)] if ages else float("nan")
    print(f"{frames} frames in {seconds} s ({frames / seconds:.1f} fps), age p99 {p99 * 1e3:.1f} ms, "
          f"last frame {last}, numpy {'yes' if numpy else 'no'}")
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("addr", nargs="?", help="the camera gateway, host:port")
    parser.add_argument("--fingerprint", help="pin this certificate (default: trust on first use)")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--demo", action="store_true", help="serve a fake camera in-process")
    args = parser.parse_args()
    gateway = None
    if args.demo:
        gateway = quicswarm.Gateway(listen="127.0.0.1:0", cert_dir=tempfile.mkdtemp())
        gateway.add_subroutine("camera", lambda: fake_camera(), kind="stream")
        gateway.start()
        args.addr, args.fingerprint = gateway.local_addr, gateway.fingerprint
    if not args.addr:
        parser.error("name the camera gateway (host:port), or use --demo")
    controller = quicswarm.Controller(fingerprint=args.fingerprint)
    with controller.get_client(args.addr) as client:
        frames = view(client, args.seconds)
    if gateway:
        gateway.close()
    return 0 if frames else 1


if __name__ == "__main__":
    raise SystemExit(main())
