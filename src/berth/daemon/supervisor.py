"""Supervising one user's dockerd: start / poll / stop, JupyterHub-Spawner style.

DirectSupervisor forks dockerd into its own session (the path for hosts without
systemd). It records the pid *and* the start time, so a restarted berth picks
its daemon back up and never signals a reused pid.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

from berth.core import proc, record
from berth.core.errors import DaemonError, MissingBinary
from berth.core.fsutil import ensure_dir, log_tail, read_trusted, remove
from berth.core.paths import ROOT_ONLY, SYSTEM_PATH
from berth.daemon import cgroups, containerd, hostns
from berth.daemon import launch as daemonlaunch
from berth.daemon.hostns import HOST, in_mount_namespace

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
    def __init__(self, upaths, dockerd, stop_timeout=30.0, bridge_name="", mode="trusted", cgroup=""):
        self.paths = upaths
        self.dockerd = dockerd
        self.stop_timeout = stop_timeout
        self.bridge_name = bridge_name  # recorded for the warm login check
        self.mode = mode  # recorded: the mode this start runs in
        self.cgroup = cgroup  # the cgroup2 directory dockerd is born in ("": where berth runs)

    # --- the record -----------------------------------------------------

    def record(self):
        """The recorded daemon, or None. Says nothing about whether it runs."""
        return record.read(self.paths)

    def running(self):
        return record.running(self.paths)

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
        any; `mount_ns`: the mount namespace it runs in (the containerd's)."""
        self.clear_stale()
        ensure_dir(os.path.dirname(self.paths.log_file), ROOT_ONLY)
        with daemonlaunch.open_log(self.paths.log_file, self.paths.user) as logf:
            pid = self._launch(logf, mount_ns)
        st = proc.stat(pid)
        rec = record.DaemonRecord(pid, st.start_ticks if st else 0, time.time(), self.dockerd, self.bridge_name,
                                  self.mode, containerd)
        record.write(self.paths, rec)
        log.info("started dockerd for %s: pid %d (%s)", self.paths.user, pid, self.kind)
        return rec

    kind = "direct"

    def argv(self):
        return daemonlaunch.argv(self.dockerd, self.paths.daemon_json)

    def _launch(self, logf, mount_ns=HOST):
        """`mount_ns`: a path, or an open descriptor of the namespace (passed
        to the child, which enters it through its own /proc/self/fd)."""
        passed = (mount_ns,) if isinstance(mount_ns, int) else ()
        ns = f"/proc/self/fd/{mount_ns}" if passed else mount_ns
        return daemonlaunch.spawn(in_mount_namespace(self.argv(), ns), logf, passed,
                                  no_devices=self.mode == "hardened", cgroup=self.cgroup)

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
        SIGKILL, and then whatever it left (containerd, shims, containers)
        under this user's exec-root.
        """
        rec = self.running()
        if rec is not None:
            self._terminate(rec, now)
        self.kill_leftovers()
        for path in (self.paths.pidfile, self.paths.engine_socket, self.paths.socket, self.paths.record):
            remove(path)

    def _terminate(self, rec, now):
        if not now:
            self._signal(rec, signal.SIGTERM)
            if self._wait_gone(rec, self.stop_timeout):
                log.info("dockerd of %s (pid %d) stopped", self.paths.user, rec.pid)
            else:
                log.warning("dockerd of %s (pid %d) ignored SIGTERM for %gs; killing it",
                            self.paths.user, rec.pid, self.stop_timeout)
        if proc.alive(rec.pid, rec.start_ticks):
            self._signal(rec, signal.SIGKILL)
            self._wait_gone(rec, 10.0)

    def _signal(self, rec, sig):
        try:
            os.kill(rec.pid, sig)
        except ProcessLookupError:
            pass

    def _wait_gone(self, rec, timeout):
        deadline = time.monotonic() + timeout
        while proc.alive(rec.pid, rec.start_ticks):
            proc.reap(rec.pid)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        proc.reap(rec.pid)
        return True

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
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.info("killed %d leftover process(es) of %s's daemon: %s", len(victims), self.paths.user, victims)
        return victims

    # --- waiting for the socket --------------------------------------------

    def wait_ready(self, rec, timeout, ping):
        """Wait until `ping()` is true; fail early if dockerd exits."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            if ping():
                return
            if not proc.alive(rec.pid, rec.start_ticks):
                proc.reap(rec.pid)
                raise DaemonError(f"dockerd for {self.paths.user} exited at start: {self.log_tail(3)}",
                                  hint=f"see {self.paths.log_file}")
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"dockerd for {self.paths.user} did not answer on {self.paths.engine_socket} within "
                    f"{timeout:g} s: {self.log_tail(3)}",
                    hint=f"see {self.paths.log_file}, or raise [daemon].start_timeout")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def log_tail(self, lines=5):
        return log_tail(self.paths.log_file, lines, 8192, skip="--- berth:")


# --- systemd hosts ------------------------------------------------------------

def systemd_booted(run="/run/systemd/system"):
    """sd_booted(3): systemd is PID 1."""
    return os.path.isdir(run)


def unit_name(user):
    return f"berth-dockerd-{user}.service"


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
    command = daemonlaunch.argv(dockerd, upaths.daemon_json)
    if hardened:
        from berth.daemon import nodevices
        command = [sys.executable, "-I", "-S", nodevices.__file__, *command]
    if mount_ns:
        command = hostns.enter(command, mount_ns)
    return command


def systemd_run_argv(upaths, dockerd, stop_timeout, hardened=False, mount_ns=None):
    argv = ["systemd-run", f"--unit={unit_name(upaths.user)}", "--collect", "--quiet",
            # Return at once: berth does its other work while dockerd starts.
            "--no-block"]
    for key, value in unit_properties(upaths, stop_timeout):
        if key == "Description":
            argv.append(f"--description={value}")
        else:
            argv += ["--property", f"{key}={value}"]
    return argv + ["--", *exec_start(upaths, dockerd, hardened, mount_ns)]


def unit_text(upaths, dockerd, stop_timeout, hardened=False):
    props = dict(unit_properties(upaths, stop_timeout))
    service = "\n".join(f"{k}={v}" for k, v in unit_properties(upaths, stop_timeout) if k != "Description")
    return (f"[Unit]\nDescription={props['Description']}\n\n[Service]\n"
            f"ExecStart={' '.join(exec_start(upaths, dockerd, hardened))}\n{service}\n")


class SystemdSupervisor(DirectSupervisor):
    """dockerd as a transient unit of its own.

    Forked from a PAM session, dockerd would live in that session's scope,
    and logind's KillUserProcesses kills the scope at logout (systemd#2900).
    The record, identity checks and leftover cleanup are the direct ones.
    """

    kind = "systemd unit"

    def _systemctl(self, *args, check=True):
        r = subprocess.run(["systemctl", *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise DaemonError(f"systemctl {' '.join(args)} failed: {r.stderr.strip()}",
                              hint="see journalctl -u " + unit_name(self.paths.user))
        return r.stdout.strip()

    def _launch(self, logf, mount_ns=HOST):
        unit = unit_name(self.paths.user)  # systemd runs it in the host's mount namespace
        # A failed run of the same unit would block the name.
        self._systemctl("reset-failed", unit, check=False)
        r = subprocess.run(systemd_run_argv(self.paths, self.dockerd, self.stop_timeout,
                                            hardened=self.mode == "hardened",
                                            mount_ns=self._held_namespace(mount_ns)),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise DaemonError(f"systemd-run could not start {unit}: {r.stderr.strip()}",
                              hint="see journalctl -u " + unit)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = int(self._systemctl("show", "--property=MainPID", "--value", unit) or 0)
            if pid:
                return pid
            time.sleep(0.02)
        raise DaemonError(f"{unit} has no main process", hint="see journalctl -u " + unit)

    def _held_namespace(self, mount_ns):
        """The path systemd can enter for `mount_ns` (a descriptor of the
        shared containerd's namespace): berth's own, held in the run dir;
        None for the host's, where systemd starts units anyway."""
        held = hostns.berth_namespace_path(os.path.dirname(self.paths.run_dir))
        if isinstance(mount_ns, int) and hostns.is_mount_namespace(held) \
                and os.fstat(mount_ns).st_ino == hostns.namespace_id(held):
            return held
        return None

    def _terminate(self, rec, now):
        if not now:
            # systemd escalates to SIGKILL after TimeoutStopSec by itself.
            self._systemctl("stop", unit_name(self.paths.user), check=False)
        super()._terminate(rec, now)  # whatever still runs gets the direct treatment


def uses_systemd(supervisor="auto"):
    return supervisor == "systemd" or (supervisor == "auto" and systemd_booted())


def for_host(upaths, dockerd, stop_timeout, supervisor="auto", bridge_name="", mode="trusted"):
    """The supervisor for this host: a systemd unit where systemd runs;
    launched directly, dockerd is born in the user's daemon cgroup."""
    if uses_systemd(supervisor):
        return SystemdSupervisor(upaths, dockerd, stop_timeout, bridge_name, mode)
    v2 = cgroups.v2_root()
    cgroup = os.path.join(v2, cgroups.daemon_cgroups(upaths.user)[0]) if v2 else ""
    return DirectSupervisor(upaths, dockerd, stop_timeout, bridge_name, mode, cgroup)
