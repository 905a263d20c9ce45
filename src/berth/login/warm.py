"""Is this user's daemon already up? The question every login asks first.

Answered without the config (the PAM line names the run dir), without the
Docker SDK, pyroute2, iptc or any lock: the record berth wrote when it
started dockerd, /proc, sysfs and one /_ping over the socket. It must stay
within a few milliseconds of a bare interpreter (benchmarks/warm_login.py).
"""

import os

from berth.core import paths, record, users
from berth.daemon import engine


def is_up(run_dir, user):
    """True when berth's dockerd for `user` runs, has its bridge and answers."""
    if not users.is_valid_name(user):
        return False
    upaths = paths.in_run_dir(run_dir, user)
    if os.path.exists(os.path.join(upaths.run_dir, "reaping")):
        return False  # the reaper is at work: take the slow path, which waits for it
    rec = record.running(upaths)
    if rec is None or not rec.bridge or not os.path.isdir(f"/sys/class/net/{rec.bridge}/bridge"):
        return False
    if not os.path.exists(upaths.engine_socket):
        return False  # lifecycle.up.serves_the_users_socket_itself: the slow path restarts it
    if rec.containerd and not engine.listens(rec.containerd):
        return False  # the shared containerd died: the slow path starts it again
    # In hardened mode this answer comes through the policy proxy: a proxy
    # that died sends the login down the slow path, which restarts it.
    return engine.ping(upaths.socket, timeout=2.0)
