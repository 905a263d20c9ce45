"""Who is using their daemon: open login sessions and the last activity.

The PAM hook records a session when it opens and drops it when it closes;
each session is named by the pid and start time of the process that opened
it (sshd's per-connection process), so a session that ended without a
close (a crash, a kill -9) is recognised as over once that process is gone.
Files live in the user's root-owned run dir; no global lock is taken.
"""

import os
import time

from . import proc
from .fsutil import ensure_dir, remove


def _sessions_dir(upaths):
    return os.path.join(upaths.run_dir, "sessions")


def _last_active_file(upaths):
    return os.path.join(upaths.run_dir, "last-active")


def touch(upaths, now=None):
    """Mark the user active now (the file's mtime is the time)."""
    path = _last_active_file(upaths)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
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
    ensure_dir(upaths.run_dir, 0o755)
    ensure_dir(_sessions_dir(upaths), 0o755)
    fd = os.open(os.path.join(_sessions_dir(upaths), session_name(pid)),
                 os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    os.close(fd)
    touch(upaths, now)


def session_closed(upaths, pid, now=None):
    remove(os.path.join(_sessions_dir(upaths), session_name(pid)))
    if os.path.isdir(upaths.run_dir):
        touch(upaths, now)


def open_sessions(upaths, prune=True):
    """Sessions whose opening process still runs; stale ones are dropped
    (unless `prune` is off: a reader that is not root cannot)."""
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
