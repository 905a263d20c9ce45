#!/usr/bin/env python3
"""Warm login: `berth pam` for a user whose daemon is up, as a whole process,
against the bare interpreter (`python -c pass`), alternated in one run.

Targets: median under 60 ms, and under 2.5x the bare interpreter.
Run as root on a box with docker.io and catatonit:
    sudo .venv/bin/python benchmarks/warm_login.py --rounds 41
It brings a throwaway user up, measures, and removes the user, daemon,
bridge, rules and /tmp/btwarm* again. --python picks the interpreter that
runs berth (e.g. a venv of the pyenv interpreter, to compare).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scratch import Scratch  # noqa: E402


def run_ms(cmd, env):
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs berth")
    args = ap.parse_args()

    with Scratch("warm", "10.254.80.0/20", args.python) as scratch:
        user = scratch.add_user(f"btwarm{scratch.tag}")
        # exactly what `berth install` writes into the PAM line (pam_exec runs it)
        berth = [args.python, "-I", "-m", "berth", "pam", "--run-dir", f"{scratch.root}/run",
                 "--config", scratch.config]
        hook_env = {"PATH": "/usr/bin:/bin", "PAM_TYPE": "open_session", "PAM_USER": user, "PAM_SERVICE": "sshd"}
        bare = [args.python, "-c", "pass"]
        scratch.berth("up", user)
        for _ in range(3):  # warm the page cache for both
            run_ms(berth, hook_env)
            run_ms(bare, scratch.env)
        hook, base = [], []
        for _ in range(args.rounds):
            hook.append(run_ms(berth, hook_env))
            base.append(run_ms(bare, scratch.env))
    mh, mb = statistics.median(hook), statistics.median(base)
    print(f"interpreter: {args.python}")
    print(f"rounds: {args.rounds} (alternated)")
    print(f"python -c pass          median {mb:6.1f} ms")
    print(f"berth pam (warm login)  median {mh:6.1f} ms  (target < 60 ms)")
    print(f"ratio                   {mh / mb:.2f}  (target < 2.5)")

if __name__ == "__main__":
    main()
