"""Where one user's things live. Pure: computing a path touches nothing."""

import os
from collections import namedtuple

# cron and PAM give a short PATH, and the login hook drops whatever PATH its
# environment had; dockerd, containerd and runc live in sbin.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_CONFIG = "/etc/berth/berth.toml"

# Modes of berth's own directories. Users may pass through the top ones to
# reach their socket, but list nothing: no names, blocks or paths of others.
TRAVERSE_ONLY = 0o711   # state_dir, state_dir/users, run_dir, run_dir/<user>
ROOT_ONLY = 0o700       # locks, logs, a user's state dir, sessions

# sun_path is 108 bytes with the NUL; containerd's sockets live under the
# exec-root, so that root must stay short (moby#36914).
MAX_SOCKET_PATH = 107


# berth's own files and directories beside users' in the log dir
# (<name>.log) and the run dir (<name>/). The code that names them takes
# their names from here, and no user may be named so (users.RESERVED):
# no user's log or socket is ever one of berth's.
OWN_NAMES = set()


def _own(name):
    OWN_NAMES.add(name)
    return name


BERTH_LOG = _own("berth")            # berth's own log (logsetup)
PROXY_LOG = _own("proxy")            # the policy proxy's (proxyctl)
CONTAINERD_LOG = _own("containerd")  # the shared containerd's (containerd)
PROXY_DIR = _own("berth-proxy")      # the proxy's control socket and lock
CONTAINERD_DIR = _own("berth-containerd")  # the shared containerd's sockets and record
MOUNT_NS_DIR = _own("berth-mnt")     # berth's own mount namespace, held (hostns)


def own_log(log_dir, name):
    """<log_dir>/<name>.log for one of berth's own names."""
    assert name in OWN_NAMES, name
    return os.path.join(str(log_dir), f"{name}.log")


def own_dir(run_dir, name):
    """<run_dir>/<name> for one of berth's own names."""
    assert name in OWN_NAMES, name
    return os.path.join(str(run_dir), name)


# Values on the login path are namedtuples, not dataclasses: importing
# dataclasses alone costs more than the whole warm login check.
class UserPaths(namedtuple("UserPaths", "user run_dir data_root log_file")):
    """run_dir: root-owned, 0711 (the user reaches the socket inside);
    data_root: dockerd's data-root (images, volumes, build cache)."""

    __slots__ = ()

    @property
    def socket(self):
        return os.path.join(self.run_dir, "docker.sock")

    @property
    def docker_host(self):
        return "unix://" + self.socket

    @property
    def engine_dir(self):
        """Root's alone (0700): dockerd's own socket. In hardened mode only
        berth's proxy and berth itself talk to it."""
        return os.path.join(self.run_dir, "d")

    @property
    def engine_socket(self):
        return os.path.join(self.engine_dir, "docker.sock")

    @property
    def proxy_spec(self):
        """What the policy proxy needs to serve this user (root's, 0600)."""
        return os.path.join(self.run_dir, "proxy.conf")

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
        return os.path.join(self.run_dir, "dockerd.rec")

    def job_socket(self, job_id):
        """A Slurm job's socket (the user's, 0600), served with its grant."""
        return os.path.join(self.run_dir, f"job-{int(job_id)}.sock")

    def job_grant(self, job_id):
        """What a Slurm job was granted on this node (root's, 0600; proxy/jobgrant.py)."""
        return os.path.join(self.run_dir, f"job-{int(job_id)}.grant")


def proxy_dir(run_dir):
    """The policy proxy's own directory (root's alone): its control socket
    and lock. No user can be named so: the prefix berth- is reserved."""
    return own_dir(run_dir, PROXY_DIR)


def locks_dir(cfg):
    """Root's alone: berth's own locks, and users' in users/ (a user named
    "leases" must not share the lease table's lock). Not a "locks" directory
    of an earlier layout, whose files users may still hold open from when they could."""
    return os.path.join(cfg.paths.state_dir, "lock")


def in_run_dir(run_dir, user):
    """The run-dir half of a user's paths, from the run dir alone (the
    warm login and the proxy know no config)."""
    return UserPaths(user, os.path.join(str(run_dir), user), "", "")


def for_user(cfg, user):
    return UserPaths(
        user=user,
        run_dir=os.path.join(cfg.paths.run_dir, user),
        data_root=os.path.join(cfg.paths.state_dir, "users", user, "docker"),
        log_file=os.path.join(cfg.paths.log_dir, f"{user}.log"),
    )


def bridge_name(cfg, uid):
    return f"{cfg.network.bridge_prefix}{uid}"
