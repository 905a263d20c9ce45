"""Who is using their daemon: open login sessions, Slurm jobs, and the last activity.

The PAM hook records a session when it opens, named by the pid and start
time of the process that opened it (sshd's per-connection process). Its end
is learned from that process being gone, not from close_session: the PAM
environment at close holds what pam_env read from the user's files, so
berth runs nothing as root then. Files live in the user's root-owned run
dir, root's alone; no global lock is taken.
"""

import os
import time

from berth.core import proc
from berth.core.fsutil import ensure_dir, remove
from berth.core.paths import ROOT_ONLY, TRAVERSE_ONLY


def _sessions_dir(upaths):
    return os.path.join(upaths.run_dir, "sessions")


def _last_active_file(upaths):
    return os.path.join(upaths.run_dir, "last-active")


def touch(upaths, now=None):
    """Mark the user active now (the file's mtime is the time)."""
    path = _last_active_file(upaths)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    now = time.time() if now is None else now
    os.utime(path, (now, now))


def last_active(upaths):
    try:
        return os.stat(_last_active_file(upaths)).st_mtime
    except FileNotFoundError:
        return None


def session_name(pid):
    st = proc.stat(pid)
    return f"{pid}-{st.start_ticks if st else 0}"


def session_opened(upaths, pid, now=None):
    ensure_dir(upaths.run_dir, TRAVERSE_ONLY)
    ensure_dir(_sessions_dir(upaths), ROOT_ONLY)
    fd = os.open(os.path.join(_sessions_dir(upaths), session_name(pid)),
                 os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    touch(upaths, now)


def open_sessions(upaths, prune=True):
    """Sessions whose opening process still runs; ended ones are dropped
    (unless `prune` is off: a dry run changes nothing)."""
    try:
        names = os.listdir(_sessions_dir(upaths))
    except FileNotFoundError:
        return []
    live = []
    for name in names:
        pid, _, ticks = name.partition("-")
        if pid.isdigit() and ticks.isdigit() and proc.alive(int(pid), int(ticks)):
            live.append(name)
        elif prune:
            remove(os.path.join(_sessions_dir(upaths), name))
    return sorted(live)


def live_jobs(upaths):
    """The Slurm jobs with a grant in the user's run dir (written by the
    Prolog, removed by the Epilog), by id."""
    try:
        names = os.listdir(upaths.run_dir)
    except FileNotFoundError:
        return ()
    return tuple(sorted(int(n[4:-6]) for n in names
                        if n.startswith("job-") and n.endswith(".grant") and n[4:-6].isdigit()))
