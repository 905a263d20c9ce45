#!/usr/bin/env python3
"""Cold `berth up` against the seed's plain shell sequence, alternated in one run.

Baseline (the seed, by hand): ip link add bridge, ip addr add, ip link set up,
iptables MASQUERADE, dockerd with the same flags (same daemon.json keys),
wait for the socket, `docker run -d` of the pause image as the net container.
berth: `berth up USER` for a user who is down (lease, image and net container
kept from before), as a whole process. Each round runs both; medians and
their ratio are printed, then the idle memory of one user (RSS of dockerd,
containerd, shims and the pause process).

Run as root on a box with docker.io and catatonit:
    sudo .venv/bin/python benchmarks/cold_up.py --rounds 9
Everything it makes (a user, two bridges, rules, daemons, /tmp/btbench*) it
removes at the end.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from scratch import Scratch, pip_installed_python  # noqa: E402

from berth.core import config, paths, proc  # noqa: E402
from berth.daemon import pause  # noqa: E402
from berth.lifecycle import hostobjects as host  # noqa: E402

SEED = r"""
set -e
ip link add {br} type bridge
ip addr add {cidr} dev {br}
ip link set dev {br} up
iptables-legacy -t nat -C POSTROUTING -s {block} -j MASQUERADE 2>/dev/null || \
  iptables-legacy -t nat -A POSTROUTING -s {block} -j MASQUERADE
setsid {dockerd} --config-file {root}/seed/daemon.json >{root}/seed/log 2>&1 </dev/null &
echo $! > {root}/seed/dockerd.pid
until curl -sf --unix-socket {root}/seed/docker.sock http://d/_ping >/dev/null 2>&1; do sleep 0.01; done
docker -H unix://{root}/seed/docker.sock run -d --rm --name net {image} >/dev/null
"""

SEED_DOWN = r"""
kill $(cat {root}/seed/dockerd.pid) 2>/dev/null || true
while kill -0 $(cat {root}/seed/dockerd.pid) 2>/dev/null && \
      [ "$(awk '{{print $3}}' /proc/$(cat {root}/seed/dockerd.pid)/stat 2>/dev/null)" != Z ]; do sleep 0.02; done
ip link del {br} 2>/dev/null || true
iptables-legacy -t nat -D POSTROUTING -s {block} -j MASQUERADE 2>/dev/null || true
"""


def sh(script):
    subprocess.run(["bash", "-c", script], check=True)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def daemon_rss(cfg_path, user):
    """Summed RSS of the user's dockerd, containerd, shims and containers."""
    pids = host.supervisor_for(config.load(cfg_path), paths.for_user(config.load(cfg_path), user)).processes()
    return sum(proc.rss_bytes(p) for p in pids), len(pids)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--python", help="interpreter that runs berth (default: a venv berth is pip-installed "
                                     "into, setuptools left in place, made under /tmp)")
    args = ap.parse_args()
    args.python = args.python or pip_installed_python()

    bench = Scratch("bench", "10.254.64.0/20", args.python)
    tag, root = bench.tag, bench.root
    user = f"btbench{tag}"
    seed_br, seed_block, seed_cidr = f"s{tag}seed", "10.254.127.0/24", "10.254.127.1/25"
    dockerd = shutil.which("dockerd", path=os.environ["PATH"] + ":/usr/sbin")
    os.makedirs(f"{root}/seed")
    with open(f"{root}/seed/daemon.json", "w") as f:
        json.dump({"data-root": f"{root}/seed/data", "exec-root": f"{root}/seed/x",
                   "hosts": [f"unix://{root}/seed/docker.sock"], "pidfile": f"{root}/seed/docker.pid",
                   "bridge": seed_br, "iptables": False, "ip-masq": False, "group": "root",
                   "fixed-cidr": "10.254.127.0/25",
                   "default-address-pools": [{"base": "10.254.127.128/25", "size": 28}]}, f)
    fmt = dict(br=seed_br, cidr=seed_cidr, block=seed_block, dockerd=dockerd, root=root,
               image="berth/pause:catatonit")
    with bench:
        try:
            bench.add_user(user)
            # Warm-up: the first up imports the pause image; the seed gets it too.
            bench.berth("up", user)
            bench.berth("down", user)
            sh(SEED.format(**fmt).replace(f"docker -H unix://{root}/seed/docker.sock run", "true"))
            recipe = pause.find_recipe()
            subprocess.run(["docker", "-H", f"unix://{root}/seed/docker.sock", "import", "--change",
                            recipe.changes[0], "-", "berth/pause:catatonit"],
                           input=pause.tarball(recipe), check=True, capture_output=True)
            sh(SEED_DOWN.format(**fmt))

            seed_t, berth_t = [], []
            for _ in range(args.rounds):
                seed_t.append(timed(lambda: sh(SEED.format(**fmt))))
                sh(SEED_DOWN.format(**fmt))
                berth_t.append(timed(lambda: bench.berth("up", user)))
                bench.berth("down", user)

            bench.berth("up", user)
            time.sleep(2)  # let dockerd settle before reading its memory
            rss, nproc = daemon_rss(bench.config, user)
        finally:
            subprocess.run(["bash", "-c", SEED_DOWN.format(**fmt)], capture_output=True)

    ms = statistics.median(seed_t), statistics.median(berth_t)
    print(f"interpreter: {args.python}")
    print(f"rounds: {args.rounds} (alternated)")
    for label, times, median in (("seed shell sequence", seed_t, ms[0]), ("berth up (cold)", berth_t, ms[1])):
        print(f"{label:<21} median {median * 1000:7.0f} ms  "
              f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})")
    print(f"ratio berth/seed      {ms[1] / ms[0]:.2f}  (target <= 0.9)")
    print(f"idle memory, one user {rss / 2**20:.0f} MiB RSS over {nproc} processes (dockerd, containerd, shim, pause)")

if __name__ == "__main__":
    main()
