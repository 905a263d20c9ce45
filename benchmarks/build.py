#!/usr/bin/env python3
"""`docker build` of one ~200 MiB context through a hardened user's socket
(berth's policy proxy) against dockerd's own socket, alternated in one run:
the legacy builder (the context uploaded in the request body) and BuildKit
(`DOCKER_BUILDKIT=1`: the context pulled by dockerd through the CLI's h2c
session), both with Debian's docker CLI 20.10 (`--cli` picks another for
the legacy builder; the newer CLI builds with BuildKit only through buildx).

Run as root on a box with docker.io and catatonit:
    .venv/bin/python benchmarks/build.py --rounds 7 --mib 200
Every build sends the whole context: each gets a fresh hard-linked copy of
it (BuildKit sends only what changed since the last build from the same
directory), and its COPY is cached by content, so what is timed is the
context's way to dockerd and its hashing there, where the proxy sits.
"""

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from proxy import busybox_tar  # noqa: E402
from scratch import Scratch  # noqa: E402

from berth.proxy import control as proxyctl  # noqa: E402

DEBIAN_CLI = "/usr/bin/docker"
FILE_MIB = 4


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_context(directory, mib, image):
    os.makedirs(directory)
    for i in range(max(1, mib // FILE_MIB)):
        with open(os.path.join(directory, f"part{i:03}"), "wb") as f:
            f.write(os.urandom(FILE_MIB << 20))
    with open(os.path.join(directory, "Dockerfile"), "w") as f:
        f.write(f"FROM {image}\nCOPY . /ctx\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--mib", type=int, default=200, help="size of the build context")
    ap.add_argument("--cli", default=DEBIAN_CLI, help="the docker CLI of the legacy builds")
    args = ap.parse_args()
    with Scratch("build", "10.254.128.0/18") as s:
        user = s.add_user(f"btbuild{s.tag}a")
        s.berth("up", user)
        direct = f"{s.root}/run/{user}/d/docker.sock"   # dockerd's own, root's alone
        proxied = f"{s.root}/run/{user}/docker.sock"    # the user's: the policy proxy
        tar = os.path.join(s.root, "busybox.tar")
        busybox_tar(tar)
        subprocess.run([DEBIAN_CLI, "-H", f"unix://{direct}", "import", tar, "bb:1"], check=True, capture_output=True)
        context = os.path.join(s.root, "context")
        make_context(context, args.mib, "bb:1")
        copies = itertools.count()

        def build(cli, buildkit):
            def run(sock):
                fresh = f"{context}.{next(copies)}"
                subprocess.run(["cp", "-al", context, fresh], check=True)
                env = {**os.environ, "DOCKER_BUILDKIT": "1" if buildkit else "0"}
                t0 = time.perf_counter()
                r = subprocess.run([cli, "-H", f"unix://{sock}", "build", "-q", "-t", "built:1", fresh],
                                   capture_output=True, text=True, env=env)
                elapsed = time.perf_counter() - t0
                subprocess.run(["rm", "-rf", fresh], check=True)
                if r.returncode != 0:
                    raise SystemExit(f"build through {sock} failed: {r.stderr.strip()}")
                return elapsed
            return run

        proxy_pid = proxyctl.ping(f"{s.root}/run")["pid"]
        figures, proxy_cpu = {}, {}
        for name, run in ((f"legacy build ({os.path.basename(args.cli)} {args.cli})", build(args.cli, False)),
                          (f"BuildKit build ({DEBIAN_CLI})", build(DEBIAN_CLI, True))):
            run(direct), run(proxied)  # warm-up: the first COPY of the context is made once, outside the figures
            d, p, cpu = [], [], []
            for _ in range(args.rounds):
                d.append(run(direct))
                before = cpu_seconds(proxy_pid)
                p.append(run(proxied))
                cpu.append(cpu_seconds(proxy_pid) - before)
            figures[name] = (statistics.median(d), statistics.median(p))
            proxy_cpu[name] = statistics.median(cpu)
    print(f"context: {args.mib} MiB in {max(1, args.mib // FILE_MIB)} files; rounds: {args.rounds} "
          "(alternated, direct first)")
    for name, (d, p) in figures.items():
        print(f"{name:44} direct {d * 1000:7.0f} ms   proxy {p * 1000:7.0f} ms   "
              f"throughput {d / p:.2f}x direct ({args.mib / d:.0f} vs {args.mib / p:.0f} MiB/s), "
              f"the proxy's CPU {proxy_cpu[name] * 1000:.0f} ms a build")


if __name__ == "__main__":
    main()
