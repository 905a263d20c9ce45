#!/usr/bin/env python3
"""What fair share costs: `berth status` (whole command) with 30 users up,
and its accounting part alone (CPU %, cgroup memory, cached disk, GPUs) in
process; and a cold `berth up` with [limits] set against one without,
alternated in one run.

Run as root on a box with docker.io and catatonit:
    .venv/bin/python benchmarks/fair_share.py --users 30 --rounds 11
It brings throwaway users up, measures, and removes users, daemons, bridges,
rules, cgroups and /tmp/btfair* again.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from scratch import Scratch, pip_installed_python  # noqa: E402

from berth.core import config  # noqa: E402
from berth.daemon import cgroups  # noqa: E402
from berth.lifecycle import hostobjects as host  # noqa: E402
from berth.ops import usage  # noqa: E402

LIMITS = '[limits]\nmemory = "8G"\ncpu_weight = 100\npids = 20000\n'


def timed(argv, env):
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--python", help="interpreter that runs berth (default: a pip-installed venv under /tmp)")
    args = ap.parse_args()
    python = args.python or pip_installed_python()

    with Scratch("fair", "10.254.0.0/17", python, extra=LIMITS) as s:
        cfg = config.load(s.config)
        for i in range(args.users):
            s.berth("up", s.add_user(f"btfair{s.tag}{i}"))
        status = [python, "-m", "berth", "status"]
        whole = [timed(status, s.env) for _ in range(args.rounds)]
        names = host.known_users(cfg, host.lease_table(cfg).read())

        def accounting():
            """What status does for usage: CPU % from the samples the last run left,
            cgroup memory, cached disk, GPUs."""
            t0 = time.perf_counter()
            usage.cpu_percents(cfg, names)
            usage.gpu_processes()
            for n in names:
                cgroups.read(n)
                usage.cached_disk(cfg, n)
            return time.perf_counter() - t0
        part = []
        for _ in range(args.rounds):
            time.sleep(0.5)  # as between two status runs: the samples the last one left are used
            part.append(accounting())

        # cold up with limits against without, alternated, for one more user
        plain = dict(s.env, BERTH_CONFIG=s.config + ".plain")
        with open(s.config) as f, open(s.config + ".plain", "w") as g:
            g.write(f.read().replace(LIMITS, ""))
        user = s.add_user(f"btfair{s.tag}x")
        s.berth("up", user)
        s.berth("down", user)
        with_limits, without = [], []
        for _ in range(args.rounds):
            with_limits.append(timed([python, "-m", "berth", "up", user], s.env))
            subprocess.run([python, "-m", "berth", "down", user], env=s.env, check=True, capture_output=True)
            without.append(timed([python, "-m", "berth", "up", user], plain))
            subprocess.run([python, "-m", "berth", "down", user], env=plain, check=True, capture_output=True)
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    print(f"interpreter: {python}; rounds: {args.rounds}")
    print(f"berth status, {len(names)} users up, whole command: median {ms(whole):.0f} ms")
    print(f"  of which the accounting (CPU %, cgroup memory, cached disk, GPUs), in process: {ms(part):.1f} ms")
    print(f"cold berth up with [limits]: {ms(with_limits):.0f} ms, without: {ms(without):.0f} ms, "
          f"added {ms(with_limits) - ms(without):+.0f} ms "
          f"(ratio {statistics.median(with_limits) / statistics.median(without):.2f})")


if __name__ == "__main__":
    main()
