"""Supervising one user's dockerd: start / poll / stop, JupyterHub-Spawner
style, as a configuration of the supervisor (core/supervision.py): a direct
child in a session of its own, or a transient systemd unit. Besides what
the supervisor does for every process, a dockerd leaves things to clear:
a stale pidfile and socket after a crash, and its containerd, shims and
containers when it is killed.
"""

import logging
import os
import shutil
import sys

from berth.core import proc, record, supervision
from berth.core.errors import MissingBinary
from berth.core.fsutil import read_trusted, remove
from berth.core.paths import SYSTEM_PATH
from berth.core.supervision import systemd_booted, uses_systemd  # noqa: F401 - callers take them from here
from berth.daemon import cgroups, containerd, hostns, launch
from berth.daemon.hostns import HOST
from berth.daemon.launch import unit_name

log = logging.getLogger(__name__)


def find_dockerd(name, environ=None):
    environ = os.environ if environ is None else environ
    if os.path.isabs(name):
        found = name if os.access(name, os.X_OK) else None
    else:
        found = shutil.which(name, path=environ.get("PATH", SYSTEM_PATH))
    if not found:
        raise MissingBinary(f"{name} not found" + ("" if os.path.isabs(name) else " on PATH"),
                            hint="install Docker's engine (apt-get install docker.io) "
                                 "or set [daemon].dockerd to its path")
    return found


class DirectSupervisor:
    """dockerd as a direct child: its own session, born in the user's daemon cgroup."""

    kind = "direct"

    def __init__(self, upaths, dockerd, stop_timeout=30.0, bridge_name="", mode="trusted", cgroup=""):
        self.paths = upaths
        self.dockerd = dockerd
        self.stop_timeout = stop_timeout
        self.bridge_name = bridge_name  # recorded for the warm login check
        self.mode = mode  # recorded: the mode this start runs in
        self.cgroup = cgroup  # the cgroup2 directory dockerd is born in ("": where berth runs)
        self.process = launch.dockerd_supervisor(upaths, self.kind != "direct", unit_properties(upaths, stop_timeout))

    # --- the record -----------------------------------------------------

    def record(self):
        """The recorded daemon, or None. Says nothing about whether it runs."""
        return self.process.recorded()

    def running(self):
        """Its record while our dockerd runs (pid, start time, our daemon.json on its command line), else None."""
        return self.process.running()

    def poll(self):
        """None while our dockerd runs, else a short reason it does not."""
        rec = self.record()
        if rec is None:
            return "not started"
        return None if record.is_ours(self.paths, rec) else "exited"

    # --- start ------------------------------------------------------------

    def start(self, containerd="", mount_ns=HOST):
        """Launch dockerd detached; returns its record. Does not wait for the socket.
        `containerd`: the shared containerd's socket its daemon.json names, if
        any; `mount_ns`: the mount namespace it runs in (the containerd's: a
        path, or an open descriptor)."""
        self.clear_stale()
        unit_argv = None
        if self.process.use_systemd:  # systemd runs it in the host's mount namespace, or enters a held one
            unit_argv = exec_start(self.paths, self.dockerd, self.mode == "hardened", self._held_namespace(mount_ns))
        return launch.start_dockerd(self.process, self.paths, self.dockerd, self.mode, self.bridge_name, containerd,
                            mount_ns=mount_ns, cgroup=self.cgroup, unit_argv=unit_argv)

    def _held_namespace(self, mount_ns):
        """The path systemd can enter for `mount_ns` (a descriptor of the
        shared containerd's namespace): berth's own, held in the run dir;
        None for the host's, where systemd starts units anyway."""
        held = hostns.berth_namespace_path(os.path.dirname(self.paths.run_dir))
        if isinstance(mount_ns, int) and hostns.is_mount_namespace(held) \
                and os.fstat(mount_ns).st_ino == hostns.namespace_id(held):
            return held
        return None

    def clear_stale(self):
        """After a crash: drop a pidfile and socket no live dockerd of ours owns.

        dockerd refuses to start over a pidfile whose pid is alive, and that
        pid may since belong to anything.
        """
        if self.running():
            return
        # An orphaned containerd of the dead daemon would keep its socket and
        # make the new dockerd time out waiting for its own.
        self.kill_leftovers()
        # dockerd trusts containerd's pidfile with kill(pid, 0), which a dead
        # but unreaped containerd still passes: it would wait on it forever.
        containerd_pid = os.path.join(self.paths.exec_root, "containerd", "containerd.pid")
        for path in (self.paths.pidfile, self.paths.engine_socket, self.paths.socket, self.paths.record,
                     containerd_pid):
            if remove(path):
                log.info("removed stale %s", path)

    # --- stop -------------------------------------------------------------

    def stop(self, now=False):
        """Stop our dockerd; returns when it no longer runs.

        SIGTERM lets dockerd stop its containers; past stop_timeout comes
        SIGKILL (under systemd: the unit is stopped first), and then
        whatever it left (containerd, shims, containers) under this user's
        exec-root.
        """
        rec = self.running()
        if rec is not None:
            self.process.stop(rec, self.stop_timeout, now)
        self.kill_leftovers()
        for path in (self.paths.pidfile, self.paths.engine_socket, self.paths.socket, self.paths.record):
            remove(path)

    def leftovers(self):
        """Processes that belong to this user's daemon by their command line.

        A containerd of the daemon's own, and its shims, name the exec-root
        in their arguments; the shims of the shared containerd name the
        user's namespace. Both are berth's own, so a match is ours. Only
        root's processes count: a user's `ls /run/berth/alice/x/` is not a
        leftover.
        """
        marker = self.paths.exec_root + "/"
        namespaces = self._containerd_namespaces()
        found = []
        for pid in proc.pids():
            if pid == os.getpid() or proc.owner(pid) != 0:
                continue
            args = proc.cmdline(pid)
            if any(marker in a or a == self.paths.daemon_json for a in args) or \
                    (namespaces and containerd.shim_namespace(args) in namespaces):
                found.append(pid)
        return found

    def _containerd_namespaces(self):
        """The shared containerd's namespaces the daemon.json berth wrote names, if any."""
        raw = read_trusted(self.paths.daemon_json)
        try:
            import json

            doc = json.loads(raw) if raw else {}
        except ValueError:
            return set()
        return {doc[k] for k in ("containerd-namespace", "containerd-plugins-namespace") if doc.get(k)}

    def processes(self):
        """Every live process of this user's daemon: dockerd, containerd, the
        shims (which re-parent away from dockerd) and the containers below."""
        rec = self.running()
        roots = ([rec.pid] if rec else []) + self.leftovers()
        tree = proc.children_map()
        found = set(roots)
        for pid in roots:
            found.update(proc.descendants(pid, tree))
        return sorted(found)

    def kill_leftovers(self):
        found = self.leftovers()
        if not found:
            return []
        tree = proc.children_map()
        victims = []
        for pid in found:
            victims.append(pid)
            victims.extend(proc.descendants(pid, tree))
        supervision.kill_all(victims)
        log.info("killed %d leftover process(es) of %s's daemon: %s", len(victims), self.paths.user, victims)
        return victims

    # --- waiting for the socket --------------------------------------------

    def wait_ready(self, rec, timeout, ping):
        """Wait until `ping()` is true; fail early if dockerd exits."""
        self.process.wait_ready(ping, timeout, rec, where=f" on {self.paths.engine_socket}",
                                slower=", or raise [daemon].start_timeout")

    def log_tail(self, lines=5):
        return self.process.log_tail(lines)


# --- systemd hosts ------------------------------------------------------------

def unit_properties(upaths, stop_timeout):
    """How the unit runs dockerd: the same list feeds systemd-run and the
    unit file text that `systemd-analyze verify` checks in the tests."""
    return (
        ("Description", f"berth: Docker daemon of {upaths.user}"),
        # The firewall tells users' daemons apart by their cgroups (cgroups.daemon_cgroups).
        ("Slice", cgroups.DAEMON_SLICE),
        # dockerd tells systemd when its API is up.
        ("Type", "notify"),
        # Its containers' cgroups live below the unit, as in docker.service.
        ("Delegate", "yes"),
        ("KillMode", "mixed"),
        ("TimeoutStopSec", f"{int(stop_timeout)}s"),
        ("TasksMax", "infinity"),
        ("LimitNOFILE", "1048576"),
        ("LimitNPROC", "infinity"),
        ("LimitCORE", "infinity"),
        ("Environment", f"PATH={SYSTEM_PATH}"),
        ("StandardOutput", f"append:{upaths.log_file}"),
        ("StandardError", f"append:{upaths.log_file}"),
    )


def exec_start(upaths, dockerd, hardened=False, mount_ns=None):
    """The unit's command: a hardened user's dockerd behind nodevices' filter
    (loaded by root's interpreter, isolated from the environment, then
    exec'd), in the mount namespace held at `mount_ns` (berth's, where the
    shared containerd runs) if given."""
    command = launch.argv(dockerd, upaths.daemon_json)
    if hardened:
        from berth.daemon import nodevices
        command = [sys.executable, "-I", "-S", nodevices.__file__, *command]
    if mount_ns:
        command = hostns.enter(command, mount_ns)
    return command


def systemd_run_argv(upaths, dockerd, stop_timeout, hardened=False, mount_ns=None):
    return supervision.systemd_run_argv(unit_name(upaths.user), unit_properties(upaths, stop_timeout),
                                        exec_start(upaths, dockerd, hardened, mount_ns))


def unit_text(upaths, dockerd, stop_timeout, hardened=False):
    return supervision.unit_text(unit_properties(upaths, stop_timeout), exec_start(upaths, dockerd, hardened))


class SystemdSupervisor(DirectSupervisor):
    """dockerd as a transient unit of its own (in berthd.slice). The record,
    identity checks and leftover cleanup are the direct ones."""

    kind = "systemd unit"


def for_host(upaths, dockerd, stop_timeout, supervisor="auto", bridge_name="", mode="trusted"):
    """The supervisor for this host: a systemd unit where systemd runs;
    launched directly, dockerd is born in the user's daemon cgroup."""
    if uses_systemd(supervisor):
        return SystemdSupervisor(upaths, dockerd, stop_timeout, bridge_name, mode)
    v2 = cgroups.v2_root()
    cgroup = os.path.join(v2, cgroups.daemon_cgroups(upaths.user)[0]) if v2 else ""
    return DirectSupervisor(upaths, dockerd, stop_timeout, bridge_name, mode, cgroup)
