"""`berth pam`: the session hook pam_exec runs at every login and logout.

It never blocks or breaks a login: it always exits 0, and a cold start runs
in a detached child that the login waits for at most [login].deadline
seconds. The warm path (the user's daemon already answers) imports only
what it needs to check that, takes no global lock, and prints nothing.

pam_exec passes the session in the environment: PAM_USER, PAM_TYPE
("open_session" / "close_session"), PAM_SERVICE, PAM_RHOST.
"""

import os
import select
import sys
import time

from . import activity, users, warm

READY = "berth: your Docker daemon is ready ({seconds:.1f} s)"
STILL_STARTING = "berth: your Docker daemon is still starting; docker will work in a moment"
FAILED = "berth: your Docker daemon could not be started ({reason}); please tell {contact}"


def main(environ=None, out=None, config_path=None, run_dir=None):
    environ = os.environ if environ is None else environ
    out = out or sys.stdout
    kind = environ.get("PAM_TYPE", "")
    if kind not in ("open_session", "close_session"):
        return 0
    try:
        name = environ.get("PAM_USER", "")
        recorded_in = None
        # The PAM line names the run dir, so a login whose daemon is up is
        # answered without even reading the config.
        if run_dir and kind == "open_session" and users.is_valid_name(name):
            upaths = warm.user_paths(run_dir, name)
            if os.path.isdir(upaths.run_dir):
                # The session first, the check second: see reaper._reap.
                activity.session_opened(upaths, os.getppid())
                recorded_in = run_dir
                if warm.is_up(run_dir, name):
                    return 0
        _session(kind, name, environ, out, config_path, recorded_in)
    except BaseException as e:  # the login must go on whatever happened here
        _log(None).error("berth pam (%s) failed", kind, exc_info=True)
        if kind == "open_session":
            _tell(out, FAILED.format(reason=f"unexpected {type(e).__name__}", contact="your administrator"))
    return 0


def _session(kind, name, environ, out, config_path, recorded_in=None):
    from . import config, paths
    from .errors import BerthError, UserRefused

    try:
        cfg = config.load(config_path, environ=environ)
    except BerthError as e:
        _log(None).error("berth pam: %s", e.one_line())
        if kind == "open_session":
            _tell(out, FAILED.format(reason=e.message, contact=config.LoginConfig().contact))
        return
    try:
        account = users.resolve(name, cfg.users.min_uid)
    except UserRefused:
        return  # root, system users, unknown names: not ours, say nothing
    upaths = paths.for_user(cfg, account.name)
    # The process that runs PAM for this login (sshd's per-connection
    # process) names the session; it is the same for open and close.
    session_pid = os.getppid()
    if kind == "close_session":
        activity.session_closed(upaths, session_pid)
        return
    if recorded_in != str(cfg.paths.run_dir):  # not yet, or under a stale --run-dir
        activity.session_opened(upaths, session_pid)
    if warm.is_up(str(cfg.paths.run_dir), account.name):
        return
    _cold_start(cfg, account, out)


def _cold_start(cfg, account, out):
    """Bring the user up in a detached child; wait for it until the deadline."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(cfg, account, w)  # never returns
    os.close(w)
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


def _child(cfg, account, w):
    try:
        os.setsid()
        # pam_exec reads our stdout until EOF: holding it would hold the login.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        log = _log(cfg)
        from .errors import BerthError
        from .lifecycle import up

        try:
            result = up(cfg, account.name)
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
    from . import logsetup

    return logsetup.for_hook(cfg)
