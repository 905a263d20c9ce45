#!/usr/bin/env python3
"""Slurm's Prolog and Epilog as slurmd runs them (root, no PATH, slurmd's
environment, one fake GPU of a gres.conf): the Prolog with the job user's
daemon down (it starts it), the Prolog with it up (a second job), and the
Epilog of a job with a running container to remove (the daemon stays: the
other job).

Run as root on a box with docker.io, catatonit and busybox-static:
    sudo .venv/bin/python benchmarks/slurm_prolog.py --rounds 5
It makes a throwaway user, node files and daemon under /tmp/btslurm*, and
removes them again.
"""

import argparse
import os
import pwd
import statistics
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from scratch import Scratch  # noqa: E402


def node_files(root):
    d = os.path.join(root, "slurm")
    os.makedirs(os.path.join(d, "dev"))
    os.mknod(os.path.join(d, "dev", "nvidia0"), 0o600 | 0o020000, os.makedev(195, 0))
    with open(os.path.join(d, "slurm.conf"), "w") as f:
        f.write("# only its directory is read\n")
    with open(os.path.join(d, "gres.conf"), "w") as f:
        f.write(f"AutoDetect=off\nName=gpu File={d}/dev/nvidia0\n")
    return os.path.join(d, "slurm.conf")


def hook(scratch, name, user, job, slurm_conf):
    uid = pwd.getpwnam(user).pw_uid
    env = {"SLURM_JOB_ID": str(job), "SLURM_JOB_USER": user, "SLURM_JOB_UID": str(uid), "SLURM_CONF": slurm_conf,
           "SLURMD_NODENAME": "node1", "SLURM_JOB_GPUS": "0", "SLURM_SCRIPT_CONTEXT": f"{name}_slurmd"}
    t0 = time.perf_counter()
    r = subprocess.run([scratch.python, "-I", "-m", "berth", "slurm", name, "--config", scratch.config], env=env,
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name} of job {job} exited {r.returncode}: {r.stderr.strip()}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with Scratch("slurm", "10.253.0.0/20", extra="[slurm]\nenabled = true\n") as scratch:
        user = scratch.add_user(f"bts{scratch.tag}")
        slurm_conf = node_files(scratch.root)
        scratch.berth("up", user)
        tar = os.path.join(scratch.root, "busybox.tar")
        with tarfile.open(tar, "w") as t:
            t.add("/bin/busybox", arcname="bin/sleep")
        subprocess.run(["docker", "-H", f"unix://{scratch.root}/run/{user}/docker.sock", "import", tar, "bb:1"],
                       check=True, capture_output=True)
        scratch.berth("down", user)  # its data-root and image made once: each cold Prolog is a returning user's
        cold, warm, epilog = [], [], []
        for i in range(args.rounds):
            cold.append(hook(scratch, "prolog", user, 1000 + i, slurm_conf))
            warm.append(hook(scratch, "prolog", user, 2000 + i, slurm_conf))
            sock = f"{scratch.root}/run/{user}/job-{2000 + i}.sock"
            subprocess.run(["runuser", "-u", user, "--", "docker", "-H", f"unix://{sock}", "run", "-d", "--name",
                            f"c{i}", "bb:1", "/bin/sleep", "600"], check=True, capture_output=True)
            epilog.append(hook(scratch, "epilog", user, 2000 + i, slurm_conf))
            hook(scratch, "epilog", user, 1000 + i, slurm_conf)
            scratch.berth("down", user)
        for what, xs in (("Prolog, daemon down", cold), ("Prolog, daemon up", warm), ("Epilog", epilog)):
            print(f"{what:<20} median {statistics.median(xs):.2f} s  min {min(xs):.2f}  max {max(xs):.2f}  "
                  f"(n={len(xs)})")


if __name__ == "__main__":
    main()
