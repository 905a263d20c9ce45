#!/usr/bin/env python3
"""berth's policy proxy (the user's socket in hardened mode) against
dockerd's own socket, alternated in one run: `docker ps` and
`docker run --rm img true` latency, `docker cp` and `docker load`
throughput, and the proxy's idle memory with 1 and N users up.

Run as root on a box with docker.io and catatonit:
    .venv/bin/python benchmarks/proxy.py --rounds 11 --mib 500 --users 20
It brings throwaway users up the way a login does (`berth up`, which starts
the proxy), measures, and removes the users, daemons, bridges, rules, the
proxy and /tmp/btproxy* again.
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

from berth.proxy import control as proxyctl  # noqa: E402


def timed(argv):
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def pss_and_rss(pid):
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss"):
                fields[key] = int(rest.split()[0]) * 1024
    return fields["Pss"], fields["Rss"]


def busybox_tar(path, big_mib=0):
    """busybox, and a file of random bytes so the image is `big_mib` MiB."""
    with tarfile.open(path, "w") as t:
        t.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "true", "sleep"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(info)
        if big_mib:
            blob = path + ".blob"
            with open(blob, "wb") as f:
                for _ in range(big_mib):
                    f.write(os.urandom(1 << 20))
            t.add(blob, arcname="blob")
            os.unlink(blob)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--mib", type=int, default=500, help="size of the docker cp file and the loaded image")
    ap.add_argument("--users", type=int, default=20, help="users up for the memory figure")
    args = ap.parse_args()
    with Scratch("proxy", "10.254.64.0/18") as s:
        user = s.add_user(f"btproxy{s.tag}a")
        s.berth("up", user)
        direct = f"{s.root}/run/{user}/d/docker.sock"   # dockerd's own, root's alone
        proxied = f"{s.root}/run/{user}/docker.sock"    # the user's: the policy proxy
        tar = os.path.join(s.root, "busybox.tar")
        busybox_tar(tar)
        subprocess.run(["docker", "-H", f"unix://{direct}", "import", tar, "bb:1"], check=True, capture_output=True)
        subprocess.run(["docker", "-H", f"unix://{direct}", "run", "-d", "--name", "sink", "bb:1", "sleep", "3600"],
                       check=True, capture_output=True)
        blob = os.path.join(s.root, "blob")
        with open(blob, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        big = os.path.join(s.root, "big.tar")
        busybox_tar(big + ".rootfs", args.mib)
        subprocess.run(["docker", "-H", f"unix://{direct}", "import", big + ".rootfs", "big:1"], check=True,
                       capture_output=True)
        subprocess.run(["docker", "-H", f"unix://{direct}", "save", "-o", big, "big:1"], check=True)
        os.unlink(big + ".rootfs")

        def load(sock):
            subprocess.run(["docker", "-H", f"unix://{sock}", "rmi", "big:1"], check=True, capture_output=True)
            return timed(["docker", "-H", f"unix://{sock}", "load", "-i", big])

        figures = {}
        cases = (("docker ps", lambda sock: timed(["docker", "-H", f"unix://{sock}", "ps", "-q"]), args.rounds),
                 ("docker run --rm img true",
                  lambda sock: timed(["docker", "-H", f"unix://{sock}", "run", "--rm", "bb:1", "true"]), args.rounds),
                 (f"docker cp {args.mib} MiB in",
                  lambda sock: timed(["docker", "-H", f"unix://{sock}", "cp", blob, "sink:/blob"]), 5),
                 (f"docker load {args.mib} MiB", load, 5))
        for name, run, rounds in cases:
            d, p = [], []
            for _ in range(rounds):
                d.append(run(direct))
                p.append(run(proxied))
            figures[name] = (statistics.median(d), statistics.median(p))

        pid = proxyctl.ping(f"{s.root}/run")["pid"]
        memory = {1: pss_and_rss(pid)}
        for i in range(1, args.users):
            other = s.add_user(f"btproxy{s.tag}{chr(ord('a') + i % 26)}{i // 26 or ''}")
            s.berth("up", other)
        # The proxy at rest after serving: each user's socket answered once.
        for other in s.users:
            subprocess.run(["docker", "-H", f"unix://{s.root}/run/{other}/docker.sock", "ps", "-q"], check=True,
                           capture_output=True)
        memory[len(s.users)] = pss_and_rss(pid)
    print(f"rounds: {args.rounds} (alternated, direct first; cp and load: 5)")
    for name, (d, p) in figures.items():
        extra = ""
        if "MiB" in name:
            extra = f"   throughput {d / p:.2f}x direct ({args.mib / d:.0f} vs {args.mib / p:.0f} MiB/s)"
        print(f"{name:26} direct {d * 1000:8.1f} ms   proxy {p * 1000:8.1f} ms   ratio {p / d:.2f}{extra}")
    for n, (pss, rss) in memory.items():
        print(f"proxy idle memory, {n:2} user(s) up: PSS {pss / 2**20:.1f} MiB, RSS {rss / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
