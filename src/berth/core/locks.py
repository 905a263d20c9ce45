"""File locks: one per user (up, down and the reaper of the same user wait for
each other), the xtables lock around iptables changes, and the lease table's.

The per-user and xtables locks are plain flock(2): they sit on the path of
every cold login, where importing filelock alone would cost ~14 ms. The
lease table, touched only when a new block is handed out, uses filelock.
"""

import contextlib
import fcntl
import os
import time

from berth.core import paths
from berth.core.errors import LockTimeout
from berth.core.fsutil import ensure_dir


def _timeout(path, timeout, what):
    return LockTimeout(f"another process has held the lock for {what} for over {timeout:g} s ({path})",
                       hint="wait for it to finish, or find it with: fuser " + path)


@contextlib.contextmanager
def flock(path, timeout, what, poll=0.02):
    """Hold an exclusive flock on `path` (made if missing) for the block."""
    # 0600: flock works on a read-only descriptor, so a lock file a user
    # could open is a lock they could hold (and every login wait on).
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:  # one made by an older berth
            os.fchmod(fd, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _timeout(path, timeout, what) from None
                time.sleep(poll)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def filelock_held(path, timeout, what):
    import filelock

    lock = filelock.FileLock(path, timeout=timeout, mode=0o600)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise _timeout(path, timeout, what) from None
    try:
        yield
    finally:
        lock.release()


def locks_dir(cfg):
    """state_dir/locks, root's alone (the lock files in it are 0600 too)."""
    ensure_dir(cfg.paths.state_dir, paths.TRAVERSE_ONLY)
    return ensure_dir(paths.locks_dir(cfg), paths.ROOT_ONLY)


def user_lock_path(cfg, user):
    return os.path.join(paths.locks_dir(cfg), "users", f"{user}.lock")


def user_lock(cfg, user):
    ensure_dir(os.path.join(locks_dir(cfg), "users"), paths.ROOT_ONLY)
    return flock(user_lock_path(cfg, user), cfg.daemon.lock_timeout, f"user {user}")
