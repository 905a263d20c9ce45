"""`berth logs USER [-f] [-n N]`: a user's dockerd log, as `docker logs` shows one."""

import os
import time


def last_lines(path, n, chunk=65536):
    """The last `n` lines of a file, read from the end (logs grow large)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= n:
            start = max(0, end - chunk)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    lines = data.splitlines(keepends=True)
    return lines[-n:] if n else []


def follow(path, write, poll=0.2, stop=lambda: False, start_at_end=True):
    """Write what is appended to `path` until `stop()`; copes with truncation."""
    f = open(path, "rb")
    try:
        if start_at_end:
            f.seek(0, os.SEEK_END)
        while not stop():
            data = f.read()
            if data:
                write(data)
                continue
            try:
                if os.stat(path).st_size < f.tell():  # truncated or replaced: start over
                    f.close()
                    f = open(path, "rb")
            except FileNotFoundError:
                pass
            time.sleep(poll)
    finally:
        f.close()
