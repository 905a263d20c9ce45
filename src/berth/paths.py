"""Where one user's things live. Pure: computing a path touches nothing."""

import os
from collections import namedtuple

# sun_path is 108 bytes with the NUL; containerd's sockets live under the
# exec-root, so that root must stay short (moby#36914).
MAX_SOCKET_PATH = 107


# Values on the login path are namedtuples, not dataclasses: importing
# dataclasses alone costs more than the whole warm login check.
class UserPaths(namedtuple("UserPaths", "user run_dir data_root log_file")):
    """run_dir: root-owned, 0755 (the user reaches the socket inside);
    data_root: dockerd's data-root (images, volumes, build cache)."""

    __slots__ = ()

    @property
    def socket(self):
        return os.path.join(self.run_dir, "docker.sock")

    @property
    def docker_host(self):
        return "unix://" + self.socket

    @property
    def pidfile(self):
        return os.path.join(self.run_dir, "docker.pid")

    @property
    def exec_root(self):
        return os.path.join(self.run_dir, "x")

    @property
    def daemon_json(self):
        return os.path.join(self.run_dir, "daemon.json")

    @property
    def record(self):
        """berth's own record of the dockerd it started (pid + start time)."""
        return os.path.join(self.run_dir, "dockerd.json")


def for_user(cfg, user):
    return UserPaths(
        user=user,
        run_dir=os.path.join(cfg.paths.run_dir, user),
        data_root=os.path.join(cfg.paths.state_dir, "users", user, "docker"),
        log_file=os.path.join(cfg.paths.log_dir, f"{user}.log"),
    )


def bridge_name(cfg, uid):
    return f"{cfg.network.bridge_prefix}{uid}"
