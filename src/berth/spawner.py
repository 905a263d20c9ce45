"""Supervising one user's dockerd: start / poll / stop, JupyterHub-Spawner style.

DirectSpawner forks dockerd into its own session (the path for hosts without
systemd). It records the pid *and* the start time, so a restarted berth picks
its daemon back up and never signals a reused pid.
"""

import logging
import os
import shutil
import signal
import subprocess
import time

from . import proc, record
from .errors import DaemonError, MissingBinary
from .fsutil import ensure_dir, remove

log = logging.getLogger(__name__)

# cron and PAM give a short PATH; dockerd, containerd and runc live in sbin.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


class DirectSpawner:
    def __init__(self, upaths, dockerd, stop_timeout=30.0, environ=None):
        self.paths = upaths
        self.dockerd = dockerd
        self.stop_timeout = stop_timeout
        self.environ = os.environ if environ is None else environ

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

    def start(self):
        """Fork dockerd detached; returns its record. Does not wait for the socket."""
        self.clear_stale()
        ensure_dir(os.path.dirname(self.paths.log_file), 0o755)
        env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
        with open(self.paths.log_file, "ab") as logf:
            os.fchmod(logf.fileno(), 0o640)
            logf.write(f"--- berth: starting dockerd for {self.paths.user} at "
                       f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
            logf.flush()
            child = subprocess.Popen(
                [self.dockerd, "--config-file", self.paths.daemon_json],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                cwd="/", env=env, close_fds=True,
                # Its own session: no controlling terminal, no SIGHUP at logout.
                start_new_session=True)
        st = proc.stat(child.pid)
        rec = record.DaemonRecord(child.pid, st.start_ticks if st else 0, time.time(), self.dockerd)
        record.write(self.paths, rec)
        log.info("started dockerd for %s: pid %d", self.paths.user, child.pid)
        return rec

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
        for path in (self.paths.pidfile, self.paths.socket, self.paths.record, containerd_pid):
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
        self.kill_leftovers()
        for path in (self.paths.pidfile, self.paths.socket, self.paths.record):
            remove(path)

    def _signal(self, rec, sig):
        try:
            os.kill(rec.pid, sig)
        except ProcessLookupError:
            pass

    def _wait_gone(self, rec, timeout):
        deadline = time.monotonic() + timeout
        while proc.alive(rec.pid, rec.start_ticks):
            self._reap(rec.pid)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        self._reap(rec.pid)
        return True

    @staticmethod
    def _reap(pid):
        """Collect the exit status when dockerd is our own child (in-process use)."""
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

    def leftovers(self):
        """Processes that belong to this user's daemon by their command line.

        containerd and its shims name the exec-root in their arguments, and
        that directory is berth's own, so a match is ours.
        """
        marker = self.paths.exec_root + "/"
        found = []
        for pid in proc.pids():
            if pid == os.getpid():
                continue
            args = proc.cmdline(pid)
            if any(marker in a or a == self.paths.daemon_json for a in args):
                found.append(pid)
        return found

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
                self._reap(rec.pid)
                raise DaemonError(f"dockerd for {self.paths.user} exited at start: {self.log_tail(3)}",
                                  hint=f"see {self.paths.log_file}")
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"dockerd for {self.paths.user} did not answer on {self.paths.socket} within "
                    f"{timeout:g} s: {self.log_tail(3)}",
                    hint=f"see {self.paths.log_file}, or raise [daemon].start_timeout")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def log_tail(self, lines=5):
        try:
            with open(self.paths.log_file, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                tail = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        tail = [t for t in tail if not t.startswith("--- berth:")][-lines:]
        return " | ".join(tail) or "(empty log)"
