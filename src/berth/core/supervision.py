"""One supervisor for root's long-lived processes: a user's dockerd, the
policy proxy and the shared containerd are each a configuration of it
(what it is called, its log, its record, how its command line is known,
its systemd unit and the unit's properties).

It starts one directly (a session of its own, in /, stdin from
/dev/null, output to its log, a clean environment, born in a cgroup and
a mount namespace if given) or, where systemd runs, as a transient unit
(a process forked from a PAM session would live in that session's scope,
and logind's KillUserProcesses kills the scope at logout, systemd#2900);
waits until it answers (a ping, with a backoff), failing early when it
exits; and stops it (systemd first, then SIGTERM, then SIGKILL).

A process is known by its pid *and* its start time, and by an argument
of its command line where it has a record: a pid the kernel has since
given to another process is never signalled (moby#46988).

Imports nothing heavy: a cold login's prelaunch starts dockerd through
it before anything else is loaded (subprocess and logging come later,
when they are needed).
"""

import _signal  # not the signal module: its enums cost 4 ms of the prelaunch
import os
import sys
import time

from berth.core import proc, record
from berth.core.errors import DaemonError
from berth.core.fsutil import ensure_dir, log_tail, read_and_close
from berth.core.paths import ROOT_ONLY, SYSTEM_PATH

SYSTEMD_BOOTED = "/run/systemd/system"
CLEAN_ENV = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
BANNER = "--- berth:"  # the line a start writes to its log (left out of a log's tail)


def systemd_booted(run=SYSTEMD_BOOTED):
    """sd_booted(3): systemd is PID 1."""
    return os.path.isdir(run)


def uses_systemd(setting="auto"):
    """[daemon].supervisor: "systemd", "direct", or "auto" (systemd where it runs)."""
    return setting == "systemd" or (setting == "auto" and systemd_booted())


def _log():
    import logging  # 12 ms: not on the prelaunch's way (see _told)

    return logging.getLogger(__name__)


def _told(message, *args):
    """An info line, where logging is loaded already. Before (the
    prelaunch, ahead of the CLI) no handler could take it, and importing
    logging there would hold up the bridge a dockerd just started waits for."""
    if "logging" in sys.modules:
        _log().info(message, *args)


class Supervisor:
    """One supervised process, configured by:

    what         the process in messages ("dockerd for alice")
    log_file     where its output goes
    unit         its transient unit's name where systemd runs it
    properties   the unit's (key, value) pairs, Description among them
    use_systemd  started as that unit, else directly
    record_path  where its record is kept ("": none; it is found by asking it)
    kind         the record's namedtuple (pid and start_ticks first)
    fields       what its record holds besides pid and start time
    mark         an argument its command line holds: a recorded pid without it is not this process
    follows_unit systemd restarts it (Restart=): the unit's main process is the truth
    block        systemd-run waits until the unit runs, rather than returning at once
    log_mode, banner  the log's mode, and a line written to it before each start ("": none)
    delays       the first and the longest pause between two pings
    singleton    a second one exits 0 at start when one runs already (the proxy): not a failure
    error        the DaemonError subclass its failures raise
    """

    def __init__(self, what, log_file, unit, properties=(), *, use_systemd=False, record_path="",
                 kind=record.Process, fields=None, mark="", follows_unit=False, block=False, log_mode=0o600,
                 banner="", delays=(0.005, 0.05), singleton=False, error=DaemonError):
        self.what, self.log_file, self.unit, self.properties = what, log_file, unit, tuple(properties)
        self.use_systemd, self.record_path, self.kind = use_systemd, record_path, kind
        self.fields, self.mark, self.follows_unit, self.block = dict(fields or {}), mark, follows_unit, block
        self.log_mode, self.banner, self.delays = log_mode, banner, delays
        self.singleton, self.error = singleton, error

    # --- the record ------------------------------------------------------------------

    def recorded(self):
        """The record, or None. Says nothing about whether the process runs."""
        return record.load(self.record_path, self.kind) if self.record_path else None

    def running(self):
        """The record of the process while it runs, else None."""
        if self.use_systemd and self.follows_unit:
            # systemd may have started another one since: the record follows it.
            pid = main_pid(self.unit)
            st = proc.stat(pid) if pid else None
            if st is not None and (not self.mark or self.mark in proc.cmdline(pid)):
                rec = self.recorded()
                if rec is None or (rec.pid, rec.start_ticks) != (pid, st.start_ticks):
                    rec = self.kind(pid, st.start_ticks, **self.fields)
                    record.save(self.record_path, rec)
                return rec
        rec = self.recorded()
        return rec if record.ours(rec, self.mark) else None

    # --- start ------------------------------------------------------------------------

    def start(self, argv, *, fields=None, mount_ns=None, cgroup="", in_child=None, unit_argv=None):
        """Start it; returns its record (written where one is kept) at once:
        see wait_ready. Directly: `mount_ns` (a path, or an open descriptor)
        is the mount namespace it starts in, `cgroup` the cgroup2 directory
        it is born in, `in_child` runs in the forked child before the exec
        (a seccomp filter). As a unit: `unit_argv` where the command differs
        (systemd can be handed no descriptor and runs no code of ours)."""
        ensure_dir(os.path.dirname(self.log_file), ROOT_ONLY)
        with self.open_log() as logf:
            if self.use_systemd:
                pid = self._start_unit(unit_argv or argv)
            else:
                pid = spawn(argv, logf, mount_ns=mount_ns, cgroup=cgroup, in_child=in_child)
        st = proc.stat(pid) if pid else None
        rec = self.kind(pid, st.start_ticks if st else 0, **{**self.fields, **(fields or {})})
        if self.record_path:
            try:
                record.save(self.record_path, rec)
            except BaseException:
                self.stop(rec, 0, now=True)  # a process berth could not record would be nobody's
                raise
        _told("started %s (%s%s)", self.what, f"pid {pid}, " if pid else "",
                    "unit " + self.unit if self.use_systemd else "direct")
        return rec

    def open_log(self):
        """Its log, opened for appending, with the line that marks this start."""
        logf = open(self.log_file, "ab")
        try:
            os.fchmod(logf.fileno(), self.log_mode)
            if self.banner:
                logf.write(f"{BANNER} {self.banner} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
                logf.flush()
        except BaseException:
            logf.close()
            raise
        return logf

    def _start_unit(self, argv):
        """The unit started; its main pid where a record is kept, else 0."""
        systemctl("reset-failed", self.unit)  # a failed run of the same unit would block the name
        r = _run(systemd_run_argv(self.unit, self.properties, argv, self.block))
        if r.returncode != 0:
            if main_pid(self.unit):
                raise self.error(f"{self.unit} runs, but not as berth started it",
                                 hint=f"systemctl stop {self.unit}, then berth up again")
            raise self.error(f"systemd-run could not start {self.unit}: {r.stderr.strip()}",
                             hint="see journalctl -u " + self.unit)
        if not self.record_path:
            return 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = main_pid(self.unit)
            if pid:
                return pid
            time.sleep(0.02)
        raise self.error(f"{self.unit} has no main process", hint="see journalctl -u " + self.unit)

    def wait_ready(self, ping, timeout, rec=None, where="", slower=""):
        """Until `ping()` answers; returns its answer. Fails early when the
        process of `rec` (started a moment ago) exits, unless systemd
        restarts it; a second one of a kind that allows one only (the
        proxy) exits 0, and then the first one's answer is awaited.
        `where`, `slower`: in the message, and the hint, of a timeout."""
        deadline = time.monotonic() + timeout
        delay, longest = self.delays
        watched = rec if rec is not None and rec.pid and not (self.use_systemd and self.follows_unit) else None
        while True:
            answer = ping()
            if answer:
                return answer
            if watched is not None and not proc.alive(watched.pid, watched.start_ticks):
                status = exit_status(watched.pid)
                if status != 0 or not self.singleton:
                    raise self.error(f"{self.what} exited at start{f' (status {status})' if status else ''}: "
                                     f"{self.log_tail()}", hint=f"see {self.log_file}")
                watched = None
            if time.monotonic() > deadline:
                raise self.error(f"{self.what} did not answer{where} within {timeout:g} s: {self.log_tail()}",
                                 hint=f"see {self.log_file}{slower}")
            time.sleep(delay)
            delay = min(delay * 1.5, longest)

    def log_tail(self, lines=3):
        return log_tail(self.log_file, lines, 8192, skip=BANNER)

    # --- stop ----------------------------------------------------------------------------

    def stop(self, rec, timeout, now=False):
        """Stop the process of `rec`; returns when it no longer runs. Its unit
        is stopped first (systemd escalates to SIGKILL by itself), then it
        gets SIGTERM and, past `timeout`, SIGKILL; `now`: SIGKILL at once."""
        if self.use_systemd and not now:
            systemctl("stop", self.unit, timeout=None)  # as long as the unit's TimeoutStopSec
        if not now and proc.alive(rec.pid, rec.start_ticks):
            _send(rec.pid, _signal.SIGTERM)
            if _wait_gone(rec, timeout):
                _log().info("%s (pid %d) stopped", self.what, rec.pid)
            else:
                _log().warning("%s (pid %d) ignored SIGTERM for %gs; killing it", self.what, rec.pid, timeout)
        if proc.alive(rec.pid, rec.start_ticks):
            _send(rec.pid, _signal.SIGKILL)
            _wait_gone(rec, 10.0)
        proc.reap(rec.pid)


def identify(pid):
    """The process `pid` is now (its start time taken), or None."""
    st = proc.stat(pid) if pid else None
    return record.Process(pid, st.start_ticks) if st is not None else None


def kill_all(pids):
    """SIGKILL each of `pids`: what a stopped daemon left behind (its own
    containerd, shims), found by its command line."""
    for pid in pids:
        _send(pid, _signal.SIGKILL)


def exit_status(pid):
    """A child's exit status (collected), or None: still running, or not ours."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def _send(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(rec, timeout):
    deadline = time.monotonic() + timeout
    while proc.alive(rec.pid, rec.start_ticks):
        proc.reap(rec.pid)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    proc.reap(rec.pid)
    return True


# --- systemd -----------------------------------------------------------------------------------

def systemd_run_argv(unit, properties, argv, block=False):
    command = ["systemd-run", f"--unit={unit}", "--collect", "--quiet"]
    if not block:
        command.append("--no-block")  # return at once: berth does its other work while it starts
    for key, value in properties:
        command += [f"--description={value}"] if key == "Description" else ["--property", f"{key}={value}"]
    return command + ["--", *argv]


def unit_text(properties, argv):
    """The unit as a file (what `systemd-analyze verify` checks): the same
    properties systemd-run is given."""
    service = "\n".join(f"{k}={v}" for k, v in properties if k != "Description")
    return (f"[Unit]\nDescription={dict(properties)['Description']}\n\n[Service]\n"
            f"ExecStart={' '.join(argv)}\n{service}\n")


def systemctl(*args, timeout=30):
    """systemctl's answer ('' when it failed: a unit that is not there is no error here)."""
    r = _run(["systemctl", *args], timeout)
    return r.stdout.strip() if r.returncode == 0 else ""


def main_pid(unit):
    """The unit's main pid, 0 when it does not run."""
    try:
        return int(systemctl("show", "--property=MainPID", "--value", unit) or 0)
    except ValueError:
        return 0


def _run(argv, timeout=60):
    import subprocess  # 7 ms: only where systemd runs

    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(argv, 1, "", str(e))


# --- the direct start -----------------------------------------------------------------------------

def spawn(command, logf, pass_fds=(), mount_ns=None, cgroup="", in_child=None):
    """Start `command` detached (its own session, in /, stdin from
    /dev/null, output to `logf`, a clean environment, only `pass_fds`
    besides, born in the cgroup2 directory `cgroup` if given, in the mount
    namespace `mount_ns` (a path, or an open descriptor) if it is not this
    one); returns its pid at once. posix_spawn, not subprocess: 7 ms of
    import on the prelaunch. `in_child`: run in a forked child before the
    exec (posix_spawn has no such hook), which must make only os calls."""
    if cgroup:
        with _inside(cgroup):
            return spawn(command, logf, pass_fds, mount_ns, "", in_child)
    if mount_ns is not None:
        if isinstance(mount_ns, int):
            pass_fds = (*pass_fds, mount_ns)
        command = _in_mount_namespace(command, mount_ns)
    if in_child is not None:
        return _fork_exec(command, logf, pass_fds, in_child)
    _close_on_exec(keep=pass_fds)
    # At 3 and above: a caller with 0, 1 or 2 closed would have them overwritten by the dup2s.
    devnull = _above_stdio(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    out = _above_stdio(os.dup(logf.fileno()))
    try:
        here = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        here = None  # a working directory root cannot open: the caller stays in /
    try:
        for fd in pass_fds:
            os.set_inheritable(fd, True)
        os.chdir("/")  # no directory of the caller's held busy (posix_spawn has no cwd)
        try:
            return os.posix_spawn(
                command[0], command, CLEAN_ENV,
                file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, out, 1),
                              (os.POSIX_SPAWN_DUP2, out, 2)],
                # Its own session: no controlling terminal, no SIGHUP at logout.
                # Python ignores these, and an ignored signal stays ignored across exec.
                setsid=True, setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
        finally:
            if here is not None:
                os.fchdir(here)
            for fd in pass_fds:
                os.set_inheritable(fd, False)
    finally:
        if here is not None:
            os.close(here)
        os.close(devnull)
        os.close(out)


def _fork_exec(command, logf, pass_fds, in_child):
    """spawn's process set-up in a forked child, which runs `in_child`
    before it execs: nothing of `command` ever runs without it. A failure
    before the exec comes back through a close-on-exec pipe."""
    _close_on_exec(keep=pass_fds)
    devnull = _above_stdio(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    out = _above_stdio(os.dup(logf.fileno()))
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: only os calls, then exec or _exit
        try:
            os.close(err_r)
            os.setsid()
            os.chdir("/")
            os.dup2(devnull, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            for fd in pass_fds:
                os.set_inheritable(fd, True)
            for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
                _signal.signal(sig, _signal.SIG_DFL)
            in_child()
            os.execve(command[0], command, CLEAN_ENV)
        except BaseException as e:  # the child must never return into the caller's code
            try:
                os.write(err_w, f"{type(e).__name__}: {e}".encode()[:500])
            finally:
                os._exit(127)
    os.close(err_w)
    os.close(devnull)
    os.close(out)
    failure = read_and_close(err_r)
    if failure:
        os.waitpid(pid, 0)
        raise OSError(f"could not start {command[0]}: {failure.decode(errors='replace')}")
    return pid


def _in_mount_namespace(command, ns, self_ns="/proc/self/ns/mnt"):
    """`command`, run in the mount namespace `ns` (a path, or an open
    descriptor) when it is not this process's."""
    path = f"/proc/self/fd/{ns}" if isinstance(ns, int) else ns
    try:
        if os.readlink(self_ns) == os.readlink(path):
            return command
    except OSError:
        return command  # not ours to see (PID 1 may be shielded): run where berth runs
    return [_nsenter(), f"--mount={path}", "--", *command]


def _nsenter():
    for directory in SYSTEM_PATH.split(":"):
        candidate = os.path.join(directory, "nsenter")
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("nsenter not found (util-linux)")


# cgroup2 mount points, the hybrid layout's first (it lies below the other).
V2_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


class _inside:
    """This process in the cgroup2 `directory` for a moment (made where
    missing), then back where it was: a child spawned meanwhile is born in
    it, so no packet of the child's ever leaves from another cgroup
    (posix_spawn has no hook in the child to move it there itself)."""

    def __init__(self, directory):
        self.directory = directory
        self.root = next(r for r in V2_ROOTS if directory.startswith(r + "/"))

    def __enter__(self):
        with open("/proc/self/cgroup") as f:
            own = next(line.rstrip("\n").split("::", 1)[1] for line in f if line.startswith("0::"))
        self.back = os.path.join(self.root, own.lstrip("/"), "cgroup.procs")
        os.makedirs(self.directory, exist_ok=True)
        _move_self(os.path.join(self.directory, "cgroup.procs"))
        return self

    def __exit__(self, *exc):
        try:
            _move_self(self.back)
        except OSError:
            pass  # left where the daemon runs: this berth exits soon, and sends nothing to users' blocks


def _move_self(procs):
    with open(procs, "w") as f:
        f.write("0")  # "0": the writing process (cgroup-v2.rst)


def _above_stdio(fd):
    if fd > 2:
        return fd
    import fcntl

    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _close_on_exec(keep=()):
    """What subprocess's close_fds does: no descriptor this process was
    handed open (a login's pipe from pam_exec, which waits for its EOF)
    reaches the daemon. Python's own are close-on-exec already."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed by now
