#!/usr/bin/env python3
"""Idle memory per user (PSS) with 1, 5 and 20 users up on one shared
containerd, the host's total, and, in the same run, the same count of users
each with a containerd of their own ([daemon].containerd = "own", as
before the shared one).

PSS (proportional set size) gives each process its share of the pages it
maps together with others (the dockerd and shim binaries), so the sum over
a host counts every page once. Per user: their dockerd, their shims and
the pause process; the shared containerd and the policy proxy are the
host's, counted once in the total.

Run as root on a box with docker.io and catatonit:
    .venv/bin/python benchmarks/memory.py --users 1,5,20
It brings throwaway users up (`berth up`), measures after they settle, and
removes the users, daemons, bridges, rules and /tmp/btmem* again.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from scratch import Scratch  # noqa: E402

from berth.core import config, paths, proc  # noqa: E402
from berth.lifecycle import hostobjects as host  # noqa: E402
from berth.proxy import control as proxyctl  # noqa: E402

SETTLE = 5.0  # seconds after the last up: dockerd's start-up garbage collected


def user_pss(cfg, user):
    """PSS of the user's dockerd, shims, and the processes below them."""
    return sum(proc.pss_bytes(p) for p in host.supervisor_for(cfg, paths.for_user(cfg, user)).processes())


def measure(kind, counts, containerd):
    """{count: (median per-user PSS, host total)} for one [daemon].containerd setting."""
    out = {}
    with Scratch(kind, "10.254.0.0/17", extra=f'[daemon]\ncontainerd = "{containerd}"\n') as s:
        cfg = config.load(s.config)
        up = []
        for count in counts:
            while len(up) < count:
                user = s.add_user(f"bt{kind[:3]}{s.tag}{len(up)}")
                s.berth("up", user)
                up.append(user)
            time.sleep(SETTLE)
            per_user = [user_pss(cfg, u) for u in up]
            shared = host.shared_containerd(cfg)
            rec = shared.running() if shared else None
            common = (proc.pss_bytes(rec.pid) if rec else 0)
            info = proxyctl.ping(cfg.paths.run_dir)
            common += proc.pss_bytes(info["pid"]) if info else 0
            out[count] = (statistics.median(per_user), sum(per_user) + common, common)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", default="1,5,20", help="counts of users up, in rising order")
    args = ap.parse_args()
    counts = sorted(int(n) for n in args.users.split(","))
    shared = measure("memshared", counts, "shared")
    own = measure("memown", counts, "own")
    mib = 2 ** 20
    print("idle memory (PSS), median per user; host total = all users + shared containerd + policy proxy")
    for n in counts:
        s_user, s_total, s_common = shared[n]
        o_user, o_total, o_common = own[n]
        print(f"{n:3} user(s): shared containerd {s_user / mib:5.1f} MiB/user, host {s_total / mib:6.1f} MiB "
              f"(of which shared {s_common / mib:.1f}) | own containerd {o_user / mib:5.1f} MiB/user, host "
              f"{o_total / mib:6.1f} MiB | ratio per user {s_user / o_user:.2f}")
    for low, high in zip(counts, counts[1:]):
        extra = high - low
        print(f"each additional user, {low} -> {high}: shared containerd "
              f"{(shared[high][1] - shared[low][1]) / extra / mib:5.1f} MiB | own containerd "
              f"{(own[high][1] - own[low][1]) / extra / mib:5.1f} MiB  (target <= 60 MiB)")


if __name__ == "__main__":
    main()
