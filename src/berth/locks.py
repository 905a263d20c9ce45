"""File locks: one per user (up/down of the same user wait for each other)
and one for the lease table. filelock is imported only when a lock is taken,
so read-only paths never pay for it."""

import contextlib
import os

from .errors import LockTimeout
from .fsutil import ensure_dir


@contextlib.contextmanager
def hold(path, timeout, what):
    import filelock

    ensure_dir(os.path.dirname(path), 0o755)
    lock = filelock.FileLock(path, timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LockTimeout(f"another berth has held the lock for {what} for over {timeout:g} s ({path})",
                          hint="wait for it to finish, or find it with: fuser " + path) from None
    try:
        yield
    finally:
        lock.release()


def user_lock(cfg, user):
    path = os.path.join(cfg.paths.state_dir, "locks", f"{user}.lock")
    return hold(path, cfg.daemon.lock_timeout, f"user {user}")
