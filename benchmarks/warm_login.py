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

from scratch import Scratch, pip_installed_python  # noqa: E402


def run_ms(cmd, env):
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--python", help="interpreter that runs berth (default: a venv berth is pip-installed into, "
                                     "setuptools left in place, made under /tmp)")
    args = ap.parse_args()
    args.python = args.python or pip_installed_python()

    with Scratch("warm", "10.254.80.0/20", args.python) as scratch:
        user = scratch.add_user(f"btwarm{scratch.tag}")
        # exactly what `berth install` writes into the PAM line (pam_exec runs it) ...
        with_run_dir = [args.python, "-I", "-m", "berth", "pam", "--run-dir", f"{scratch.root}/run",
                        "--config", scratch.config]
        # ... and a hand-written one, which names the config only (berth reads its digest)
        config_only = [args.python, "-I", "-m", "berth", "pam", "--config", scratch.config]
        hook_env = {"PATH": "/usr/bin:/bin", "PAM_TYPE": "open_session", "PAM_USER": user, "PAM_SERVICE": "sshd"}
        bare = [args.python, "-c", "pass"]
        scratch.berth("up", user)
        try:
            for _ in range(3):  # warm the page cache for each, and leave the config's digest
                run_ms(with_run_dir, hook_env)
                run_ms(config_only, hook_env)
                run_ms(bare, scratch.env)
            times = {"run_dir": [], "config": [], "bare": []}
            for _ in range(args.rounds):
                times["run_dir"].append(run_ms(with_run_dir, hook_env))
                times["config"].append(run_ms(config_only, hook_env))
                times["bare"].append(run_ms(bare, scratch.env))
        finally:
            from berth.lifecycle import logindigest
            for remove in (lambda: os.unlink(logindigest.path_for(scratch.config)),
                           lambda: os.rmdir(logindigest.DIR)):  # the directory only if nothing else is in it
                try:
                    remove()
                except OSError:
                    pass
    m = {k: statistics.median(v) for k, v in times.items()}
    print(f"interpreter: {args.python}")
    print(f"rounds: {args.rounds} (alternated)")
    print(f"python -c pass                      median {m['bare']:6.1f} ms")
    print(f"berth pam --run-dir (warm login)    median {m['run_dir']:6.1f} ms  ratio {m['run_dir'] / m['bare']:.2f}"
          "  (targets: < 60 ms, < 2.5x)")
    print(f"berth pam --config  (warm login)    median {m['config']:6.1f} ms  ratio {m['config'] / m['bare']:.2f}")


if __name__ == "__main__":
    main()
