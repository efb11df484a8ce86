"""The seed's Tutorial 1 on quicswarm: a conditional log backup, written for pynetwork.

The robot's gateway offers ``mount_usage`` (how full the disk holding the logs is) and
``remove_logs`` (removes the named log files). The controller asks for the usage and, above a
threshold, downloads the logs by regex and then removes them on the robot.

Compared with the pynetwork original, only the imports changed and one line was added:
``gw.serve(LOG_DIR)``, since quicswarm serves only the folders it is told.

    python examples/python/file_backup.py demo            # both sides, throwaway folders
    python examples/python/file_backup.py gateway LOGDIR  # the robot
    python examples/python/file_backup.py backup HOST LOGDIR [THRESHOLD]
"""

import os
import shutil
import sys
import tempfile

from quicswarm.compat import Controller, Gateway
from quicswarm.compat.backend2 import bytes_to_int, int_to_bytes, safe_print, str_to_bytes

PORT = 1857


def make_gateway(log_dir, port=PORT):
    def mount_usage():
        usage = shutil.disk_usage(log_dir)
        return str_to_bytes(str(usage.used / usage.total))

    def remove_logs(names):
        removed = 0
        for name in names:
            path = os.path.join(log_dir, os.path.basename(name))
            if os.path.exists(path):
                os.remove(path)
                removed += 1
        return int_to_bytes(removed)

    gw = Gateway(port)
    gw.add_subroutine("mount_usage", mount_usage)
    gw.add_subroutine("remove_logs", remove_logs)
    gw.serve(log_dir)  # the one added line
    return gw


def backup(host, log_dir, threshold=0.0, port=PORT, download_dir="backup", **trust):
    controller = Controller(gateway_ip=host, port=port, download_dir=download_dir, **trust)
    with controller.get_client() as client:
        usage = float(client.get_subroutine_batch("mount_usage").decode())
        safe_print(f"disk usage {usage:.1%}")
        if usage < threshold:
            safe_print("below the threshold: nothing to back up")
            return 0
        client.get_files_from_gateway(folder=log_dir, regex=r".*\.log$")
        names = sorted(n for n in os.listdir(download_dir) if n.endswith(".log"))
        removed = bytes_to_int(client.get_subroutine_batch("remove_logs", arguments=[names]))
        safe_print(f"backed up {len(names)} logs, removed {removed} on the robot")
        return removed


def demo():
    work = tempfile.mkdtemp()
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    for i in range(5):
        with open(os.path.join(logs, f"run{i}.log"), "w") as f:
            f.write(f"log {i}\n" * 100)
    with open(os.path.join(logs, "keep.txt"), "w") as f:
        f.write("not a log")
    os.chdir(work)
    gw = make_gateway(logs, port=0)
    gw.start()
    port = int(gw.local_addr.rsplit(":", 1)[1])
    removed = backup("127.0.0.1", logs, port=port, fingerprint=gw.fingerprint,
                     download_dir=os.path.join(work, "backup"))
    left = sorted(os.listdir(logs))
    gw.stop()
    assert removed == 5 and left == ["keep.txt"], (removed, left)
    safe_print("demo ok")


if __name__ == "__main__":
    if sys.argv[1:2] == ["gateway"]:
        make_gateway(sys.argv[2]).start(blocking=True)
    elif sys.argv[1:2] == ["backup"]:
        backup(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    else:
        demo()
