#!/usr/bin/env python3
"""What any proxy can reach for `docker cp` on the box at hand: two bare
relays with no HTTP and no policy at all in front of dockerd's own socket
(one copying through a 256 KiB buffer, one splicing through a pipe, a
thread each way), against dockerd's socket and berth's policy proxy,
alternated.

The policy proxy's throughput target is measured against direct; this is
the ceiling that target meets (on 2 cores a relay takes turns with the CLI
and with dockerd's untar for the same CPUs).

Run as root on a box with docker.io and catatonit:
    .venv/bin/python benchmarks/proxy_ceiling.py --rounds 11 --mib 300
"""

import argparse
import contextlib
import fcntl
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from proxy import busybox_tar  # noqa: E402
from scratch import Scratch  # noqa: E402

from berth.proxy import control as proxyctl  # noqa: E402

F_SETPIPE_SZ = 1031


def pump(src, dst):
    """One direction: read into a 256 KiB buffer, write it all, pass the end on."""
    buf = bytearray(256 << 10)
    view = memoryview(buf)
    with passing_the_end(dst):
        while n := src.recv_into(buf):
            dst.sendall(view[:n])


def pump_splice(src, dst):
    """One direction through a pipe, never in userspace."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
    with passing_the_end(dst):
        while n := os.splice(src.fileno(), w, 1 << 20):
            while n:
                n -= os.splice(r, dst.fileno(), n)
    os.close(r)
    os.close(w)


@contextlib.contextmanager
def passing_the_end(dst):
    """Until the source ends or fails; then dst's end of sending."""
    try:
        yield
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay(listener, target, upload=pump):
    """Each connection relayed to `target`, one thread a direction."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(target)
        threading.Thread(target=upload, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


def cpu_seconds():
    """This process's CPU time: the relay's threads are all it runs meanwhile."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def process_cpu(pid):
    """Another process's CPU time (utime + stime, /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--mib", type=int, default=300, help="size of the file copied in")
    args = ap.parse_args()
    with Scratch("proxy", "10.254.64.0/18") as s:
        user = s.add_user(f"btproxy{s.tag}a")
        s.berth("up", user)
        paths = {"direct": f"{s.root}/run/{user}/d/docker.sock",   # dockerd's own
                 "copying": f"{s.root}/copying.sock",                # a bare relay in front of it
                 "splicing": f"{s.root}/splicing.sock",              # another
                 "proxy": f"{s.root}/run/{user}/docker.sock"}        # the user's: the policy proxy
        listeners = []
        for name, upload in (("copying", pump), ("splicing", pump_splice)):
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(paths[name])
            listener.listen(16)
            listeners.append(listener)
            threading.Thread(target=relay, args=(listener, paths["direct"], upload), daemon=True).start()
        docker = ["docker", "-H", f"unix://{paths['direct']}"]
        tar = os.path.join(s.root, "busybox.tar")
        busybox_tar(tar)
        subprocess.run(docker + ["import", tar, "bb:1"], check=True, capture_output=True)
        subprocess.run(docker + ["run", "-d", "--name", "sink", "bb:1", "sleep", "3600"], check=True,
                       capture_output=True)
        blob = os.path.join(s.root, "blob")
        with open(blob, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        times = {name: [] for name in paths}
        cpu = {"copying": [], "splicing": [], "proxy": []}
        proxy_pid = proxyctl.ping(f"{s.root}/run")["pid"]
        for _ in range(args.rounds):
            for name, path in paths.items():
                c0, p0, t0 = cpu_seconds(), process_cpu(proxy_pid), time.perf_counter()
                subprocess.run(["docker", "-H", f"unix://{path}", "cp", blob, "sink:/blob"], check=True,
                               capture_output=True)
                times[name].append(time.perf_counter() - t0)
                if name == "proxy":
                    cpu[name].append(process_cpu(proxy_pid) - p0)
                elif name in cpu:
                    cpu[name].append(cpu_seconds() - c0)
        for listener in listeners:
            listener.close()
    direct = statistics.median(times["direct"])
    print(f"docker cp {args.mib} MiB in, {args.rounds} rounds alternated")
    for name, values in times.items():
        median = statistics.median(values)
        spent = f"   CPU {statistics.median(cpu[name]) * 1000:.0f} ms" if name in cpu else ""
        print(f"{name:9} median {median * 1000:6.0f} ms   throughput {direct / median:.2f}x direct{spent}")


if __name__ == "__main__":
    main()
