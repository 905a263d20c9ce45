"""Root's long-lived processes (dockerd, the shared containerd) start in one
mount namespace, wherever the berth that starts them runs: the host's
(PID 1's), and where PID 1's cannot be entered, the shared containerd's."""

import logging
import os
import shutil

from .paths import SYSTEM_PATH

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
