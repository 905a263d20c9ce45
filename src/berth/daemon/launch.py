"""How berth launches a user's dockerd directly (no systemd): the same
command, log and process setup whether `up` launches it or the prelaunch
does before the config is read (prelaunch.py). Imports nothing heavy."""

# The signal numbers without the signal module, whose enums cost 4 ms of the prelaunch.
import _signal as signals
import os
import time

from berth.core.fsutil import read_and_close
from berth.core.paths import SYSTEM_PATH


def argv(dockerd, daemon_json):
    return [dockerd, "--config-file", daemon_json]


def open_log(path, user):
    """The user's daemon log, opened for appending, with a line that marks this start."""
    logf = open(path, "ab")
    try:
        os.fchmod(logf.fileno(), 0o640)
        logf.write(f"--- berth: starting dockerd for {user} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        logf.flush()
    except BaseException:
        logf.close()
        raise
    return logf


def spawn(command, logf, pass_fds=(), no_devices=False, mount_ns=None, cgroup=""):
    """Start `command` detached (its own session, in /, stdin from
    /dev/null, output to `logf`, only `pass_fds` besides, born in the
    cgroup2 directory `cgroup` if given); returns its pid at once.
    posix_spawn, not subprocess: 7 ms of import on the prelaunch.
    `no_devices`: under nodevices' filter (a hardened user's dockerd), which
    posix_spawn cannot load, so forked and exec'd by hand. `mount_ns`: an
    open descriptor of the mount namespace to start it in (through nsenter)."""
    if cgroup:
        with _inside(cgroup):
            return spawn(command, logf, pass_fds, no_devices, mount_ns)
    if mount_ns is not None:
        command = [_nsenter(), f"--mount=/proc/self/fd/{mount_ns}", "--", *command]
        pass_fds = (*pass_fds, mount_ns)
    if no_devices:
        return _spawn_without_devices(command, logf, pass_fds)
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
                command[0], command, {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
                file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, out, 1),
                              (os.POSIX_SPAWN_DUP2, out, 2)],
                # Its own session: no controlling terminal, no SIGHUP at logout.
                # Python ignores these, and an ignored signal stays ignored across exec.
                setsid=True, setsigdef=(signals.SIGPIPE, signals.SIGXFSZ))
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


def _spawn_without_devices(command, logf, pass_fds):
    """spawn's process set-up in a forked child, which loads the filter
    before it execs: nothing of `command` ever runs without it. A failure
    before the exec comes back through a close-on-exec pipe."""
    from berth.daemon import nodevices

    code = nodevices.encode(nodevices.program(os.uname().machine))  # Unsupported raised here, not in the child
    _close_on_exec(keep=pass_fds)
    devnull = _above_stdio(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    out = _above_stdio(os.dup(logf.fileno()))
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
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
            for sig in (signals.SIGPIPE, signals.SIGXFSZ):
                signals.signal(sig, signals.SIG_DFL)
            nodevices.load_encoded(code)
            os.execve(command[0], command, env)
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
        raise OSError(f"could not start {command[0]} without device nodes: {failure.decode(errors='replace')}")
    return pid


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
            pass  # left where dockerd runs: this berth exits soon, and sends nothing to users' blocks


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


def kill(pid):
    """SIGKILL a dockerd launched a moment ago, and collect it."""
    try:
        os.kill(pid, signals.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
