#!/usr/bin/env python3
"""The policy proxy against dockerd's own socket, alternated in one run:
`docker ps` and `docker run --rm img true` latency, and `docker cp` of a
large file (throughput).

Run as root on a box with docker.io and catatonit:
    .venv/bin/python benchmarks/proxy.py --rounds 11 --cp-mib 500
It brings a throwaway user up, starts the proxy in this process, measures,
and removes the user, daemon, bridge, rules and /tmp/btproxy* again.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tarfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from berth import blocks, policy, proxy  # noqa: E402
from scratch import Scratch  # noqa: E402


def timed(argv):
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--cp-mib", type=int, default=500)
    args = ap.parse_args()
    with Scratch("proxy", "10.254.112.0/20") as s:
        user = s.add_user(f"btproxy{s.tag}")
        s.berth("up", user)
        direct = f"{s.root}/run/{user}/docker.sock"
        tar = os.path.join(s.root, "busybox.tar")
        with tarfile.open(tar, "w") as t:
            t.add("/bin/busybox", arcname="bin/busybox")
            for applet in ("sh", "true", "sleep"):
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                t.addfile(info)
        subprocess.run(["docker", "-H", f"unix://{direct}", "import", tar, "bb:1"], check=True, capture_output=True)
        block = blocks.ipaddress.IPv4Network("10.254.112.0/24")
        ctx = policy.Context(user_networks=str(blocks.layout(block).user_pool))
        listen = os.path.join(s.root, "proxy.sock")
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(proxy.serve(listen, direct, ctx))
        threading.Thread(target=loop.run_forever, daemon=True).start()
        subprocess.run(["docker", "-H", f"unix://{direct}", "run", "-d", "--name", "sink", "bb:1", "sleep", "3600"],
                       check=True, capture_output=True)
        blob = os.path.join(s.root, "blob")
        with open(blob, "wb") as f:
            for _ in range(args.cp_mib):
                f.write(os.urandom(1 << 20))
        figures = {}
        for name, argv in (("docker ps", ["ps", "-q"]), ("docker run --rm img true", ["run", "--rm", "bb:1", "true"]),
                           (f"docker cp {args.cp_mib} MiB in", ["cp", blob, "sink:/blob"])):
            rounds = 3 if "cp" in name else args.rounds
            d, p = [], []
            for _ in range(rounds):
                d.append(timed(["docker", "-H", f"unix://{direct}", *argv]))
                p.append(timed(["docker", "-H", f"unix://{listen}", *argv]))
            figures[name] = (statistics.median(d), statistics.median(p))
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
    print(f"rounds: {args.rounds} (alternated; cp: 3)")
    for name, (d, p) in figures.items():
        print(f"{name:28} direct {d * 1000:8.1f} ms   proxy {p * 1000:8.1f} ms   ratio {p / d:.2f}")


if __name__ == "__main__":
    main()
