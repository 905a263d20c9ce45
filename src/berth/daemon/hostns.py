"""Root's long-lived processes (dockerd, the shared containerd) start in one
mount namespace, wherever the berth that starts them runs: berth's own
(below), and where that cannot be made, the host's (PID 1's).

berth's own mount namespace is a slave copy of the host's (mounts made on
the host later appear in it; none made in it appear on the host), held by
a bind of its file at <run_dir>/berth-mnt/ns. The shared containerd starts
in it, and every dockerd follows containerd: the root filesystems dockerd
mounts for containers, and the pins of their bind sources, exist there
only. A user whose shell takes container root's group (a setgid file
container root left in a bind-mounted home) finds no container's files
under a store's merged/, and the host's view of the stores is nosuid and
nodev (a bind of <state_dir>/users made before the namespace, and undone
inside it, so containers keep setuid files and devices as Docker gives
them)."""

import logging
import os
import shutil
import subprocess

from berth.core import paths
from berth.core.fsutil import is_mount_point
from berth.core.paths import SYSTEM_PATH

log = logging.getLogger(__name__)


HOST = "/proc/1/ns/mnt"


def in_mount_namespace(argv, ns=HOST, self_ns="/proc/self/ns/mnt"):
    """`argv`, run in the mount namespace `ns` when berth runs in another one.

    A login can come through a service with a mount namespace of its own
    (PrivateTmp=, a test's private /etc/pam.d). A dockerd started there
    mounts its containers' root filesystems where the shared containerd,
    and runc under it, cannot see them ("exec: /pause: no such file").
    """
    try:
        if os.readlink(self_ns) == os.readlink(ns):
            return argv
    except OSError:
        return argv  # not ours to see (PID 1 may be shielded): run where berth runs
    init_ns = ns
    nsenter = shutil.which("nsenter", path=SYSTEM_PATH)
    if nsenter is None:
        log.warning("berth runs outside the host's mount namespace and nsenter is missing; "
                    "starting %s where berth runs", os.path.basename(argv[0]))
        return argv
    return [nsenter, f"--mount={init_ns}", "--", *argv]


def berth_namespace_path(run_dir):
    return os.path.join(paths.own_dir(run_dir, paths.MOUNT_NS_DIR), "ns")


NS_GET_NSTYPE = 0xB703  # linux/nsfs.h
CLONE_NEWNS = 0x00020000


def is_mount_namespace(path):
    """Whether `path` holds a mount namespace (a bind of an nsfs file)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNS
    except OSError:
        return False  # not a namespace file: an empty one left by a boot
    finally:
        os.close(fd)


def namespace_id(path):
    """The inode that names the namespace at `path` (a held file or /proc/<pid>/ns/mnt), or None."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def ensure_berth_namespace(run_dir, inert=()):
    """berth's mount namespace, made where it is missing (after a boot);
    its path. `inert`: directories the host then sees nosuid and nodev,
    bound before the namespace is copied, so that nothing propagates into
    it later (a bind made over a store a daemon uses would hide its
    mounts there). Raises OSError where it cannot be made."""
    path = berth_namespace_path(run_dir)
    if is_mount_namespace(path):
        return path
    for directory in inert:
        if not is_mount_point(directory):
            _mount("--bind", directory, directory)
            _mount("-o", "remount,bind,nosuid,nodev", directory)
    holder = os.path.dirname(path)
    os.makedirs(holder, mode=0o700, exist_ok=True)
    if not is_mount_point(holder):
        # A namespace file may be bound only where mounts do not propagate
        # (the namespace would hold a mount of itself).
        _mount("--bind", holder, holder)
        _mount("--make-private", holder)
    with open(path, "a"):
        pass
    _run(in_mount_namespace(["unshare", f"--mount={path}", "--propagation", "slave", "true"]))
    for directory in inert:  # inside: as the daemons always had it
        _run(enter(["mount", "-o", "remount,bind,suid,dev", directory], path))
    log.info("made berth's mount namespace at %s", path)
    return path


def enter(argv, ns_path):
    """`argv`, run in the mount namespace held at `ns_path`."""
    nsenter = shutil.which("nsenter", path=SYSTEM_PATH) or "nsenter"
    return [nsenter, f"--mount={ns_path}", "--", *argv]


def _mount(*args):
    _run(in_mount_namespace(["mount", *args]))


def _run(argv):
    r = subprocess.run(argv, capture_output=True, text=True, env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"})
    if r.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed: {r.stderr.strip() or r.returncode}")
