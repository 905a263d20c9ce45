#!/usr/bin/env python3
"""`docker cp` through the user's socket into and out of a container with a
bind mount (berth copies it, as the container's root, in a child of the
proxy's) against the same copy into a container without one (dockerd
copies it, the proxy splicing the body), alternated in one run.

Run as root on a box with docker.io and catatonit:
    .venv/bin/python benchmarks/copy_binds.py --rounds 5 --mib 500
It brings a throwaway user up (`berth up`), measures, and removes the user,
daemon, bridge, rules, proxy and /tmp/btcopy* again.
"""

import argparse
import os
import pwd
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from proxy import busybox_tar, timed  # noqa: E402
from scratch import Scratch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=500, help="size of the copied file")
    args = ap.parse_args()
    with Scratch("copy", "10.254.128.0/18") as s:
        user = s.add_user(f"btcopy{s.tag}a")
        s.berth("up", user)
        sock = f"{s.root}/run/{user}/docker.sock"
        docker = ["docker", "-H", f"unix://{sock}"]
        tar = os.path.join(s.root, "busybox.tar")
        busybox_tar(tar)
        subprocess.run([*docker, "import", tar, "bb:1"], check=True, capture_output=True)
        source = os.path.join(s.root, "bound")
        os.makedirs(source)
        os.chown(source, pwd.getpwnam(user).pw_uid, -1)  # the user's own: a bind is pinned as the user
        for name, extra in (("plain", []), ("bound", ["-v", f"{source}:/data"])):
            subprocess.run([*docker, "run", "-d", "--name", name, *extra, "bb:1", "sleep", "3600"],
                           check=True, capture_output=True)
        blob = os.path.join(s.root, "blob")
        with open(blob, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        out = os.path.join(s.root, "out")
        cases = (("cp in", lambda c, d: [*docker, "cp", blob, f"{c}:{d}/blob"]),
                 ("cp out", lambda c, d: [*docker, "cp", f"{c}:{d}/blob", out]))
        figures = {}
        for name, argv in cases:
            plain, bound = [], []
            for _ in range(args.rounds):
                plain.append(timed(argv("plain", "")))
                bound.append(timed(argv("bound", "/data")))
                if os.path.exists(out):
                    os.unlink(out)
            figures[name] = (statistics.median(plain), statistics.median(bound))
    print(f"rounds: {args.rounds} (alternated, without a bind first), {args.mib} MiB, through the user's socket")
    for name, (plain, bound) in figures.items():
        print(f"docker {name:7} without a bind {plain * 1000:8.1f} ms   with one {bound * 1000:8.1f} ms   "
              f"throughput {plain / bound:.2f}x ({args.mib / plain:.0f} vs {args.mib / bound:.0f} MiB/s)")


if __name__ == "__main__":
    main()
