"""`berth pam`: the session hook pam_exec runs as root at every login.

It never blocks or breaks a login: it always exits 0, and a cold start runs
in a detached child that the login waits for at most [login].deadline
seconds. The warm path (the user's daemon already answers) imports only
what it needs to check that, takes no global lock, and prints nothing.

It takes nothing from its environment but the PAM items PAM_TYPE, PAM_USER
and PAM_SERVICE, and of each the one pam_exec set (`items_from`): the rest
of the PAM environment may hold what pam_env read from the user's
~/.pam_environment. It acts at open_session only; a session's end is
learned from its process being gone (activity.open_sessions).
"""

import os
import select
import sys
import time

from berth.core import paths, users
from berth.core.paths import SYSTEM_PATH
from berth.lifecycle import activity, logindigest
from berth.login import warm

READY = "berth: your Docker daemon is ready ({seconds:.1f} s)"
STILL_STARTING = "berth: your Docker daemon is still starting; docker will work in a moment"
FAILED = "berth: your Docker daemon could not be started ({reason}); please tell {contact}"

ITEMS = ("PAM_TYPE", "PAM_USER", "PAM_SERVICE")


def items_from(block):
    """The PAM items in an environment block (b"K=V\0K=V..."), the last of
    each winning, and the names that came more than once.

    pam_exec puts the PAM environment first and its own items after it; a
    PAM_USER a user put in ~/.pam_environment comes first, and getenv() and
    os.environ (which keep the first) would take it. A repeated item is the
    proof that a user's variables reach the hook (other variables prove
    nothing: an admin's /etc/environment may set LD_LIBRARY_PATH for CUDA).
    """
    items, repeated = {}, set()
    for entry in block.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if not sep:
            continue
        name = key.decode("ascii", "replace")
        if name in ITEMS:
            if name in items:
                repeated.add(name)
            items[name] = value.decode("utf-8", "surrogateescape")
    return items, sorted(repeated)


def items_from_process(path="/proc/self/environ"):
    with open(path, "rb") as f:
        return items_from(f.read())


def scrub(environ):
    """Leave the process nothing of the environment it was started with."""
    environ.clear()
    environ.update(PATH=SYSTEM_PATH, LANG="C.UTF-8")


def main(environ=None, out=None, config_path=None, run_dir=None):
    """Run the hook for the PAM items in `environ` (default: this process's
    own, read from its environment block, which is then scrubbed)."""
    suspicious = []
    if environ is None:
        try:
            environ, suspicious = items_from_process()
        except OSError:  # no /proc: nothing to go on, and the login goes on
            environ = {}
        scrub(os.environ)
    out = out or sys.stdout
    kind = environ.get("PAM_TYPE", "")
    if kind != "open_session":
        return 0  # close_session: see the module's docstring
    try:
        if suspicious:
            # A user's variables reach this root process: the PAM layout is
            # unsafe. Do nothing as root for anyone; say so where it is seen.
            _log(None).error("berth pam: the PAM environment repeats %s: users' variables reach berth's hook, "
                             "which runs as root; doing nothing until the PAM layout is fixed (berth doctor)",
                             ", ".join(suspicious))
            _tell(out, FAILED.format(reason="the login hook's PAM layout is unsafe", contact="your administrator"))
            return 0
        name = environ.get("PAM_USER", "")
        account = users.lookup(name)
        if account is None or account.uid == 0:
            return 0  # not a user berth could serve: say nothing
        recorded_in = None
        # The PAM line names the run dir, or the digest of the config says
        # it, so a login whose daemon is up is answered without reading the
        # config.
        if not run_dir:
            digest = logindigest.read(config_path or paths.DEFAULT_CONFIG)
            if digest is not None and digest.min_uid <= account.uid <= digest.max_uid:
                run_dir = digest.run_dir
        if run_dir:
            upaths = paths.in_run_dir(run_dir, name)
            if os.path.isdir(upaths.run_dir):
                # The session first, the check second: see reaper._reap.
                activity.session_opened(upaths, os.getppid())
                recorded_in = run_dir
                if warm.is_up(run_dir, name):
                    return 0
        _session(name, out, config_path, recorded_in)
    except BaseException as e:  # the login must go on whatever happened here
        _log(None).error("berth pam (%s) failed", kind, exc_info=True)
        _tell(out, FAILED.format(reason=f"unexpected {type(e).__name__}", contact="your administrator"))
    return 0


def _session(name, out, config_path, recorded_in=None):
    from berth.daemon import cgroups
    from berth.lifecycle import prelaunch

    # A login pam_slurm_adopt put into a job: nothing berth starts from
    # here (dockerd, containerd, the proxy) may be born in the job's
    # cgroups, to be counted as the job and die with it.
    cgroups.leave_slurm_job()
    path = config_path or paths.DEFAULT_CONFIG
    # A returning user whose daemon is down: dockerd starts from the last
    # start's plan while the config is read (prelaunch.py).
    launched = prelaunch.launch(path, name)
    if launched is None:
        return _session_for(name, out, config_path, path, recorded_in, None)
    with launched:  # undone unless handed on to the child that brings the user up
        _session_for(name, out, config_path, path, recorded_in, launched)


def _session_for(name, out, config_path, path, recorded_in, launched):
    from berth.core import config
    from berth.core.errors import BerthError, UserRefused

    try:
        seen = logindigest.identity(path)
        # The PAM line's --config or the default path: never BERTH_CONFIG.
        cfg = config.load(config_path, environ={})
        logindigest.write(path, cfg, seen)
    except OSError as e:
        _log(None).error("berth pam: cannot read the config %s: %s", path, e)
        _tell(out, FAILED.format(reason=f"cannot read {path}", contact=config.LoginConfig().contact))
        return
    except BerthError as e:
        _log(None).error("berth pam: %s", e.one_line())
        _tell(out, FAILED.format(reason=e.message, contact=config.LoginConfig().contact))
        return
    try:
        account = users.resolve(name, cfg.users.min_uid, cfg.users.max_uid)
    except UserRefused:
        return  # root, system users, nobody, unknown names: not ours, say nothing
    upaths = paths.for_user(cfg, account.name)
    # The process that runs PAM for this login (sshd's per-connection
    # process) names the session; when it is gone, so is the session.
    if recorded_in != str(cfg.paths.run_dir):  # not yet, or under a stale --run-dir
        activity.session_opened(upaths, os.getppid())
    if launched is None and warm.is_up(str(cfg.paths.run_dir), account.name):
        return
    _cold_start(cfg, account, out, launched, seen)


def _cold_start(cfg, account, out, launched=None, seen=None):
    """Bring the user up in a detached child; wait for it until the deadline.
    `launched`: its dockerd, prelaunched; the child takes it (and the lock) over."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(cfg, account, w, launched, seen)  # never returns
    os.close(w)
    if launched is not None:
        launched.hand_on()  # the child holds the user's lock now, and undoes it if its `up` fails
    message = _read_until(r, cfg.login.deadline)
    os.close(r)
    if message is None:
        _log(cfg).info("berth pam: %s still starting after the %g s deadline", account.name, cfg.login.deadline)
        message = STILL_STARTING
    if message:
        _tell(out, message)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _read_until(fd, timeout):
    """The child's one-line verdict, or None if it is not there in time."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        data = os.read(fd, 4096)
        if not data:
            return b"".join(chunks).decode(errors="replace").strip()
        chunks.append(data)


def _child(cfg, account, w, launched=None, seen=None):
    try:
        import contextlib

        with launched if launched is not None else contextlib.nullcontext():  # undone if `up` never takes it
            os.setsid()
            # pam_exec reads our stdout until EOF: holding it would hold the login.
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            log = _log(cfg)
            from berth.core.errors import BerthError
            from berth.lifecycle.up import up

            try:
                result = up(cfg, account.name, prelaunched=launched, launch_key=seen)
                message = READY.format(seconds=result.seconds) if result.started else ""
            except BerthError as e:
                log.error("berth pam: could not bring %s up: %s", account.name, e.one_line())
                message = FAILED.format(reason=e.message, contact=cfg.login.contact)
        os.write(w, message.encode() + b"\n")
    except BaseException:  # a child that raised would run the parent's code: never
        try:
            _log(cfg).error("berth pam: bringing %s up failed", account.name, exc_info=True)
            os.write(w, FAILED.format(reason="unexpected error, see berth's log",
                                      contact=cfg.login.contact).encode() + b"\n")
        finally:
            os._exit(0)
    os._exit(0)


def _tell(out, line):
    try:
        print(line, file=out, flush=True)
    except OSError:
        pass


def _log(cfg):
    from berth.core import logsetup

    return logsetup.for_hook(cfg)
