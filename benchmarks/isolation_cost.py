#!/usr/bin/env python3
"""What berth's isolation rules cost per packet: TCP throughput between the
host and a container on a user's bridge with berth's rules hooked in and
with them unhooked, alternated in one run; and the rule set for two users
as `iptables-save` shows it.

Run as root on a box with docker.io, catatonit and iperf3:
    .venv/bin/python benchmarks/isolation_cost.py --rounds 7
Two throwaway users are brought up (hardened mode); "without" takes out
only the jumps into berth's chains (so no packet meets a berth rule), and
`berth up` puts them back. Everything is removed at the end.
"""

import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from network import berth_side, iperf, iperf3_tar  # noqa: E402
from scratch import Scratch  # noqa: E402

from berth.core import config  # noqa: E402
from berth.net import rules  # noqa: E402


def unhook(cfg):
    for jump in rules.chains(cfg).jumps():
        subprocess.run(["iptables-legacy", "-t", jump.table, "-D", jump.chain, "-m", "comment", "--comment", "berth",
                        "-j", jump.target], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    with Scratch("isol", "10.254.32.0/20") as s:
        cfg = config.load(s.config)
        tar = os.path.join(s.root, "iperf3.tar")
        iperf3_tar(tar)
        _, (ip, port) = berth_side(s, tar)
        other = s.add_user(f"btisol{s.tag}o")
        s.berth("up", other)
        user = s.users[0]
        saved = subprocess.run(["iptables-legacy-save"], capture_output=True, text=True, check=True).stdout
        ruleset = [line for line in saved.splitlines()
                   if line.startswith("*") or cfg.network.chain_prefix in line]
        figures = {("with", "host -> container"): [], ("without", "host -> container"): [],
                   ("with", "container -> host"): [], ("without", "container -> host"): []}
        client = ["iperf3", "-c", ip, "-p", str(port), "-t", str(args.seconds), "-J"]
        iperf(client + ["-t", "1"], retries=20)  # the server is up
        for _ in range(args.rounds):
            for state in ("with", "without"):
                if state == "without":
                    unhook(cfg)
                figures[(state, "host -> container")].append(iperf(client))
                figures[(state, "container -> host")].append(iperf(client + ["-R"]))
                if state == "without":
                    s.berth("up", user)  # hooks berth's chains back in
    print(f"rounds: {args.rounds} (alternated, with rules first), {args.seconds} s each, receiver's Gbit/s")
    for way in ("host -> container", "container -> host"):
        w, wo = (statistics.median(figures[(st, way)]) / 1e9 for st in ("with", "without"))
        print(f"{way:18} with berth's rules {w:6.1f}   without {wo:6.1f}   ratio {w / wo:.3f}")
    print(f"\nberth's rules for two users ({user}, {other}), as iptables-legacy-save shows them:")
    print("\n".join(ruleset))


if __name__ == "__main__":
    main()
