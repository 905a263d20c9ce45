"""A cold `berth up` launches dockerd before it reads the config.

Reading the config and importing what `up` needs take ~90 ms of Python
before dockerd could start, and dockerd then needs ~250 ms to start the
net container: the Python is pure delay on every cold login. So each cold
start leaves a launch plan (root's alone, beside dockerd's own socket):
the command it ran, the bridge it needs, the lock and the containerd it
runs on. The next cold `up` finds the plan through the config's login
digest (no config is read), and launches at once when the plan names the
config as it is now (identity and berth's version), the user's uid is
the same, nothing of a daemon is left (record, pidfile, socket) and the
shared containerd runs in this mount namespace. It takes the user's lock
first and hands it on to `up`.

`up` then reads the config as usual and checks the guess: the plan it
would write must be the one launched, and daemon.json what it would
write; anything else and that dockerd is stopped and started the usual
way. Every doubt here means "no prelaunch", never an error: `up` decides.

Imports nothing heavy: it runs before everything else.
"""

import fcntl
import os
import pwd

from berth import __version__
from berth.core import keyvalue, paths, proc, record
from berth.core.fsutil import atomic_write, read_trusted, remove
from berth.daemon.launch import dockerd_supervisor, start_dockerd
from berth.lifecycle import logindigest

NAME = "launch.plan"

FIELDS = ("version", "identity", "user", "uid", "run_dir", "supervisor", "dockerd", "daemon_json", "log_file",
          "lock", "bridge", "bridge_cidr", "mode", "containerd", "containerd_record", "cgroup", "daemon_cgroup")


def path_of(upaths):
    return os.path.join(upaths.engine_dir, NAME)


def render(plan):
    """The plan as key=value lines (json imports re: not on this path)."""
    return keyvalue.render({key: plan[key] for key in FIELDS})


def parse(raw):
    """The plan in `raw`, or None if it is not a whole one."""
    try:
        plan = keyvalue.parse(raw)
    except (ValueError, TypeError, AttributeError):
        return None
    return plan if set(plan) == set(FIELDS) else None


def write(upaths, plan):
    atomic_write(path_of(upaths), render(plan), mode=0o600)


class Launched:
    """A dockerd launched from a plan, and the user's lock, owned by the
    `with` block it is used in: leaving the block releases the lock and
    undoes the launch (that dockerd, the bridge and cgroup made for it),
    unless `up` took it over or it was handed on to a child. Blocks nest
    (the console script's, then `up`'s): the first one left settles it."""

    def __init__(self, rec, plan, made_bridge, lock_fd):
        self.rec, self.plan, self.made_bridge, self.lock_fd = rec, plan, made_bridge, lock_fd
        self.settled = False  # taken over, handed on or undone: nothing is left to undo here

    def take_over(self):
        """`up` is done with it: what was launched, or what `up` started in
        its place, is the user's daemon now."""
        self.settled = True

    def hand_on(self):
        """A child forked with the lock owns it now: this process lets go
        of the lock and undoes nothing."""
        self.settled = True
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.settled:
            _abandon(self)
        self._release()

    def _release(self):
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # releases the user's lock (once the child's copy is closed too)
            self.lock_fd = None


SYSTEMD_BOOTED = "/run/systemd/system"  # sd_booted(3)


def launch(config_path, user):
    """Launch `user`'s dockerd from its plan; the Launched, or None (no
    plan, a stale one, a daemon that runs, anything unusual)."""
    if os.geteuid() != 0 or os.path.isdir(SYSTEMD_BOOTED):  # units: the usual path
        return None
    try:
        return _launch(config_path, user)
    except Exception:  # noqa: BLE001 - a doubt is "no prelaunch"; `up` reports real errors
        return None


def _launch(config_path, user):
    from berth.core.users import is_valid_name

    if not is_valid_name(user):  # it names files below: no '/' or '..' (the PAM hook's PAM_USER too)
        return None
    digest = logindigest.read(config_path)
    if digest is None:
        return None
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
    if not digest.min_uid <= uid <= digest.max_uid:
        return None
    upaths = paths.in_run_dir(digest.run_dir, user)
    plan = parse(read_trusted(path_of(upaths)))
    if plan is None or plan["version"] != __version__ or plan["identity"] != logindigest.identity(config_path) \
            or plan["user"] != user or plan["uid"] != str(uid) or plan["run_dir"] != upaths.run_dir \
            or plan["supervisor"] != "direct" or plan["daemon_json"] != upaths.daemon_json:
        return None
    upaths = upaths._replace(log_file=plan["log_file"])
    fd = _take_lock(plan["lock"])
    if fd is None:
        return None
    try:
        launched = _launch_locked(upaths, plan, fd)
    except BaseException:
        os.close(fd)
        raise
    if launched is None:
        os.close(fd)
    return launched


def _take_lock(path):
    """The user's lock (made by the last `up`), or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o077:
        os.close(fd)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None  # another up, down or reap: `up` waits for it
    return fd


def _launch_locked(upaths, plan, fd):
    # Anything left of a daemon (even a crashed one's pidfile) is `up`'s to sort out.
    if any(os.path.lexists(p) for p in (upaths.record, upaths.pidfile, upaths.engine_socket)):
        return None
    ns = _containerd_namespace(plan["containerd_record"])
    if ns is False:
        return None
    try:
        return _launch_in(upaths, plan, fd, ns)
    finally:
        if ns is not None:
            os.close(ns)


def _launch_in(upaths, plan, fd, ns):
    if os.path.exists(f"/sys/class/net/{plan['bridge']}"):
        return None  # left by a failed down, or not a bridge at all: `up` sorts that out
    made_cgroup = _set_limits(plan["cgroup"])
    if made_cgroup is None:
        return None
    rec, made_bridge = None, False
    try:
        rec = start_dockerd(dockerd_supervisor(upaths), upaths, plan["dockerd"], plan["mode"], plan["bridge"],
                            plan["containerd"], mount_ns=ns, cgroup=plan["daemon_cgroup"])
        # dockerd looks for its bridge after ~60 ms of its own start-up; had
        # it looked first, it exits, and `up` starts it again.
        made_bridge = _make_bridge(plan["bridge"], plan["bridge_cidr"], plan["user"])
    except BaseException:
        if rec is not None:
            dockerd_supervisor(upaths).stop(rec, 0, now=True)
            remove(upaths.record)
        if made_bridge:
            _remove_bridge(plan["bridge"])
        _rmdirs(made_cgroup)
        raise
    return Launched(rec, plan, made_bridge, fd)


def _set_limits(writes):
    """The user's cgroup and its limits, before dockerd can restart a
    container in it (`up` sets them again): the directories made, or None,
    and nothing made, if one cannot be set (`up` says why)."""
    made = []
    try:
        for entry in filter(None, writes.split(";")):
            path, value = entry.rsplit("=", 1)
            directory = os.path.dirname(path)
            if not os.path.isdir(directory):
                os.mkdir(directory)  # the user's own; /berth (and v2's controllers) are up's to make
                made.append(directory)
            with open(path, "w") as f:
                f.write(value)
    except (OSError, ValueError):
        _rmdirs(made)
        return None
    return made


def _rmdirs(directories):
    for directory in directories:
        try:
            os.rmdir(directory)
        except OSError:
            pass


def _containerd_namespace(record_path):
    """Where dockerd may start: None for here, the open descriptor of the
    shared containerd's mount namespace (berth's own) when it is elsewhere,
    or False when the containerd the plan names does not run."""
    if not record_path:
        return None  # a containerd of dockerd's own, or the distribution's: where berth runs, as in `up`
    rec = record.load(record_path)
    if rec is None or not proc.alive(*rec):
        return False
    try:
        ns = os.open(f"/proc/{rec[0]}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    # Opened, then the pid checked again: a reused pid says nothing of containerd.
    if not proc.alive(*rec):
        os.close(ns)
        return False
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/self/fd/{ns}"):
        os.close(ns)
        return None
    return ns


def _make_bridge(name, cidr, owner):
    """Make the bridge dockerd needs (it did not exist a moment ago); True."""
    import socket

    from berth.net import rtnl

    rtnl.request(rtnl.new_bridge_request(name))
    try:
        address, _, prefixlen = cidr.partition("/")
        index = socket.if_nametoindex(name)
        rtnl.request(rtnl.new_address_request(index, address, int(prefixlen)))
        rtnl.request(rtnl.link_up_request(index, "berth:" + owner))  # bridge.ALIAS_PREFIX: berth's
    except BaseException:
        _remove_bridge(name)
        raise
    return True


def _remove_bridge(name):
    from berth.net import bridge

    bridge.remove_bridge(name)


def _abandon(launched):
    """Undo a launch `up` never took over (it failed before it could, or
    never ran): stop that dockerd and what it started, remove the bridge
    and the cgroup made for it, release the lock."""
    from berth.daemon.supervisor import DirectSupervisor

    plan = launched.plan
    try:
        upaths = paths.UserPaths(plan["user"], plan["run_dir"], "", plan["log_file"])
        rec = record.read(upaths)
        if rec is not None and (rec.pid, rec.start_ticks) == (launched.rec.pid, launched.rec.start_ticks):
            # (not one that `up` started in its place)
            DirectSupervisor(upaths, plan["dockerd"]).stop(now=True)
    finally:
        try:
            if launched.made_bridge:
                _remove_bridge(plan["bridge"])
            if plan["cgroup"]:
                from berth.daemon import cgroups

                cgroups.remove(plan["user"])  # made for it, empty now
        finally:
            launched.settled = True
            launched._release()
