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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run_ms(cmd, env):
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs berth")
    args = ap.parse_args()

    tag = "%03x" % (os.getpid() % 4096)
    root = tempfile.mkdtemp(prefix=f"btwarm{tag}", dir="/tmp")
    user = f"btwarm{tag}"
    cfg_path = os.path.join(root, "berth.toml")
    with open(cfg_path, "w") as f:
        f.write(f'[paths]\nstate_dir = "{root}/state"\nrun_dir = "{root}/run"\nlog_dir = "{root}/log"\n'
                f'[network]\npool = "10.254.80.0/20"\nbridge_prefix = "w{tag}"\nchain_prefix = "BW{tag.upper()}"\n')
    env = dict(os.environ, BERTH_CONFIG=cfg_path)
    hook_env = dict(env, PAM_TYPE="open_session", PAM_USER=user, PAM_SERVICE="sshd")
    hook_args = ["pam", "--run-dir", f"{root}/run", "--config", cfg_path]  # as `berth install` writes them
    berth = [args.python, "-m", "berth", *hook_args]
    console = os.path.join(os.path.dirname(args.python), "berth")
    if os.path.exists(console):
        berth = [console, *hook_args]  # exactly what pam_exec runs
    bare = [args.python, "-c", "pass"]
    subprocess.run(["useradd", "-M", "-N", "-g", "users", user], check=True)
    try:
        subprocess.run([args.python, "-m", "berth", "up", user], env=env, check=True, capture_output=True)
        for _ in range(3):  # warm the page cache for both
            run_ms(berth, hook_env)
            run_ms(bare, env)
        hook, base = [], []
        for _ in range(args.rounds):
            hook.append(run_ms(berth, hook_env))
            base.append(run_ms(bare, env))
        mh, mb = statistics.median(hook), statistics.median(base)
        print(f"interpreter: {args.python}")
        print(f"rounds: {args.rounds} (alternated)")
        print(f"python -c pass          median {mb:6.1f} ms")
        print(f"berth pam (warm login)  median {mh:6.1f} ms  (target < 60 ms)")
        print(f"ratio                   {mh / mb:.2f}  (target < 2.5)")
    finally:
        subprocess.run([args.python, "-m", "berth", "down", user], env=env, capture_output=True)
        subprocess.run(["userdel", user], capture_output=True)
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f if line.split()[1].startswith(root + "/")]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
