#!/usr/bin/env python3
"""Container <-> host TCP throughput: berth's user bridge against a rootless
dockerd (rootlesskit + slirp4netns) on the same machine, alternated in one run.

Both daemons run side by side, each with an `iperf3 -s` container built by
`docker import` from the host's iperf3 and the libraries `ldd` lists (nothing
is pulled). Two ways in, each measured in both directions (iperf3 `-R`), a
few seconds a measurement, the receiver's figure:

- the host dials the container: berth's bridge is routed, so the host
  connects to the container's address (a container in the user's net
  container); the rootless container is reachable only through a published
  port (`-p 127.0.0.1:PORT:5201`), carried by rootlesskit's port driver
  (builtin) and docker-proxy;
- the container dials the host: an `iperf3 -s` on the host, on an address of
  a bridge this script makes (rootlesskit hides the host's loopback from the
  rootless side, and no traffic may leave the machine); from the rootless
  container that connection goes through slirp4netns.

Run as root on a box with docker.io and catatonit, and these Debian packages:
    apt-get install -y rootlesskit slirp4netns iperf3 uidmap
    .venv/bin/python benchmarks/network.py --rounds 5
The rootless side gets a throwaway user with a subordinate id range high
above any other, and, where /dev/net/tun is not world-usable (a box without
udev), an ACL entry for that user on it for the run. Everything it makes
(two users, their subordinate ranges, daemons, a bridge, the ACL, /tmp/btnet*)
it removes at the end.
"""

import argparse
import contextlib
import ipaddress
import json
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from scratch import Scratch  # noqa: E402

ROOTLESS_SH = "/usr/share/docker.io/contrib/dockerd-rootless.sh"
PACKAGES = "rootlesskit slirp4netns iperf3 uidmap"
HOST_ADDR = "10.254.250.1"  # the host's end for containers that dial it (outside the berth pool below)
SUBID_COUNT = 65536
TUN = "/dev/net/tun"
ACL = "system.posix_acl_access"


def check_host():
    missing = [t for t in ("iperf3", "rootlesskit", "slirp4netns", "newuidmap", "newgidmap") if not shutil.which(t)]
    if missing or not os.path.exists(ROOTLESS_SH):
        raise SystemExit(f"network.py needs {', '.join(missing) or ROOTLESS_SH}: apt-get install -y {PACKAGES}")
    # rootlesskit needs user namespaces a user may make (Debian's own sysctl; upstream kernels lack it)
    for knob, fix in (("kernel.unprivileged_userns_clone", 1), ("user.max_user_namespaces", 15000)):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/sys/{knob.replace('.', '/')}") as f:
            if f.read().strip() == "0":
                raise SystemExit(f"rootless dockerd needs user namespaces: sysctl -w {knob}={fix}")


def run(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


def docker(sock, *args):
    return run("docker", "-H", f"unix://{sock}", *args)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iperf3_tar(path):
    """iperf3, the libraries ldd names and the loader, and a /tmp (iperf3 maps its buffer from a file there)."""
    libs = re.findall(r"(/\S+) \(0x", run("ldd", shutil.which("iperf3")))
    with tarfile.open(path, "w", dereference=True) as t:
        t.add(shutil.which("iperf3"), arcname="usr/bin/iperf3")
        for lib in libs:
            t.add(lib, arcname=lib.lstrip("/"))
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        t.addfile(tmp)


def iperf(argv, retries=0):
    """Receiver's bits per second of one iperf3 run (argv up to -J); retries while a server comes up."""
    for attempt in range(retries + 1):
        r = subprocess.run(argv, capture_output=True, text=True)
        try:
            out = json.loads(r.stdout)
        except ValueError:
            out = {"error": r.stderr.strip() or r.stdout.strip()}
        if r.returncode == 0 and "error" not in out:
            return out["end"]["sum_received"]["bits_per_second"]
        if attempt < retries:
            time.sleep(0.5)
    raise SystemExit(f"{' '.join(argv)} failed: {out.get('error')}")


# --- the host's end for containers that dial the host --------------------------------------------

@contextlib.contextmanager
def host_server(stack, bridge):
    """An iperf3 server on HOST_ADDR, an address of a bridge of our own: local to the host, so
    nothing it serves ever leaves the machine."""
    if f"inet {HOST_ADDR}/" in run("ip", "-o", "addr"):
        raise SystemExit(f"{HOST_ADDR} is already on this host; change HOST_ADDR in {__file__}")
    run("ip", "link", "add", bridge, "type", "bridge")
    stack.callback(subprocess.run, ["ip", "link", "del", bridge], capture_output=True)
    run("ip", "addr", "add", f"{HOST_ADDR}/32", "dev", bridge)
    run("ip", "link", "set", bridge, "up")
    if not run("ip", "route", "get", HOST_ADDR).startswith("local"):  # else a dial would go out eth0
        raise SystemExit(f"{HOST_ADDR} on {bridge} is not a local address")
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-B", HOST_ADDR, "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        server.terminate()
        server.wait()


# --- the rootless side -----------------------------------------------------------------------------

def free_subid_start(start=2_000_000_000):
    """The first SUBID_COUNT-aligned range from `start` up that no line of /etc/subuid or /etc/subgid touches."""
    taken = []
    for path in ("/etc/subuid", "/etc/subgid"):
        with open(path) as f:
            for line in f:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                    taken.append((int(fields[1]), int(fields[1]) + int(fields[2])))
    while any(lo < start + SUBID_COUNT and start < hi for lo, hi in taken):
        start += SUBID_COUNT
    return start


def grant_tun(stack, uid):
    """rootlesskit opens /dev/net/tun as the user to make slirp4netns's tap. udev makes it 0666; where
    there is no udev it is root's 0600, so give this one user rw by an ACL entry, undone at the end."""
    mode = os.stat(TUN).st_mode & 0o7777
    if mode & 0o006 == 0o006:
        return
    try:
        os.getxattr(TUN, ACL)
    except OSError:
        pass  # no ACL yet: ours is the only one, and removing it restores the node
    else:
        raise SystemExit(f"{TUN} already has an ACL; give uid {uid} rw on it by hand and drop this check")
    entry = struct.Struct("<HHI")  # tag, permissions, id: the kernel's posix_acl_xattr layout, version 2
    undefined = 0xFFFFFFFF
    acl = struct.pack("<I", 2) + b"".join(entry.pack(*e) for e in (
        (0x01, (mode >> 6) & 7, undefined),  # owner
        (0x02, 6, uid),                      # this user: rw
        (0x04, (mode >> 3) & 7, undefined),  # group
        (0x10, 6, undefined),                # mask
        (0x20, mode & 7, undefined)))        # other
    os.setxattr(TUN, ACL, acl)
    stack.callback(os.chmod, TUN, mode)  # the ACL set the group bits to its mask
    stack.callback(os.removexattr, TUN, ACL)


def pids_of(uids):
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            if any(line.startswith("Uid:") and int(line.split()[1]) in uids for line in f):
                pids.append(int(pid))
    return pids


def stop_rootless(daemon, uids):
    """SIGTERM to rootlesskit stops dockerd and its containers; whatever of the throwaway user and its
    subordinate ids is left (a shim is not in rootlesskit's tree) is killed by pid."""
    if daemon.poll() is None:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    for _ in range(50):
        left = pids_of(uids)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove_user(name, subid):
    span = f"{subid}-{subid + SUBID_COUNT - 1}"
    subprocess.run(["usermod", "--del-subuids", span, "--del-subgids", span, name], capture_output=True)
    subprocess.run(["userdel", name], capture_output=True)


def start_rootless(stack, root, name):
    """A throwaway user running dockerd-rootless.sh with slirp4netns; returns the daemon's socket."""
    home, xdg, data = (os.path.join(root, d) for d in ("home", "xdg", "data"))
    subid = free_subid_start()
    span = f"{subid}-{subid + SUBID_COUNT - 1}"
    # SUB_*_COUNT=0: useradd would otherwise hand out a range of its own, next to other users'
    run("useradd", "-M", "-N", "-g", "users", "-d", home, "-s", "/usr/sbin/nologin",
        "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name)
    stack.callback(remove_user, name, subid)
    run("usermod", "--add-subuids", span, "--add-subgids", span, name)
    account = pwd.getpwnam(name)
    for d in (home, xdg, data):
        os.mkdir(d, 0o700)
        os.chown(d, account.pw_uid, account.pw_gid)
    grant_tun(stack, account.pw_uid)
    env = {"HOME": home, "XDG_RUNTIME_DIR": xdg,
           "PATH": f"{os.path.dirname(ROOTLESS_SH)}:/usr/sbin:/usr/bin:/sbin:/bin",
           "DOCKERD_ROOTLESS_ROOTLESSKIT_NET": "slirp4netns",
           # naming the driver skips the script's slirp4netns MTU (65520) and leaves 1500: set it as its default
           "DOCKERD_ROOTLESS_ROOTLESSKIT_MTU": "65520",
           "DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER": "builtin"}
    log = open(os.path.join(root, "rootless.log"), "w")
    stack.callback(log.close)
    # setpriv execs (runuser would fork), so the pid we hold is rootlesskit's own
    daemon = subprocess.Popen(["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups",
                               "env", "-i", *(f"{k}={v}" for k, v in env.items()), ROOTLESS_SH, "--data-root", data],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop_rootless, daemon, {account.pw_uid, *range(subid, subid + SUBID_COUNT)})
    sock = os.path.join(xdg, "docker.sock")
    deadline = time.monotonic() + 60
    while subprocess.run(["docker", "-H", f"unix://{sock}", "version"], capture_output=True).returncode:
        if daemon.poll() is not None or time.monotonic() > deadline:
            with open(log.name) as f:
                lines = [line.strip() for line in f if line.strip()]
            tail = [line for line in lines if "error" in line.lower()][-3:] or lines[-3:]
            raise SystemExit(f"dockerd-rootless.sh did not come up: {' | '.join(tail)}")
        time.sleep(0.3)
    return sock


def unmount_under(root):
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(root + "/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


# --- the run ---------------------------------------------------------------------------------------

# each way in, and what carries it on the rootless side (on berth's, the user's bridge both ways)
WAYS = {"host dials the container": "rootless: a published port, rootlesskit's builtin driver + docker-proxy",
        "container dials the host": "rootless: slirp4netns"}


def berth_side(s, tar):
    """The user's daemon in hardened mode, the server in the user's net container; (socket, address)."""
    user = s.add_user(f"btnet{s.tag}b")
    s.berth("up", user)
    direct, proxied = f"{s.root}/run/{user}/d/docker.sock", f"{s.root}/run/{user}/docker.sock"
    docker(direct, "import", tar, "iperf3:local")
    docker(proxied, "run", "-d", "--name", "iperf", "--net=container:net", "iperf3:local", "iperf3", "-s")
    ip = docker(direct, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "net").strip()
    ipaddress.ip_address(ip)
    return proxied, (ip, 5201)


def rootless_side(stack, root, name, tar):
    """The server behind a published port on the host's loopback, the only way in; (socket, address)."""
    sock = start_rootless(stack, root, name)
    port = free_port()
    docker(sock, "import", tar, "iperf3:local")
    docker(sock, "run", "-d", "--name", "iperf", "-p", f"127.0.0.1:{port}:5201", "iperf3:local", "iperf3", "-s")
    return sock, ("127.0.0.1", port)


def versions():
    kit = run("rootlesskit", "--version").split()[-1]
    slirp = run("slirp4netns", "--version").splitlines()[0].split()[-1]
    return f"rootlesskit {kit}, slirp4netns {slirp}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3, help="length of one iperf3 measurement")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs berth")
    args = ap.parse_args()
    check_host()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so everything is removed

    with Scratch("net", "10.254.192.0/20", args.python) as s, contextlib.ExitStack() as stack:
        rl_root = tempfile.mkdtemp(prefix=f"btnet{s.tag}rl", dir="/tmp")
        os.chmod(rl_root, 0o755)  # the throwaway user walks through it to its own dirs
        stack.callback(shutil.rmtree, rl_root, ignore_errors=True)
        stack.callback(unmount_under, rl_root)
        tar = os.path.join(s.root, "iperf3.tar")
        iperf3_tar(tar)
        sides = {"berth": berth_side(s, tar), "rootless": rootless_side(stack, rl_root, f"btnet{s.tag}r", tar)}
        host_port = stack.enter_context(host_server(stack, f"n{s.tag}host"))

        def argv(way, side, seconds):
            sock, (addr, port) = sides[side]
            if way == "host dials the container":
                return ["iperf3", "-c", addr, "-p", str(port), "-t", str(seconds), "-J"]
            return ["docker", "-H", f"unix://{sock}", "exec", "iperf", "iperf3", "-c", HOST_ADDR,
                    "-p", str(host_port), "-t", str(seconds), "-J"]

        for way in WAYS:  # warm-up, and wait for the servers
            for side in sides:
                iperf(argv(way, side, 1), retries=20)
        # the client sends; with -R the server does: each way in, measured in both directions
        cases = (("host dials the container", "host -> container", []),
                 ("host dials the container", "container -> host", ["-R"]),
                 ("container dials the host", "container -> host", []),
                 ("container dials the host", "host -> container", ["-R"]))
        figures = {(way, direction): {side: [] for side in sides} for way, direction, _ in cases}
        for _ in range(args.rounds):
            for way, direction, reverse in cases:
                for side in sides:
                    figures[way, direction][side].append(iperf(argv(way, side, args.seconds) + reverse) / 1e9)
    report(args, figures)


def report(args, figures):
    print(f"rounds: {args.rounds} (alternated, berth first), {args.seconds} s each; "
          f"receiver's Gbit/s, median (min..max)")
    print(f"rootless: dockerd-rootless.sh, {versions()} (MTU 65520), port driver builtin")
    way_seen = None
    for (way, direction), sides in figures.items():
        if way != way_seen:
            way_seen = way
            print(f"{way} ({WAYS[way]})")
        b, r = (statistics.median(sides[side]) for side in ("berth", "rootless"))
        spread = {side: f"({min(v):.1f}..{max(v):.1f})" for side, v in sides.items()}
        print(f"  {direction:18} berth {b:5.1f} {spread['berth']:13} rootless {r:5.2f} {spread['rootless']:13} "
              f"ratio berth/rootless {b / r:5.1f}")


if __name__ == "__main__":
    main()
