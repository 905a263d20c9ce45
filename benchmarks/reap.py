#!/usr/bin/env python3
"""One reaper pass over N users that are up and busy (nothing to reap), then
over the same N users idle (all reaped), and the memory that gives back.

Run as root on a box with docker.io, catatonit and busybox-static:
    sudo .venv/bin/python benchmarks/reap.py --users 20
It makes N throwaway users (each up, with a busybox `sleep` container as the
busy work) and removes users, daemons, bridges, rules and /tmp/btreap* again.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from scratch import Scratch  # noqa: E402

from berth.core import config, paths, proc  # noqa: E402
from berth.lifecycle import hostobjects as host  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="busy passes to time")
    args = ap.parse_args()

    with Scratch("reap", "10.254.0.0/18", extra="[reaper]\nidle_timeout = 0\n") as scratch:
        users = [scratch.add_user(f"btr{scratch.tag}{i:02d}") for i in range(args.users)]
        tar = os.path.join(scratch.root, "busybox.tar")
        with tarfile.open(tar, "w") as t:
            t.add("/bin/busybox", arcname="bin/busybox")
            for applet in ("sh", "sleep"):
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                t.addfile(info)

        def docker(user, *a):
            subprocess.run(["docker", "-H", f"unix://{scratch.root}/run/{user}/docker.sock", *a], check=True,
                           capture_output=True)

        def reap_once():
            t0 = time.perf_counter()
            out = scratch.berth("reap").stdout
            return time.perf_counter() - t0, out

        for user in users:
            scratch.berth("up", user)
            docker(user, "import", "-c", "ENV PATH=/bin", tar, "bb:1")
            docker(user, "run", "-d", "--name", "train", "bb:1", "sleep", "3600")
        busy = []
        for _ in range(args.rounds):
            seconds, out = reap_once()
            assert out.count("kept") == len(users), out
            busy.append(seconds)
        for user in users:
            docker(user, "rm", "-f", "train")
        cfg = config.load(scratch.config)
        rss = sum(proc.rss_bytes(p) for u in users
                  for p in host.supervisor_for(cfg, paths.for_user(cfg, u)).processes())
        idle_seconds, out = reap_once()
        assert out.count("reaped") == len(users), out

    print(f"users: {len(users)}")
    print(f"pass over busy users (all kept)   median {statistics.median(busy):.2f} s over {args.rounds} passes")
    print(f"pass over idle users (all reaped) {idle_seconds:.2f} s")
    print(f"memory given back                 {rss / 2**20:.0f} MiB RSS ({rss / 2**20 / len(users):.0f} MiB a user)")

if __name__ == "__main__":
    main()
